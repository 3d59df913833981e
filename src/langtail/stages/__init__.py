"""The workflow's stages: one module per Snakemake rule and ``langtail`` command, named alike.

==================  =====================  ===================================
module / rule       command                writes (under ``results/<dataset>/``)
==================  =====================  ===================================
``longtail``        ``langtail longtail``  ``manifest.parquet``
``corpus``          ``corpus``             ``corpus.parquet``, ``corpus_stats.parquet``
``captions``        ``captions``           ``captions.parquet``
``image_features``  ``image-features``     ``image_features.safetensors``, ``image_tokens.safetensors``
                                           (only under ``model.backbone_mode: frozen``)
``pretrain``        ``pretrain``           ``pretrain/model.pt``
``anchors``         ``anchors``            ``anchors.parquet``
``embed_text``      ``embed-text``         ``text_embeddings.safetensors``
``finetune``        ``finetune``           ``finetune/<head>[/seed<k>]/model.pt``
``evaluate``        ``evaluate``           ``eval/<model>/metrics.json``, ``per_class.parquet``
``report``          ``report``             ``report.md``, ``figures/*.png``
``ca4ltr_finetune`` ``ca4ltr-finetune``    ``ca4ltr/<source>/model.pt``
``ca4ltr_evaluate`` ``ca4ltr-evaluate``    ``eval/ca4ltr_<source>/...``
``text_quality``    ``text-quality``       ``text_quality.md``
``ablations``       ``ablations``          ``ablations.md``
``predict``         ``predict``            ``--out predictions.parquet|.csv`` (command only)
==================  =====================  ===================================

Command-only stages (:data:`COMMAND_ONLY`) are modules here with a ``langtail`` command but
no workflow rule: they act for a user around the workflow (``predict`` labels new images with
a fine-tuned checkpoint; ``prefetch`` fills the download caches for offline compute nodes), read no config keys (``KEYS = {}``) and are in no
stage's ``UPSTREAM``.

Each stage reads its declared inputs, calls the library, writes its declared outputs, and
declares the config keys it reads (``KEYS``; stages whose keys depend on a wildcard also
have ``config_keys(cfg, <wildcard>)``). The rule's params are exactly those keys
(:func:`stage_keys`), and the command gives the stage a config in which any other key
raises (:func:`langtail.config.restrict`). Stages never import each other; the library
never imports a stage; ``langtail.cli`` and the Snakemake rules import stages.
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any, Mapping

from langtail.config import DatasetConfig, check_keys, dataset_config, flat_keys, merge_keys, split_variant

#: stage -> the stages whose outputs it reads (directly)
UPSTREAM: dict[str, tuple[str, ...]] = {
    "longtail": (),
    "captions": ("longtail",),
    "corpus": ("captions",),
    "image_features": ("longtail",),
    "pretrain": ("longtail", "corpus", "image_features"),
    "anchors": ("longtail", "corpus", "pretrain", "image_features"),
    "embed_text": ("longtail", "corpus", "pretrain", "anchors"),
    "finetune": ("longtail", "pretrain", "embed_text", "image_features"),
    "evaluate": ("longtail", "pretrain", "embed_text", "finetune", "image_features"),
    "report": ("longtail", "corpus", "captions", "anchors", "evaluate"),
    "ca4ltr_finetune": ("longtail", "captions", "anchors", "pretrain", "image_features"),
    "ca4ltr_evaluate": ("longtail", "captions", "anchors", "ca4ltr_finetune", "image_features"),
    "text_quality": ("longtail", "evaluate", "ca4ltr_evaluate"),
    "ablations": ("evaluate",),
}
STAGES = tuple(UPSTREAM)
#: stages with a ``langtail`` command and no workflow rule (they read no config keys)
COMMAND_ONLY: tuple[str, ...] = ("predict", "prefetch")


def module(stage: str) -> ModuleType:
    if stage not in UPSTREAM:
        raise KeyError(f"unknown stage {stage!r}; known: {', '.join(STAGES)}")
    return importlib.import_module(f"langtail.stages.{stage}")


def stage_keys(stage: str, cfg: DatasetConfig | None = None, **wildcards: Any) -> dict[str, tuple[str, ...]]:
    """The config keys ``stage`` reads: its ``config_keys(cfg, **wildcards)`` where it has one
    (all wildcard values' keys when a wildcard is not given), else its ``KEYS``."""
    mod = module(stage)
    keys = mod.config_keys(cfg, **wildcards) if hasattr(mod, "config_keys") else mod.KEYS
    check_keys(keys, f"langtail.stages.{stage}")
    return merge_keys(keys)


def upstream_closure(stage: str) -> list[str]:
    """``stage`` and every stage it depends on, directly or not."""
    seen: list[str] = []
    todo = [stage]
    while todo:
        s = todo.pop()
        if s not in seen:
            seen.append(s)
            todo.extend(UPSTREAM[s])
    return seen


def stage_owner(raw: Mapping[str, Any], dataset: str, stage: str) -> str:
    """The results folder whose ``stage`` output a (variant) dataset uses: the base dataset
    when every key that ``stage`` or anything upstream of it reads has the same value under
    the variant (so a variant that restates a base value reuses the base run), else the
    variant itself (``results/<dataset>+<variant>/``)."""
    base, variant = split_variant(dataset)
    if variant is None:
        return dataset
    cfg_base, cfg_var = dataset_config(raw, base), dataset_config(raw, dataset)
    read = set().union(*(flat_keys(stage_keys(s, c)) for s in upstream_closure(stage) for c in (cfg_base, cfg_var)))
    changed = [k for k in read if _value(cfg_base, k) != _value(cfg_var, k)]
    return dataset if changed else base


def _value(cfg: DatasetConfig, key: str) -> Any:
    sec, name = key.split(".")
    return getattr(getattr(cfg, sec), name)


__all__ = ["COMMAND_ONLY", "STAGES", "UPSTREAM", "module", "stage_keys", "stage_owner", "upstream_closure"]
