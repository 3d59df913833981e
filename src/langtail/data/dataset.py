"""Torch datasets, transforms and samplers over a manifest.

- :class:`ManifestDataset` yields ``(image [3, H, W] float, label, row)``; an unreadable
  image yields a :class:`~langtail.data.skipped.Skip` and :func:`collate_skip` drops it while
  listing it, so a corrupt file is a recorded skip (``skipped_images.parquet``, see
  :mod:`langtail.data.skipped`), never a crash mid-epoch, never a silent drop.
- :func:`build_transform`: 32 px CIFAR-style augmentation (random crop with 4 px padding +
  horizontal flip) or CLIP preprocessing (224 px bicubic resize + centre crop, CLIP
  mean/std; random-resized-crop + flip when training).
- :func:`make_sampler`: instance, square-root (class probability ~ n_c^0.5, the paper's
  default) or class-balanced sampling; deterministic per ``(seed, epoch)``.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from langtail.data.manifest import ImageStore, UnreadableImage
from langtail.data.skipped import Skip

log = logging.getLogger(__name__)

MEAN_STD = {
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "clip": ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # [-1, 1]: TF / EfficientNet-Lite weights
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def build_transform(train: bool, image_size: int = 32, normalize: str = "cifar", augment: bool = True):
    """``uint8 [H, W, 3]`` numpy -> ``float [3, S, S]`` tensor."""
    from torchvision.transforms import v2

    mean, std = MEAN_STD[normalize]
    ops: list[Any] = [v2.ToImage()]
    if image_size <= 64:
        ops.append(v2.Resize((image_size, image_size), antialias=True))
        if train and augment:
            ops += [v2.RandomCrop(image_size, padding=image_size // 8, padding_mode="reflect"),
                    v2.RandomHorizontalFlip()]
    else:
        if train and augment:
            ops += [v2.RandomResizedCrop(image_size, scale=(0.5, 1.0),
                                         interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                    v2.RandomHorizontalFlip()]
        else:
            ops += [v2.Resize(image_size, interpolation=v2.InterpolationMode.BICUBIC, antialias=True),
                    v2.CenterCrop(image_size)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


class ManifestDataset(Dataset):
    """Rows of a manifest frame as ``(image, label, row)``; ``row`` indexes ``df``."""

    def __init__(self, df: pd.DataFrame, store: ImageStore, transform=None):
        self.refs = df["image"].tolist()
        self.labels = df["label"].to_numpy().astype(np.int64)
        self.splits = df["split"].tolist() if "split" in df.columns else [""] * len(self.refs)
        self.store = store
        self.transform = transform

    def __len__(self) -> int:
        return len(self.refs)

    def __getitem__(self, i: int):
        try:
            img = self.store.load(self.refs[i])
        except UnreadableImage as e:
            log.warning("skipping unreadable image: %s", e)
            return Skip(i, self.refs[i], self.splits[i], str(e))
        x = self.transform(img) if self.transform is not None else torch.from_numpy(np.ascontiguousarray(img))
        return x, int(self.labels[i]), i

    def __getitems__(self, indices: list[int]) -> list:
        """Batch fetch (used by DataLoader): per-image transforms run with ONE intra-op thread.

        Small per-image tensor ops pay torch's thread-pool overhead on every call; in the main
        process (``num_workers: 0``) that made loading 3-10x slower with 2 threads than with 1.
        """
        n = torch.get_num_threads()
        if n > 1:
            torch.set_num_threads(1)
        try:
            return [self[i] for i in indices]
        finally:
            if n > 1:
                torch.set_num_threads(n)


def collate_skip(batch: list) -> dict[str, Any]:
    """Stack a batch, dropping :class:`~langtail.data.skipped.Skip` items (unreadable images):
    ``skipped`` counts them, ``skipped_images`` lists ``(image, split, reason)`` for a
    :class:`~langtail.data.skipped.SkipLog`."""
    good = [b for b in batch if b is not None and not isinstance(b, Skip)]
    skips = [b for b in batch if isinstance(b, Skip)]
    out: dict[str, Any] = {"skipped": len(batch) - len(good),
                           "skipped_images": [(s.image, s.split, s.reason) for s in skips]}
    if good:
        out["image"] = torch.stack([b[0] for b in good])
        out["label"] = torch.tensor([b[1] for b in good], dtype=torch.long)
        out["row"] = torch.tensor([b[2] for b in good], dtype=torch.long)
    return out


def sample_weights(labels: np.ndarray, mode: str) -> np.ndarray:
    """Per-image sampling weights ``[N]``: instance (uniform), sqrt (~ n_c^-0.5), balanced (~ 1/n_c)."""
    counts = np.bincount(labels)
    n = counts[labels].astype(np.float64)
    if mode == "instance":
        w = np.ones_like(n)
    elif mode == "sqrt":
        w = n ** -0.5
    elif mode == "balanced":
        w = 1.0 / n
    else:
        raise ValueError(f"unknown sampler {mode!r}; use instance, sqrt or balanced")
    return w / w.sum()


class EpochSampler(Sampler[int]):
    """``len(labels)`` indices per epoch drawn by :func:`sample_weights`; call ``set_epoch``.

    Distributed (``world > 1``): every rank draws the same epoch sequence and keeps its
    ``batch_size`` slice of each global batch of ``batch_size * world`` indices (an incomplete
    last global batch is dropped, as the single-process training loader drops it), so the
    ranks' batches together are exactly one process's batches and the sampling rates are
    unchanged."""

    def __init__(self, labels: np.ndarray, mode: str, seed: int, *, rank: int = 0, world: int = 1,
                 batch_size: int = 0):
        self.labels = np.asarray(labels)
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.p = sample_weights(self.labels, mode)
        self.rank, self.world, self.batch_size = rank, world, batch_size
        if world > 1:
            if batch_size < 1:
                raise ValueError("a distributed EpochSampler needs the per-rank batch_size")
            if len(self.labels) < batch_size * world:
                raise ValueError(f"{len(self.labels)} training images < one global batch of {batch_size * world}; "
                                 "lower batch_size")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.world == 1:
            return len(self.labels)
        return len(self.labels) // (self.batch_size * self.world) * self.batch_size

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.mode == "instance":
            idx = rng.permutation(len(self.labels))
        else:
            idx = rng.choice(len(self.labels), size=len(self.labels), replace=True, p=self.p)
        if self.world > 1:
            b, gb = self.batch_size, self.batch_size * self.world
            n = len(idx) // gb
            idx = idx[:n * gb].reshape(n, self.world, b)[:, self.rank].reshape(-1)
        return iter(idx.tolist())


def make_loader(df: pd.DataFrame, store: ImageStore, transform, batch_size: int, *, train: bool,
                sampler: str = "instance", seed: int = 0, num_workers: int = 0,
                pin_memory: bool = False, persistent_workers: bool | None = None) -> DataLoader:
    """DataLoader over ``df`` rows. Training loaders use an :class:`EpochSampler` and drop the
    last batch; in a process group, ``batch_size`` is the global batch (each rank loads
    ``batch_size / world`` images of it). ``persistent_workers``: keep worker processes between
    epochs (default: whenever there are workers)."""
    ds = ManifestDataset(df, store, transform)
    return loader_for(ds, ds.labels, batch_size, train=train, sampler=sampler, seed=seed, num_workers=num_workers,
                      pin_memory=pin_memory, persistent_workers=persistent_workers)


def loader_for(ds: Dataset, labels: np.ndarray, batch_size: int, *, train: bool, sampler: str = "instance",
               seed: int = 0, num_workers: int = 0, pin_memory: bool = False, persistent_workers: bool | None = None,
               collate_fn=collate_skip, sampler_cls: type = EpochSampler, **sampler_kw: Any) -> DataLoader:
    """The DataLoader of :func:`make_loader` over any dataset ``ds`` with per-item ``labels [N]``
    (cached features use it with their own dataset, collate and sampler)."""
    samp = None
    if train:
        # under torchrun, `batch_size` is the global batch: this rank loads its share
        from langtail import distributed

        world = distributed.world_size()
        batch_size = distributed.per_rank_batch(batch_size)
        samp = sampler_cls(labels, sampler, seed, rank=distributed.rank(), world=world, batch_size=batch_size,
                           **sampler_kw)
    return DataLoader(ds, batch_size=batch_size, sampler=samp, shuffle=False, drop_last=train and len(ds) > batch_size,
                      num_workers=num_workers, pin_memory=pin_memory, collate_fn=collate_fn,
                      persistent_workers=num_workers > 0 if persistent_workers is None else
                      bool(persistent_workers and num_workers > 0))


def train_loader(train_df: pd.DataFrame, manifest_path: str | Path, meta: dict[str, Any], data_cfg, *,
                 batch_size: int, sampler: str, seed: int, augment: bool, device: torch.device,
                 features=None) -> DataLoader:
    """The training loader every stage uses: augmented transform of ``data_cfg``, epoch sampler.
    ``features``: an :class:`~langtail.data.features.ImageFeatures` (``model.backbone_mode:
    frozen``): batches of cached backbone outputs instead of images (``augment``: draw one
    of its cached augmented views per sample and epoch, if it has any)."""
    if features is not None:
        return features.loader(train_df, batch_size, train=True, sampler=sampler, seed=seed, augment=augment,
                               pin_memory=device.type == "cuda")
    return make_loader(train_df, store_for(manifest_path, meta),
                       build_transform(True, data_cfg.image_size, data_cfg.normalize, augment), batch_size,
                       train=True, sampler=sampler, seed=seed, num_workers=data_cfg.num_workers,
                       pin_memory=device.type == "cuda")


def eval_loader(df: pd.DataFrame, manifest_path: str | Path, meta: dict[str, Any], data_cfg, batch_size: int,
                features=None) -> DataLoader:
    """The evaluation loader every stage uses (no augmentation, every row once, in order); with
    ``features`` (:class:`~langtail.data.features.ImageFeatures`) it yields cached backbone outputs."""
    if features is not None:
        return features.loader(df, batch_size, train=False)
    return make_loader(df, store_for(manifest_path, meta), build_transform(False, data_cfg.image_size, data_cfg.normalize),
                       batch_size, train=False, num_workers=data_cfg.num_workers)


def store_for(manifest_path: str | Path, meta: dict[str, Any]) -> ImageStore:
    """The :class:`ImageStore` of a manifest (its ``image_root`` and symlink policy from ``meta``)."""
    return ImageStore(Path(manifest_path).parent, meta.get("image_root", ""),
                      allow_symlinks_outside_root=bool(meta.get("allow_symlinks_outside_root", False)),
                      array_dir=str(meta.get("arrays_dir", "")))
