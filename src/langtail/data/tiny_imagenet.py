"""``tiny_imagenet_lt``: a long-tailed Tiny-ImageNet (200 classes, 64x64 JPEGs).

Input (``data.root``, default ``data/tiny-imagenet-200``): the unzipped
``tiny-imagenet-200.zip`` (http://cs231n.stanford.edu/tiny-imagenet-200.zip), i.e. the
folder ``tiny-imagenet-200/`` itself or a folder containing it::

    wnids.txt                          # the 200 WordNet ids, one per line
    words.txt                          # "<wnid>\\t<synonym>, <synonym>, ..." (all of WordNet)
    train/<wnid>/images/<wnid>_<k>.JPEG  # 500 per class
    val/val_annotations.txt            # "<file>\\t<wnid>\\t<x>\\t<y>\\t<w>\\t<h>"
    val/images/val_<k>.JPEG            # 10,000 = 50 per class

Recipe (deterministic; the manifest's train rows are the record of the chosen files):

1. classes in ``wnids.txt`` order (label ``c`` is the ``c``-th line; the same order as
   ``langtail.corpus.classes.get_class_list("tiny_imagenet", root)``, which is *not* the
   sorted ``ImageFolder`` order); class name = the first synonym in ``words.txt``
   (`` (<wnid>)`` appended if two classes share it);
2. the pool of class ``c`` = its ``train/<wnid>/images/*.JPEG`` sorted by file name;
3. per-class counts ``n_c = int(500 * (1/IF) ** (c / 199))`` (``data.profile: exp``,
   LDAM-DRW; ``pareto`` is also accepted), ``n_max = 500`` (or ``data.max_train_per_class``
   if smaller and > 0); IF 100 keeps 500..5 images, 21,549 in total (IF 50: 25,082;
   IF 10: 39,072);
4. images chosen with ``np.random.RandomState(seed)``: per class in label order, shuffle the
   pool indices and keep the first ``n_c`` (:func:`~langtail.data.longtail.subsample_per_class`);
   the kept files are listed sorted by name within each class;
5. the official val set (50 per class) is the ``test`` split (the Tiny-ImageNet test set
   has no labels); ``data.test_per_class > 0`` keeps the first that many per class.

Refs are POSIX paths relative to the ``tiny-imagenet-200`` folder (``image_root``).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from langtail.config import DataConfig
from langtail.data.folder import cap_per_class, dedupe_names, generated_longtail, is_image_file, resolve_root
from langtail.data.paths import check_refs
from langtail.data.manifest import ManifestBuild
from langtail.data.registry import register

log = logging.getLogger(__name__)

N_MAX = 500
SOURCE = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


def find_tiny_root(root: Path) -> Path:
    for d in (root, root / "tiny-imagenet-200"):
        if (d / "wnids.txt").is_file() and (d / "train").is_dir():
            return d
    raise FileNotFoundError(
        f"tiny_imagenet_lt: no tiny-imagenet-200 layout (wnids.txt, train/, val/) at {root}. "
        f"Download {SOURCE}, unzip it, and set data.root to the tiny-imagenet-200 folder "
        "(or to the folder containing it).")


def read_wnids(tiny: Path) -> list[str]:
    """The wnids in ``wnids.txt`` order (= label order)."""
    wnids = [ln.strip() for ln in (tiny / "wnids.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
    if not wnids:
        raise ValueError(f"{tiny / 'wnids.txt'} is empty")
    dup = sorted({w for w in wnids if wnids.count(w) > 1})
    if dup:
        raise ValueError(f"{tiny / 'wnids.txt'}: repeated wnid(s) {dup}")
    return wnids


def read_words(tiny: Path, wnids: list[str]) -> list[str]:
    """First synonym of each wnid from ``words.txt`` (the wnid itself if absent)."""
    want, words = set(wnids), {}
    p = tiny / "words.txt"
    if p.is_file():
        with open(p, encoding="utf-8") as f:
            for ln in f:
                wnid, _, syn = ln.rstrip("\n").partition("\t")
                if wnid in want:
                    words[wnid] = syn.split(",")[0].strip() or wnid
    else:
        log.warning("tiny_imagenet_lt: %s not found; class names are the wnids", p)
    return dedupe_names([words.get(w, w) for w in wnids], wnids)


def read_val(tiny: Path, index: dict[str, int], sources: list | None = None) -> tuple[list[str], list[int]]:
    """(refs ``val/images/<file>``, labels) in ``val_annotations.txt`` order; ``sources``
    (if given) receives ``(file, line, text)`` per ref."""
    p = tiny / "val" / "val_annotations.txt"
    if not p.is_file():
        raise FileNotFoundError(f"tiny_imagenet_lt: {p} not found (the test split); re-unzip {SOURCE}")
    refs, labels = [], []
    with open(p, encoding="utf-8") as f:
        for lineno, ln in enumerate(f, 1):
            if not ln.strip():
                continue
            parts = ln.rstrip("\n").split("\t")
            if len(parts) < 2:
                raise ValueError(f"{p}:{lineno}: malformed line {ln.strip()!r}; expected '<file>\\t<wnid>\\t...'")
            if parts[1] not in index:
                raise ValueError(f"{p}:{lineno}: wnid {parts[1]!r} is not in wnids.txt")
            refs.append(f"val/images/{parts[0].strip()}")
            labels.append(index[parts[1]])
            if sources is not None:
                sources.append((str(p), lineno, ln.strip()))
    return refs, labels


@register("tiny_imagenet_lt")
class TinyImageNetLT:
    """Tiny-ImageNet-LT (see the module docstring for the recipe)."""

    name = "tiny_imagenet_lt"

    def _tiny(self, cfg: DataConfig) -> Path:
        return find_tiny_root(resolve_root(cfg, "data/tiny-imagenet-200"))

    def class_names(self, cfg: DataConfig) -> list[str]:
        tiny = self._tiny(cfg)
        return read_words(tiny, read_wnids(tiny))

    def build(self, cfg: DataConfig, out_dir: Path) -> ManifestBuild:
        if cfg.profile not in ("exp", "pareto"):
            raise ValueError(f"tiny_imagenet_lt generates its long tail: data.profile must be 'exp' or "
                             f"'pareto', got {cfg.profile!r}")
        tiny = self._tiny(cfg)
        wnids = read_wnids(tiny)
        names = read_words(tiny, wnids)
        index = {w: i for i, w in enumerate(wnids)}

        pool, pool_labels = [], []
        for c, w in enumerate(wnids):
            d = tiny / "train" / w / "images"
            if not d.is_dir():
                raise FileNotFoundError(f"tiny_imagenet_lt: {d} not found (class {w} of wnids.txt)")
            files = sorted(f for f in os.listdir(d) if is_image_file(f))
            pool += [f"train/{w}/images/{f}" for f in files]
            pool_labels += [c] * len(files)
        n_max = N_MAX if cfg.max_train_per_class <= 0 else min(N_MAX, cfg.max_train_per_class)
        keep, lt_meta = generated_longtail(np.asarray(pool_labels), len(wnids), cfg, n_max=n_max)

        images = [pool[i] for i in keep]
        labels = [pool_labels[i] for i in keep]
        splits = ["train"] * len(images)
        v_sources: list = []
        v_refs, v_labels = read_val(tiny, index, v_sources)
        sel = cap_per_class(np.asarray(v_labels), cfg.test_per_class)
        v_refs = [v_refs[i] for i in sel]
        check_refs(self.name, tiny, v_refs, [v_sources[i] for i in sel], cfg.allow_symlinks_outside_root,
                   hint=f"Re-unzip {SOURCE}.")
        images += v_refs
        labels += [v_labels[i] for i in sel]
        splits += ["test"] * len(sel)

        meta = {"dataset": self.name, "source": str(tiny), "wnids": wnids, "recipe": "docs/datasets.md",
                "test_per_class": int(cfg.test_per_class), **lt_meta}
        log.info("tiny_imagenet_lt: IF %g -> %d train images (%d..%d per class), %d test images",
                 cfg.imbalance_factor, lt_meta["num_train"], lt_meta["n_max"], lt_meta["n_min"], len(sel))
        return ManifestBuild(images=images, labels=labels, splits=splits, class_names=names,
                             image_root=str(tiny.resolve()), meta=meta)
