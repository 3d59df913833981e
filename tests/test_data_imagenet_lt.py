"""``imagenet_lt`` / ``places_lt`` from generated split files (+ image trees)."""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest

from langtail.config import DataConfig
from langtail.data import imagenet_lt
from langtail.data.manifest import ImageStore, make_manifest
from langtail.data.registry import get_dataset


def profile_with_total(C: int, n_max: int, n_min: int, total: int) -> list[int]:
    """Non-increasing counts, counts[0] = n_max, counts[-1] = n_min, summing to ``total``."""
    c = np.floor(n_max * (n_min / n_max) ** (np.arange(C) / (C - 1))).astype(int)
    c[0], c[-1] = n_max, n_min
    diff = total - int(c.sum())
    i = 1
    while diff:  # +-1 round robin over the inner classes, keeping the order and the bounds
        step = 1 if diff > 0 else -1
        if n_min <= c[i] + step <= n_max and c[i - 1] >= c[i] + step >= c[i + 1]:
            c[i] += step
            diff -= step
        i = i + 1 if i < C - 2 else 1
    return c.tolist()


def write_split_files(root: Path, prefix: str, per_split: dict[str, list[int]], ext: str = "JPEG") -> dict:
    """``<prefix>_<split>.txt`` with ``split/c<label>/<split>_<label>_<k>.<ext> <label>`` lines."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, counts in per_split.items():
        lines = [f"{split}/c{y:04d}/{split}_{y}_{k}.{ext} {y}" for y, n in enumerate(counts) for k in range(n)]
        (root / f"{prefix}_{split}.txt").write_text("\n".join(lines) + "\n")
        paths[split] = [ln.rsplit(" ", 1)[0] for ln in lines]
    return paths


def touch_images(root: Path, paths: dict, real: int = 3) -> None:
    """Create every listed file (empty), the first ``real`` as decodable JPEGs."""
    from PIL import Image

    k = 0
    for refs in paths.values():
        for r in refs:
            p = root / r
            p.parent.mkdir(parents=True, exist_ok=True)
            if k < real:
                Image.fromarray(np.full((6, 6, 3), k * 40, np.uint8)).save(p, format="JPEG")
            else:
                p.touch()
            k += 1


@pytest.fixture()
def small_imagenet(tmp_path):
    root = tmp_path / "inet"
    C = 1000
    tr = [3 if c < 10 else 1 for c in range(C)]
    paths = write_split_files(root, "ImageNet_LT", {"train": tr, "val": [1] * 20 + [0] * (C - 20),
                                                    "test": [1] * C})
    touch_images(root, paths)
    return root, paths


def test_small_imagenet_lt_build(small_imagenet, tmp_path, caplog):
    root, paths = small_imagenet
    cfg = DataConfig(name="imagenet_lt", root=str(root))
    with caplog.at_level(logging.WARNING):
        b = get_dataset("imagenet_lt").build(cfg, tmp_path / "out")
    assert any("differ from the published" in r.getMessage() for r in caplog.records)
    df = make_manifest(b)
    assert df.groupby("split").size().to_dict() == {"train": 1020, "val": 20, "test": 1000}
    assert b.meta["matches_published_sizes"] is False
    assert b.meta["split_sizes"] == {"train": 1020, "val": 20, "test": 1000}
    assert b.image_root == str(root.resolve())
    assert list(df["image"][:3]) == paths["train"][:3]
    assert ImageStore(tmp_path, b.image_root).load(df["image"].iloc[0]).shape == (6, 6, 3)
    # shipped ImageNet-1k names (langtail.corpus.classes) when no classnames.txt
    if b.meta["class_names_source"] == "langtail.corpus.classes":
        assert b.class_names[0] == "tench" and len(b.class_names) == 1000


def test_split_files_in_subfolder_caps_and_leading_slash(tmp_path):
    root = tmp_path / "p"
    C = 365
    sub = root / "Places_LT_v2"
    paths = write_split_files(sub, "Places_LT", {"train": [2] * C, "test": [3] * C})
    # absolute-looking paths in the split file are taken relative to root
    txt = sub / "Places_LT_train.txt"
    txt.write_text("".join("/" + ln + "\n" for ln in txt.read_text().splitlines()))
    touch_images(root, paths, real=0)
    cfg = DataConfig(name="places_lt", root=str(root), max_train_per_class=1, test_per_class=2)
    b = get_dataset("places_lt").build(cfg, tmp_path / "out")
    df = make_manifest(b)
    assert df.groupby("split").size().to_dict() == {"train": 365, "test": 730}
    assert not df["image"].str.startswith("/").any()
    assert b.meta["source"] == str(sub)


def test_missing_images_listed(small_imagenet, tmp_path):
    root, paths = small_imagenet
    for r in paths["test"][5:12]:
        (root / r).unlink()
    with pytest.raises(FileNotFoundError) as e:
        get_dataset("imagenet_lt").build(DataConfig(name="imagenet_lt", root=str(root)), tmp_path)
    msg = str(e.value)
    assert msg.startswith("imagenet_lt: 7 of 2040 image files are missing") and paths["test"][5] in msg
    # every missing file is named with its split file and line (test file line k+1 = class k)
    for k in range(5, 12):
        assert f"ImageNet_LT_test.txt:{k + 1}: {paths['test'][k]} {k}: file not found" in msg


@pytest.mark.parametrize("line,err", [
    ("train/c0001/x.JPEG 1000", r"label 1000 out of range \[0, 1000\)"),
    ("train/c0001/x.JPEG -1", r"label -1 out of range"),
    ("train/c0001/x.JPEG", r"malformed line"),
    ("train/c0001/x.JPEG one", r"malformed line"),
    ("a.JPEG 0", r"duplicate: the image is already listed on line 1"),  # would double its weight
    ("/b.JPEG 1", r"duplicate: the image is already listed on line 2"),
])
def test_bad_split_lines_name_file_and_line(tmp_path, line, err):
    root = tmp_path / "r"
    root.mkdir()
    (root / "ImageNet_LT_train.txt").write_text("a.JPEG 0\nb.JPEG 1\n\n" + line + "\n")
    with pytest.raises(ValueError, match=re.escape(f"ImageNet_LT_train.txt:4: {line}: ") + err):
        get_dataset("imagenet_lt").build(DataConfig(name="imagenet_lt", root=str(root)), tmp_path / "o")


def test_missing_split_files_say_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="ImageNet_LT_train.txt") as e:
        get_dataset("imagenet_lt").build(DataConfig(name="imagenet_lt", root=str(tmp_path)), tmp_path)
    assert "OpenLongTailRecognition" in str(e.value)


def test_class_names_sources(tmp_path, monkeypatch):
    root = tmp_path / "places"
    root.mkdir()
    write_split_files(root, "Places_LT", {"train": [1] * 365})
    b = get_dataset("places_lt")
    cfg = DataConfig(name="places_lt", root=str(root))
    # 1. LIFT-style classnames.txt: "<folder> <name>"
    (root / "classnames.txt").write_text("".join(f"f{i} scene {i}\n" for i in range(365)))
    assert b.class_names(cfg)[:2] == ["scene 0", "scene 1"]
    (root / "classnames.txt").write_text("".join(f"f{i}\tscene number {i}\n" for i in range(365)))
    assert b.class_names(cfg)[3] == "scene number 3"
    (root / "classnames.txt").write_text("alley\nbeach house\n" + "".join(f"s{i}\n" for i in range(363)))
    assert b.class_names(cfg)[:2] == ["alley", "beach house"]
    (root / "classnames.txt").write_text("only\ntwo\n")
    with pytest.raises(ValueError, match="2 names, expected 365"):
        b.class_names(cfg)
    (root / "classnames.txt").unlink()
    # 2. the shipped list (if the corpus package provides it)
    shipped = imagenet_lt._shipped_class_list(("places_lt",), 365)
    if shipped is not None:
        assert b.class_names(cfg) == shipped
    # 3. categories_places365.txt, 4. class_<i>
    monkeypatch.setattr(imagenet_lt, "_shipped_class_list", lambda keys, n: None)
    cats = [f"/{chr(97 + i % 26)}/cat_{i}/outdoor {i}" for i in range(365)]
    (root / "categories_places365.txt").write_text("\n".join(reversed(cats)) + "\n")
    assert b.class_names(cfg)[:2] == ["cat_0/outdoor", "cat_1/outdoor"]
    (root / "categories_places365.txt").unlink()
    assert b.class_names(cfg)[364] == "class_364"
    # without any split files the builder still knows C names
    assert len(b.class_names(DataConfig(name="places_lt", root=str(tmp_path / "none")))) == 365


@pytest.mark.parametrize("name,spec,n_max,test_per_class", [
    ("imagenet_lt", imagenet_lt.IMAGENET_LT, 1280, 50),
    ("places_lt", imagenet_lt.PLACES_LT, 4980, 100),
])
def test_published_sizes(tmp_path, monkeypatch, name, spec, n_max, test_per_class):
    """Split files with the published sizes are recognised (images not created: existence
    checking is tested above, and 186K files would make this test slow)."""
    C = spec.num_classes
    tr = profile_with_total(C, n_max, 5, spec.sizes["train"])
    write_split_files(tmp_path, spec.prefix, {"train": tr, "val": [20] * C, "test": [test_per_class] * C})
    monkeypatch.setattr(imagenet_lt.PathChecker, "check", lambda self, refs: [])
    b = get_dataset(name).build(DataConfig(name=name, root=str(tmp_path)), tmp_path / "out")
    df = make_manifest(b)
    assert df.groupby("split").size().to_dict() == spec.sizes
    assert b.meta["matches_published_sizes"] is True
    assert b.meta["n_max"] == n_max and b.meta["n_min"] == 5 and b.meta["profile"] == "file"
    assert df["label"].nunique() == C and len(b.class_names) == C


def test_published_numbers_documented():
    assert imagenet_lt.IMAGENET_LT.sizes == {"train": 115_846, "val": 20_000, "test": 50_000}
    assert imagenet_lt.PLACES_LT.sizes == {"train": 62_500, "val": 7_300, "test": 36_500}
    assert (imagenet_lt.IMAGENET_LT.num_classes, imagenet_lt.PLACES_LT.num_classes) == (1000, 365)
