"""Caption stage: BLIP-2 captions for the manifest's images -> ``captions.parquet``.

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

This module imports neither torch nor transformers at import time (the corpus stage
imports :func:`captions_to_sentences` from here).
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
import pyarrow as pa

from langtail import io
from langtail.config import CaptionsConfig
from langtail.data.dataset import store_for
from langtail.data.manifest import SPLITS, ImageStore, UnreadableImage, read_manifest

log = logging.getLogger(__name__)

#: column -> pandas dtype (for :func:`langtail.io.check_columns`)
CAPTIONS_COLUMNS = {
    "image": "string",
    "image_index": "int64",
    "class_id": "int32",
    "split": "string",
    "caption": "string",
    "model": "string",
    "prompt": "string",
    "max_new_tokens": "int32",
}
CAPTIONS_SCHEMA = pa.schema([
    ("image", pa.string()),
    ("image_index", pa.int64()),
    ("class_id", pa.int32()),
    ("split", pa.string()),
    ("caption", pa.string()),
    ("model", pa.string()),
    ("prompt", pa.string()),
    ("max_new_tokens", pa.int32()),
])
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


def generation_settings(cfg: CaptionsConfig, dtype_name: str) -> dict[str, Any]:
    """Everything that changes the generated text (stored in metadata and fingerprinted)."""
    from langtail.captions.blip2 import GENERATION_DEFAULTS, model_identity

    return {
        **model_identity(cfg.model),
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


def captions_to_sentences(captions: pd.DataFrame, splits: tuple[str, ...] | None = ("train",)) -> pd.DataFrame:
    """Class-level text from captions: columns ``class_id`` (int32), ``sentence`` (str).

    Only captions of ``splits`` are used (default: ``train``; captions of test images
    grouped by their label would leak test data into the class text; ``None`` = all).
    Whitespace is normalised, empty captions dropped, and duplicates within a class
    (case-insensitive) removed, keeping the first occurrence; ordered by class, then by
    first occurrence.
    """
    if splits is not None and "split" in captions.columns:
        captions = captions[captions["split"].isin(list(splits))]
    if len(captions) == 0:
        return pd.DataFrame({"class_id": pd.Series([], dtype="int32"), "sentence": pd.Series([], dtype=object)})
    sent = captions["caption"].fillna("").astype(str).map(lambda s: " ".join(s.split()))
    df = pd.DataFrame({"class_id": captions["class_id"].astype("int32").to_numpy(), "sentence": sent.to_numpy()})
    df = df[df["sentence"] != ""]
    df = df.assign(_key=df["sentence"].str.casefold()).drop_duplicates(["class_id", "_key"])
    df = df.drop(columns="_key").sort_values("class_id", kind="stable").reset_index(drop=True)
    return df


def _valid_shard(path: Path, fingerprint: str, index: int, n_expected: int) -> dict[str, Any] | None:
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


def _caption_shard(captioner: Any, store: ImageStore, rows: pd.DataFrame, batch_size: int,
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


# ----------------------------------------------------------------------------- stage


def run_captions(manifest_path: Path, cfg: CaptionsConfig, out: Path, shard_dir: Path) -> None:
    """Write ``out`` (captions.parquet); finished shards in ``shard_dir`` are reused."""
    manifest_path, out, shard_dir = Path(manifest_path), Path(out), Path(shard_dir)
    if not cfg.enabled:
        shard_dir.mkdir(parents=True, exist_ok=True)  # exists in every mode (a rule may declare it)
        io.write_parquet(out, empty_captions(), metadata={"enabled": False}, schema=CAPTIONS_SCHEMA)
        log.info("captions: stage disabled (captions.enabled: false); wrote empty %s", out)
        return
    if cfg.shard_size < 1 or cfg.batch_size < 1:
        raise ValueError(f"captions.shard_size and captions.batch_size must be >= 1 "
                         f"(got {cfg.shard_size}, {cfg.batch_size})")
    check_prompt(cfg.prompt)
    # CA4LTR smoke runs: `captions.model: tiny-random` = a tiny *random* BLIP-2 built once into
    # <dataset dir>/tiny_blip2 (langtail.text_sources.resolve_caption_model); other models unchanged.
    from langtail.text_sources import resolve_caption_model

    cfg = resolve_caption_model(cfg, out.parent)

    from tqdm.auto import tqdm

    from langtail.captions.blip2 import Blip2Captioner, resolve_dtype
    from langtail.train.loop import resolve_device

    manifest, mmeta = read_manifest(manifest_path)
    sel = select_images(manifest, list(cfg.splits), cfg.per_class)
    device = resolve_device(cfg.device)
    dtype_name = str(resolve_dtype(cfg.dtype, device)).removeprefix("torch.")
    settings = generation_settings(cfg, dtype_name)
    fp = captions_fingerprint(settings, sel, cfg.shard_size)
    S = cfg.shard_size
    n_shards = math.ceil(len(sel) / S)
    shard_dir.mkdir(parents=True, exist_ok=True)

    shard_meta: dict[int, dict[str, Any]] = {}
    todo = []
    for k in range(n_shards):
        n_expected = len(sel.iloc[k * S:(k + 1) * S])
        meta = _valid_shard(shard_dir / SHARD_NAME.format(k), fp, k, n_expected)
        if meta is None:
            todo.append(k)
        else:
            shard_meta[k] = meta
    reused = n_shards - len(todo)
    if reused:
        log.info("captions: resuming, %d/%d shard(s) already done", reused, n_shards)

    t_run = time.perf_counter()
    if todo:
        captioner = Blip2Captioner(model=cfg.model, prompt=cfg.prompt, max_new_tokens=cfg.max_new_tokens,
                                   device=str(device), dtype=dtype_name)
        store = store_for(manifest_path, mmeta)
        done = sum(len(sel.iloc[k * S:(k + 1) * S]) for k in shard_meta)
        # in a log file (Snakemake's `log:`), one progress line per 30 s instead of a redraw per batch
        interactive = sys.stderr.isatty()
        with tqdm(total=len(sel), initial=done, unit="img", desc="captions", dynamic_ncols=True,
                  mininterval=0.1 if interactive else 30.0) as pbar, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="captions-load") as pool:
            for k in todo:
                rows = sel.iloc[k * S:(k + 1) * S]
                t0 = time.perf_counter()
                df, skipped = _caption_shard(captioner, store, rows, cfg.batch_size, pbar, pool)
                elapsed = time.perf_counter() - t0
                df["model"] = cfg.model
                df["prompt"] = cfg.prompt
                df["max_new_tokens"] = int(cfg.max_new_tokens)
                meta = {"fingerprint": fp, "shard": k, "n_expected": len(rows), "n_captioned": len(df),
                        "skipped": skipped, "elapsed_s": elapsed, **settings}
                io.write_parquet(shard_dir / SHARD_NAME.format(k), df[list(CAPTIONS_COLUMNS)],
                                 metadata=meta, schema=CAPTIONS_SCHEMA)
                shard_meta[k] = meta
                pbar.set_postfix(shard=f"{k + 1}/{n_shards}", refresh=interactive)
    elapsed_run = time.perf_counter() - t_run

    frames = [io.read_parquet(shard_dir / SHARD_NAME.format(k), CAPTIONS_COLUMNS) for k in range(n_shards)]
    captions = pd.concat(frames, ignore_index=True) if frames else empty_captions()
    elapsed = float(sum(m.get("elapsed_s", 0.0) for m in shard_meta.values()))
    skipped = [r for k in range(n_shards) for r in shard_meta[k].get("skipped", [])]
    meta = {
        "enabled": True,
        **settings,
        "splits": list(cfg.splits),
        "per_class": int(cfg.per_class),
        "batch_size": int(cfg.batch_size),
        "shard_size": int(S),
        "device": str(device),
        "n_images": int(len(captions)),
        "n_selected": int(len(sel)),
        "n_skipped": len(skipped),
        "skipped": skipped[:50],
        "n_shards": n_shards,
        "shards_reused": reused,
        "elapsed_s": round(elapsed, 3),  # generation time summed over all shards (all runs)
        "elapsed_s_this_run": round(elapsed_run, 3),
        "images_per_s": round(len(captions) / elapsed, 3) if elapsed > 0 else None,
        "fingerprint": fp,
    }
    io.write_parquet(out, captions[list(CAPTIONS_COLUMNS)], metadata=meta, schema=CAPTIONS_SCHEMA)

    for f in shard_dir.iterdir():  # shards of an earlier, larger selection
        m = _SHARD_RE.match(f.name)
        if m and int(m.group(1)) >= n_shards:
            f.unlink()
    log.info("captions: %d images captioned (%d skipped) -> %s; %.2f img/s",
             len(captions), len(skipped), out, meta["images_per_s"] or 0.0)
