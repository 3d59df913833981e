"""Stage ``ablations``: the paper's Table 4 / Table 10 rows for one dataset.

Reads ``results/<dataset>/eval/<head>/metrics.json`` of the main run (heads ``lgr``, ``fc``,
``fc_cvlp``, ``knn``, ``zeroshot`` and ``zeroshot_anchors`` where present) and the LGR metrics of every variant
listed in ``report.ablations`` (``results/<dataset>+<variant>/eval/lgr/metrics.json``, or the
base run's file when the variant did not change that stage). Writes ``ablations.md``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from langtail import io
from langtail.config import ZEROSHOT_MODELS, DatasetConfig, variant_overrides
from langtail.report.tables import ACCURACY_KEYS, fmt_accuracies, md_table

log = logging.getLogger(__name__)

ROWS = [  # (paper row, label, variant or None for the main run, evaluated model)
    ("#1", "full: CVLP + AnSS + LGR", None, "lgr"),
    ("#2", "without CVLP (fine-tune from initial weights)", "no_cvlp", "lgr"),
    ("#3", "without CLIP weights", "no_clip_weights", "lgr"),
    ("#4", "without distillation", "no_distill", "lgr"),
    ("#5", "FC head on CVLP encoder", None, "fc_cvlp"),
    ("#6", "KNN head on CVLP encoder", None, "knn"),
    ("#7", "Cut Off instead of AnSS", "cutoff", "lgr"),
    ("T10", "prompt only text", "prompt_only", "lgr"),
    ("base", "vision-only baseline (FC, no CVLP)", None, "fc"),
    ("T8", "zero-shot after CVLP, prompt ensemble (no training images)", None, "zeroshot"),
    ("", "zero-shot after CVLP, mean of the AnSS anchors (chosen with training images)", None, "zeroshot_anchors"),
    ("T8", "zero-shot with the initial weights, prompt ensemble (CLIP zero-shot for CLIP backbones)", "no_cvlp", "zeroshot"),
]


def run_ablations(cfg: DatasetConfig, dataset: str, results_root: Path, out: Path,
                  variants: dict[str, dict] | None = None) -> None:
    """``variants``: {name: overrides} of the variants in ``report.ablations`` (user-defined ones)."""
    from langtail.config import stage_owner

    results_root = Path(results_root)
    raw = {"variants": variants or {}}
    rows = []
    variants = list(cfg.report.ablations)
    known = {r[2] for r in ROWS}
    entries = list(ROWS) + [("", f"variant `{v}`", v, "lgr") for v in variants if v not in known]
    for tag, label, v, model in entries:
        if v is not None:
            if v not in variants:
                continue
            ds = f"{dataset}+{v}"
            path = results_root / stage_owner(raw, ds, "evaluate") / "eval" / model / "metrics.json"
            setting = json.dumps(variant_overrides(raw, v), sort_keys=True)
        else:
            if model not in cfg.finetune.heads and model not in ZEROSHOT_MODELS:
                continue
            path = results_root / dataset / "eval" / model / "metrics.json"
            setting = f"main run, `{model}`"
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing; run `snakemake results/{dataset}/ablations.md`")
        m = io.read_json(path)
        rows.append([tag, label, *fmt_accuracies(m), setting])
    lines = [f"# Ablations: {dataset}", "",
             "Rows follow the VL-LTR paper's Table 4 (#1-#7), Table 10 (prompt only) and Table 8 (zero-shot);",
             "every row shares the dataset, backbone, epochs, sampler and seed of the main run and changes only",
             "what the setting column says. Top-1 accuracy (%).", "",
             md_table(rows, ["row", "setting", *ACCURACY_KEYS, "overrides"]), ""]
    io.write_text(out, "\n".join(lines))
    log.info("ablations: %d rows -> %s", len(rows), out)
