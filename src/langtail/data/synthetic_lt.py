"""Synthetic trees in the exact ImageNet-LT / Places-LT layout (tiny real JPEGs).

:func:`write_lt_tree` writes what ``imagenet_lt`` / ``places_lt`` read (see
:mod:`langtail.data.imagenet_lt` and ``docs/datasets.md``), so a pipeline can be rehearsed
without the real images:

``layout="imagenet"`` (prefix ``ImageNet_LT``)::

    ImageNet_LT_train.txt   train/<wnid>/<wnid>_<k>.JPEG <label>
    ImageNet_LT_val.txt     train/<wnid>/<wnid>_<k>.JPEG <label>   (ImageNet-LT val is drawn from train/)
    ImageNet_LT_test.txt    val/<wnid>/ILSVRC2012_val_<k>.JPEG <label>
    train/<wnid>/*.JPEG, val/<wnid>/*.JPEG

``layout="places"`` (prefix ``Places_LT``), lines with the OLTR leading ``/``::

    Places_LT_{train,val}.txt   /<letter>/<category>/<k:08d>.jpg <label>
    Places_LT_test.txt          /val_256/Places365_val_<k:08d>.jpg <label>   (one flat folder)

Synthetic wnids are ``n9<7 digits>`` (never real ones), ascending in label order as in
ImageNet. Labels are ``label_ids`` (default ``0..C-1``); class ``c``'s images are
``image_size`` px JPEGs of a per-class colour plus per-image noise, so decoding is real.

Sizes: ``train_counts`` ``[C]`` (default: :func:`imagenet_lt_counts`, the real
ImageNet-LT shape), ``val_per_class`` (20), ``test_per_class`` (50). Everything is drawn
from ``numpy.random.default_rng(seed)``: the same arguments give byte-identical trees.
Memory stays O(one class): images are generated class by class, and each split file is
streamed line by line into a temp file renamed into place at the end (atomic).
"""
from __future__ import annotations

import io as _io
from pathlib import Path
from typing import Sequence

import numpy as np

from langtail import io

LAYOUTS = {"imagenet": "ImageNet_LT", "places": "Places_LT"}


def imagenet_lt_counts(num_classes: int = 1000, n_max: int = 1280, n_min: int = 5, total: int = 115_846,
                       seed: int = 0) -> list[int]:
    """Non-increasing training counts ``[C]`` with ``counts[0] = n_max``, ``counts[-1] = n_min``
    and (when reachable) ``sum = total`` (ImageNet-LT: 1,280 .. 5, 115,846 images).

    Pareto-shaped (:func:`langtail.data.longtail.pareto_profile`, alpha 6), then scaled to
    the total with a power ``counts ~ n_min * (n_max / n_min) ** (u ** p)`` solved by bisection
    on ``p``; ``total`` is rounded into ``[C * n_min, C * n_max]``. With fewer classes the
    total is scaled: ``total * C / 1000``.
    """
    from langtail.data.longtail import pareto_profile

    C = int(num_classes)
    if C < 1:
        raise ValueError("num_classes must be >= 1")
    if C == 1:
        return [int(n_max)]
    want = int(round(total * C / 1000)) if C != 1000 else int(total)
    want = min(max(want, C * n_min), C * n_max)
    base = np.asarray(pareto_profile(n_max, C, n_max / n_min, seed=seed), dtype=np.float64)
    u = (np.log(base) - np.log(n_min)) / (np.log(n_max) - np.log(n_min))  # 1 .. 0, non-increasing
    u = np.clip(u, 0.0, 1.0)

    def counts(p: float) -> np.ndarray:
        c = np.floor(n_min * (n_max / n_min) ** (u ** p) + 1e-9).astype(np.int64)
        c[0], c[-1] = n_max, n_min
        return np.clip(c, n_min, n_max)

    lo, hi = 1e-3, 1e3  # sum decreases in p
    for _ in range(100):
        mid = (lo * hi) ** 0.5
        if counts(mid).sum() > want:
            lo = mid
        else:
            hi = mid
    c = counts(hi)
    # spread the remaining difference (< C) one image at a time over inner classes, keeping the order
    diff = want - int(c.sum())
    i = 1
    guard = 0
    while diff and C > 2 and guard < 100 * C:
        step = 1 if diff > 0 else -1
        if n_min <= c[i] + step <= n_max and c[i - 1] >= c[i] + step >= c[i + 1]:
            c[i] += step
            diff -= step
        i = i + 1 if i < C - 2 else 1
        guard += 1
    return [int(x) for x in c]


def synthetic_wnids(num_classes: int) -> list[str]:
    """``n9000000``, ``n9000007``, ...: unique, ascending, not real WordNet ids."""
    return [f"n9{c * 7:07d}" for c in range(num_classes)]


def _jpegs(rng: np.random.Generator, colour: np.ndarray, n: int, size: int, quality: int) -> list[bytes]:
    """``n`` JPEG-encoded ``[size, size, 3]`` images: ``colour`` + a per-image noise field."""
    from PIL import Image

    noise = rng.integers(-40, 41, size=(n, size, size, 3), dtype=np.int16)
    ramp = np.linspace(-30, 30, size, dtype=np.float32)[None, :, None, None]  # a gradient, so images are not flat
    arr = np.clip(colour[None, None, None, :].astype(np.float32) + noise + ramp, 0, 255).astype(np.uint8)
    out = []
    for a in arr:
        buf = _io.BytesIO()
        Image.fromarray(a).save(buf, format="JPEG", quality=quality)
        out.append(buf.getvalue())
    return out


def _class_folders(layout: str, labels: list[int]) -> list[str]:
    """The class folder of each label ``[C]``: a synthetic wnid (``imagenet``) or
    ``<letter>/<category>`` of the Places365 class name (``places``)."""
    if layout == "imagenet":
        return synthetic_wnids(len(labels))
    from langtail.corpus.classes import get_class_list

    names = get_class_list("places365")
    folders = []
    for c, y in enumerate(labels):
        n = names[y] if y < len(names) else f"category_{y}"
        slug = "_".join(n.replace("/", " ").split()).lower()
        folders.append(f"{slug[0]}/{slug}")
    return folders


def _image_refs(root: Path, layout: str, folder: str, n_train: int, n_test: int,
                test_k: int) -> tuple[Path, Path, list[str], list[str], str]:
    """One class's image folders and split-file paths: ``(train dir, test dir, [n_train] train+val refs,
    [n_test] test refs, line prefix)``; test images are numbered from ``test_k + 1`` across classes."""
    if layout == "imagenet":
        d_tr, d_te = root / "train" / folder, root / "val" / folder
        refs_tr = [f"train/{folder}/{folder}_{k}.JPEG" for k in range(n_train)]
        refs_te = [f"val/{folder}/ILSVRC2012_val_{test_k + k + 1:08d}.JPEG" for k in range(n_test)]
        return d_tr, d_te, refs_tr, refs_te, ""
    d_tr, d_te = root / folder, root / "val_256"
    refs_tr = [f"{folder}/{k + 1:08d}.jpg" for k in range(n_train)]
    refs_te = [f"val_256/Places365_val_{test_k + k + 1:08d}.jpg" for k in range(n_test)]
    return d_tr, d_te, refs_tr, refs_te, "/"


def write_lt_tree(root: str | Path, num_classes: int = 12, *, layout: str = "imagenet",
                  train_counts: Sequence[int] | None = None, val_per_class: int = 20, test_per_class: int = 50,
                  label_ids: Sequence[int] | None = None, image_size: int = 32, quality: int = 75,
                  seed: int = 0) -> dict:
    """Write a synthetic ImageNet-LT (``layout="imagenet"``) or Places-LT (``"places"``) tree.

    Returns a summary: ``root``, ``prefix``, ``num_classes``, ``label_ids``, ``folders``
    (class folder per class), ``counts`` ``{split: [C] per-class counts}``, ``sizes``
    ``{split: images}``, ``bytes`` (JPEG bytes written).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    root = Path(root)
    C = int(num_classes)
    prefix = LAYOUTS[layout]
    labels = list(range(C)) if label_ids is None else [int(i) for i in label_ids]
    if len(labels) != C or len(set(labels)) != C or min(labels) < 0:
        raise ValueError(f"label_ids must be {C} distinct non-negative ids")
    tr = imagenet_lt_counts(C) if train_counts is None else [int(n) for n in train_counts]
    if len(tr) != C or min(tr) < 1:
        raise ValueError(f"train_counts must be {C} counts >= 1")
    folders = _class_folders(layout, labels)
    rng = np.random.default_rng(seed)
    colours = rng.integers(30, 226, size=(C, 3))
    counts = {"train": tr, "val": [int(val_per_class)] * C, "test": [int(test_per_class)] * C}
    sizes = {s: int(sum(v)) for s, v in counts.items()}
    n_bytes = 0
    root.mkdir(parents=True, exist_ok=True)
    with io.atomic_path(root / f"{prefix}_train.txt") as t_tr, io.atomic_path(root / f"{prefix}_val.txt") as t_va, \
            io.atomic_path(root / f"{prefix}_test.txt") as t_te:
        with open(t_tr, "w", encoding="utf-8") as f_tr, open(t_va, "w", encoding="utf-8") as f_va, \
                open(t_te, "w", encoding="utf-8") as f_te:
            test_k = 0
            for c in range(C):
                y, folder = labels[c], folders[c]
                n_tr, n_va, n_te = counts["train"][c], counts["val"][c], counts["test"][c]
                blobs = _jpegs(rng, colours[c], n_tr + n_va + n_te, image_size, quality)
                d_tr, d_te, refs_tr, refs_te, lead = _image_refs(root, layout, folder, n_tr + n_va, n_te, test_k)
                test_k += n_te
                d_tr.mkdir(parents=True, exist_ok=True)
                d_te.mkdir(parents=True, exist_ok=True)
                for ref, blob in zip(refs_tr + refs_te, blobs):
                    (root / ref).write_bytes(blob)
                    n_bytes += len(blob)
                f_tr.writelines(f"{lead}{r} {y}\n" for r in refs_tr[:n_tr])
                f_va.writelines(f"{lead}{r} {y}\n" for r in refs_tr[n_tr:])
                f_te.writelines(f"{lead}{r} {y}\n" for r in refs_te)
    return {"root": str(root), "prefix": prefix, "layout": layout, "num_classes": C, "label_ids": labels,
            "folders": folders, "counts": counts, "sizes": sizes, "bytes": n_bytes, "seed": int(seed)}
