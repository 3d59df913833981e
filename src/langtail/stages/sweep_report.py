"""Stage ``sweep_report`` (rule ``sweep_report``, ``langtail sweep-report``): one grid sweep's table.

Reads the ``metrics.json`` files its rule passes: for every cell ``<sweep>_<i>`` of the sweep
(:mod:`langtail.sweeps`), every trained head and every seed of ``finetune.seeds``
(``results/<dataset>+<sweep>_<i>/eval/<head>[/seed<k>]/metrics.json``, or the base run's file
when the cell does not change that stage). Writes ``results/<dataset>/sweeps/<sweep>.md``:
per head, one row per cell with the swept values, the test accuracy (overall / many /
medium / few, mean ± std over the seeds), the validation accuracy of the evaluated
checkpoints (``metrics.json`` ``selected.val_overall``, mean ± std) and their epochs; the
cell with the best mean validation accuracy is marked. Cells are never ranked on test.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from langtail import io
from langtail.config import DatasetConfig
from langtail.metrics import ACCURACY_KEYS
from langtail.report.seeds import fmt_mean_std, fmt_runs, mean_std
from langtail.report.tables import md_table

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {"finetune": ("select",)}


def parse_metrics(items: Mapping[str, Path]) -> dict[str, dict[str, list[dict]]]:
    """``{"<cell>:<head>[/seed<k>]": path}`` -> ``{head: {cell: [metrics of each seed]}}``."""
    out: dict[str, dict[str, list[dict]]] = {}
    for key, path in items.items():
        cell, sep, run = key.partition(":")
        if not sep or not cell or not run:
            raise ValueError(f"sweep-report: metrics key {key!r}: expected <cell>:<head>[/seed<k>]")
        head = run.split("/", 1)[0]
        out.setdefault(head, {}).setdefault(cell, []).append(io.read_json(path))
    return out


def _val(runs: Sequence[Mapping[str, Any]]) -> list[float | None]:
    return [(r.get("selected") or {}).get("val_overall") for r in runs]


def head_table(head: str, grid: Mapping[str, Mapping[str, Any]], cells: Mapping[str, list[dict]]) -> list[str]:
    """Markdown table of one head: a row per cell of ``grid`` (in grid order)."""
    keys = list(next(iter(grid.values())))
    means = {c: mean_std(_val(cells.get(c, [])))[0] for c in grid}
    ranked = {c: m for c, m in means.items() if m is not None}
    best = max(ranked, key=lambda c: ranked[c]) if ranked else None
    rows = []
    for c, values in grid.items():
        runs = cells.get(c, [])
        if not runs:
            raise ValueError(f"sweep-report: no metrics for cell {c!r}, head {head!r}")
        epochs = ", ".join(str((r.get("selected") or {}).get("epoch", "?")) for r in runs)
        rows.append([("**" + c + "** (best val)") if c == best else c, *(values[k] for k in keys), *fmt_runs(runs),
                     fmt_mean_std([{"v": v} for v in _val(runs)], "v"), len(runs), epochs])
    header = ["cell", *keys, *[f"test {k}" for k in ACCURACY_KEYS], "val overall", "seeds", "epoch(s)"]
    lines = [f"### {head}", "", md_table(rows, header), ""]
    if best is None:
        lines += ["No validation accuracy recorded (the manifest has no val split: set `data.val_from_train`): "
                  "no cell is marked, since cells are never chosen on the test split.", ""]
    else:
        lines += [f"Best on validation: **{best}** (val overall {ranked[best]:.2f}).", ""]
    return lines


def run(cfg: DatasetConfig, dataset: str, sweep: str, grid: Mapping[str, Mapping[str, Any]],
        metrics: Mapping[str, Path], out: Path) -> None:
    """``grid``: cell -> ``{"section.key": value}`` (in grid order); ``metrics``: see :func:`parse_metrics`."""
    if not grid:
        raise ValueError(f"sweep-report: sweep {sweep!r} has no cells")
    by_head = parse_metrics(metrics)
    lines = [f"# Sweep {sweep}: {dataset}", "",
             f"{len(grid)} cells ({' x '.join(str(len({json.dumps(v[k]) for v in grid.values()})) for k in next(iter(grid.values())))} grid); "
             f"cell `{sweep}_<i>` = results/{dataset}+{sweep}_<i>/ (a cell reuses every upstream artifact it does "
             "not change). Test accuracy in %, mean ± std over `finetune.seeds` (one seed: the value); "
             f"checkpoints: `finetune.select: {cfg.finetune.select}`; val overall = the evaluated checkpoint's "
             "accuracy on the val split.", ""]
    for head, cells in by_head.items():
        lines += head_table(head, grid, cells)
    io.write_text(out, "\n".join(lines))
    log.info("sweep %s: %d cells x %d heads -> %s", sweep, len(grid), len(by_head), out)
