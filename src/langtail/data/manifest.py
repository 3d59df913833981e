"""The manifest: one Parquet table listing every image of a dataset's splits.

Schema (``manifest.parquet``; metadata key ``langtail`` holds a dict, see below):

========== ======= ==========================================================
column     dtype   meaning
========== ======= ==========================================================
image      string  image reference (see :func:`resolve_image_ref`)
label      int32   class id in ``[0, C)``
class_name string  human-readable class name of ``label``
split      string  ``train`` | ``val`` | ``test``
class_count int32  number of *training* images of the class
group      string  ``many`` | ``medium`` | ``few`` (:func:`shot_group`; data.shot_bounds)
========== ======= ==========================================================

Metadata: ``dataset`` (name), ``class_names`` (list, index = label), ``image_root``
(folder that relative file refs are resolved against), ``arrays_dir`` (folder of the
``.npy`` arrays, relative to the manifest's folder), ``allow_symlinks_outside_root``, ``seed``, ``profile``,
``imbalance_factor``, ``skipped`` (counted, reported skips) and anything the builder
adds (e.g. ``checksums_verified``).

Image references are either a file path relative to ``image_root`` (it must stay inside
it: see :class:`ImageStore`) or ``"<file>.npy#<row>"``: row ``row`` of a uint8
``[N, H, W, 3]`` array in the folder ``arrays_dir`` (metadata; :data:`ARRAYS_DIR` =
``arrays/`` next to the manifest when written by the longtail stage; array-backed datasets:
CIFAR, the demo). The many/medium/few split is
computed here, once, by :func:`shot_groups`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from langtail import io
from langtail.schemas import MANIFEST_COLUMNS

SPLITS = ("train", "val", "test")
#: folder next to the manifest holding array-backed images (``images_<split>.npy``); the
#: longtail stage always creates it (empty for file-backed datasets), so the rule declares it
ARRAYS_DIR = "arrays"
GROUPS = ("many", "medium", "few")


def shot_group(count: int, many_threshold: int = 100, few_threshold: int = 20, inclusive: bool = True) -> str:
    """Shot group of a class with ``count`` training images.

    ``inclusive`` (the VL-LTR paper and its code, ``data.shot_bounds: inclusive``): many >= 100,
    medium 21-99, few <= 20. Otherwise (OLTR's usual split, ``exclusive``): many > 100,
    medium 20-100, few < 20.
    """
    if count > many_threshold or (inclusive and count == many_threshold):
        return "many"
    if count < few_threshold or (inclusive and count == few_threshold):
        return "few"
    return "medium"


def shot_groups(counts: Sequence[int], many_threshold: int = 100, few_threshold: int = 20,
                inclusive: bool = True) -> list[str]:
    return [shot_group(int(c), many_threshold, few_threshold, inclusive) for c in counts]


@dataclass
class ManifestBuild:
    """What a dataset builder returns: rows for every split plus metadata."""

    images: list[str]
    labels: list[int]
    splits: list[str]
    class_names: list[str]
    image_root: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def carve_val(build: ManifestBuild, fraction: float, seed: int) -> ManifestBuild:
    """``build`` with ``round(fraction * n_c)`` train images of every class ``c`` moved to ``val``
    (at least 1 when ``n_c >= 2``, never the class's last train image), chosen by a permutation
    seeded by ``(seed, c)``: the same images for the same seed whatever the other classes.
    The test split is never touched. Raises ``ValueError`` when the dataset has its own val split."""
    if fraction <= 0:
        return build
    if not 0 < fraction < 1:
        raise ValueError(f"data.val_from_train: {fraction} must be in [0, 1)")
    splits = np.asarray(build.splits, dtype=object)
    if (splits == "val").any():
        raise ValueError(f"data.val_from_train: {fraction}, but the dataset already has a val split "
                         f"({int((splits == 'val').sum())} images): set data.val_from_train: 0 to use it")
    labels = np.asarray(build.labels, dtype=np.int64)
    for c in range(len(build.class_names)):
        rows = np.flatnonzero((labels == c) & (splits == "train"))
        if len(rows) < 2:
            continue
        k = min(len(rows) - 1, max(1, int(round(fraction * len(rows)))))
        rng = np.random.default_rng([seed, c])
        splits[rows[rng.permutation(len(rows))[:k]]] = "val"
    return ManifestBuild(build.images, build.labels, splits.tolist(), build.class_names, build.image_root,
                         {**build.meta, "val_from_train": fraction})


def make_manifest(build: ManifestBuild, many_threshold: int = 100, few_threshold: int = 20,
                  inclusive: bool = True) -> pd.DataFrame:
    """Turn a :class:`ManifestBuild` into the manifest frame (adds counts and groups).

    Raises ``ValueError`` naming the class if a class has zero training images, and
    if a label is out of range.
    """
    labels = np.asarray(build.labels, dtype=np.int64)
    C = len(build.class_names)
    if len(labels) and (labels.min() < 0 or labels.max() >= C):
        bad = int(labels[(labels < 0) | (labels >= C)][0])
        raise ValueError(f"label {bad} out of range for {C} classes")
    splits = np.asarray(build.splits)
    unknown = set(splits.tolist()) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown split name(s) {sorted(unknown)}; expected {SPLITS}")
    counts = np.bincount(labels[splits == "train"], minlength=C)
    empty = [build.class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(f"{len(empty)} class(es) have zero training images: {empty[:10]}")
    groups = np.asarray(shot_groups(counts, many_threshold, few_threshold, inclusive))
    names = np.asarray(build.class_names, dtype=object)
    return pd.DataFrame({
        "image": pd.Series(build.images, dtype=object),
        "label": labels.astype(np.int32),
        "class_name": names[labels],
        "split": splits.astype(object),
        "class_count": counts[labels].astype(np.int32),
        "group": groups[labels].astype(object),
    })


def write_manifest(path: str | Path, df: pd.DataFrame, meta: dict[str, Any]) -> None:
    io.check_columns(df, MANIFEST_COLUMNS, where="manifest")
    io.write_parquet(path, df, metadata=meta)


def read_manifest(path: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    df = io.read_parquet(path, MANIFEST_COLUMNS)
    return df, io.read_parquet_metadata(path)


def class_counts(df: pd.DataFrame, num_classes: int) -> np.ndarray:
    """Training images per class, ``[C]`` int64."""
    tr = df[df["split"] == "train"]
    return np.bincount(tr["label"].to_numpy(), minlength=num_classes)


def class_groups(df: pd.DataFrame, num_classes: int) -> np.ndarray:
    """Shot group per class, ``[C]`` of str, read from the manifest (never recomputed)."""
    out = np.empty(num_classes, dtype=object)
    sub = df.drop_duplicates("label")
    out[sub["label"].to_numpy()] = sub["group"].to_numpy()
    return out


class ImageStore:
    """Resolves manifest image references to ``uint8 [H, W, 3]`` arrays.

    ``.npy#row`` references are memory-mapped once per file (the file name must be a plain
    name in the manifest's folder); file references are decoded with PIL (RGB). Unreadable
    files raise :class:`UnreadableImage`, which the dataset layer turns into a counted skip.
    A file reference that is absolute or resolves outside ``image_root`` (``..``, or a
    symlink unless ``allow_symlinks_outside_root``) raises :class:`UnsafeImagePath` before
    anything is opened (the check is :class:`langtail.data.folder.PathChecker`).
    """

    def __init__(self, manifest_dir: str | Path, image_root: str | Path = "",
                 allow_symlinks_outside_root: bool = False, array_dir: str = ""):
        self.manifest_dir = Path(manifest_dir)
        self.array_dir = self.manifest_dir / array_dir  #: where ``<file>.npy`` refs live (meta ``arrays_dir``)
        self.image_root = Path(image_root) if image_root else self.manifest_dir
        self.allow_symlinks_outside_root = allow_symlinks_outside_root
        self._arrays: dict[str, np.ndarray] = {}
        self._checker = None

    @property
    def checker(self):
        if self._checker is None:
            from langtail.data.paths import PathChecker

            self._checker = PathChecker(self.image_root, self.allow_symlinks_outside_root)
        return self._checker

    def array(self, name: str) -> np.ndarray:
        if Path(name).name != name or name in ("", ".", ".."):
            raise UnsafeImagePath(f"array reference {name!r} must be a file name in {self.array_dir}")
        arr = self._arrays.get(name)
        if arr is None:
            arr = np.load(self.array_dir / name, mmap_mode="r")
            self._arrays[name] = arr
        return arr

    def path(self, ref: str) -> Path:
        """The file of a reference (relative to ``image_root``); no containment check."""
        p = Path(ref)
        return p if p.is_absolute() else self.image_root / p

    def problem(self, ref: str) -> str | None:
        """Why a reference cannot be read (escapes the root, missing), or None; opens nothing."""
        if is_array_ref(ref):
            name = ref.rsplit("#", 1)[0]
            return None if Path(name).name == name and name not in ("", ".", "..") else \
                f"array reference {name!r} must be a file name in {self.array_dir}"
        return self.checker.problem(ref)

    def load(self, ref: str) -> np.ndarray:
        if is_array_ref(ref):
            name, row = ref.rsplit("#", 1)
            return np.array(self.array(name)[int(row)])  # copy: writable, detached from the mmap
        from PIL import Image

        why = self.checker.escape(ref)
        if why is not None:
            raise UnsafeImagePath(f"{ref}: {why}")
        p = self.path(ref)
        try:
            with Image.open(p) as im:
                return np.asarray(im.convert("RGB"))
        except (OSError, ValueError, SyntaxError) as e:  # PIL raises these on bad files
            raise UnreadableImage(f"{p}: {e}") from e
        except Image.DecompressionBombError as e:  # larger than PIL's MAX_IMAGE_PIXELS guard allows
            raise UnreadableImage(f"{p}: {e}") from e


def is_array_ref(ref: str) -> bool:
    """``"<file>.npy#<row>"``?"""
    return "#" in ref and ref.split("#", 1)[0].endswith(".npy")


def check_image_refs(store: ImageStore, refs: Sequence[str], where: str) -> None:
    """Raise one error listing every reference of a manifest that is missing or leaves the
    image root (row index and reason); nothing is opened."""
    from langtail.data.paths import BadLine, raise_bad_lines

    bad = []
    for i, r in enumerate(refs):
        why = store.problem(r)
        if why is not None:
            bad.append(BadLine(f"{where} row {i}", 0, r, why))
    raise_bad_lines(where, bad, total=len(refs))


class UnreadableImage(OSError):
    """An image file exists but cannot be decoded."""


class UnsafeImagePath(ValueError):
    """An image reference points outside its data root (never opened; not a skip)."""
