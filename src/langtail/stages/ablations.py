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
from langtail.report.seeds import close_pairs, fmt_runs
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
    ("LIFT", "LIFT: lightweight fine-tuning + text-initialised cosine head + LA loss + TTA (recipe `lift`)",
     "lift", "fc_cvlp"),
]


def metrics_key(variant: str | None, model: str, rep: str = "") -> str:
    """How the rule names one metrics file: ``model`` (main run) or ``variant:model``, with
    ``:seed<k>`` appended for a seed replicate ``rep = "/seed<k>"`` (``finetune.seeds``)."""
    key = f"{variant}:{model}" if variant else model
    return f"{key}:{rep.strip('/')}" if rep else key


def split_seed(key: str) -> tuple[str, str]:
    """``"no_cvlp:lgr:seed1" -> ("no_cvlp:lgr", "seed1")``; ``"lgr" -> ("lgr", "")``."""
    head, _, last = key.rpartition(":")
    if head and last.startswith("seed") and last[4:].isdigit():
        return head, last
    return key, ""


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
    replicates: dict[str, list[Path]] = {}
    for k in sorted(metrics, key=lambda k: (split_seed(k)[0], int(split_seed(k)[1][4:] or -1))):
        base, rep = split_seed(k)
        if rep:
            replicates.setdefault(base, []).append(metrics[k])
    rows, runs_by_row = [], {}
    for tag, label, v, model in entries:
        if (v, model) not in rows_needed(cfg):
            continue
        key = metrics_key(v, model)
        if key not in metrics:
            raise ValueError(f"ablations: no metrics file given for {key!r} (--metrics {key}=PATH)")
        setting = json.dumps(variants.get(v, {}), sort_keys=True) if v else f"main run, `{model}`"
        runs = [io.read_json(metrics[key])] + [io.read_json(p) for p in replicates.get(key, [])]
        runs_by_row[f"{tag} {label}".strip()] = runs
        cells = fmt_runs(runs) if len(runs) > 1 else fmt_accuracies(runs[0])
        rows.append([tag, label, *cells, setting] + ([len(runs)] if replicates else []))
    lines = [f"# Ablations: {dataset}", "",
             "Rows follow the VL-LTR paper's Table 4 (#1-#7), Table 10 (prompt only) and Table 8 (zero-shot);",
             "every row shares the dataset, backbone, epochs, sampler and seed of the main run and changes only",
             "what the setting column says. Top-1 accuracy (%).", "",
             md_table(rows, ["row", "setting", *ACCURACY_KEYS, "overrides"] + (["seeds"] if replicates else [])), ""]
    if replicates:
        close = close_pairs(runs_by_row)
        lines += ["Trained rows: mean ± sample std over the seeds of `finetune.seeds` (column seeds = runs); "
                  "zero-shot rows are not trained and have one run.", ""]
        if close:
            lines += ["Rows whose difference is smaller than their spread (|mean_a - mean_b| < std_a + std_b):", "",
                      *close, ""]
    io.write_text(out, "\n".join(lines))
    log.info("ablations: %d rows -> %s", len(rows), out)
