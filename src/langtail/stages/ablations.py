"""Stage ``ablations`` (rule ``ablations``, ``langtail ablations``): the paper's Table 4 / Table 10 rows.

Reads the ``metrics.json`` files its rule passes: the main run's heads (``lgr``, ``fc``,
``fc_cvlp``, ``knn`` where trained, ``zeroshot`` and ``zeroshot_anchors``) and the LGR metrics of every variant in
``report.ablations`` (``results/<dataset>+<variant>/eval/lgr/metrics.json``, or the base run's
file when the variant did not change that stage). Writes ``ablations.md``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from langtail import io
from langtail.config import ZEROSHOT_MODELS, DatasetConfig
from langtail.metrics import ACCURACY_KEYS, fmt_accuracies
from langtail.report.tables import md_table

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {"finetune": ("heads",), "report": ("ablations",)}

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


def metrics_key(variant: str | None, model: str) -> str:
    """How the rule names one metrics file: ``model`` (main run) or ``variant:model``."""
    return f"{variant}:{model}" if variant else model


def rows_needed(cfg: DatasetConfig) -> list[tuple[str | None, str]]:
    """``(variant or None, model)`` of every row this dataset's table shows (the rule's inputs)."""
    variants = list(cfg.report.ablations)
    known = {r[2] for r in ROWS}
    out = []
    for _, _, v, model in list(ROWS) + [("", "", v, "lgr") for v in variants if v not in known]:
        if (v is None and (model in cfg.finetune.heads or model in ZEROSHOT_MODELS)) or (v is not None and v in variants):
            out.append((v, model))
    return out


def run(cfg: DatasetConfig, dataset: str, out: Path, metrics: dict[str, Path], variants: dict[str, dict]) -> None:
    """``metrics``: :func:`metrics_key` -> ``metrics.json`` (what the rule passes);
    ``variants``: {name: overrides} of the variants in ``report.ablations``."""
    variant_list = list(cfg.report.ablations)
    known = {r[2] for r in ROWS}
    entries = list(ROWS) + [("", f"variant `{v}`", v, "lgr") for v in variant_list if v not in known]
    rows = []
    for tag, label, v, model in entries:
        if (v, model) not in rows_needed(cfg):
            continue
        key = metrics_key(v, model)
        if key not in metrics:
            raise ValueError(f"ablations: no metrics file given for {key!r} (--metrics {key}=PATH)")
        setting = json.dumps(variants.get(v, {}), sort_keys=True) if v else f"main run, `{model}`"
        rows.append([tag, label, *fmt_accuracies(io.read_json(metrics[key])), setting])
    lines = [f"# Ablations: {dataset}", "",
             "Rows follow the VL-LTR paper's Table 4 (#1-#7), Table 10 (prompt only) and Table 8 (zero-shot);",
             "every row shares the dataset, backbone, epochs, sampler and seed of the main run and changes only",
             "what the setting column says. Top-1 accuracy (%).", "",
             md_table(rows, ["row", "setting", *ACCURACY_KEYS, "overrides"]), ""]
    io.write_text(out, "\n".join(lines))
    log.info("ablations: %d rows -> %s", len(rows), out)
