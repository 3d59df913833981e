"""Stage ``image_features`` (rule ``image_features``, ``langtail image-features --kind K``): frozen-backbone features, once.

Only under ``model.backbone_mode: frozen`` (the rules ask for its outputs then): the image
backbone (``model.image_encoder`` with ``model.pretrained`` weights; from-scratch encoders at
their torch-seed-``INIT_SEED`` random init) runs once over every manifest image, and every
later stage trains and evaluates on the cached outputs:

- kind ``pooled`` -> ``image_features.safetensors`` (``feats [N, F]``): CVLP (``pretrain``),
  AnSS (``anchors``), every ``finetune`` head and ``evaluate``;
- kind ``tokens`` -> ``image_tokens.safetensors`` (``tokens [N, L, F]`` float16, the last
  feature map): only CA4LTR (``ca4ltr_finetune``, ``ca4ltr_evaluate``) reads it, so it is
  computed only when a CA4LTR job runs.

``model.frozen_views: K`` also caches K augmented views of each training image (the
training transform); the training stages draw one per sample and epoch when their
``augment`` is on. The file is copied from a content-keyed cache
(``results/<dataset>/cache/image_<kind>_<key>.safetensors``, :mod:`langtail.models.image_cache`):
a rerun, a variant or another head with the same encoder, weights, preprocessing and
manifest does not recompute. Layout: :mod:`langtail.data.features`, docs/artifacts.md.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from langtail import io
from langtail.config import DatasetConfig, merge_keys
from langtail.data.features import KINDS
from langtail.models.classifier import IMAGE_KEYS, fresh_image_encoder
from langtail.models.image_cache import cached
from langtail.registry import IMAGE_ENCODERS
from langtail.runtime import resolve_device

log = logging.getLogger(__name__)

INIT_SEED = 0  #: torch seed of a from-scratch backbone's random init under ``frozen``

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": IMAGE_KEYS + ("backbone_mode", "frozen_views"),
    "pretrain": ("device",),
}


def config_keys(cfg: DatasetConfig | None = None, kind: str | None = None) -> dict[str, tuple[str, ...]]:
    """:data:`KEYS` plus the keys the chosen registered image encoder declares."""
    if kind is not None and kind not in KINDS:
        raise ValueError(f"unknown image-feature kind {kind!r}; known: {', '.join(KINDS)}")
    extra = {}
    if cfg is not None and cfg.model.image_encoder in IMAGE_ENCODERS:
        extra = IMAGE_ENCODERS.get(cfg.model.image_encoder).keys or {}
    return merge_keys(KEYS, extra)


def run(cfg: DatasetConfig, kind: str, manifest_path: Path, out: Path, cache_dir: Path) -> Path:
    """Write ``out`` (the features file of ``kind``) from the cache, computing it on a miss."""
    m = cfg.model
    if m.backbone_mode != "frozen":
        log.warning("image features for backbone_mode=%s: only `frozen` runs train on them", m.backbone_mode)
    if m.frozen_views < 0:
        raise ValueError(f"model.frozen_views must be >= 0, got {m.frozen_views}")
    torch.manual_seed(INIT_SEED)
    tower = fresh_image_encoder(m)
    dc = cfg.data
    src = cached(tower, manifest_path, cache_dir, kind=kind, image_size=dc.image_size, normalize=dc.normalize,
                 views=m.frozen_views, device=resolve_device(cfg.pretrain.device), num_workers=dc.num_workers)
    with io.atomic_path(out, ".safetensors") as tmp:
        shutil.copyfile(src, tmp)
    return out
