"""``imagenet_lt`` / ``places_lt``: the published OLTR split files (Liu et al., CVPR 2019).

Input (``data.root``, default ``data/imagenet_lt`` / ``data/places_lt``):

* split files ``ImageNet_LT_{train,val,test}.txt`` (``Places_LT_{train,val,test}.txt``) in
  ``root``, ``root/ImageNet_LT/`` or ``root/ImageNet_LT_v2/`` (``Places_LT``, ``Places_LT_v2``);
  one image per line: ``<relative/path> <label>`` (path and integer label separated by
  whitespace; a leading ``/`` on the path is dropped; blank lines are ignored);
* the images, so that ``root/<relative/path>`` exists for every line.

Splits: ``train`` (ImageNet-LT 115,846 images, 1,000 classes with 1,280..5 images;
Places-LT 62,500, 365 classes with 4,980..5), ``val`` (20,000 / 7,300: 20 per class) and
``test`` (50,000 / 36,500: 50 / 100 per class). Sizes that differ from these are accepted
with a WARNING and recorded as ``matches_published_sizes: false``.

Class names (index = label), first found of:

1. ``classnames.txt`` next to the split files: one class per line in label order, either
   ``<name>`` or ``<id> <name...>`` (if *every* line has two or more whitespace-separated
   tokens, the first is taken as a folder / WordNet id and dropped, as in the LIFT
   ``classnames.txt`` files), or ``<id>\\t<name>``;
2. the list shipped with langtail, ``langtail.corpus.classes.get_class_list(name)``;
3. Places-LT only: ``categories_places365.txt`` (``/a/airfield 0``) next to the split files;
4. ``class_<i>``.

Bad input fails fast: a malformed line or a label outside ``[0, C)`` raises
``ValueError`` naming ``file:line``; missing image files raise ``FileNotFoundError``
with the count and the first paths. Files are only checked for existence, not decoded.
The manifest's ``image_root`` is ``root`` (absolute); refs are the split-file paths.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from langtail.config import DataConfig
from langtail.data.folder import cap_per_class, check_files_exist, resolve_root
from langtail.data.longtail import profile_summary
from langtail.data.manifest import ManifestBuild
from langtail.data.registry import register

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublishedSplit:
    title: str
    prefix: str  #: split file prefix, e.g. "ImageNet_LT"
    num_classes: int
    sizes: dict  #: published {split: number of images}
    default_root: str
    class_list_keys: tuple[str, ...]  #: keys tried with langtail.corpus.classes.get_class_list
    source: str  #: where to get the files (for error messages)


IMAGENET_LT = PublishedSplit(
    title="ImageNet-LT", prefix="ImageNet_LT", num_classes=1000,
    sizes={"train": 115_846, "val": 20_000, "test": 50_000}, default_root="data/imagenet_lt",
    class_list_keys=("imagenet_lt", "imagenet"),
    source="split files: https://github.com/zhmiao/OpenLongTailRecognition-OLTR (ImageNet_LT_*.txt); "
           "images: ILSVRC-2012 train and val (val sorted into val/<wnid>/ folders)")

PLACES_LT = PublishedSplit(
    title="Places-LT", prefix="Places_LT", num_classes=365,
    sizes={"train": 62_500, "val": 7_300, "test": 36_500}, default_root="data/places_lt",
    class_list_keys=("places_lt", "places365"),
    source="split files: https://github.com/zhmiao/OpenLongTailRecognition-OLTR (Places_LT_*.txt); "
           "images: Places365-Standard 256x256 train and val (http://places2.csail.mit.edu)")

SPLIT_NAMES = ("train", "val", "test")


def read_split_file(path: Path, num_classes: int) -> tuple[list[str], list[int]]:
    """Parse a ``<relative/path> <label>`` file; return (paths, labels).

    Raises ``ValueError`` naming ``path:line`` for a malformed line or a label outside
    ``[0, num_classes)``.
    """
    paths, labels = [], []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s:
                continue
            parts = s.rsplit(None, 1)
            if len(parts) != 2 or not re.fullmatch(r"[+-]?\d+", parts[1]):
                raise ValueError(f"{path}:{lineno}: malformed line {s!r}; expected '<relative/path> <label>'")
            y = int(parts[1])
            if not 0 <= y < num_classes:
                raise ValueError(f"{path}:{lineno}: label {y} out of range [0, {num_classes})")
            paths.append(parts[0].strip().lstrip("/"))
            labels.append(y)
    return paths, labels


def find_split_dir(root: Path, spec: PublishedSplit) -> Path:
    """The folder holding ``<prefix>_train.txt``: ``root``, ``root/<prefix>`` or ``root/<prefix>_v2``."""
    for d in (root, root / spec.prefix, root / f"{spec.prefix}_v2"):
        if (d / f"{spec.prefix}_train.txt").is_file():
            return d
    raise FileNotFoundError(
        f"{spec.title}: {spec.prefix}_train.txt not found in {root} (nor in {root / spec.prefix}/). "
        f"Put {spec.prefix}_{{train,val,test}}.txt there and the images so that "
        f"{root}/<path in the split file> exists; set data.root to that folder. "
        f"Where to get them: {spec.source}.")


def read_splits(split_dir: Path, spec: PublishedSplit) -> dict[str, tuple[list[str], list[int]]]:
    """All present split files: {split: (paths, labels)}; ``train`` is required."""
    out = {}
    for split in SPLIT_NAMES:
        p = split_dir / f"{spec.prefix}_{split}.txt"
        if p.is_file():
            out[split] = read_split_file(p, spec.num_classes)
        elif split == "train":
            raise FileNotFoundError(f"{spec.title}: {p} not found")
    return out


def published_size_mismatches(sizes: dict[str, int], spec: PublishedSplit) -> dict[str, list[int]]:
    """{split: [found, published]} for every split whose size differs from the published one."""
    return {s: [int(sizes.get(s, 0)), n] for s, n in spec.sizes.items() if sizes.get(s, 0) != n}


def _parse_classnames_txt(path: Path) -> list[str]:
    lines = [ln.rstrip("\n") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if lines and all("\t" in ln for ln in lines):
        return [ln.split("\t", 1)[1].strip() for ln in lines]
    if lines and all(len(ln.split()) >= 2 for ln in lines):
        return [ln.split(None, 1)[1].strip() for ln in lines]
    return [ln.strip() for ln in lines]


def _shipped_class_list(keys: tuple[str, ...], n: int) -> list[str] | None:
    """``langtail.corpus.classes.get_class_list(key)`` for the first key it knows (or None)."""
    try:
        from langtail.corpus.classes import get_class_list
    except ImportError:  # the corpus package is optional for the data stage
        return None
    for key in keys:
        try:
            names = list(get_class_list(key))
        except (LookupError, FileNotFoundError, ValueError):  # key unknown or needs a path
            continue
        if len(names) == n:
            return [str(x) for x in names]
        log.warning("class list %r has %d names, expected %d; ignored", key, len(names), n)
    return None


def _places_categories(path: Path) -> list[str]:
    """``categories_places365.txt`` (``/a/apartment_building/outdoor 8``) -> names by index."""
    pairs = []
    for ln in path.read_text(encoding="utf-8").splitlines():
        if ln.strip():
            p, i = ln.rsplit(None, 1)
            pairs.append((int(i), p.strip().lstrip("/").split("/", 1)[-1]))
    return [name for _, name in sorted(pairs)]


class _PublishedSplitLT:
    name = ""
    spec: PublishedSplit

    def _root(self, cfg: DataConfig) -> Path:
        return resolve_root(cfg, self.spec.default_root)

    def _class_names(self, split_dir: Path | None) -> tuple[list[str], str]:
        n = self.spec.num_classes
        if split_dir is not None and (split_dir / "classnames.txt").is_file():
            names = _parse_classnames_txt(split_dir / "classnames.txt")
            if len(names) != n:
                raise ValueError(f"{split_dir / 'classnames.txt'}: {len(names)} names, expected {n}")
            return names, "classnames.txt"
        names = _shipped_class_list(self.spec.class_list_keys, n)
        if names is not None:
            return names, "langtail.corpus.classes"
        cat = split_dir / "categories_places365.txt" if split_dir is not None else None
        if self.spec is PLACES_LT and cat is not None and cat.is_file():
            names = _places_categories(cat)
            if len(names) == n:
                return names, "categories_places365.txt"
        log.warning("%s: no class names found (classnames.txt, shipped list); using class_<i>", self.name)
        return [f"class_{i}" for i in range(n)], "generic"

    def class_names(self, cfg: DataConfig) -> list[str]:
        try:
            split_dir = find_split_dir(self._root(cfg), self.spec)
        except FileNotFoundError:
            split_dir = None
        return self._class_names(split_dir)[0]

    def build(self, cfg: DataConfig, out_dir: Path) -> ManifestBuild:
        spec = self.spec
        root = self._root(cfg)
        split_dir = find_split_dir(root, spec)
        names, names_source = self._class_names(split_dir)
        if cfg.profile == "pareto":
            log.warning("%s: uses the published split; data.profile %r is ignored", self.name, cfg.profile)

        data = read_splits(split_dir, spec)
        sizes = {s: len(p) for s, (p, _) in data.items()}
        mismatches = published_size_mismatches(sizes, spec)
        if mismatches:
            log.warning("%s: split sizes differ from the published ones ({split: [found, published]}): %s",
                        self.name, mismatches)

        images, labels, splits = [], [], []
        for split, (paths, labs) in data.items():
            cap = cfg.max_train_per_class if split == "train" else cfg.test_per_class
            sel = cap_per_class(np.asarray(labs), cap)
            images += [paths[i] for i in sel]
            labels += [labs[i] for i in sel]
            splits += [split] * len(sel)

        check_files_exist(self.name, root, images,
                          hint=f"Put the images so that {root}/<path in the split file> exists ({spec.source}).")
        counts = np.bincount(np.asarray([y for y, s in zip(labels, splits) if s == "train"]),
                             minlength=spec.num_classes)
        meta = {"dataset": self.name, "source": str(split_dir), "profile": "file", "seed": int(cfg.seed),
                "split_sizes": sizes, "published_sizes": dict(spec.sizes),
                "matches_published_sizes": not mismatches, "class_names_source": names_source,
                "max_train_per_class": int(cfg.max_train_per_class), "test_per_class": int(cfg.test_per_class)}
        if counts.min() > 0:
            meta.update(profile_summary(counts))
        log.info("%s: %s images per split, class names from %s", self.name, sizes, names_source)
        return ManifestBuild(images=images, labels=labels, splits=splits, class_names=names,
                             image_root=str(root.resolve()), meta=meta)


@register("imagenet_lt")
class ImageNetLT(_PublishedSplitLT):
    name = "imagenet_lt"
    spec = IMAGENET_LT


@register("places_lt")
class PlacesLT(_PublishedSplitLT):
    name = "places_lt"
    spec = PLACES_LT
