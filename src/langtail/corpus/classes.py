"""Class lists: shipped lists for standard datasets, loaders for dataset files.

Every list is a ``list[str]`` whose index is the class label. Names are returned as
the dataset spells them (CIFAR-100 keeps torchvision's underscores, ``aquarium_fish``);
use :func:`normalize_name` to compare names from different sources and
:func:`display_name` to put a name into text (prompts).

Shipped lists (``langtail/resources/class_lists/*.txt``, UTF-8, one name per line):

==============  =====  =========================================================
name            count  origin / order
==============  =====  =========================================================
``cifar10``        10  torchvision ``CIFAR10.classes`` order
``cifar100``      100  torchvision ``CIFAR100.classes`` order (alphabetical)
``imagenet1k``   1000  ILSVRC-2012 class-index order, CLIP-style readable names
                       (from Label-free-CBM ``data/imagenet_classes.txt``, which uses
                       CR line separators; converted to LF)
``places365``     365  Places365 index order, cleaned names (``airplane cabin``)
==============  =====  =========================================================

Known duplicates: the ImageNet-1k list has 1000 entries but 998 distinct names;
``missile`` (indices 657 and 744: "missile" and "projectile, missile" in WordNet)
and ``sunglasses`` (836 and 837: "sunglass" and "sunglasses, dark glasses, shades")
appear twice. They are kept (the index is the label); see
:data:`KNOWN_DUPLICATES`. (The WordNet-first-lemma ImageNet list used elsewhere has
other duplicates, e.g. two ``crane`` and two ``maillot``; the CLIP-style names
shipped here disambiguate those as ``crane bird`` / ``construction crane``.)

Loaders for datasets whose class list comes with the data:

* ``inat2018`` -- iNaturalist 2018 ``categories.json`` (a JSON list of
  ``{"id": int, "name": str, ...}``; names in ``id`` order);
* ``tiny_imagenet`` -- Tiny-ImageNet ``wnids.txt`` (one wnid per line, label order)
  plus ``words.txt`` (``wnid<TAB>lemma, lemma, ...``); the first lemma is the name.
  ``path`` is the dataset folder holding both files;
* ``file`` -- a plain text file, one class name per line (blank lines and lines
  starting with ``#`` ignored).
"""
from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

SHIPPED: dict[str, int] = {"cifar10": 10, "cifar100": 100, "imagenet1k": 1000, "places365": 365}
"""Shipped class lists and their sizes."""

ALIASES: dict[str, str] = {
    "cifar10_lt": "cifar10", "cifar-10": "cifar10", "cifar100_lt": "cifar100", "cifar-100": "cifar100",
    "imagenet": "imagenet1k", "imagenet_lt": "imagenet1k", "imagenet-1k": "imagenet1k",
    "places": "places365", "places_lt": "places365", "inat": "inat2018", "inaturalist2018": "inat2018",
    "inat2018_lt": "inat2018", "tinyimagenet": "tiny_imagenet", "tiny-imagenet": "tiny_imagenet",
}

KNOWN_DUPLICATES: dict[str, dict[str, list[int]]] = {
    "imagenet1k": {"missile": [657, 744], "sunglasses": [836, 837]},
}
"""Names that occur more than once in a shipped list, with their indices."""

_WS = re.compile(r"\s+")


def normalize_name(s: str) -> str:
    """Matching key of a class name: lower case, ``_`` -> space, spaces collapsed, stripped."""
    return _WS.sub(" ", s.replace("_", " ")).strip().lower()


def display_name(s: str) -> str:
    """Name as written in text: ``_`` -> space, spaces collapsed; case kept."""
    return _WS.sub(" ", s.replace("_", " ")).strip()


def _read_lines(text: str) -> list[str]:
    # accepts LF, CRLF and bare-CR files (imagenet_classes.txt uses CR)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]


def load_shipped(name: str) -> list[str]:
    """A shipped list by key (see :data:`SHIPPED`)."""
    if name not in SHIPPED:
        raise KeyError(f"no shipped class list {name!r}; shipped: {sorted(SHIPPED)}")
    text = resources.files("langtail").joinpath("resources").joinpath("class_lists").joinpath(f"{name}.txt").read_text("utf-8")
    names = _read_lines(text)
    if len(names) != SHIPPED[name]:  # pragma: no cover - guards the shipped files
        raise RuntimeError(f"shipped class list {name} has {len(names)} entries, expected {SHIPPED[name]}")
    return names


def load_text_list(path: str | Path) -> list[str]:
    """One class name per line (LF, CRLF or CR); blank and ``#`` lines ignored."""
    return _read_lines(Path(path).read_text(encoding="utf-8"))


def load_inat_categories(path: str | Path) -> list[str]:
    """iNaturalist ``categories.json`` -> names ordered by ``id`` (ids must be 0..N-1).

    ``path`` may be the JSON file or the folder that holds ``categories.json``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "categories.json"
    cats = json.loads(p.read_text(encoding="utf-8"))
    if isinstance(cats, dict) and "categories" in cats:  # a COCO-style annotation file
        cats = cats["categories"]
    cats = sorted(cats, key=lambda c: int(c["id"]))
    ids = [int(c["id"]) for c in cats]
    if ids != list(range(len(ids))):
        raise ValueError(f"{p}: category ids are not 0..{len(ids) - 1}")
    return [str(c["name"]) for c in cats]


def load_tiny_imagenet(path: str | Path) -> list[str]:
    """Tiny-ImageNet folder (``wnids.txt`` + ``words.txt``) -> first lemma per wnid.

    Label order is the order of ``wnids.txt``. A wnid absent from ``words.txt``
    raises ``KeyError`` naming it.
    """
    root = Path(path)
    wnids = _read_lines((root / "wnids.txt").read_text(encoding="utf-8"))
    words: dict[str, str] = {}
    for line in (root / "words.txt").read_text(encoding="utf-8").splitlines():
        if "\t" in line:
            wnid, lemmas = line.split("\t", 1)
            words[wnid.strip()] = lemmas.split(",")[0].strip()
    missing = [w for w in wnids if w not in words]
    if missing:
        raise KeyError(f"{root / 'words.txt'}: no entry for wnid(s) {missing}")
    return [words[w] for w in wnids]


def get_class_list(name: str, path: str = "") -> list[str]:
    """Class names for a dataset key (index = label).

    ``name``: a shipped key (``cifar10``, ``cifar100``, ``imagenet1k``, ``places365``,
    or an alias such as ``cifar100_lt``, ``imagenet_lt``, ``places_lt``), or a loader
    key needing ``path``: ``inat2018`` (``categories.json`` or its folder),
    ``tiny_imagenet`` (folder with ``wnids.txt`` and ``words.txt``), ``file`` (text file,
    one name per line). A shipped key with a non-empty ``path`` reads that text file
    instead of the shipped copy.
    """
    key = ALIASES.get(name.lower(), name.lower())
    if key in SHIPPED:
        return load_text_list(path) if path else load_shipped(key)
    if not path:
        raise ValueError(f"class list {name!r} needs a path (loader keys: inat2018, tiny_imagenet, file)")
    if key == "inat2018":
        return load_inat_categories(path)
    if key == "tiny_imagenet":
        return load_tiny_imagenet(path)
    if key == "file":
        return load_text_list(path)
    raise KeyError(f"unknown class list {name!r}; known: {sorted(SHIPPED) + ['inat2018', 'tiny_imagenet', 'file']}")


def duplicates(names: list[str]) -> dict[str, list[int]]:
    """Normalised names that occur more than once -> their indices."""
    seen: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        seen.setdefault(normalize_name(n), []).append(i)
    return {k: v for k, v in seen.items() if len(v) > 1}
