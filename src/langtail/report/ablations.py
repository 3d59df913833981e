"""Stage ``ablations``: the paper's Table 4 / Table 10 rows for one dataset.

Reads ``results/<dataset>/eval/<head>/metrics.json`` of the main run (heads ``lgr``, ``fc``,
``fc_cvlp``, ``knn`` and ``zeroshot`` where present) and the LGR metrics of every variant
listed in ``report.ablations`` (``results/<dataset>+<variant>/eval/lgr/metrics.json``, or the
base run's file when the variant did not change that stage). Writes ``ablations.md``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from langtail import io
from langtail.config import DatasetConfig, variant_overrides

log = logging.getLogger(__name__)

ROWS = [  # (paper row, label, source): source = main-run model or "+variant"
    ("#1", "full: CVLP + AnSS + LGR", "lgr"),
    ("#2", "without CVLP (fine-tune from initial weights)", "+no_cvlp"),
    ("#3", "without CLIP weights", "+no_clip_weights"),
    ("#4", "without distillation", "+no_distill"),
    ("#5", "FC head on CVLP encoder", "fc_cvlp"),
    ("#6", "KNN head on CVLP encoder", "knn"),
    ("#7", "Cut Off instead of AnSS", "+cutoff"),
    ("T10", "prompt only text", "+prompt_only"),
    ("base", "vision-only baseline (FC, no CVLP)", "fc"),
    ("T8", "text-only zero-shot", "zeroshot"),
]


def _fmt(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def run_ablations(cfg: DatasetConfig, dataset: str, results_root: Path, out: Path,
                  variants: dict[str, dict] | None = None) -> None:
    """``variants``: {name: overrides} of the variants in ``report.ablations`` (user-defined ones)."""
    from langtail.config import stage_owner

    results_root = Path(results_root)
    raw = {"variants": variants or {}}
    rows, seen = [], set()
    variants = list(cfg.report.ablations)
    entries = list(ROWS) + [("", f"variant `{v}`", "+" + v) for v in variants if "+" + v not in {r[2] for r in ROWS}]
    for tag, label, src in entries:
        if src.startswith("+"):
            v = src[1:]
            if v not in variants:
                continue
            ds = f"{dataset}+{v}"
            path = results_root / stage_owner(raw, ds, "evaluate") / "eval" / "lgr" / "metrics.json"
            setting = json.dumps(variant_overrides(raw, v), sort_keys=True)
        else:
            path = results_root / dataset / "eval" / src / "metrics.json"
            setting = f"main run, `{src}`"
        if not path.exists():
            if src.startswith("+") or src in cfg.finetune.heads or src == "zeroshot":
                raise FileNotFoundError(f"{path}: missing; run `snakemake results/{dataset}/ablations.md`")
            continue
        m = io.read_json(path)
        rows.append(f"| {tag} | {label} | {_fmt(m['overall'])} | {_fmt(m['many'])} | {_fmt(m['medium'])} | "
                    f"{_fmt(m['few'])} | {setting} |")
        seen.add(src)
    lines = [f"# Ablations: {dataset}", "",
             "Rows follow the VL-LTR paper's Table 4 (#1-#7), Table 10 (prompt only) and Table 8 (zero-shot);",
             "every row shares the dataset, backbone, epochs, sampler and seed of the main run and changes only",
             "what the setting column says. Top-1 accuracy (%).", "",
             "| row | setting | overall | many | medium | few | overrides |", "|---|---|---|---|---|---|---|", *rows, ""]
    io.write_text(out, "\n".join(lines))
    log.info("ablations: %d rows -> %s", len(rows), out)
