"""``imagenet_lt`` / ``places_lt``: the published OLTR split files (Liu et al., CVPR 2019).

Input (``data.root``, default ``data/imagenet_lt`` / ``data/places_lt``):

* split files ``ImageNet_LT_{train,val,test}.txt`` (``Places_LT_{train,val,test}.txt``) in
  ``root``, ``root/ImageNet_LT/`` or ``root/ImageNet_LT_v2/`` (``Places_LT``, ``Places_LT_v2``);
  one image per line: ``<relative/path> <label>`` (path and integer label separated by
  whitespace; a leading ``/`` on the path is dropped, i.e. read relative to ``root``;
  blank lines are ignored);
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

Classes: the labels that occur in the train split file (optionally restricted by
``data.classes``: names or label ids), re-indexed ``0..K-1`` in label order; names are the
standard names of those labels; metadata ``source_labels`` holds the original ids
(``"label"`` when all C occur). A label in val / test but not in train is an error.

Bad input: every bad line of the three files is reported in ONE error
(:class:`~langtail.data.folder.BadLinesError`, ``file:line: text: reason``): malformed
lines, labels outside ``[0, C)``, lines whose class folder (the wnid component, else the
parent folder) disagrees with the majority label of that folder over all split files,
val/test labels absent from train, missing image files (a
:class:`~langtail.data.folder.MissingImagesError` when those are the only problems) and
paths that leave the root (``..``, symlinks out unless
``data.allow_symlinks_outside_root``; see :class:`~langtail.data.folder.PathChecker`).
Files are only checked for existence, not decoded, and nothing outside the root is opened.
The manifest's ``image_root`` is ``root`` (absolute); refs are the split-file paths.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from langtail.config import DataConfig
from langtail.data.folder import cap_per_class, resolve_root
from langtail.data.longtail import profile_summary
from langtail.data.paths import BadLine, BadLinesError, PathChecker, raise_bad_lines
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


@dataclass
class SplitFile:
    """The lines of one split file: ``paths[i]``, ``labels[i]`` came from line ``linenos[i]``."""

    file: Path
    paths: list[str]
    labels: list[int]
    linenos: list[int]
    texts: list[str]


def read_split_file(path: Path, num_classes: int, bad: list[BadLine] | None = None) -> SplitFile:
    """Parse a ``<relative/path> <label>`` file (a leading ``/`` on the path is dropped).

    Bad lines (malformed, label outside ``[0, num_classes)``, an image listed again) are appended to ``bad`` and
    left out; with ``bad=None`` they are raised at once as one :class:`BadLinesError`.
    """
    own = bad is None
    bad = [] if bad is None else bad
    out = SplitFile(Path(path), [], [], [], [])
    first: dict[str, int] = {}  # image path -> the line that listed it first
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            s = line.strip()
            if not s:
                continue
            parts = s.rsplit(None, 1)
            if len(parts) != 2 or not re.fullmatch(r"[+-]?\d+", parts[1]):
                bad.append(BadLine(str(path), lineno, s, "malformed line; expected '<relative/path> <label>'"))
                continue
            y = int(parts[1])
            if not 0 <= y < num_classes:
                bad.append(BadLine(str(path), lineno, s, f"label {y} out of range [0, {num_classes})"))
                continue
            ref = parts[0].strip().lstrip("/")
            if ref in first:  # listed twice: its image would count twice (double weight, double sampling)
                bad.append(BadLine(str(path), lineno, s, f"duplicate: the image is already listed on line {first[ref]}"))
                continue
            first[ref] = lineno
            out.paths.append(ref)
            out.labels.append(y)
            out.linenos.append(lineno)
            out.texts.append(s)
    if own and bad:
        raise BadLinesError(str(path), bad)
    return out


_WNID = re.compile(r"n\d{8}")


def class_folder(ref: str) -> str:
    """The folder that names a line's class: the WordNet-id component (``n01440764``) if the
    path has one (ImageNet: ``train/<wnid>/...`` and ``val/<wnid>/...`` agree), else the
    parent folder (Places: ``a/airfield``)."""
    parts = ref.split("/")
    for p in parts[:-1]:
        if _WNID.fullmatch(p):
            return p
    return "/".join(parts[:-1])


def folder_label_conflicts(files: list[SplitFile]) -> list[BadLine]:
    """Lines whose class folder disagrees with their label.

    A folder's label is the label of the majority of its lines over all split files (no
    wnid -> label list is shipped; the OLTR files label every wnid consistently). Folders
    whose majority label holds at most half of their lines are mixed folders (Places365
    ``val_256/`` is flat) and are not checked.
    """
    counts: dict[str, dict[int, int]] = {}
    for sf in files:
        for ref, y in zip(sf.paths, sf.labels):
            d = counts.setdefault(class_folder(ref), {})
            d[y] = d.get(y, 0) + 1
    majority: dict[str, tuple[int, int, int]] = {}  # folder -> (label, its lines, all lines)
    for folder, d in counts.items():
        y, n = max(d.items(), key=lambda kv: (kv[1], -kv[0]))
        total = sum(d.values())
        if len(d) > 1 and 2 * n > total:
            majority[folder] = (y, n, total)
    bad = []
    if not majority:
        return bad
    for sf in files:
        for ref, y, ln, text in zip(sf.paths, sf.labels, sf.linenos, sf.texts):
            m = majority.get(class_folder(ref))
            if m is not None and y != m[0]:
                bad.append(BadLine(str(sf.file), ln, text,
                                   f"label {y} disagrees with its folder {class_folder(ref)!r}, which holds "
                                   f"label {m[0]} on {m[1]} of its {m[2]} lines in the split files "
                                   "(the majority defines the folder's label)"))
    return bad


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


def read_splits(split_dir: Path, spec: PublishedSplit, bad: list[BadLine]) -> dict[str, SplitFile]:
    """All present split files: {split: SplitFile}; ``train`` is required. Bad lines go to ``bad``."""
    out = {}
    for split in SPLIT_NAMES:
        p = split_dir / f"{spec.prefix}_{split}.txt"
        if p.is_file():
            out[split] = read_split_file(p, spec.num_classes, bad)
        elif split == "train":
            raise FileNotFoundError(f"{spec.title}: {p} not found")
    return out


def select_classes(names: list[str], wanted: list[str | int], where: str = "data.classes") -> list[int]:
    """Label ids of ``wanted`` (class names, matched by normalised name, or label ids), sorted.

    Raises ``ValueError`` naming every entry that is not a class (with close names).
    """
    import difflib

    from langtail.corpus.classes import normalize_name

    by_norm: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        by_norm.setdefault(normalize_name(n), []).append(i)
    ids, errors = set(), []
    for w in wanted:
        if isinstance(w, int) or (isinstance(w, str) and re.fullmatch(r"\d+", w.strip())):
            i = int(w)
            if not 0 <= i < len(names):
                errors.append(f"{w!r}: label id out of range [0, {len(names)})")
            else:
                ids.add(i)
            continue
        hit = by_norm.get(normalize_name(str(w)))
        if hit is None:
            close = difflib.get_close_matches(normalize_name(str(w)), list(by_norm), n=3)
            errors.append(f"{w!r}: no such class" + (f" (did you mean {close}?)" if close else ""))
        elif len(hit) > 1:
            errors.append(f"{w!r}: {len(hit)} classes share this name (ids {hit}); give the id instead")
        else:
            ids.add(hit[0])
    if errors:
        raise ValueError(f"{where}: " + "; ".join(errors))
    return sorted(ids)


def class_set(files: dict[str, SplitFile], names: list[str], wanted: list[str | int],
              bad: list[BadLine]) -> list[int]:
    """Original label ids of the run's classes, ascending: the labels of the train split (or the
    ``wanted`` ones, which must all have training images). A label that occurs in val / test
    but not in train is appended to ``bad`` (one entry per file and label, naming the class)."""
    train = set(files["train"].labels) if "train" in files else set()
    ids = sorted(train)
    if wanted:
        ids = select_classes(names, wanted)
        absent = [i for i in ids if i not in train]
        if absent:
            raise ValueError("data.classes: class(es) without training images in the split files: "
                             + ", ".join(f"{i} ({names[i]!r})" for i in absent))
    keep = set(ids)
    for split, sf in files.items():
        if split == "train":
            continue
        first: dict[int, tuple[int, str, int]] = {}
        for y, ln, text in zip(sf.labels, sf.linenos, sf.texts):
            if y not in train and (not wanted or y in keep):
                ln0, t0, n = first.get(y, (ln, text, 0))
                first[y] = (ln0, t0, n + 1)
        for y, (ln, text, n) in sorted(first.items()):
            bad.append(BadLine(str(sf.file), ln, text,
                               f"class {y} ({names[y]!r}) has {n} {split} line(s) but no training image in "
                               f"{files['train'].file.name}"))
    return ids


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
    supports_class_subset = True  #: honours data.classes (see registry.check_class_subset)
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

    def _read(self, cfg: DataConfig) -> tuple[Path, dict[str, SplitFile], list[str], str, list[int], list[BadLine]]:
        """(split_dir, split files, all C names, names source, the run's original label ids, bad lines)."""
        split_dir = find_split_dir(self._root(cfg), self.spec)
        names, names_source = self._class_names(split_dir)
        bad: list[BadLine] = []
        files = read_splits(split_dir, self.spec, bad)
        bad += folder_label_conflicts(list(files.values()))
        ids = class_set(files, names, list(cfg.classes), bad)
        return split_dir, files, names, names_source, ids, bad

    def class_names(self, cfg: DataConfig) -> list[str]:
        """The run's class names (index = manifest label): the classes of the train split
        file (restricted to ``data.classes``); without split files, the standard list."""
        try:
            split_dir, files, names, _, ids, bad = self._read(cfg)
        except FileNotFoundError:
            names = self._class_names(None)[0]
            return [names[i] for i in select_classes(names, list(cfg.classes))] if cfg.classes else names
        raise_bad_lines(self.name, bad)
        return [names[i] for i in ids]

    def build(self, cfg: DataConfig, out_dir: Path) -> ManifestBuild:
        spec = self.spec
        root = self._root(cfg)
        split_dir, files, all_names, names_source, ids, bad = self._read(cfg)
        if cfg.profile == "pareto":
            log.warning("%s: uses the published split; data.profile %r is ignored", self.name, cfg.profile)
        sizes = {s: len(sf.paths) for s, sf in files.items()}
        mismatches = published_size_mismatches(sizes, spec)
        subset = len(ids) != spec.num_classes
        if mismatches:
            log.log(logging.INFO if subset else logging.WARNING,
                    "%s: split sizes differ from the published ones ({split: [found, published]}): %s",
                    self.name, mismatches)

        lut = np.full(spec.num_classes, -1, dtype=np.int64)
        lut[ids] = np.arange(len(ids))
        images, labels, splits, sources = [], [], [], []
        for split, sf in files.items():
            y = lut[np.asarray(sf.labels, dtype=np.int64)] if sf.labels else np.zeros(0, np.int64)
            rows = np.flatnonzero(y >= 0)
            cap = cfg.max_train_per_class if split == "train" else cfg.test_per_class
            sel = rows[cap_per_class(y[rows], cap)]
            images += [sf.paths[i] for i in sel]
            labels += y[sel].tolist()
            splits += [split] * len(sel)
            sources += [(str(sf.file), sf.linenos[i], sf.texts[i]) for i in sel]

        for i, why in PathChecker(root, cfg.allow_symlinks_outside_root).check(images):
            bad.append(BadLine(*sources[i], why))
        bad.sort(key=lambda b: (b.file, b.line))
        raise_bad_lines(self.name, bad, hint=f"Fix or remove these lines; the images must lie under {root} "
                                             f"({spec.source}).", total=len(images))

        names = [all_names[i] for i in ids]
        counts = np.bincount(np.asarray([y for y, s in zip(labels, splits) if s == "train"], dtype=np.int64),
                             minlength=len(ids))
        meta = {"dataset": self.name, "source": str(split_dir), "profile": "file", "seed": int(cfg.seed),
                "split_sizes": sizes, "published_sizes": dict(spec.sizes),
                "matches_published_sizes": not mismatches, "class_names_source": names_source,
                "num_classes_published": spec.num_classes,
                "source_labels": "label" if not subset else [int(i) for i in ids],
                "classes_selected": list(cfg.classes),
                "allow_symlinks_outside_root": bool(cfg.allow_symlinks_outside_root),
                "max_train_per_class": int(cfg.max_train_per_class), "test_per_class": int(cfg.test_per_class)}
        if len(counts) and counts.min() > 0:
            meta.update(profile_summary(counts))
        log.info("%s: %d of %d classes, %s images per split file, class names from %s", self.name, len(ids),
                 spec.num_classes, sizes, names_source)
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
