"""Stage ``captions`` (rule ``captions``, ``langtail captions``): BLIP-2 captions of the manifest's images.

Reads ``manifest.parquet``; writes ``captions.parquet`` (schema: :mod:`langtail.captions.shards`,
``docs/artifacts.md``) and resumable shards in ``shard_dir``. ``captions.enabled: false``
writes an empty table (same schema) with metadata ``{"enabled": false}``.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from langtail import io
from langtail.captions.shards import (caption_shards, captions_fingerprint,
                                      check_prompt, empty_captions, generation_settings, merge_shards, plan_shards,
                                      select_images)
from langtail.config import CaptionsConfig, DatasetConfig
from langtail.data.dataset import store_for
from langtail.data.manifest import read_manifest
from langtail.schemas import CAPTIONS_COLUMNS, CAPTIONS_SCHEMA

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {"captions": ("enabled", "model", "prompt", "max_new_tokens", "per_class", "splits", "batch_size", "device",
                     "dtype", "shard_size")}


def run(cfg: DatasetConfig, manifest_path: Path, out: Path, shard_dir: Path) -> None:
    """Write ``out`` (captions.parquet); finished shards in ``shard_dir`` are reused."""
    cfg = cfg.captions
    manifest_path, out, shard_dir = Path(manifest_path), Path(out), Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)  # exists in every mode (the rule declares it)
    if not cfg.enabled:
        io.write_parquet(out, empty_captions(), metadata={"enabled": False}, schema=CAPTIONS_SCHEMA)
        log.info("captions: stage disabled (captions.enabled: false); wrote empty %s", out)
        return
    if cfg.shard_size < 1 or cfg.batch_size < 1:
        raise ValueError(f"captions.shard_size and captions.batch_size must be >= 1 "
                         f"(got {cfg.shard_size}, {cfg.batch_size})")
    check_prompt(cfg.prompt)
    from langtail.captions.blip2 import Blip2Captioner, resolve_caption_model, resolve_dtype
    from langtail.runtime import resolve_device

    # `captions.model: tiny-random` = a tiny *random* BLIP-2 built once into <dataset dir>/tiny_blip2
    model = resolve_caption_model(cfg.model, out.parent)
    manifest, mmeta = read_manifest(manifest_path)
    sel = select_images(manifest, list(cfg.splits), cfg.per_class)
    device = resolve_device(cfg.device)
    dtype_name = str(resolve_dtype(cfg.dtype, device)).removeprefix("torch.")
    settings = generation_settings(cfg, dtype_name, model)
    fp = captions_fingerprint(settings, sel, cfg.shard_size)
    n_shards = math.ceil(len(sel) / cfg.shard_size)
    shard_meta, todo = plan_shards(sel, cfg.shard_size, shard_dir, fp)
    reused = n_shards - len(todo)
    if reused:
        log.info("captions: resuming, %d/%d shard(s) already done", reused, n_shards)

    t_run = time.perf_counter()
    if todo:
        captioner = Blip2Captioner(model=model, prompt=cfg.prompt, max_new_tokens=cfg.max_new_tokens,
                                   device=str(device), dtype=dtype_name)
        store = store_for(manifest_path, mmeta)
        caption_shards(captioner, store, sel, todo, shard_meta, cfg, shard_dir, fp, settings, model)
    elapsed_run = time.perf_counter() - t_run

    captions = merge_shards(shard_dir, n_shards)
    meta = _run_metadata(cfg, settings, str(device), len(captions), len(sel), shard_meta, n_shards, reused,
                         elapsed_run, fp)
    io.write_parquet(out, captions[list(CAPTIONS_COLUMNS)], metadata=meta, schema=CAPTIONS_SCHEMA)
    log.info("captions: %d images captioned (%d skipped) -> %s; %.2f img/s",
             len(captions), meta["n_skipped"], out, meta["images_per_s"] or 0.0)


def _run_metadata(cfg: CaptionsConfig, settings: dict[str, Any], device: str, n_images: int, n_selected: int,
                  shard_meta: dict[int, dict[str, Any]], n_shards: int, reused: int, elapsed_run: float,
                  fp: str) -> dict[str, Any]:
    """The ``captions.parquet`` metadata of a run (``docs/artifacts.md``): settings, counts, skipped images
    (first 50) and timings summed over the shards."""
    elapsed = float(sum(m.get("elapsed_s", 0.0) for m in shard_meta.values()))
    skipped = [r for k in range(n_shards) for r in shard_meta[k].get("skipped", [])]
    meta = {
        "enabled": True,
        **settings,
        "splits": list(cfg.splits),
        "per_class": int(cfg.per_class),
        "batch_size": int(cfg.batch_size),
        "shard_size": int(cfg.shard_size),
        "device": device,
        "n_images": int(n_images),
        "n_selected": int(n_selected),
        "n_skipped": len(skipped),
        "skipped": skipped[:50],
        "n_shards": n_shards,
        "shards_reused": reused,
        "elapsed_s": round(elapsed, 3),  # generation time summed over all shards (all runs)
        "elapsed_s_this_run": round(elapsed_run, 3),
        "images_per_s": round(n_images / elapsed, 3) if elapsed > 0 else None,
        "fingerprint": fp,
    }
    return meta
