"""Captions library: which images, resumable shards, and ``captions.parquet`` (stage: :mod:`langtail.stages.captions`).

Which images: the manifest rows whose split is in ``captions.splits``; all of them if
``captions.per_class == 0``, else the first ``per_class`` rows (manifest order) of every
(split, class). The label is used *only* to choose and tag rows: the captioner sees the
pixels and the fixed ``captions.prompt`` and nothing else (CA4LTR uses captions at test
time, so a caption must never depend on the label).

Resumable: the selection is cut into shards of ``captions.shard_size`` images; each
finished shard is written atomically to ``<shard_dir>/shard_00000.parquet`` ... with a
fingerprint of (model, prompt, generation settings, dtype, shard size, image list) in its
metadata. A rerun keeps the shards whose fingerprint matches and generates only the
others; at the end all shards are concatenated into ``captions.parquet``.

``captions.enabled: false`` writes an empty ``captions.parquet`` (same schema) with
metadata ``{"enabled": false}``. The schema is documented in ``docs/artifacts.md``.

This module imports neither torch nor transformers at import time.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from langtail import io
from langtail.config import CaptionsConfig
from langtail.data.manifest import SPLITS, ImageStore, UnreadableImage
from langtail.schemas import CAPTIONS_COLUMNS, CAPTIONS_SCHEMA

log = logging.getLogger(__name__)

SHARD_NAME = "shard_{:05d}.parquet"
_SHARD_RE = re.compile(r"^shard_(\d{5,})\.parquet$")
_PLACEHOLDER = re.compile(r"\{[^{}]*\}")


# ----------------------------------------------------------------------------- selection


def select_images(manifest: pd.DataFrame, splits: list[str], per_class: int) -> pd.DataFrame:
    """Rows to caption: ``image, image_index, class_id, split`` in manifest order.

    ``image_index`` is the row number in the manifest. ``per_class > 0`` keeps the first
    ``per_class`` rows of every (split, class) in manifest order (deterministic).
    """
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise ValueError(f"captions.splits: unknown split(s) {unknown}; expected a subset of {list(SPLITS)}")
    if per_class < 0:
        raise ValueError(f"captions.per_class must be >= 0 (0 = all images), got {per_class}")
    df = pd.DataFrame({
        "image": manifest["image"].astype(object).to_numpy(),
        "image_index": range(len(manifest)),
        "class_id": manifest["label"].to_numpy(),
        "split": manifest["split"].astype(object).to_numpy(),
    })
    df = df[df["split"].isin(list(splits))]
    missing = sorted(set(splits) - set(df["split"]))
    if missing:
        log.warning("captions: split(s) %s not in the manifest; nothing captioned there", missing)
    if per_class > 0:
        df = df.groupby(["split", "class_id"], sort=False, group_keys=False).head(per_class)
    df = df.sort_values("image_index", kind="stable").reset_index(drop=True)
    df["image_index"] = df["image_index"].astype("int64")
    df["class_id"] = df["class_id"].astype("int32")
    return df


# ----------------------------------------------------------------------------- helpers


def check_prompt(prompt: str) -> None:
    """The prompt is one fixed string for every image: no per-image/per-class fields."""
    if _PLACEHOLDER.search(prompt):
        raise ValueError(
            f"captions.prompt={prompt!r} contains a template field; the prompt must be a fixed "
            "string: captions are generated from the pixels only and must not depend on the label")


def generation_settings(cfg: CaptionsConfig, dtype_name: str, model: str) -> dict[str, Any]:
    """Everything that changes the generated text (stored in metadata and fingerprinted);
    ``model`` = ``cfg.model`` resolved (:func:`langtail.captions.blip2.resolve_caption_model`)."""
    from langtail.captions.blip2 import GENERATION_DEFAULTS, model_identity

    return {
        **model_identity(model),
        "prompt": cfg.prompt,
        "max_new_tokens": int(cfg.max_new_tokens),
        **GENERATION_DEFAULTS,
        "dtype": dtype_name,
    }


def captions_fingerprint(settings: dict[str, Any], selection: pd.DataFrame, shard_size: int) -> str:
    h = hashlib.sha256()
    h.update(json.dumps(settings, sort_keys=True).encode())
    h.update(f"shard_size={shard_size}\n".encode())
    for idx, ref in zip(selection["image_index"].tolist(), selection["image"].tolist()):
        h.update(f"{idx}\t{ref}\n".encode())
    return h.hexdigest()


def empty_captions() -> pd.DataFrame:
    return CAPTIONS_SCHEMA.empty_table().to_pandas()


def read_captions(path: str | Path) -> pd.DataFrame:
    """Read ``captions.parquet`` (checks the schema)."""
    return io.read_parquet(path, CAPTIONS_COLUMNS)


def valid_shard(path: Path, fingerprint: str, index: int, n_expected: int) -> dict[str, Any] | None:
    """Metadata of a finished shard matching this run, else ``None`` (missing/stale/unreadable)."""
    if not path.exists():
        return None
    try:
        meta = io.read_parquet_metadata(path)
    except Exception as e:  # a foreign/corrupt file: redo it
        log.warning("captions: %s unreadable (%s); regenerating", path, e)
        return None
    if meta.get("fingerprint") != fingerprint or meta.get("shard") != index or meta.get("n_expected") != n_expected:
        log.info("captions: %s was made with other settings/images; regenerating", path.name)
        return None
    return meta


def _load_batch(captioner: Any, store: ImageStore, rows: pd.DataFrame):
    """Load + preprocess one batch (runs in a worker thread); skip unreadable images."""
    images, keep, skipped = [], [], []
    for pos, ref in enumerate(rows["image"].tolist()):
        try:
            images.append(np.array(store.load(ref), dtype=np.uint8))  # copy: memmaps are read-only
            keep.append(pos)
        except (UnreadableImage, FileNotFoundError) as e:
            log.warning("captions: skipping unreadable image %s (%s)", ref, e)
            skipped.append(ref)
    enc = captioner.preprocess(images) if images else None
    return enc, keep, skipped


def caption_shard(captioner: Any, store: ImageStore, rows: pd.DataFrame, batch_size: int,
                   pbar: Any, pool: ThreadPoolExecutor) -> tuple[pd.DataFrame, list[str]]:
    """Caption the rows of one shard; image loading of batch i+1 overlaps generation of batch i."""
    chunks = [rows.iloc[i:i + batch_size] for i in range(0, len(rows), batch_size)]
    parts, skipped = [], []
    fut = pool.submit(_load_batch, captioner, store, chunks[0]) if chunks else None
    for i, chunk in enumerate(chunks):
        enc, keep, skip = fut.result()
        if i + 1 < len(chunks):
            fut = pool.submit(_load_batch, captioner, store, chunks[i + 1])
        skipped += skip
        if enc is not None:
            caps = captioner.generate(enc)
            part = chunk.iloc[keep].copy()
            part["caption"] = caps
            parts.append(part)
        pbar.update(len(chunk))
    df = pd.concat(parts, ignore_index=True) if parts else empty_captions()[["image", "image_index", "class_id", "split", "caption"]]
    return df, skipped


def plan_shards(sel: pd.DataFrame, shard_size: int, shard_dir: Path, fingerprint: str) -> tuple[dict[int, dict[str, Any]], list[int]]:
    """``(metadata of the finished shards that match this run, indices of the shards to do)``."""
    S = shard_size
    done: dict[int, dict[str, Any]] = {}
    todo = []
    for k in range(math.ceil(len(sel) / S)):
        meta = valid_shard(shard_dir / SHARD_NAME.format(k), fingerprint, k, len(sel.iloc[k * S:(k + 1) * S]))
        if meta is None:
            todo.append(k)
        else:
            done[k] = meta
    return done, todo


def caption_shards(captioner: Any, store: ImageStore, sel: pd.DataFrame, todo: list[int], shard_meta: dict[int, dict[str, Any]],
                   cfg: CaptionsConfig, shard_dir: Path, fingerprint: str, settings: dict[str, Any], model: str) -> None:
    """Caption the shards in ``todo`` (each written atomically as it finishes); adds their
    metadata to ``shard_meta``."""
    from tqdm.auto import tqdm

    S = cfg.shard_size
    n_shards = math.ceil(len(sel) / S)
    done = sum(len(sel.iloc[k * S:(k + 1) * S]) for k in shard_meta)
    # in a log file (Snakemake's `log:`), one progress line per 30 s instead of a redraw per batch
    interactive = sys.stderr.isatty()
    with tqdm(total=len(sel), initial=done, unit="img", desc="captions", dynamic_ncols=True,
              mininterval=0.1 if interactive else 30.0) as pbar, \
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="captions-load") as pool:
        for k in todo:
            rows = sel.iloc[k * S:(k + 1) * S]
            t0 = time.perf_counter()
            df, skipped = caption_shard(captioner, store, rows, cfg.batch_size, pbar, pool)
            elapsed = time.perf_counter() - t0
            df["model"] = model
            df["prompt"] = cfg.prompt
            df["max_new_tokens"] = int(cfg.max_new_tokens)
            meta = {"fingerprint": fingerprint, "shard": k, "n_expected": len(rows), "n_captioned": len(df),
                    "skipped": skipped, "elapsed_s": elapsed, **settings}
            io.write_parquet(shard_dir / SHARD_NAME.format(k), df[list(CAPTIONS_COLUMNS)],
                             metadata=meta, schema=CAPTIONS_SCHEMA)
            shard_meta[k] = meta
            pbar.set_postfix(shard=f"{k + 1}/{n_shards}", refresh=interactive)


def merge_shards(shard_dir: Path, n_shards: int) -> pd.DataFrame:
    """All shards, in order, as one table; shards of an earlier, larger selection are deleted."""
    frames = [io.read_parquet(shard_dir / SHARD_NAME.format(k), CAPTIONS_COLUMNS) for k in range(n_shards)]
    for f in shard_dir.iterdir():
        m = _SHARD_RE.match(f.name)
        if m and int(m.group(1)) >= n_shards:
            f.unlink()
    return pd.concat(frames, ignore_index=True) if frames else empty_captions()
