"""Full-scale ImageNet-LT rehearsal on CPU (issue #11): every stage at the real size, measured.

1. Writes a synthetic tree in the exact ImageNet-LT format (split files
   ``ImageNet_LT_{train,val,test}.txt``, ``<path> <label>`` lines, ``train/<wnid>/`` and
   ``val/<wnid>/`` JPEGs) at the real size with :func:`langtail.data.synthetic_lt.write_lt_tree`:
   1,000 classes, 1,280 .. 5 training images per class (115,846 in all), 20 val and 50 test
   per class, tiny real 32 px JPEGs (decoding is real). ``--classes K`` writes the first K
   classes with the total scaled by K / 1000 (a smoke run).
2. Assembles a descriptions file ``{ImageNet class name: [sentence, ...]}`` of realistic size
   from the real ImageNet text in ``../shared/data/text`` (see its README): the CuPL GPT-3
   sentences (SuS-X), the "classify by description" descriptors, the Label-free-CBM GPT-3
   concept phrases (important / superclass / around, each put in a sentence) and the
   Wiktionary / WordNet definitions (K-LITE). With the 80 CLIP prompts
   (``corpus.sources: [prompt, descriptions]``) that is ~130K class sentences at 1,000 classes.
3. Runs the project's workflow to ``report.md`` with snakemake on a ``--configfile`` written
   next to the results (``config.yaml`` is not touched): small image encoder (``demo_cnn``
   by default) + the pretrained MiniLM, 1 epoch of pre-training and fine-tuning, M = 64.
4. Collects per stage (per Snakemake job) the wall time and peak RSS that Snakemake's
   ``benchmark:`` directive measured (``results/<name>/benchmarks/<job>.tsv``: ``s``,
   ``max_rss`` in MB, ``cpu_time``), the size of the job's outputs, and the dominant cost
   (what the stage spends its time on, with the counts it processed), and writes
   ``benchmarks/results/imagenet_lt_rehearsal.{json,md}`` (``--tag`` changes the name) with
   the command.

    python benchmarks/imagenet_lt_rehearsal.py --classes 50 --tag _c50   # smoke run, a few minutes
    python benchmarks/imagenet_lt_rehearsal.py                           # full size, ~1 h on 2 cores
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
TEXT = SHARED / "data" / "text"
GB = 1024 ** 3

#: stage -> (outputs under results/<name>/ (globs), dominant cost)
STAGES: dict[str, tuple[list[str], str]] = {
    "longtail": (["manifest.parquet"], "reading the three split files and building the manifest (vectorised parsing)"),
    "corpus": (["corpus.parquet", "corpus_stats.parquet"],
               "cleaning / splitting / deduplicating the description sentences + 80 prompt templates per class"),
    "pretrain": (["pretrain/model.pt", "pretrain/model.pt.resume", "pretrain/skipped_images.parquet"],
                 "MiniLM encoding of every corpus sentence once (text-feature cache), then 1 epoch of CVLP "
                 "(JPEG decode + image encoder forward/backward)"),
    "anchors": (["anchors.parquet"], "encoding <= 50 images per class, then L_lin of every sentence against them "
                "(streamed over sentence chunks)"),
    "embed_text": (["text_embeddings.safetensors"], "gathering the [C, M, D] anchor embeddings from the text cache"),
    "finetune_lgr": (["finetune/lgr/model.pt", "finetune/lgr/skipped_images.parquet"],
                     "1 epoch: JPEG decode + image encoder + LGR head (O(B C M) attention, no [B, C, D])"),
    "finetune_fc": (["finetune/fc/model.pt", "finetune/fc/skipped_images.parquet"],
                    "1 epoch: JPEG decode + image encoder forward/backward"),
    "evaluate_lgr": (["eval/lgr/*"], "decoding + encoding the test images, LGR head"),
    "evaluate_fc": (["eval/fc/*"], "decoding + encoding the test images, FC head"),
    "evaluate_zeroshot": (["eval/zeroshot/*"], "decoding + encoding the test images, cosine to prompt embeddings"),
    "evaluate_zeroshot_anchors": (["eval/zeroshot_anchors/*"],
                                  "decoding + encoding the test images, cosine to mean anchor embeddings"),
    "report": (["report.md", "figures/report/*"], "tables and figures over C classes (binned curves above 60 classes, top-10 gain / loss tables)"),
}


# ----------------------------------------------------------------------------- corpus text

def _read_json(p: Path):
    return json.loads(p.read_text(encoding="utf-8"))


def _a(name: str) -> str:
    return ("an " if name[:1].lower() in "aeiou" else "a ") + name


def build_descriptions(out: Path) -> dict:
    """Write ``{class name: [sentence, ...]}`` from the real ImageNet text in ../shared/data/text.

    Keys are the files' own class names (CLIP-style readable names; the Label-free-CBM lists use
    the same names); the corpus stage matches them to the class list and logs what does not match.
    Returns counts per source.
    """
    per: dict[str, list[str]] = {}
    counts: dict[str, int] = {}

    def add(src: str, key: str, sentences: list[str]) -> None:
        key = key.strip()
        if not key:
            return
        per.setdefault(key, []).extend(s for s in sentences if isinstance(s, str) and s.strip())
        counts[src] = counts.get(src, 0) + len(sentences)

    for k, v in _read_json(TEXT / "susx_cupl" / "CuPL_prompts_imagenet.json").items():
        add("cupl", k, list(v))
    for k, v in _read_json(TEXT / "convprompt_descriptors" / "descriptors_imagenet.json").items():
        add("descriptors", k, [f"{_a(k).capitalize()}, which has {d}." for d in v])
    tmpl = {"important": "A photo of {a}, which has {p}.", "superclass": "{A} is a kind of {p}.",
            "around": "{A} is often seen with {p}."}
    for kind, t in tmpl.items():
        for k, v in _read_json(TEXT / "labelfree_cbm_gpt3" / f"gpt3_imagenet_{kind}.json").items():
            add(f"gpt3_{kind}", k, [t.format(a=_a(k), A=_a(k).capitalize(), p=p) for p in v])
    for e in _read_json(TEXT / "klite_wiktionary_wordnet" / "imagenet-1k_knowledge.json"):
        k = e.get("classname") or ""
        s = [f"{_a(k).capitalize()}: {d}" for d in (e.get("def_wiki"), e.get("def_wn")) if isinstance(d, str) and d.strip()]
        add("wiktionary_wordnet", k, s)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(per, ensure_ascii=False, indent=0), encoding="utf-8")
    return {"keys": len(per), "items": sum(len(v) for v in per.values()), "per_source": counts}


# ----------------------------------------------------------------------------- config

def bench_config(name: str, tree: Path, desc: Path, encoder: str, batch: int, workers: int, anchors_chunk: int) -> dict:
    return {
        "results_dir": "results",
        "datasets": {name: {
            "data": {"name": "imagenet_lt", "root": str(tree), "profile": "file", "image_size": 32,
                     "normalize": "imagenet", "num_workers": workers},
            "corpus": {"sources": ["prompt", "descriptions"], "descriptions_file": str(desc)},
            "captions": {"enabled": False},
            "model": {"image_encoder": encoder, "text_encoder": "minilm", "embed_dim": 128},
            "pretrain": {"epochs": 1, "batch_size": batch, "lr": 1.0e-3, "device": "cpu", "sampler": "sqrt",
                         "channels_last": True},
            "anchors": {"num_anchors": 64, "images_per_class": 50, "chunk_size": anchors_chunk},
            "finetune": {"heads": ["lgr", "fc"], "epochs": 1, "batch_size": batch, "lr": 1.0e-3, "device": "cpu",
                         "sampler": "sqrt", "channels_last": True},
            "evaluate": {"device": "cpu"},
            "report": {"title": f"ImageNet-LT format rehearsal ({name}: synthetic 32 px images, real class text)"},
        }},
    }


# ----------------------------------------------------------------------------- measurement

def read_benchmark_tsv(p: Path) -> dict:
    """Snakemake benchmark TSV (header + one row per repeat) -> the first row as floats."""
    lines = [ln for ln in p.read_text().splitlines() if ln.strip()]
    head, row = lines[0].split("\t"), lines[1].split("\t")
    out = {}
    for h, v in zip(head, row):
        try:
            out[h] = float(v)
        except ValueError:
            out[h] = v
    return out


def measured_split(log_path: Path, wall: float) -> str:
    """What the stage's own log says about where its time went (pre-training: text encoding vs the epochs)."""
    if not log_path.is_file():
        return ""
    text = log_path.read_text(errors="replace")
    enc = re.search(r"encoding (\d+) sentences", text)
    fit = re.search(r"pretrain done in ([\d.]+)s", text)
    if enc and fit:
        return (f" — measured: {int(enc.group(1)):,} sentences encoded + start-up {wall - float(fit.group(1)):.0f} s, "
                f"CVLP epoch {float(fit.group(1)):.0f} s (`pretrain done in` line of its log)")
    m = re.search(r"anchors: scored (\d+) sentences against (\d+) images", text)
    if m:
        return f" — measured: {int(m.group(1)):,} sentences x {int(m.group(2)):,} images"
    return ""


def du(base: Path, patterns: list[str]) -> int:
    return int(sum(f.stat().st_size for pat in patterns for f in base.glob(pat) if f.is_file()))


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--classes", type=int, default=1000, help="number of classes (1000 = the real ImageNet-LT size)")
    ap.add_argument("--encoder", default="demo_cnn", help="image encoder (demo_cnn, resnet32)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1, help="data.num_workers")
    ap.add_argument("--anchors-chunk", type=int, default=1024, help="anchors.chunk_size (sentences per AnSS chunk)")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--work", default=None, help="where the synthetic tree goes (default results/<name>_data)")
    ap.add_argument("--tag", default="", help="suffix of the dataset name and of the results files")
    ap.add_argument("--collect-only", action="store_true", help="do not run; collect an existing run's measurements")
    a = ap.parse_args(argv)
    if not (TEXT / "susx_cupl" / "CuPL_prompts_imagenet.json").is_file():
        print(f"the real ImageNet class text is missing under {TEXT} (see its README)", file=sys.stderr)
        return 2
    name = f"imagenet_lt_rehearsal{a.tag}"
    res_dir = ROOT / "results" / name
    work = Path(a.work) if a.work else ROOT / "results" / f"{name}_data"
    tree, desc = work / "tree", work / "imagenet_descriptions.json"
    cfg_path = work / "config.yaml"
    out_json = ROOT / "benchmarks" / "results" / f"imagenet_lt_rehearsal{a.tag}.json"
    args = [x for x in (argv if argv is not None else sys.argv[1:]) if x != "--collect-only"]
    command = ("python benchmarks/imagenet_lt_rehearsal.py " + " ".join(shlex.quote(x) for x in args)).strip()
    prep: dict = {}
    if not a.collect_only:
        sys.path.insert(0, str(ROOT / "src"))
        from langtail.data.synthetic_lt import write_lt_tree

        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        if (tree / "ImageNet_LT_test.txt").is_file() and (work / "tree.json").is_file() \
                and json.loads((work / "tree.json").read_text())["num_classes"] == a.classes:
            summary = json.loads((work / "tree.json").read_text())  # a resumed run: keep the first run's timing
            if (work / "prep.json").is_file():
                summary = {**summary, **json.loads((work / "prep.json").read_text()).get("tree", {}), "reused": True}
        else:
            summary = write_lt_tree(tree, a.classes, layout="imagenet", image_size=32, seed=0)
            summary = {k: v for k, v in summary.items() if k in ("num_classes", "sizes", "bytes")}
            (work / "tree.json").write_text(json.dumps(summary))
        prep["tree"] = summary if summary.get("reused") else {**summary, "seconds": round(time.perf_counter() - t0, 1)}
        t0 = time.perf_counter()
        prep["descriptions"] = {**build_descriptions(desc), "seconds": round(time.perf_counter() - t0, 1)}
        cfg_path.write_text(yaml.safe_dump(bench_config(name, tree, desc, a.encoder, a.batch, a.workers,
                                                        a.anchors_chunk), sort_keys=False))
        (work / "prep.json").write_text(json.dumps(prep))
        print(json.dumps(prep), flush=True)
        cmd = [sys.executable, "-m", "snakemake", "--cores", str(a.cores), "--configfile", str(cfg_path),
               "--rerun-incomplete", "-p", f"results/{name}/report.md"]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
               "HF_HUB_OFFLINE": "1"}
        print("+", shlex.join(cmd), flush=True)
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=ROOT, check=True, env=env)
        prep["snakemake_wall_s"] = round(time.perf_counter() - t0, 1)
        (work / "prep.json").write_text(json.dumps(prep))
    else:
        prep = json.loads((work / "prep.json").read_text())

    import pandas as pd  # noqa: E402  (only needed to read the artifacts' sizes)

    corpus_meta = {}
    try:
        import pyarrow.parquet as pq

        md = pq.read_schema(res_dir / "corpus.parquet").metadata or {}
        corpus_meta = {k.decode(): v.decode() for k, v in md.items()}
        n_sent = pq.read_metadata(res_dir / "corpus.parquet").num_rows
    except Exception:  # noqa: BLE001 - sizes are informative only
        n_sent = None
    manifest = pd.read_parquet(res_dir / "manifest.parquet", columns=["split"])
    n_split = manifest["split"].value_counts().to_dict()
    rows = []
    for tsv in sorted((res_dir / "benchmarks").glob("*.tsv")):
        stage = tsv.stem
        b = read_benchmark_tsv(tsv)
        outs, cost = STAGES.get(stage, ([], ""))
        cost += measured_split(res_dir / "logs" / f"{stage}.log", float(b.get("s", 0.0)))
        rows.append({"stage": stage, "wall_s": round(float(b.get("s", float("nan"))), 1),
                     "peak_rss_mb": round(float(b.get("max_rss", float("nan"))), 1),
                     # PSS splits shared pages (DataLoader workers forked from the stage) between processes
                     "peak_pss_mb": round(float(b.get("max_pss", float("nan"))), 1),
                     "cpu_time_s": round(float(b.get("cpu_time", float("nan"))), 1),
                     "output_bytes": du(res_dir, outs), "dominant_cost": cost})
    order = {s: i for i, s in enumerate(STAGES)}
    rows.sort(key=lambda r: order.get(r["stage"], 99))
    worst = max((r["peak_rss_mb"] for r in rows), default=0.0)
    done = {r["stage"] for r in rows}
    unfinished = [st for st in STAGES if st not in done]
    result = {
        "command": command,
        "workflow_command": f"snakemake --cores {a.cores} --configfile {cfg_path.relative_to(ROOT) if cfg_path.is_relative_to(ROOT) else cfg_path} results/{name}/report.md",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "setting": {"classes": a.classes, "images": {k: int(v) for k, v in n_split.items()}, "sentences": n_sent,
                    "encoder": a.encoder, "text_encoder": "minilm", "embed_dim": 128, "num_anchors": 64,
                    "epochs": 1, "batch_size": a.batch, "num_workers": a.workers, "anchors_chunk": a.anchors_chunk},
        "prep": prep,
        "corpus_summary": {k: corpus_meta[k] for k in ("n_sentences", "M_min", "M_median", "M_max") if k in corpus_meta},
        "stages": rows,
        "total_stage_wall_s": round(sum(r["wall_s"] for r in rows), 1),
        "max_peak_rss_mb": worst,
        "target_4gb_met": bool(worst <= 4 * 1024),
        "not_finished_at_collection": unfinished,
        "measured_with": "Snakemake benchmark: directive (results/<name>/benchmarks/<job>.tsv: s, max_rss MB, cpu_time)",
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(result, indent=2) + "\n")
    md = [f"# ImageNet-LT rehearsal ({a.classes} classes, CPU)", "",
          f"Command: `{command}`  ", f"Workflow: `{result['workflow_command']}`  ",
          f"Machine: {os.cpu_count()} CPUs (shared), {platform.platform()}", "",
          f"Setting: {a.classes} classes; images {result['setting']['images']}; "
          f"{n_sent} class sentences (80 prompts + real ImageNet text); {a.encoder} + MiniLM, D = 128, M = 64, "
          f"1 epoch pre-training and fine-tuning (heads lgr, fc), batch {a.batch}, {a.workers} loader worker(s).", "",
          f"Preparation (not a workflow stage): synthetic tree {prep.get('tree', {}).get('seconds', '?')} s "
          f"({fmt_bytes(prep.get('tree', {}).get('bytes', 0))} of JPEGs), descriptions file "
          f"{prep.get('descriptions', {}).get('seconds', '?')} s "
          f"({prep.get('descriptions', {}).get('items', '?')} items).", "",
          "| stage (job) | wall s | CPU s | peak RSS | peak PSS | output | dominant cost |",
          "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        md.append(f"| {r['stage']} | {r['wall_s']:.1f} | {r['cpu_time_s']:.1f} | {r['peak_rss_mb']:.0f} MB | "
                  f"{r['peak_pss_mb']:.0f} MB | {fmt_bytes(r['output_bytes'])} | {r['dominant_cost']} |")
    if unfinished:
        md += ["", f"**Not finished when these figures were collected:** {', '.join(unfinished)} "
                   "(the run continues in the background; `--collect-only` rewrites this file from its benchmark TSVs)."]
    md += ["", f"Sum of stage wall times: {result['total_stage_wall_s']:.0f} s; snakemake wall "
               f"{prep.get('snakemake_wall_s', '?')} s. Highest peak RSS: {worst:.0f} MB "
               f"({'within' if result['target_4gb_met'] else 'ABOVE'} the 4 GB target).",
           "", f"Measured with {result['measured_with']}. Peak RSS sums the job's process tree (DataLoader "
               "workers count the pages they share with the stage again); PSS splits shared pages.", ""]
    out_json.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())
