"""Cached image features (``model.backbone_mode: frozen``), the read side: file, dataset, loader.

Written once per dataset by ``langtail image-features`` (:mod:`langtail.models.image_cache`):
``image_features.safetensors`` (pooled features, kind ``pooled``, for CVLP, AnSS, every head
and evaluation) and ``image_tokens.safetensors`` (the last feature map, kind ``tokens``, only
for CA4LTR). Rows are aligned to the manifest's rows. Schema (docs/artifacts.md):

- ``feats [N, F] float32`` (pooled) or ``tokens [N, L, F] float16`` (tokens): the frozen
  backbone's output for every manifest row under the evaluation transform (zeros where
  ``valid`` is False);
- ``ref_hash [N] int64`` (8-byte BLAKE2b of each row's ``image`` reference: rows are found
  by content, so any subset of the manifest maps onto the file), ``valid [N] bool``;
- with ``model.frozen_views = K > 0``: ``view_rows [T] int64`` (the manifest rows of the
  training split) and ``view_feats [K, T, F]`` / ``view_tokens [K, T, L, F]``: K augmented
  views (the training transform) of each training image;
- ``backbone.<name>``: the frozen backbone's weights that produced the features (every stage
  loads them into its image tower, so checkpoints carry exactly these weights).

Metadata (all str): ``kind``, ``key``, ``identity`` (JSON: encoder, weights hash, preprocess,
manifest hash, views), ``weights_sha256``, ``views``, ``feat_dim``, ``tokens_per_image``,
``bytes_per_image``, ``unreadable`` (JSON ``{row: reason}``), ``backbone_gflops`` (multiply-adds
of the backbone on one image at ``image_size``: evaluation adds it to the head's cost without
running the backbone).

Training under ``frozen``: one cached view per sample and epoch, drawn from
``(seed, epoch)`` (:class:`ViewSampler`); without views (the default) no augmentation.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from langtail import io
from langtail.data.dataset import EpochSampler, loader_for
from langtail.models.text_cache import sentence_hashes

FEATURES_FILE = "image_features.safetensors"
TOKENS_FILE = "image_tokens.safetensors"
#: kind -> (file name, main tensor, views tensor)
KINDS = {"pooled": (FEATURES_FILE, "feats", "view_feats"), "tokens": (TOKENS_FILE, "tokens", "view_tokens")}
BACKBONE_PREFIX = "backbone."


def ref_hashes(refs: list[str]) -> np.ndarray:
    """``[N]`` int64 content key of image references (the text cache's sentence hash)."""
    return sentence_hashes([str(r) for r in refs])


def weights_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's state dict (names, dtypes, shapes, bytes): the weights' identity."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        v = v.detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}".encode())
        h.update(v.view(-1).view(torch.uint8).numpy().tobytes() if v.numel() else b"")
    return h.hexdigest()


class ImageFeatures:
    """A loaded ``image_features`` / ``image_tokens`` file (see the module docstring)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        t, self.meta = io.load_safetensors(self.path)
        self.kind = self.meta.get("kind", "")
        if self.kind not in KINDS:
            raise ValueError(f"{self.path}: not an image-features file (kind={self.kind!r}); rerun `langtail image-features`")
        _, main, views = KINDS[self.kind]
        self.data: torch.Tensor = t[main]
        self.valid: torch.Tensor = t["valid"].bool()
        self.ref_hash = t["ref_hash"].numpy()
        self.view_data: torch.Tensor | None = t.get(views)
        self.view_rows = t["view_rows"].numpy() if "view_rows" in t else np.zeros(0, dtype=np.int64)
        self.backbone = {k[len(BACKBONE_PREFIX):]: v for k, v in t.items() if k.startswith(BACKBONE_PREFIX)}
        self.unreadable = {int(k): v for k, v in json.loads(self.meta.get("unreadable", "{}")).items()}
        self._order = np.argsort(self.ref_hash, kind="stable")

    @property
    def views(self) -> int:
        return 0 if self.view_data is None else int(self.view_data.shape[0])

    def rows_of(self, df: pd.DataFrame) -> np.ndarray:
        """``[len(df)]`` file rows of ``df``'s images (by ``image`` reference); raises naming the
        first reference the file does not hold."""
        h = ref_hashes(df["image"].tolist())
        sorted_h = self.ref_hash[self._order]
        pos = np.clip(np.searchsorted(sorted_h, h), 0, max(len(sorted_h) - 1, 0))
        miss = np.flatnonzero(sorted_h[pos] != h) if len(sorted_h) else np.arange(len(h))
        if len(miss):
            raise ValueError(f"{self.path}: no cached features for image {df['image'].iloc[miss[0]]!r} "
                             f"({len(miss)} of {len(df)} missing): the manifest changed; rerun `langtail image-features`")
        return self._order[pos]

    def install_backbone(self, tower: torch.nn.Module) -> torch.nn.Module:
        """Load the cached features' backbone weights into ``tower.backbone`` (strict)."""
        if not self.backbone:
            raise ValueError(f"{self.path}: holds no backbone weights; rerun `langtail image-features`")
        tower.backbone.load_state_dict(self.backbone, strict=True)
        return tower

    def check_backbone(self, tower: torch.nn.Module, what: str) -> None:
        """Raise unless ``tower.backbone`` holds the weights the features were computed with."""
        got = weights_sha256(tower.backbone)
        if got != self.meta.get("weights_sha256"):
            raise ValueError(f"{what}: its image backbone (sha256 {got[:12]}) is not the one of the cached features "
                             f"{self.path} ({self.meta.get('weights_sha256', '?')[:12]}); rerun its training stage")

    def loader(self, df: pd.DataFrame, batch_size: int, *, train: bool, sampler: str = "instance", seed: int = 0,
               augment: bool = False, pin_memory: bool = False):
        """DataLoader over ``df``'s rows yielding ``{"image": [B, F] or [B, L, F] float32, "label",
        "row" (position in df), "skipped", "skipped_images"}`` like the image loaders."""
        use_views = train and augment and self.views > 0
        ds = FeatureDataset(self, df, use_views)
        kw = {"views": self.views} if use_views else {}
        return loader_for(ds, ds.labels, batch_size, train=train, sampler=sampler, seed=seed, pin_memory=pin_memory,
                          collate_fn=_batched, sampler_cls=ViewSampler if use_views else EpochSampler, **kw)


def _batched(batch: dict[str, Any]) -> dict[str, Any]:
    """Collate of :class:`FeatureDataset`: its ``__getitems__`` already returns the batch."""
    return batch


class FeatureDataset(Dataset):
    """Rows of ``df`` as cached features; ``__getitems__`` returns a whole batch dict (items may
    be ``(i, view)`` pairs from :class:`ViewSampler`)."""

    def __init__(self, features: ImageFeatures, df: pd.DataFrame, use_views: bool):
        self.f = features
        self.rows = features.rows_of(df)
        self.labels = df["label"].to_numpy().astype(np.int64)
        self.refs = df["image"].astype(str).tolist()
        self.splits = df["split"].astype(str).tolist() if "split" in df.columns else [""] * len(df)
        self.view_pos = None
        if use_views:
            where = {int(r): i for i, r in enumerate(features.view_rows)}
            self.view_pos = np.array([where.get(int(r), -1) for r in self.rows], dtype=np.int64)
            if (self.view_pos < 0).any():
                raise ValueError(f"{features.path}: augmented views hold only the training split's images")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i):
        return self.__getitems__([i])

    def __getitems__(self, items: list) -> dict[str, Any]:
        idx = np.array([it[0] if isinstance(it, tuple) else it for it in items], dtype=np.int64)
        rows = self.rows[idx]
        ok = self.f.valid[torch.as_tensor(rows)].numpy()
        skips = [(self.refs[i], self.splits[i], self.f.unreadable.get(int(r), "unreadable when features were cached"))
                 for i, r, g in zip(idx, rows, ok) if not g]
        out: dict[str, Any] = {"skipped": len(skips), "skipped_images": skips}
        idx, rows = idx[ok], rows[ok]
        if not len(idx):
            return out
        if self.view_pos is not None:
            v = np.array([it[1] for it in items], dtype=np.int64)[ok]
            x = self.f.view_data[torch.as_tensor(v), torch.as_tensor(self.view_pos[idx])]
        else:
            x = self.f.data[torch.as_tensor(rows)]
        out.update(image=x.float(), label=torch.as_tensor(self.labels[idx]), row=torch.as_tensor(idx))
        return out


class ViewSampler(EpochSampler):
    """:class:`EpochSampler` that pairs each index with one of ``views`` cached augmented views,
    drawn from ``(seed, epoch)`` (resumable, the same on every run)."""

    def __init__(self, labels: np.ndarray, mode: str, seed: int, *, views: int, **kw: Any):
        super().__init__(labels, mode, seed, **kw)
        self.views = views

    def __iter__(self):
        idx = list(super().__iter__())
        v = np.random.default_rng([self.seed, self.epoch, 1]).integers(self.views, size=len(idx))
        return iter(zip(idx, v.tolist()))
