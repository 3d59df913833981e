"""Per-epoch validation of the training stages: overall / many / medium / few top-1 accuracy
on the manifest's ``val`` split (the dataset's own, or ``data.val_from_train``); never the
test split. The stage passes the prediction rule it evaluates with; :func:`validator` turns
it into the ``validate()`` callback of :func:`langtail.train.loop.fit`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from langtail.data.manifest import GROUPS, class_counts, class_groups
from langtail.metrics import accuracy_table

log = logging.getLogger(__name__)

VAL_SPLIT = "val"


def val_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The manifest's ``val`` rows (index = manifest row), possibly empty."""
    return df[df["split"] == VAL_SPLIT]


def require_val(df: pd.DataFrame, select: str, key: str, manifest_path: Path | str) -> bool:
    """Whether the manifest has a val split; ``select == "best_val"`` without one raises,
    naming ``key`` and the fix."""
    has = bool(len(val_rows(df)))
    if not has and select == "best_val":
        raise ValueError(f"{key}: best_val, but {manifest_path} has no val split: set data.val_from_train "
                         f"(e.g. 0.1, a held-out part of train) or {key}: last")
    return has


def group_accuracy(pred: np.ndarray, labels: np.ndarray, df: pd.DataFrame, class_names: list[str]) -> dict[str, float | None]:
    """``{overall, many, medium, few}`` (top-1 %; ``None`` for a group without val images) of
    ``pred [N]`` vs ``labels [N]``, shot groups from the manifest ``df``'s train counts."""
    C = len(class_names)
    m, _ = accuracy_table(pred, labels, class_names, class_counts(df, C), class_groups(df, C))
    return {"overall": m["overall"], **{g: m[g] for g in GROUPS}}


def validator(predict: Callable[[Any], tuple[np.ndarray, np.ndarray]], loader, df: pd.DataFrame,
              class_names: list[str], model: torch.nn.Module, desc: str) -> Callable[[], dict[str, float | None]]:
    """``validate()`` for :func:`langtail.train.loop.fit`: ``predict(loader) -> (pred [N], labels [N])``
    with ``model`` in eval mode, under a forked CPU RNG (validating leaves the training's
    random stream as it was), then :func:`group_accuracy`. ``model``'s train/eval mode is restored."""

    def validate() -> dict[str, float | None]:
        was_training = model.training
        model.eval()
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            pred, labels = predict(loader)
        model.train(was_training)
        acc = group_accuracy(np.asarray(pred), np.asarray(labels), df, class_names)
        log.debug("%s: val %s", desc, acc)
        return acc

    return validate


def checkpoint_selection(extra: dict[str, Any]) -> dict[str, Any]:
    """Which epoch a training checkpoint holds (``extra.selected`` of :func:`langtail.train.loop.fit`;
    older checkpoints: the last epoch): ``{"rule": "last"|"best_val", "epoch": int[, "val_overall": float]}``."""
    sel = extra.get("selected")
    if sel:
        return dict(sel)
    hist = extra.get("history") or []
    return {"rule": "last", "epoch": int(hist[-1]["epoch"]) if hist else int(extra.get("epochs") or 0)}
