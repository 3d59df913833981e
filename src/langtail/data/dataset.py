"""Torch datasets, transforms and samplers over a manifest.

- :class:`ManifestDataset` yields ``(image [3, H, W] float, label, row)``; an unreadable
  image is a recorded skip (``skipped_images.parquet``, see :mod:`langtail.data.skipped`),
  never a crash mid-epoch, never a silent drop. Evaluation loaders drop it
  (:func:`collate_skip`); training loaders replace it by a deterministic substitute (the next
  readable image of the same class in manifest order, see :meth:`ManifestDataset.substitute`),
  so every batch has exactly ``batch_size`` images on every rank of a multi-GPU run (unequal
  batches would break the all-gather of the contrastive loss, and a rank with an empty batch
  would skip the step's collectives and hang the others).
- Augmentation randomness: a training draw is a :class:`Draw` (row + seed); the dataset runs
  the transform under that seed, derived from ``(seed, epoch, position in the global epoch
  sequence)`` by :class:`EpochSampler`. Ranks of a multi-GPU run therefore augment with
  different streams (they draw different positions), the union equals a single-process run,
  the stream does not depend on ``num_workers``, and a resumed run continues it.
- :func:`build_transform`: 32 px CIFAR-style augmentation (random crop with 4 px padding +
  horizontal flip) or CLIP preprocessing (224 px bicubic resize + centre crop, CLIP
  mean/std; random-resized-crop + flip when training).
- :func:`make_sampler`: instance, square-root (class probability ~ n_c^0.5, the paper's
  default) or class-balanced sampling; deterministic per ``(seed, epoch)``.
"""
from __future__ import annotations

import itertools
import logging
from pathlib import Path
from typing import Any, Mapping, NamedTuple

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


def resize_interpolation(image_size: int) -> str:
    """The interpolation of every resize :func:`build_transform` does at ``image_size`` (recorded in
    checkpoints' ``preprocess`` and in eval ``metrics.json``: zero-shot accuracy moves by tenths of
    a point between bilinear and bicubic, LIFT issue #13): ``bilinear`` (antialiased) for the
    <= 64 px square resize, ``bicubic`` (antialiased, CLIP's) for the larger shorter-side resize."""
    return "bilinear" if image_size <= 64 else "bicubic"


def preprocess_info(image_size: int, normalize: str) -> dict[str, Any]:
    """``{image_size, normalize, interpolation}`` of the evaluation transform."""
    return {"image_size": int(image_size), "normalize": str(normalize), "interpolation": resize_interpolation(image_size)}


def build_transform(train: bool, image_size: int = 32, normalize: str = "cifar", augment: bool = True):
    """``uint8 [H, W, 3]`` numpy -> ``float [3, S, S]`` tensor (resizes: :func:`resize_interpolation`)."""
    from torchvision.transforms import v2

    mean, std = MEAN_STD[normalize]
    interp = {"bilinear": v2.InterpolationMode.BILINEAR, "bicubic": v2.InterpolationMode.BICUBIC}[
        resize_interpolation(image_size)]
    ops: list[Any] = [v2.ToImage()]
    if image_size <= 64:
        ops.append(v2.Resize((image_size, image_size), interpolation=interp, antialias=True))
        if train and augment:
            ops += [v2.RandomCrop(image_size, padding=image_size // 8, padding_mode="reflect"),
                    v2.RandomHorizontalFlip()]
    else:
        if train and augment:
            ops += [v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), interpolation=interp, antialias=True),
                    v2.RandomHorizontalFlip()]
        else:
            ops += [v2.Resize(image_size, interpolation=interp, antialias=True),
                    v2.CenterCrop(image_size)]
    ops += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)]
    return v2.Compose(ops)


class Draw(NamedTuple):
    """One training draw (what :class:`EpochSampler` yields with ``with_seeds``): manifest
    row ``index`` and the ``seed`` its augmentation runs under."""

    index: int
    seed: int


class ManifestDataset(Dataset):
    """Rows of a manifest frame as ``(image, label, row)``; ``row`` indexes ``df``.

    An unreadable image yields a :class:`~langtail.data.skipped.Skip` (dropped by
    :func:`collate_skip`), or with ``substitute`` (training) ``(image, label, row, skip)``:
    the image of :meth:`substitute` under the draw's seed, with the skip to record."""

    def __init__(self, df: pd.DataFrame, store: ImageStore, transform=None, *, substitute: bool = False):
        self.refs = df["image"].tolist()
        self.labels = df["label"].to_numpy().astype(np.int64)
        self.splits = df["split"].tolist() if "split" in df.columns else [""] * len(self.refs)
        self.store = store
        self.transform = transform
        self.substitute_unreadable = substitute
        self._bad: set[int] = set()  # rows known to be unreadable (this process)
        self._by_class: dict[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.refs)

    def _apply(self, img: np.ndarray, seed: int | None) -> torch.Tensor:
        if self.transform is None:
            return torch.from_numpy(np.ascontiguousarray(img))
        if seed is None:
            return self.transform(img)
        with torch.random.fork_rng(devices=[]):  # the draw's own stream; the global one is untouched
            torch.default_generator.manual_seed(seed)  # CPU only: CUDA streams stay as they are
            return self.transform(img)

    def __getitem__(self, i: int | Draw):
        i, seed = (int(i.index), int(i.seed)) if isinstance(i, Draw) else (int(i), None)
        try:
            img = self.store.load(self.refs[i])
        except UnreadableImage as e:
            self._bad.add(i)
            skip = Skip(i, self.refs[i], self.splits[i], str(e))
            if not self.substitute_unreadable:
                log.warning("skipping unreadable image: %s", e)
                return skip
            j, img = self.substitute(i)
            log.warning("unreadable image replaced by %s in this batch: %s", self.refs[j], e)
            return self._apply(img, seed), int(self.labels[j]), j, skip
        return self._apply(img, seed), int(self.labels[i]), i

    def substitute(self, i: int) -> tuple[int, np.ndarray]:
        """``(row, image)`` standing in for unreadable row ``i``: the first readable row after
        ``i`` (cyclically, in manifest order) of the same class, else of any class. It depends
        only on ``i`` and the files, so every rank and every rerun picks the same one; raises
        :class:`UnreadableImage` if no image of the manifest is readable."""
        if self._by_class is None:
            order = np.argsort(self.labels, kind="stable")
            bounds = np.cumsum(np.bincount(self.labels))
            self._by_class = {c: order[bounds[c] - n:bounds[c]] for c, n in enumerate(np.bincount(self.labels))}
        same = self._by_class[int(self.labels[i])]
        k = int(np.searchsorted(same, i))
        n = len(self.refs)
        candidates = itertools.chain(np.roll(same, -k - 1)[:-1], ((i + 1 + d) % n for d in range(n - 1)))
        for j in map(int, candidates):
            if j in self._bad or j == i:
                continue
            try:
                return j, self.store.load(self.refs[j])
            except UnreadableImage:
                self._bad.add(j)
        raise UnreadableImage(f"no readable image in the {n} rows of the manifest (the first is {self.refs[0]}); "
                              "check data.image_root and the image files")

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
    """Stack a batch, dropping :class:`~langtail.data.skipped.Skip` items (unreadable images)
    and keeping substitutes (``(image, label, row, skip)``): ``skipped`` counts both,
    ``skipped_images`` lists ``(image, split, reason)`` for a
    :class:`~langtail.data.skipped.SkipLog`."""
    good = [b for b in batch if b is not None and not isinstance(b, Skip)]
    skips = [b for b in batch if isinstance(b, Skip)] + [b[3] for b in good if len(b) > 3]
    out: dict[str, Any] = {"skipped": len(skips) + sum(b is None for b in batch),
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
    unchanged. ``with_seeds``: yield :class:`Draw` items whose augmentation seed is drawn per
    position of the global epoch sequence from ``(seed, epoch)`` (the same draw gets the same
    seed whatever the number of ranks). ``set_epoch(e, start)`` skips the first ``start``
    draws of this rank's part (a run resumed mid-epoch continues the sequence)."""

    def __init__(self, labels: np.ndarray, mode: str, seed: int, *, rank: int = 0, world: int = 1,
                 batch_size: int = 0, with_seeds: bool = False):
        self.labels = np.asarray(labels)
        self.mode = mode
        self.seed = seed
        self.epoch, self.start = 0, 0
        self.with_seeds = with_seeds
        self.p = sample_weights(self.labels, mode)
        self.rank, self.world, self.batch_size = rank, world, batch_size
        if world > 1:
            if batch_size < 1:
                raise ValueError("a distributed EpochSampler needs the per-rank batch_size")
            if len(self.labels) < batch_size * world:
                raise ValueError(f"{len(self.labels)} training images < one global batch of {batch_size * world}; "
                                 "lower batch_size")

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, int(start)

    def __len__(self) -> int:
        if self.world == 1:
            return len(self.labels)
        return len(self.labels) // (self.batch_size * self.world) * self.batch_size

    def _rank_part(self, a: np.ndarray) -> np.ndarray:
        """This rank's part ``[len(self)]`` of an epoch-long array ``[len(labels)]``."""
        if self.world == 1:
            return a
        b, gb = self.batch_size, self.batch_size * self.world
        n = len(a) // gb
        return a[:n * gb].reshape(n, self.world, b)[:, self.rank].reshape(-1)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.mode == "instance":
            idx = rng.permutation(len(self.labels))
        else:
            idx = rng.choice(len(self.labels), size=len(self.labels), replace=True, p=self.p)
        idx = self._rank_part(idx)[self.start:]
        if not self.with_seeds:
            return iter(idx.tolist())
        seeds = np.random.default_rng([self.seed, self.epoch, 1]).integers(0, 2**62, size=len(self.labels))
        return iter(map(Draw, idx.tolist(), self._rank_part(seeds)[self.start:].tolist()))


def make_loader(df: pd.DataFrame, store: ImageStore, transform, batch_size: int, *, train: bool,
                sampler: str = "instance", seed: int = 0, num_workers: int = 0,
                pin_memory: bool = False, persistent_workers: bool | None = None) -> DataLoader:
    """DataLoader over ``df`` rows. Training loaders use an :class:`EpochSampler` (with
    per-draw augmentation seeds), substitute unreadable images and drop the last batch; in a
    process group, ``batch_size`` is the global batch (each rank loads ``batch_size / world``
    images of it). ``persistent_workers``: keep worker processes between
    epochs (default: whenever there are workers)."""
    from langtail import distributed

    ds = ManifestDataset(df, store, transform, substitute=train)
    return loader_for(ds, ds.labels, batch_size, train=train, sampler=sampler, seed=seed,
                      num_workers=distributed.workers_per_rank(num_workers), pin_memory=pin_memory,
                      persistent_workers=persistent_workers, with_seeds=True)


def loader_for(ds: Dataset, labels: np.ndarray, batch_size: int, *, train: bool, sampler: str = "instance",
               seed: int = 0, num_workers: int = 0, pin_memory: bool = False, persistent_workers: bool | None = None,
               collate_fn=collate_skip, sampler_cls: type = EpochSampler, **sampler_kw: Any) -> DataLoader:
    """The DataLoader of :func:`make_loader` over any dataset ``ds`` with per-item ``labels [N]``
    (cached features use it with their own dataset, collate and sampler)."""
    from langtail import distributed

    samp = None
    if train:
        # under torchrun, `batch_size` is the global batch: this rank loads its share
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


def eval_loader(rows: pd.DataFrame, manifest_path: Path | str, meta: Mapping[str, Any], data_cfg,
                batch_size: int, load_size: int | None = None, *, features=None):
    """The evaluation loader every stage uses (no augmentation, every row once, in order; reset
    index: ``batch["row"]`` indexes ``rows``); ``load_size``: the side images are resized to
    (default ``data.image_size``; larger for test-time crops, :func:`langtail.inference.tta_load_size`);
    with ``features`` (:class:`~langtail.data.features.ImageFeatures`) it yields cached backbone outputs."""
    rows = rows.reset_index(drop=True)
    if features is not None:
        return features.loader(rows, batch_size, train=False)
    return make_loader(rows, store_for(manifest_path, dict(meta)),
                       build_transform(False, load_size or data_cfg.image_size, data_cfg.normalize), batch_size,
                       train=False, num_workers=data_cfg.num_workers)


def store_for(manifest_path: str | Path, meta: dict[str, Any]) -> ImageStore:
    """The :class:`ImageStore` of a manifest (its ``image_root`` and symlink policy from ``meta``)."""
    return ImageStore(Path(manifest_path).parent, meta.get("image_root", ""),
                      allow_symlinks_outside_root=bool(meta.get("allow_symlinks_outside_root", False)),
                      array_dir=str(meta.get("arrays_dir", "")))
