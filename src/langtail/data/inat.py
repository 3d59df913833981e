"""``inat2018``: iNaturalist 2018 (naturally long-tailed; 8,142 species).

Input (``data.root``, default ``data/inat2018``), the official release
(https://github.com/visipedia/inat_comp/tree/master/2018):

* ``train2018.json`` and ``val2018.json``: COCO-style dicts with ``images``
  (``[{"id", "file_name", ...}]``), ``annotations`` (``[{"image_id", "category_id", ...}]``)
  and ``categories`` (``[{"id", "name", ...}]``);
* ``categories.json`` (optional but recommended; released after the challenge): a list of
  ``{"id", "name", "kingdom", ...}`` with the species names used as class names;
* the images (``train_val2018/<supercategory>/<category>/<hash>.jpg``) so that
  ``root/<file_name>`` exists.

Labels are category ids in ascending order mapped to ``0..C-1`` (for the 2018 release the
ids already are ``0..8141``, so label = category id). Class names come from
``categories.json`` if present, else from ``train2018.json``'s ``categories``; repeated
names get `` (<id>)`` appended. ``val2018.json`` (24,426 images) is the ``test`` split
(the challenge test set has no labels); ``train2018.json`` (437,513 images) is ``train``,
used as is (``profile: file``; ``max_train_per_class`` / ``test_per_class`` cap per class,
first images in file order). Files are checked for existence, not decoded.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from langtail.config import DataConfig
from langtail.data.folder import cap_per_class, dedupe_names, resolve_root
from langtail.data.paths import check_refs
from langtail.data.longtail import profile_summary
from langtail.data.manifest import ManifestBuild
from langtail.data.registry import register

log = logging.getLogger(__name__)

PUBLISHED_SIZES = {"train": 437_513, "test": 24_426}
NUM_CLASSES = 8_142
SOURCE = ("https://github.com/visipedia/inat_comp/tree/master/2018 (train_val2018.tar.gz, "
          "train2018.json, val2018.json, categories.json)")


def _load_json(path: Path):
    if not path.is_file():
        raise FileNotFoundError(f"inat2018: {path} not found. Put the iNaturalist 2018 files there "
                                f"or set data.root; get them from {SOURCE}.")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_coco(path: Path) -> tuple[list[str], list[int], list[dict]]:
    """(file names, category ids, categories) of a COCO-style iNat json, in annotation order."""
    d = _load_json(path)
    for key in ("images", "annotations"):
        if key not in d:
            raise ValueError(f"{path}: no {key!r} key (keys: {sorted(d)})")
    files = {}
    for im in d["images"]:
        files[im["id"]] = im["file_name"]
    names, cats = [], []
    first: dict[Any, int] = {}
    dup: list[str] = []
    for i, a in enumerate(d["annotations"]):
        if a["image_id"] not in files:
            raise ValueError(f"{path}: annotations[{i}] refers to unknown image_id {a['image_id']}")
        if a["image_id"] in first:  # one image annotated twice would count (and be sampled) twice
            dup.append(f"annotations[{i}] (image_id {a['image_id']}, {files[a['image_id']]}) repeats "
                       f"annotations[{first[a['image_id']]}]")
            continue
        first[a["image_id"]] = i
        names.append(files[a["image_id"]])
        cats.append(int(a["category_id"]))
    if dup:
        raise ValueError(f"{path}: {len(dup)} duplicate annotation(s): " + "; ".join(dup[:10])
                         + (" ..." if len(dup) > 10 else "") + "; keep one annotation per image")
    return names, cats, list(d.get("categories", []))


def _categories(root: Path, fallback: list[dict] | None = None) -> tuple[list[int], list[str], str]:
    """(sorted category ids, names by label, source file)."""
    if (root / "categories.json").is_file():
        cats, src = _load_json(root / "categories.json"), "categories.json"
    elif fallback is not None:
        cats, src = fallback, "train2018.json"
    else:
        cats, src = _load_json(root / "train2018.json").get("categories", []), "train2018.json"
    if not cats:
        raise ValueError(f"inat2018: no categories in {root / src}")
    by_id = {int(c["id"]): str(c.get("name", c["id"])) for c in cats}
    ids = sorted(by_id)
    return ids, dedupe_names([by_id[i] for i in ids], [str(i) for i in ids]), src


@register("inat2018")
class INat2018:
    """iNaturalist 2018 (see the module docstring)."""

    name = "inat2018"

    def _root(self, cfg: DataConfig) -> Path:
        return resolve_root(cfg, "data/inat2018")

    def class_names(self, cfg: DataConfig) -> list[str]:
        return _categories(self._root(cfg))[1]

    def build(self, cfg: DataConfig, out_dir: Path) -> ManifestBuild:
        root = self._root(cfg)
        tr_files, tr_cats, json_cats = read_coco(root / "train2018.json")
        te_files, te_cats, _ = read_coco(root / "val2018.json")
        ids, names, names_source = _categories(root, json_cats)
        index = {cid: i for i, cid in enumerate(ids)}

        images, labels, splits = [], [], []
        where: list[tuple[str, int]] = []  # (json file, annotation index) per image
        sizes = {}
        for split, files, cats, cap, src in (("train", tr_files, tr_cats, cfg.max_train_per_class, "train2018.json"),
                                             ("test", te_files, te_cats, cfg.test_per_class, "val2018.json")):
            unknown = sorted({c for c in cats if c not in index})
            if unknown:
                raise ValueError(f"{root / src}: category_id(s) {unknown[:10]} not in the category list "
                                 f"({names_source})")
            labs = np.asarray([index[c] for c in cats], dtype=np.int64)
            sel = cap_per_class(labs, cap)
            images += [files[i] for i in sel]
            where += [(src, int(i)) for i in sel]
            labels += labs[sel].tolist()
            splits += [split] * len(sel)
            sizes[split] = len(files)

        mismatches = {s: [sizes[s], n] for s, n in PUBLISHED_SIZES.items() if sizes[s] != n}
        if mismatches or len(ids) != NUM_CLASSES:
            log.warning("inat2018: sizes differ from the 2018 release ({split: [found, published]}): %s; "
                        "%d classes (published %d)", mismatches, len(ids), NUM_CLASSES)
        check_refs(self.name, root, images, [(str(root / src), 0, f"annotations[{i}]: {ref}")
                                             for (src, i), ref in zip(where, images)],
                   cfg.allow_symlinks_outside_root,
                   hint=f"Put the images so that {root}/<file_name in the json> exists ({SOURCE}).")
        counts = np.bincount(np.asarray([y for y, s in zip(labels, splits) if s == "train"]), minlength=len(ids))
        meta = {"dataset": self.name, "source": str(root), "profile": "file", "seed": int(cfg.seed),
                "split_sizes": sizes, "published_sizes": PUBLISHED_SIZES,
                "matches_published_sizes": not mismatches and len(ids) == NUM_CLASSES,
                "class_names_source": names_source,
                "category_ids": ids if ids != list(range(len(ids))) else "label",
                "max_train_per_class": int(cfg.max_train_per_class), "test_per_class": int(cfg.test_per_class)}
        if counts.min() > 0:
            meta.update(profile_summary(counts))
        return ManifestBuild(images=images, labels=labels, splits=splits, class_names=names,
                             image_root=str(root.resolve()), meta=meta)
