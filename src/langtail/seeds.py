"""Seed replicates of the training runs (``finetune.seeds``): their path parts (``""`` for
``finetune.seed``, ``/seed<k>`` for the others; docs/artifacts.md "Seeds") and the config of
one replicate.
"""
from __future__ import annotations

import dataclasses

from langtail.config import DatasetConfig

#: a seed replicate's path part: "" (the run of ``finetune.seed``) or "/seed<k>"
SEED_DIR_PATTERN = r"(/seed\d+)?"


def seed_dirs(cfg: DatasetConfig) -> list[str]:
    """The replicate path parts of the training runs: ``""`` for ``finetune.seed``, then
    ``"/seed<k>"`` for every other seed of ``finetune.seeds`` (in the listed order)."""
    base = cfg.finetune.seed
    return [""] + [f"/seed{k}" for k in cfg.finetune.seeds if k != base]


def seed_of(rep: str, default: int) -> int:
    """The seed of a replicate path part (``""`` -> ``default``, ``"/seed3"`` -> 3)."""
    if not rep:
        return default
    name = rep.strip("/")
    if not name.startswith("seed") or not name[4:].isdigit():
        raise ValueError(f"not a seed replicate: {rep!r} (expected '' or '/seed<k>')")
    return int(name[4:])


def with_seed(cfg: DatasetConfig, rep: str) -> DatasetConfig:
    """``cfg`` for the replicate ``rep``: ``finetune.seed`` and ``ca4ltr.seed`` set to its seed
    (the plain run ``""`` is ``cfg`` itself)."""
    if not rep:
        return cfg
    k = seed_of(rep, cfg.finetune.seed)
    return dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, seed=k),
                               ca4ltr=dataclasses.replace(cfg.ca4ltr, seed=k))
