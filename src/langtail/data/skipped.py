"""Unreadable images skipped by a training or evaluation stage: recorded, never silent.

:class:`~langtail.data.dataset.ManifestDataset` turns an image that cannot be decoded
(:class:`~langtail.data.manifest.UnreadableImage`) into a :class:`Skip`;
:func:`~langtail.data.dataset.collate_skip` drops it from an evaluation batch (a training
batch gets a deterministic substitute instead, so batch shapes stay equal on every rank) and
lists it under the batch key ``skipped_images`` (``[(image, split, reason)]``, plain Python
values, so it crosses DataLoader worker processes). Loops feed batches to a :class:`SkipLog`
(a multi-process training run merges every rank's at each epoch's end,
:func:`langtail.train.steps.merge_rank_skips`), and the stage writes it with
:func:`write_skipped` beside its main output.

``skipped_images.parquet`` (one row per distinct image, in first-skip order):

========= ======= ==============================================================
column    dtype   meaning
========= ======= ==============================================================
image     string  manifest image reference
split     string  manifest split of the row (``train`` / ``val`` / ``test``)
stage     string  stage that skipped it (``pretrain``, ``finetune/lgr``, ``evaluate/fc``, ...)
reason    string  the decoder's error message (first occurrence)
times     int32   how often it was skipped (training: once per epoch that drew it)
========= ======= ==============================================================

Metadata (``langtail`` key): ``stage``, ``n_images`` (rows), ``n_skips`` (sum of
``times``). A stage with no skip writes the file with zero rows.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import pandas as pd

from langtail import io
from langtail.schemas import SKIPPED_COLUMNS, SKIPPED_SCHEMA

SKIPPED_FILE = "skipped_images.parquet"


class Skip(NamedTuple):
    """A dataset item that could not be read (returned instead of ``(image, label, row)``)."""

    row: int
    image: str
    split: str
    reason: str


class SkipLog:
    """Distinct skipped images with their first reason and a skip count, in first-skip order."""

    def __init__(self) -> None:
        self._rec: dict[str, list[Any]] = {}  # image -> [split, reason, times]

    def add(self, image: str, split: str, reason: str, times: int = 1) -> None:
        r = self._rec.get(image)
        if r is None:
            self._rec[image] = [split, reason, int(times)]
        else:
            r[2] += int(times)

    def add_batch(self, batch: Mapping[str, Any]) -> None:
        """Record the ``skipped_images`` list of a collated batch (see the module docstring)."""
        for image, split, reason in batch.get("skipped_images", ()):
            self.add(image, split, reason)

    @property
    def n_images(self) -> int:
        return len(self._rec)

    @property
    def n_skips(self) -> int:
        return sum(r[2] for r in self._rec.values())

    def to_list(self) -> list[list[Any]]:
        """``[[image, split, reason, times]]``: plain values (for resume files)."""
        return [[k, s, why, n] for k, (s, why, n) in self._rec.items()]

    @classmethod
    def from_list(cls, items: Iterable[Iterable[Any]]) -> "SkipLog":
        log = cls()
        for image, split, reason, times in items:
            log.add(str(image), str(split), str(reason), int(times))
        return log

    def frame(self, stage: str) -> pd.DataFrame:
        return pd.DataFrame({
            "image": pd.Series(list(self._rec), dtype=object),
            "split": pd.Series([r[0] for r in self._rec.values()], dtype=object),
            "stage": pd.Series([stage] * len(self._rec), dtype=object),
            "reason": pd.Series([r[1] for r in self._rec.values()], dtype=object),
            "times": pd.Series([r[2] for r in self._rec.values()], dtype="int32"),
        })


def write_skipped(path: str | Path, log: SkipLog, stage: str) -> None:
    """Write ``skipped_images.parquet`` (schema in the module docstring), atomically."""
    df = log.frame(stage)
    io.check_columns(df, SKIPPED_COLUMNS, where="skipped_images")
    io.write_parquet(path, df, metadata={"stage": stage, "n_images": log.n_images, "n_skips": log.n_skips},
                     schema=SKIPPED_SCHEMA)


def read_skipped(path: str | Path) -> pd.DataFrame:
    return io.read_parquet(path, SKIPPED_COLUMNS)


def skipped_path(stage_output: str | Path) -> Path:
    """Where a stage whose main output is ``stage_output`` writes its skip record: the same folder."""
    return Path(stage_output).parent / SKIPPED_FILE
