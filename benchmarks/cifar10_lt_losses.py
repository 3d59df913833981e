"""CIFAR-10-LT IF100: long-tail losses with and without language guidance (issue #14).

Rows (same ResNet-32 + MiniLM, same schedule, same seed; ``finetune.loss`` varies):
FC + CE, FC + logit adjustment (loss form, tau 1), FC + balanced softmax, LGR + CE, LGR + LA,
LGR + balanced softmax, and the post-hoc logit adjustment (tau 1) of the two CE checkpoints
(``evaluate.posthoc_la_tau``: only the evaluation reruns). Every row samples instances
uniformly (``sampler: instance``): the logit-adjusted losses take the class priors from the
manifest's train counts, which is the label distribution of instance sampling.

Each loss is a variant (``results/<name>+<variant>/``), so the corpus, CVLP pre-training,
anchors and text embeddings are computed once and reused (Snakemake + ``stage_owner``).
The published from-scratch ResNet-32 figures (200 epochs) are printed beside the rows for
orientation only (as quoted in issue #14): CE 71.9, LDAM-DRW 77.0 (Cao et al. 2019), logit
adjustment 80.8 (Menon et al. 2021).

    python benchmarks/cifar10_lt_losses.py --epochs 3 --cores 2          # CPU
    python benchmarks/cifar10_lt_losses.py --epochs 200 --device cuda    # GPU, the published length
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

#: variant -> overrides (results/<name>+<variant>/)
VARIANTS = {
    "la": {"finetune": {"loss": "logit_adjusted", "la_tau": 1.0}},
    "bs": {"finetune": {"loss": "balanced_softmax"}},
    "posthoc": {"evaluate": {"posthoc_la_tau": 1.0}},
}
#: (row label, variant or "", model, published figure for orientation or "")
ROWS = [
    ("FC + CE", "", "fc", "CE 71.9"),
    ("FC + CE, post-hoc LA (tau 1)", "posthoc", "fc", ""),
    ("FC + logit-adjusted loss (tau 1)", "la", "fc", "LA loss 80.8"),
    ("FC + balanced softmax", "bs", "fc", ""),
    ("LGR + CE (VL-LTR)", "", "lgr", ""),
    ("LGR + CE, post-hoc LA (tau 1)", "posthoc", "lgr", ""),
    ("LGR + logit-adjusted loss (tau 1)", "la", "lgr", ""),
    ("LGR + balanced softmax", "bs", "lgr", ""),
]
PUBLISHED = ("Published top-1 of a from-scratch ResNet-32 on CIFAR-10-LT IF100, 200 epochs, as quoted in issue #14: "
             "CE 71.9, LDAM-DRW 77.0 (Cao et al. 2019), logit adjustment 80.8 (Menon et al. 2021).")


def bench_config(name: str, epochs: int, device: str, lr: float, batch: int) -> dict:
    from cifar10_lt import vlltr_sections  # the shared CIFAR-10-LT setting (this folder is on sys.path)

    return {
        "results_dir": "results",
        "variants": VARIANTS,
        "datasets": {name: vlltr_sections(SHARED, epochs, device, lr, batch, "instance", ["lgr", "fc"])},
    }


#: the order the rows are computed in (one Snakemake call each, so an interrupted run leaves the
#: first rows finished): the FC rows of the issue and FC's post-hoc LA (evaluation only), then the
#: LGR rows (they need CVLP pre-training, anchors and text embeddings first), then BS
PRIORITY = [("", "fc"), ("la", "fc"), ("posthoc", "fc"), ("", "lgr"), ("la", "lgr"), ("posthoc", "lgr"),
            ("bs", "fc"), ("bs", "lgr")]


def target(name: str, variant: str, model: str) -> str:
    return f"results/{name}{'+' + variant if variant else ''}/eval/{model}/metrics.json"


def collect(name: str) -> list[dict]:
    sys.path.insert(0, str(ROOT / "src"))
    from langtail.config import load_yaml
    from langtail.stages import stage_owner

    raw = load_yaml(ROOT / "results" / f"{name}.config.yaml")
    out = []
    for label, variant, model, pub in ROWS:
        ds = stage_owner(raw, f"{name}+{variant}" if variant else name, "evaluate")
        path = ROOT / "results" / ds / "eval" / model / "metrics.json"
        if not path.exists():  # not computed (interrupted run): shown as such, never dropped
            out.append({"row": label, "overall": None, "many": None, "medium": None, "published": pub,
                        "source": "not run"})
            continue
        m = json.loads(path.read_text())
        out.append({"row": label, **{k: m[k] for k in ("overall", "many", "medium")}, "published": pub,
                    "source": f"results/{ds}/eval/{model}"})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--name", default="")
    ap.add_argument("--collect-only", action="store_true")
    a = ap.parse_args()
    if not (SHARED / "data/cifar-10-python-from-jpeg.tar.gz").exists():
        print(f"needs {SHARED}/data/cifar-10-python-from-jpeg.tar.gz", file=sys.stderr)
        return 2
    name = a.name or f"cifar10_lt_losses_e{a.epochs}"
    cfg_path = ROOT / "results" / f"{name}.config.yaml"
    cfg_path.parent.mkdir(exist_ok=True)
    cfg_path.write_text(yaml.safe_dump(bench_config(name, a.epochs, a.device, a.lr, a.batch_size)))
    t0 = time.time()
    if not a.collect_only:
        for variant, model in PRIORITY:
            cmd = [sys.executable, "-m", "snakemake", "--cores", str(a.cores), "--configfile", str(cfg_path),
                   "--", target(name, variant, model)]
            print("+", shlex.join(cmd), flush=True)
            subprocess.run(cmd, cwd=ROOT, check=True)
    wall = None if a.collect_only else time.time() - t0
    rows = collect(name)
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    command = (f"python benchmarks/cifar10_lt_losses.py --epochs {a.epochs} --lr {a.lr} --batch-size {a.batch_size} "
               f"--device {a.device} --cores {a.cores}")
    schedule = (f"{a.epochs} epochs CVLP pre-training + {a.epochs} epochs fine-tuning per row, AdamW lr {a.lr}, "
                f"cosine, batch {a.batch_size}, instance sampling, augmentation on, seed 0, {a.device}")
    res = {"command": command, "wall_seconds": wall and round(wall), "epochs": a.epochs, "device": a.device,
           "schedule": schedule, "published": PUBLISHED, "rows": rows}
    (out / "cifar10_lt_losses.json").write_text(json.dumps(res, indent=2) + "\n")
    took = ("wall time not measured: --collect-only" if wall is None else
            f"wall {wall / 60:.0f} min on a shared CPU for the jobs this invocation ran")
    lines = ["# CIFAR-10-LT IF100: long-tail losses x language guidance", "",
             f"Command: `{command}` ({took}).", "",
             f"Schedule (every row): {schedule}. CIFAR-10-LT IF100 (JPEG-decoded CIFAR-10 copy, 12,406 train "
             "images), ResNet-32 from scratch + MiniLM; class text = CLIP prompts + CuPL descriptions. "
             "Groups: 8 many / 2 medium / 0 few. Priors = the manifest's train counts.", "",
             f"{PUBLISHED} They are for orientation only: this table's schedule is {a.epochs} "
             f"epoch{'s' if a.epochs != 1 else ''} per stage, "
             "far from convergence, so compare the rows with each other, not with the published numbers.", "",
             "| row | overall | many | medium | published (200 ep.) |", "|---|---|---|---|---|"]
    f = lambda v: "not run" if v is None else f"{v:.1f}"  # noqa: E731
    lines += [f"| {r['row']} | {f(r['overall'])} | {f(r['many'])} | {f(r['medium'])} | {r['published']} |"
              for r in rows]
    (out / "cifar10_lt_losses.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
