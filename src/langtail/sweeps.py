"""Grid sweeps: the config's top-level ``sweeps:`` section, expanded into variants.

::

    sweeps:
      lr_wd:                       # results/<dataset>/sweeps/lr_wd.md
        finetune.lr: [1.0e-3, 3.0e-3]
        finetune.weight_decay: [0.0, 0.05]

Every cell of the grid (the Cartesian product, keys in the listed order) is the variant
``<sweep>_<i>`` (``i`` = the cell's 0-based index): ``results/<dataset>+<sweep>_<i>/``, built by
the same rules as any variant (``langtail.config.variant_overrides``), so a cell reuses every
upstream artifact whose keys it does not change (``langtail.stages.stage_owner``: a
``finetune.*`` grid re-runs finetune and evaluate only, never pre-training) and each cell is
an independent job on a cluster. ``langtail sweep-report`` tables the cells.
"""
from __future__ import annotations

import dataclasses
import itertools
import re
from dataclasses import dataclass
from typing import Any, Mapping

NAME = re.compile(r"^[A-Za-z0-9]+(?:_?[A-Za-z0-9]+)*$")


@dataclass(frozen=True)
class Cell:
    """One grid point: its variant name, ``{"section.key": value}`` and the config overrides."""

    name: str
    values: dict[str, Any]
    overrides: dict[str, dict[str, Any]]


class SweepError(ValueError):
    """A bad ``sweeps:`` entry (``langtail.config.validate_config`` re-raises it as a ConfigError)."""


def check_keys(raw: Mapping[str, Any], sections: Mapping[str, type]) -> None:
    """Every swept key is an existing ``section.key`` of ``sections`` (the config's dataclasses)
    and may be swept; raises :class:`SweepError` naming ``sweeps.<name>.<key>``."""
    for name, grid in (raw.get("sweeps") or {}).items():
        _check(name, grid)
        for key in grid:
            sec, _, k = str(key).partition(".")
            if sec not in sections or k not in {f.name for f in dataclasses.fields(sections[sec])}:
                raise SweepError(f"sweeps.{name}.{key}: not a config key (section.key, e.g. finetune.lr)")


def _check(name: str, grid: Mapping[str, Any]) -> None:
    if not NAME.match(name):
        raise SweepError(f"sweeps.{name}: a sweep name is letters/digits with single underscores")
    if not isinstance(grid, Mapping) or not grid:
        raise SweepError(f"sweeps.{name}: give at least one `section.key: [values]`")
    for key, values in grid.items():
        sec, _, k = str(key).partition(".")
        if sec == "resources" or (sec, k) in (("finetune", "seeds"), ("finetune", "heads")):
            raise SweepError(f"sweeps.{name}.{key}: cannot be swept (set it on the dataset: every cell uses it)")
        if not isinstance(values, list) or not values:
            raise SweepError(f"sweeps.{name}.{key}: expected a non-empty list of values, got {values!r}")


def sweep_cells(raw: Mapping[str, Any], name: str) -> list[Cell]:
    """The cells of sweep ``name`` of a workflow config (validated: names, lists; the keys
    themselves: :func:`check_keys`)."""
    sweeps = raw.get("sweeps") or {}
    if name not in sweeps:
        raise SweepError(f"unknown sweep {name!r}; configured: {', '.join(sorted(sweeps)) or 'none'} (`sweeps:`)")
    grid = sweeps[name]
    _check(name, grid)
    keys = list(grid)
    cells = []
    for i, combo in enumerate(itertools.product(*(grid[k] for k in keys))):
        values = dict(zip(keys, combo))
        over: dict[str, dict[str, Any]] = {}
        for key, v in values.items():
            sec, _, k = key.partition(".")
            over.setdefault(sec, {})[k] = v
        cells.append(Cell(f"{name}_{i}", values, over))
    return cells


def sweep_variants(raw: Mapping[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Variant name -> overrides of every cell of every configured sweep. A cell name that is
    also a user variant raises (rename the sweep)."""
    user = raw.get("variants") or {}
    out = {}
    for name in raw.get("sweeps") or {}:
        for c in sweep_cells(raw, name):
            if c.name in user:
                raise SweepError(f"sweeps.{name}: cell {c.name!r} is also a variant under `variants:`; rename one")
            out[c.name] = c.overrides
    return out
