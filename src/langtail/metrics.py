"""Top-1 accuracy by shot group and per class, and the evaluation files every model writes.

Shared by ``langtail evaluate`` (VL-LTR heads, zero-shot) and ``langtail ca4ltr-evaluate``;
file schemas: ``docs/artifacts.md`` (evaluate).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from langtail import io
from langtail.data.manifest import GROUPS
from langtail.schemas import PER_CLASS_COLUMNS

log = logging.getLogger(__name__)

#: the accuracy keys of every metrics.json, in table order
ACCURACY_KEYS = ("overall", "many", "medium", "few")


def fmt_pct(v: Any) -> str:
    """An accuracy in % with one decimal; ``None`` / NaN -> "–"."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def fmt_accuracies(metrics: dict[str, Any]) -> list[str]:
    """The ``ACCURACY_KEYS`` cells of one metrics dict, formatted by :func:`fmt_pct`."""
    return [fmt_pct(metrics[k]) for k in ACCURACY_KEYS]


def accuracy_table(pred: np.ndarray, labels: np.ndarray, class_names: list[str], counts: np.ndarray,
                   groups: np.ndarray, group_pred: np.ndarray | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Group metrics (per-image top-1 %, within each shot group) and the per-class table.

    ``pred``, ``labels``: ``[N]`` class ids. ``overall`` is the accuracy of ``pred``; the shot
    groups and the per-class table use ``group_pred`` when given (the authors' evaluation ranks
    classes for the shot groups by the raw logit sum, ``evaluate.group_ranking: logit_sum``)."""
    overall = float(100.0 * (pred == labels).mean())
    if group_pred is not None:
        pred = group_pred
    C = len(class_names)
    correct = np.bincount(labels, weights=(pred == labels).astype(np.float64), minlength=C).astype(np.int64)
    n = np.bincount(labels, minlength=C)
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(n > 0, 100.0 * correct / np.maximum(n, 1), np.nan)
    per = pd.DataFrame({"class_id": np.arange(C, dtype=np.int32), "class_name": class_names,
                        "train_count": counts.astype(np.int32), "group": groups.astype(object),
                        "n_test": n.astype(np.int32), "correct": correct.astype(np.int32), "accuracy": acc})
    m: dict[str, Any] = {"overall": overall, "n_images": int(len(labels))}
    for g in GROUPS:
        in_g = groups[labels] == g
        m[g] = float(100.0 * (pred[in_g] == labels[in_g]).mean()) if in_g.any() else None
        m[f"n_classes_{g}"] = int((groups == g).sum())
    return m, per


def write_eval(out_dir: Path, metrics: dict[str, Any], per: pd.DataFrame) -> None:
    """Write ``per_class.parquet`` and ``metrics.json`` (atomically) into ``out_dir``."""
    io.check_columns(per, PER_CLASS_COLUMNS, "per_class")
    io.write_parquet(Path(out_dir) / "per_class.parquet", per,
                     metadata={"model": metrics["model"], "split": metrics["split"]})
    io.write_json(Path(out_dir) / "metrics.json", metrics)
    log.info("%s: overall %s | many %s | medium %s | few %s", metrics["model"], *fmt_accuracies(metrics))
