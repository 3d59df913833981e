"""Stage ``report`` (rule ``report``, ``langtail report``): ``results/<dataset>/report.md`` + figures.

Reads only the files its rule passes: the manifest, the ``eval/<model>/`` directories of the
models to show (``metrics.json`` + ``per_class.parquet``; the model name is the directory
name), the ``skipped_images.parquet`` of the training and evaluation stages, ``corpus_stats.parquet``, ``anchors.parquet`` and, when the corpus uses captions,
``captions.parquet``, and the checkpoints of the training stages (``pretrain/model.pt``,
``finetune/<head>/model.pt``), whose ``extra.history`` gives the training-curves figure. Writes ``report.md`` and the PNGs in ``<report dir>/figures/report/``
(sections: :mod:`langtail.report.markdown`).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from langtail import io
from langtail.config import DatasetConfig
from langtail.data.manifest import read_manifest
from langtail.report.curves import curves_section
from langtail.report.seeds import seeds_section
from langtail.report.markdown import (MODEL_LABELS, accuracy_section, anchors_section, ca4ltr_pointer, captions_section,
                                      corpus_section, figures_section, setting_section)
from langtail.report.skipped import skipped_images_section
from langtail.report.tables import reproduce_line
from langtail.schemas import ANCHORS_COLUMNS, PER_CLASS_COLUMNS

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "data": ("image_size",),
    "corpus": ("sources",),
    "captions": ("enabled", "model"),
    "model": ("image_encoder", "text_encoder", "pretrained", "embed_dim", "train_text_encoder", "teacher",
              "backbone_mode", "frozen_views"),
    "pretrain": ("enabled", "epochs", "batch_size", "lr", "sampler", "distill"),
    "anchors": ("strategy", "num_anchors"),
    "finetune": ("epochs", "baseline_epochs", "batch_size", "lr", "sampler", "alpha", "seed"),
    "ca4ltr": ("sources",),
    "evaluate": ("split",),
    "report": ("title", "top_sentences"),
}

#: the figures' folder, relative to report.md (a declared output of the rule)
FIGURES = "figures/report"


def read_evals(eval_dirs: Sequence[Path]) -> tuple[dict[str, dict], dict[str, pd.DataFrame]]:
    """``(metrics, per_class)`` keyed by model name (the ``eval/<model>`` directory name)."""
    metrics, per = {}, {}
    for d in map(Path, eval_dirs):
        metrics[d.name] = io.read_json(d / "metrics.json")
        per[d.name] = io.read_parquet(d / "per_class.parquet", PER_CLASS_COLUMNS)
    return metrics, per


def seed_rows(metrics: Mapping[str, dict], seed_metrics: Mapping[str, Path], base_seed: int
              ) -> tuple[dict[str, list[dict]], dict[str, list[int]]]:
    """``(model -> replicate metrics, model -> seeds)`` for the models with seed replicates:
    the ``finetune.seed`` run (``metrics[model]``) first, then ``seed_metrics`` (``<model>/seed<k>``)."""
    rows: dict[str, list[dict]] = {}
    seeds: dict[str, list[int]] = {}
    for key, path in seed_metrics.items():
        model, _, rep = key.rpartition("/")
        if not model or not rep.startswith("seed") or not rep[4:].isdigit():
            raise ValueError(f"report: seed metrics key {key!r}: expected <model>/seed<k>")
        if model not in metrics:
            raise ValueError(f"report: seed metrics {key!r} for model {model!r}, which has no --eval directory")
        rows.setdefault(model, [metrics[model]]).append(io.read_json(path))
        seeds.setdefault(model, [base_seed]).append(int(rep[4:]))
    return rows, seeds


def read_histories(checkpoints: Mapping[str, Path]) -> dict[str, list[dict]]:
    """Run label -> the per-epoch ``extra.history`` of its checkpoint (``[]`` when it has none)."""
    return {label: list((io.torch_load(p).get("extra") or {}).get("history") or []) for label, p in checkpoints.items()}


def run(cfg: DatasetConfig, dataset: str, out: Path, manifest: Path, eval_dirs: Sequence[Path], corpus_stats: Path,
        anchors: Path, skipped: Mapping[str, Path] | None = None, captions: Path | None = None,
        config_files: Sequence[str] = (), checkpoints: Mapping[str, Path] | None = None,
        seed_metrics: Mapping[str, Path] | None = None) -> None:
    """``skipped``: stage label -> its ``skipped_images.parquet``; ``config_files``: snakemake's
    extra ``--configfile`` files (named in the Reproduce line); ``checkpoints``: run label
    (``pretrain``, ``finetune/<head>[/seed<k>]``) -> its ``model.pt`` (training curves);
    ``seed_metrics``: ``<model>/seed<k>`` -> ``eval/<model>/seed<k>/metrics.json`` of the other
    seeds of ``finetune.seeds`` (the ``eval_dirs`` hold the ``finetune.seed`` run)."""
    out = Path(out)
    df, meta = read_manifest(manifest)
    metrics, per = read_evals(eval_dirs)
    if not metrics:
        raise ValueError("report: no evaluated model given (--eval)")
    lines = [f"# {cfg.report.title or 'langtail report: ' + dataset}", ""]
    lines += setting_section(cfg, dataset, df, meta, metrics)
    lines += accuracy_section(metrics, cfg.data.image_size)
    if skipped is not None:
        lines += skipped_images_section(skipped)
    lines += figures_section(per, out.parent / FIGURES, FIGURES, dataset)
    if seed_metrics:
        rows, seeds = seed_rows(metrics, seed_metrics, cfg.finetune.seed)
        lines += seeds_section({MODEL_LABELS.get(m, m): r for m, r in rows.items()},
                               {MODEL_LABELS.get(m, m): s for m, s in seeds.items()})
    if checkpoints:
        lines += curves_section(read_histories(checkpoints), out.parent / FIGURES, FIGURES)
    lines += corpus_section(cfg.corpus.sources, io.read_parquet(corpus_stats), io.read_parquet_metadata(corpus_stats))
    caps = cmeta = None
    if captions is not None and "caption" in cfg.corpus.sources:
        caps, cmeta = pd.read_parquet(captions), io.read_parquet_metadata(captions)
    lines += captions_section(cfg, caps, cmeta)
    lines += anchors_section(io.read_parquet(anchors, ANCHORS_COLUMNS), io.read_parquet_metadata(anchors), df,
                             meta["class_names"], cfg.report.top_sentences)
    lines += ca4ltr_pointer(cfg.ca4ltr.sources, str(out.parent), config_files)
    lines += ["## Reproduce", "", reproduce_line(str(out), dataset, config_files), ""]
    io.write_text(out, "\n".join(lines))
    log.info("report written to %s", out)
