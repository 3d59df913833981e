"""Seed replicates (``finetune.seeds``): mean +/- std per row and per shot group, and which rows
differ by less than their spread.

Rendering only: the stages pass, per row, the ``metrics.json`` dicts of its replicates (one per
seed). std is the sample standard deviation (ddof 1; "–" for a single seed). Two rows "differ
by less than their spread" on a group when ``|mean_a - mean_b| < std_a + std_b``.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

from langtail.metrics import ACCURACY_KEYS, fmt_pct
from langtail.report.tables import md_table

Runs = Sequence[Mapping[str, Any]]


def mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None, int]:
    """``(mean, sample std or None, n)`` of the non-null values (``(None, None, 0)`` when none)."""
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    if not v:
        return None, None, 0
    m = sum(v) / len(v)
    s = math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return m, s, len(v)


def fmt_mean_std(runs: Runs, key: str) -> str:
    """``"71.3 ± 0.8"`` (one seed: the value alone)."""
    m, s, _ = mean_std([r.get(key) for r in runs])
    if m is None:
        return "–"
    return fmt_pct(m) if s is None else f"{m:.1f} ± {s:.1f}"


def fmt_runs(runs: Runs) -> list[str]:
    """The :data:`ACCURACY_KEYS` cells of one row's replicates."""
    return [fmt_mean_std(runs, k) for k in ACCURACY_KEYS]


def close_pairs(rows: Mapping[str, Runs], keys: Sequence[str] = ACCURACY_KEYS) -> list[str]:
    """One sentence per (row pair, group) whose means differ by less than ``std_a + std_b``
    (only rows with at least two seeds have a spread)."""
    out = []
    for (a, ra), (b, rb) in itertools.combinations(rows.items(), 2):
        close = []
        for k in keys:
            ma, sa, na = mean_std([r.get(k) for r in ra])
            mb, sb, nb = mean_std([r.get(k) for r in rb])
            if ma is None or mb is None or (sa is None and sb is None):
                continue
            spread = (sa or 0.0) + (sb or 0.0)
            if abs(ma - mb) < spread:
                close.append(f"{k} ({abs(ma - mb):.1f} < {spread:.1f})")
        if close:
            out.append(f"- {a} vs {b}: differ by less than their spread on {', '.join(close)}.")
    return out


def seeds_section(rows: Mapping[str, Runs], seeds: Mapping[str, Sequence[int]] | None = None,
                  heading: str = "## Seeds: mean ± std") -> list[str]:
    """Markdown: per row, the seeds and mean ± std of every group; then the pairs that differ by
    less than their spread. ``rows``: label -> replicate metrics; ``seeds``: label -> their seeds."""
    seeds = seeds or {}
    table = [[label, ", ".join(map(str, seeds.get(label, []))) or str(len(runs)), *fmt_runs(runs)]
             for label, runs in rows.items()]
    lines = [heading, "",
             "Top-1 accuracy (%) over the seed replicates of the training runs (`finetune.seeds`: fine-tuning "
             "and CA4LTR repeat per seed; CVLP pre-training, anchors and text embeddings are shared). "
             "std = sample standard deviation.", "",
             md_table(table, ["row", "seeds", *ACCURACY_KEYS]), ""]
    close = close_pairs(rows)
    if close:
        lines += ["Rows whose difference is smaller than their spread (|mean_a - mean_b| < std_a + std_b): "
                  "do not read an order into them.", "", *close, ""]
    elif any(len(r) > 1 for r in rows.values()):
        lines += ["Every pair of rows differs by more than the sum of their standard deviations.", ""]
    return lines
