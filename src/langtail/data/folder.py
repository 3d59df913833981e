"""``folder``: any ImageFolder-style tree, with a generated long tail; shared file helpers.

Input layout (``data.root``)::

    root/train/<class>/**/*.jpg      # required; one sub-folder per class
    root/test/<class>/**/*.jpg       # optional evaluation split "test"
    root/val/<class>/**/*.jpg        # optional evaluation split "val"

* Classes are the sub-folders of ``root/train`` sorted by name; label ``c`` is the
  ``c``-th name (torchvision ``ImageFolder`` order). Hidden entries are ignored; images are
  files whose extension is in :data:`IMAGE_EXTENSIONS` (case-insensitive), found
  recursively and sorted by relative path.
* If only ``val/`` exists it becomes the ``test`` split (recorded in the metadata as
  ``split_dirs``); with both, ``val/`` -> ``val`` and ``test/`` -> ``test``. Evaluation
  folders must not contain classes absent from ``train/``.
* Training long tail (``data.profile``):

  - ``exp`` (LDAM-DRW) or ``pareto`` (see :func:`langtail.data.longtail.pareto_profile`):
    per-class counts in label order; ``n_max`` is the largest value for which every class
    has enough images (at most ``data.max_train_per_class`` when that is > 0); images are
    chosen with :func:`~langtail.data.longtail.subsample_per_class` (seed ``data.seed``);
  - ``file``: keep every training image (the folder is already long-tailed), capped at
    ``max_train_per_class`` per class (seeded choice) when that is > 0.

* ``data.test_per_class > 0`` keeps the first that many images (path order) per class of
  each evaluation split.

Manifest image refs are POSIX paths relative to ``root`` (``train/cat/001.jpg``);
``image_root`` is ``root`` resolved to an absolute path. Files are listed, never decoded:
unreadable images surface later as :class:`~langtail.data.manifest.UnreadableImage`.
Symlinked files or folders that resolve outside ``realpath(root)`` are not entered and are
reported together in one error, unless ``data.allow_symlinks_outside_root``.

Every image path is checked with :mod:`langtail.data.paths` (inside the data root, exists;
every bad line in one error).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from langtail.config import DataConfig
from langtail.data.longtail import (check_profile, largest_feasible_n_max, make_profile, profile_summary,
                                    subsample_per_class)
from langtail.data.manifest import ManifestBuild
from langtail.data.paths import OUTSIDE, BadLine, BadLinesError, inside, raise_bad_lines
from langtail.data.registry import register

log = logging.getLogger(__name__)

#: file extensions (lower case) treated as images
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                              ".ppm", ".pgm"})


# ----------------------------------------------------------------------------- shared helpers


def is_image_file(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


def list_images(folder: Path, relative_to: Path, allow_symlinks_outside: bool = False,
                bad: list[BadLine] | None = None) -> list[str]:
    """Image files under ``folder`` (recursive, symlinks followed), as sorted POSIX paths
    relative to ``relative_to`` (the data root).

    Unless ``allow_symlinks_outside``, a symlinked folder or file that resolves outside
    ``realpath(relative_to)`` is neither entered nor listed: it is appended to ``bad``
    (reason names the target), or, when ``bad`` is None, raised as :class:`BadLinesError`.
    """
    real_root = os.path.realpath(relative_to)
    found: list[BadLine] = []
    out: list[str] = []

    def escapes(path: str, is_link: bool) -> bool:
        if allow_symlinks_outside or not is_link:
            return False
        target = os.path.realpath(path)
        if inside(target, real_root):
            return False
        found.append(BadLine(os.path.dirname(path), 0, os.path.basename(path),
                             f"symlink to {target}, {OUTSIDE} {real_root} (not listed; set "
                             "data.allow_symlinks_outside_root: true if your layout needs it)"))
        return True

    def walk(d: str, rel: str) -> None:  # scandir: is_dir / is_symlink come with the listing
        with os.scandir(d) as it:
            entries = sorted(it, key=lambda e: e.name)
        for e in entries:
            if e.name.startswith("."):
                continue
            is_dir = e.is_dir()  # follows symlinks
            if is_dir or is_image_file(e.name):
                if escapes(e.path, e.is_symlink()):
                    continue
                r = f"{rel}/{e.name}" if rel else e.name
                if is_dir:
                    walk(e.path, r)
                else:
                    out.append(r)

    folder = Path(folder)
    if not escapes(str(folder), folder.is_symlink()):
        rel0 = Path(os.path.relpath(folder, relative_to)).as_posix()
        walk(str(folder), "" if rel0 == "." else rel0)
    if found:
        if bad is None:
            raise BadLinesError("folder scan", found)
        bad.extend(found)
    return sorted(out)


def subdirs(folder: Path) -> list[str]:
    """Sorted names of the non-hidden sub-folders of ``folder``."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


# ----------------------------------------------------------------------------- containment, bad lines


def occurrence_rank(labels: np.ndarray) -> np.ndarray:
    """``[N]``: how many earlier items share each item's label (0 for a class's first item). Vectorised."""
    labels = np.asarray(labels)
    order = np.argsort(labels, kind="stable")
    s = labels[order]
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1] if len(s) else np.zeros(0, dtype=np.int64)
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(s)) - np.repeat(starts, np.diff(np.r_[starts, len(s)]))
    return rank


def cap_per_class(labels: np.ndarray, cap: int) -> np.ndarray:
    """Indices keeping the first ``cap`` items of every class in their current order (all if cap <= 0)."""
    labels = np.asarray(labels)
    if cap <= 0:
        return np.arange(len(labels))
    return np.flatnonzero(occurrence_rank(labels) < cap).astype(np.int64)


def generated_longtail(labels: np.ndarray, num_classes: int, cfg: DataConfig,
                       n_max: int | None = None) -> tuple[np.ndarray, dict]:
    """Pick the long-tailed training subset of a (roughly balanced) pool.

    ``labels`` ``[N]``: label of every pool image (pool order must be deterministic, e.g.
    sorted paths). Returns (kept indices into the pool, sorted within each class and grouped
    by class in label order; metadata dict with the profile and its realised imbalance).
    ``n_max=None`` picks the largest feasible value (capped by ``cfg.max_train_per_class``).
    """
    labels = np.asarray(labels, dtype=np.int64)
    available = np.bincount(labels, minlength=num_classes)
    if cfg.profile == "file":
        counts = available.copy()
        if cfg.max_train_per_class > 0:
            counts = np.minimum(counts, cfg.max_train_per_class)
        counts = counts.tolist()
    else:
        if n_max is None:
            n_max = largest_feasible_n_max(available, cfg.profile, cfg.imbalance_factor, cfg.seed,
                                           cap=cfg.max_train_per_class)
        counts = make_profile(cfg.profile, n_max, num_classes, cfg.imbalance_factor, cfg.seed)
        check_profile(counts, n_max, cfg.imbalance_factor, cfg.name)
    keep = subsample_per_class(labels, counts, cfg.seed)
    # sort within class (the selection is what matters; a sorted list reads better as a record)
    keep = np.asarray(keep, dtype=np.int64)
    keep = keep[np.lexsort((keep, labels[keep]))]  # by class, then index: O(N log N), no loop over classes
    meta = {"profile": cfg.profile, "seed": int(cfg.seed),
            "imbalance_factor_requested": float(cfg.imbalance_factor),
            "train_counts": [int(c) for c in counts], **profile_summary(counts)}
    return keep, meta


def dedupe_names(names: Sequence[str], ids: Sequence[str]) -> list[str]:
    """Make class names unique by appending `` (<id>)`` to repeated ones."""
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    return [f"{n} ({i})" if seen[n] > 1 else n for n, i in zip(names, ids)]


def resolve_root(cfg: DataConfig, default: str) -> Path:
    """``cfg.root`` (or ``default`` when empty) as a Path, ``~`` expanded."""
    return Path(cfg.root or default).expanduser()


# ----------------------------------------------------------------------------- builder


@register("folder")
class FolderLT:
    """ImageFolder tree -> generated long tail (see the module docstring)."""

    name = "folder"

    def _root(self, cfg: DataConfig) -> Path:
        if not cfg.root:
            raise ValueError("folder: set data.root to a folder containing train/<class>/*.jpg")
        root = resolve_root(cfg, "")
        if not (root / "train").is_dir():
            raise FileNotFoundError(
                f"folder: {root / 'train'} not found; expected root/train/<class>/*.jpg "
                "(+ optional root/test/<class>/ or root/val/<class>/)")
        return root

    def class_names(self, cfg: DataConfig) -> list[str]:
        names = subdirs(self._root(cfg) / "train")
        if not names:
            raise ValueError(f"folder: no class folders in {self._root(cfg) / 'train'}")
        return names

    def build(self, cfg: DataConfig, out_dir: Path) -> ManifestBuild:
        root = self._root(cfg)
        names = self.class_names(cfg)
        index = {n: i for i, n in enumerate(names)}

        allow = cfg.allow_symlinks_outside_root
        escaped: list[BadLine] = []
        pool, pool_labels = [], []
        for c, n in enumerate(names):
            imgs = list_images(root / "train" / n, root, allow, escaped)
            if not imgs:
                raise ValueError(f"folder: class {n!r} has no images in {root / 'train' / n}")
            pool += imgs
            pool_labels += [c] * len(imgs)
        keep, lt_meta = generated_longtail(np.asarray(pool_labels), len(names), cfg)
        images = [pool[i] for i in keep]
        labels = [pool_labels[i] for i in keep]
        splits = ["train"] * len(images)

        split_dirs = {}
        if (root / "test").is_dir():
            split_dirs["test"] = "test"
            if (root / "val").is_dir():
                split_dirs["val"] = "val"
        elif (root / "val").is_dir():
            split_dirs["test"] = "val"
        for split, d in sorted(split_dirs.items(), key=lambda kv: kv[0] != "val"):
            ev_imgs, ev_labels = [], []
            for n in subdirs(root / d):
                if n not in index:
                    raise ValueError(f"folder: class folder {root / d / n} is not a class of {root / 'train'}")
                imgs = list_images(root / d / n, root, allow, escaped)
                ev_imgs += imgs
                ev_labels += [index[n]] * len(imgs)
            sel = cap_per_class(np.asarray(ev_labels), cfg.test_per_class)
            images += [ev_imgs[i] for i in sel]
            labels += [ev_labels[i] for i in sel]
            splits += [split] * len(sel)

        raise_bad_lines(self.name, escaped)
        meta = {"dataset": self.name, "source": str(root), "split_dirs": split_dirs,
                "test_per_class": int(cfg.test_per_class), **lt_meta}
        log.info("folder: %d classes, %d train images (n_max %d, n_min %d), eval splits %s",
                 len(names), lt_meta["num_train"], lt_meta["n_max"], lt_meta["n_min"], split_dirs)
        return ManifestBuild(images=images, labels=labels, splits=splits, class_names=names,
                             image_root=str(root.resolve()), meta=meta)
