"""Image features of a frozen backbone, computed once and cached (``model.backbone_mode: frozen``).

Like the text cache (:mod:`langtail.models.text_cache`), a cache file is keyed by what decides
its content: sha256 of :func:`identity` = the encoder's identity (name, weights tag), the
sha256 of the backbone's weights, the preprocessing (``image_size``, ``normalize`` and the
exact evaluation transform, interpolation included; the training transform when views are
cached), the manifest's bytes, the kind (pooled / tokens) and the number of augmented
views. ``<cache_dir>/image_<kind>_<key>.safetensors``; the file layout is in
:mod:`langtail.data.features`. Any change of these recomputes; a second run, another head
or another stage reuses the file.

Costs (float32 pooled, float16 tokens): ``4 F`` bytes per image and view pooled (demo_cnn
512 B, resnet32 256 B), ``2 L F`` tokens (demo_cnn at 32 px: 16 x 128 -> 4 KiB; resnet32:
64 x 64 -> 8 KiB); recorded in the file's ``bytes_per_image``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from langtail import io
from langtail.data.dataset import build_transform, make_loader, store_for
from langtail.data.features import BACKBONE_PREFIX, KINDS, ImageFeatures, ref_hashes, weights_sha256
from langtail.data.manifest import read_manifest

log = logging.getLogger(__name__)

VIEW_SEED = 0  #: augmented view k is drawn with torch seed ``VIEW_SEED * 1000 + k``


def identity(tower: torch.nn.Module, kind: str, image_size: int, normalize: str, views: int,
             manifest_path: str | Path) -> dict[str, Any]:
    """What decides the cached features' content (the cache key is its sha256)."""
    if kind not in KINDS:
        raise ValueError(f"unknown image-feature kind {kind!r}; known: {', '.join(KINDS)}")
    enc = {k: v for k, v in tower.identity().items() if k != "embed_dim"}  # the projection is not cached
    pre = {"image_size": int(image_size), "normalize": normalize,
           "transform": repr(build_transform(False, image_size, normalize))}
    if views:
        pre["train_transform"] = repr(build_transform(True, image_size, normalize, True))
    return {"encoder": enc, "weights_sha256": weights_sha256(tower.backbone), "preprocess": pre,
            "manifest_sha256": io.file_sha256(manifest_path), "kind": kind, "views": int(views),
            "view_seed": VIEW_SEED if views else None}


def cache_key(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


@torch.no_grad()
def backbone_outputs(tower: torch.nn.Module, loader, n: int, device: torch.device, tokens: bool
                     ) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """``(out [n, F] float32 | [n, L, F] float16, valid [n] bool, {image: reason})`` of the
    loader's rows (``batch["row"]`` in ``0..n-1``). Tokens: checks on the first batch that the
    tower pools them as its backbone does (else the cached tokens could not stand in for images)."""
    out: torch.Tensor | None = None
    valid = torch.zeros(n, dtype=torch.bool)
    reasons: dict[str, str] = {}
    for batch in loader:
        reasons.update({im: why for im, _, why in batch.get("skipped_images", ())})
        if "image" not in batch:
            continue
        x = batch["image"].to(device)
        if tokens:
            y = tower.forward_tokens(x)
            if out is None and not torch.allclose(tower.pool_tokens(y), tower.backbone(x), atol=1e-4, rtol=1e-3):
                raise ValueError(f"{tower.name}: its pooled feature is not the mean of its tokens; give the backbone "
                                 "a pool_tokens method before caching tokens")
            y = y.half()
        else:
            y = tower.backbone(x).float()
        if out is None:
            out = torch.zeros((n, *y.shape[1:]), dtype=y.dtype)
        out[batch["row"]] = y.cpu()
        valid[batch["row"]] = True
    if out is None:
        raise ValueError("image features: no readable image")
    return out, valid, reasons


def forward_gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """GFLOPs (multiply-adds) of ``model(x)`` for one input ``x [1, ...]``, no gradients (a warm-up
    call first: LGR keys are computed once and cached at inference)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        model(x)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() / 2 / 1e9


def compute(tower: torch.nn.Module, df: pd.DataFrame, manifest_path: Path, meta: dict[str, Any], kind: str,
            image_size: int, normalize: str, views: int, device: torch.device, num_workers: int = 0,
            batch_size: int = 256) -> dict[str, torch.Tensor]:
    """The tensors of a features file (layout: :mod:`langtail.data.features`) for manifest ``df``."""
    tokens = kind == "tokens"
    _, main, vname = KINDS[kind]
    store = store_for(manifest_path, meta)
    tower = tower.to(device).eval()
    loader = make_loader(df, store, build_transform(False, image_size, normalize), batch_size, train=False,
                         num_workers=num_workers)
    x, valid, reasons = backbone_outputs(tower, loader, len(df), device, tokens)
    t: dict[str, torch.Tensor] = {main: x, "valid": valid, "ref_hash": torch.as_tensor(ref_hashes(df["image"].tolist()))}
    if views:
        rows = np.flatnonzero((df["split"] == "train").to_numpy())
        tr = df.iloc[rows].reset_index(drop=True)
        aug = build_transform(True, image_size, normalize, True)
        vs = []
        for k in range(views):
            torch.manual_seed(VIEW_SEED * 1000 + k)
            vl = make_loader(tr, store, aug, batch_size, train=False, num_workers=num_workers)
            vs.append(backbone_outputs(tower, vl, len(tr), device, tokens)[0])
            log.info("image features: view %d/%d of %d training images", k + 1, views, len(tr))
        t["view_rows"] = torch.as_tensor(rows, dtype=torch.long)
        t[vname] = torch.stack(vs)
    t.update({BACKBONE_PREFIX + k: v.detach().cpu() for k, v in tower.backbone.state_dict().items()})
    t["_unreadable"] = reasons  # type: ignore[assignment]  # popped by cached()
    return t


def cached(tower: torch.nn.Module, manifest_path: str | Path, cache_dir: str | Path, *, kind: str, image_size: int,
           normalize: str, views: int, device: torch.device, num_workers: int = 0) -> Path:
    """Path of the cache file of ``tower``'s features over the manifest (computed on a miss)."""
    manifest_path = Path(manifest_path)
    ident = identity(tower, kind, image_size, normalize, views, manifest_path)
    key = cache_key(ident)
    path = Path(cache_dir) / f"image_{kind}_{key}.safetensors"
    if path.exists():
        try:
            if ImageFeatures(path).meta.get("key") == key:
                log.info("image features: cache hit %s", path)
                return path
        except Exception as e:  # noqa: BLE001 - a damaged cache file is recomputed, not fatal
            log.warning("image features: recomputing unreadable cache file %s (%s)", path, e)
    df, meta = read_manifest(manifest_path)
    log.info("image features: computing %s of %d images with %s", kind, len(df), ident["encoder"].get("name"))
    t = compute(tower, df, manifest_path, meta, kind, image_size, normalize, views, device, num_workers)
    reasons = t.pop("_unreadable")  # type: ignore[arg-type]
    valid = t["valid"].numpy()
    refs = df["image"].astype(str).tolist()
    unreadable = {int(i): reasons.get(refs[i], "unreadable") for i in np.flatnonzero(~valid)}
    main = t[KINDS[kind][1]]
    per_image = main[0].numel() * main.element_size()
    gflops = forward_gflops(tower.backbone, torch.zeros(1, 3, image_size, image_size, device=device))
    io.save_safetensors(path, t, {"backbone_gflops": repr(gflops),
        "kind": kind, "key": key, "identity": json.dumps(ident, sort_keys=True),
        "weights_sha256": ident["weights_sha256"], "views": str(views), "feat_dim": str(int(main.shape[-1])),
        "tokens_per_image": str(int(main.shape[1]) if kind == "tokens" else 0),
        "bytes_per_image": str(per_image * (1 + views)), "unreadable": json.dumps(unreadable)})
    log.info("image features: %d images, %d bytes per image (%d views) -> %s", len(df), per_image * (1 + views),
             views, path)
    return path


def frozen_features(model_cfg, path: str | Path | None, what: str) -> ImageFeatures | None:
    """The cached features a stage runs on: ``None`` unless ``model.backbone_mode`` is ``frozen``;
    under ``frozen`` the file is required (raises naming the fix when ``path`` is missing)."""
    if model_cfg.backbone_mode != "frozen":
        return None
    if path is None:
        raise ValueError(f"{what}: model.backbone_mode frozen runs on cached image features: pass --features "
                         "(the output of `langtail image-features`; the workflow's rule image_features makes it)")
    features = ImageFeatures(path)
    if features.kind == "pooled" and torch.get_num_threads() > 1:
        # the steps on pooled features are tiny matmuls: on this loaded 2-core CPU one
        # AdamW step of Linear(128,128)+Linear(128,24) at batch 128 took 305 ms with 2 intra-op
        # threads and 8 ms with 1 (benchmarks/frozen_features_speed.py measures the stage)
        log.info("%s: cached pooled features: one intra-op thread (tiny per-step tensors)", what)
        torch.set_num_threads(1)
    return features


def freeze_on(tower: torch.nn.Module, features: ImageFeatures, model_cfg) -> torch.nn.Module:
    """``tower`` with the cached features' backbone weights installed and frozen (no gradients)."""
    from langtail.models.tuning import apply_backbone_mode

    features.install_backbone(tower)
    return apply_backbone_mode(tower, model_cfg)
