"""``inat2018`` from fake COCO-style iNaturalist jsons."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from langtail.config import DataConfig
from langtail.data.manifest import ImageStore, make_manifest
from langtail.data.registry import get_dataset

SPECIES = ["Hermodice carunculata", "Araneus gemma", "Quercus alba", "Bufo bufo"]


def write_inat(root: Path, cat_ids=(0, 1, 2, 3), train=(6, 3, 2, 1), val=(2, 2, 2, 2),
               categories_json: bool = True) -> Path:
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    cats = [{"id": cid, "name": n, "kingdom": "Animalia", "supercategory": "Animalia"}
            for cid, n in zip(cat_ids, SPECIES)]
    img_id = 100
    for fname, counts in (("train2018.json", train), ("val2018.json", val)):
        images, anns = [], []
        for cid, n in zip(cat_ids, counts):
            for k in range(n):
                rel = f"train_val2018/Animalia/{cid}/{fname[:3]}_{k:02d}.jpg"
                p = root / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((5, 7, 3), cid % 5 * 50, np.uint8)).save(p, format="JPEG")
                images.append({"id": img_id, "file_name": rel, "width": 7, "height": 5})
                anns.append({"id": img_id + 7, "image_id": img_id, "category_id": cid})
                img_id += 1
        # the 2018 train/val jsons carry obfuscated category names
        d = {"images": images[::-1], "annotations": anns, "info": {},
             "categories": [{"id": c, "name": str(c), "supercategory": "x"} for c in cat_ids]}
        (root / fname).write_text(json.dumps(d))
    if categories_json:
        (root / "categories.json").write_text(json.dumps(cats))
    return root


def test_inat_build(tmp_path, caplog):
    root = write_inat(tmp_path / "inat")
    with caplog.at_level(logging.WARNING):
        b = get_dataset("inat2018").build(DataConfig(name="inat2018", root=str(root)), tmp_path / "out")
    assert any("differ from the 2018 release" in r.getMessage() for r in caplog.records)
    df = make_manifest(b)
    assert b.class_names == SPECIES
    assert df.groupby("split").size().to_dict() == {"train": 12, "test": 8}
    assert np.bincount(df[df["split"] == "train"]["label"]).tolist() == [6, 3, 2, 1]
    assert b.meta["class_names_source"] == "categories.json" and b.meta["category_ids"] == "label"
    assert b.meta["imbalance_factor"] == 6.0 and b.meta["matches_published_sizes"] is False
    row = df[df["split"] == "test"].iloc[0]
    assert ImageStore(tmp_path, b.image_root).load(row["image"]).shape == (5, 7, 3)
    assert get_dataset("inat2018").class_names(DataConfig(name="inat2018", root=str(root))) == SPECIES


def test_inat_noncontiguous_ids_and_json_names(tmp_path):
    root = write_inat(tmp_path / "inat", cat_ids=(40, 10, 30, 20), categories_json=False)
    cfg = DataConfig(name="inat2018", root=str(root), test_per_class=1, max_train_per_class=2)
    b = get_dataset("inat2018").build(cfg, tmp_path / "out")
    assert b.meta["category_ids"] == [10, 20, 30, 40]
    assert b.class_names == ["10", "20", "30", "40"]  # names from train2018.json
    df = make_manifest(b)
    # category 10 is label 0; it had 3 train images, capped at 2
    assert np.bincount(df[df["split"] == "train"]["label"]).tolist() == [2, 1, 2, 2]
    assert (df["split"] == "test").sum() == 4
    lab0 = df[(df["label"] == 0) & (df["split"] == "train")]["image"]
    assert all("/10/" in r for r in lab0)


def test_inat_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="train2018.json"):
        get_dataset("inat2018").build(DataConfig(name="inat2018", root=str(tmp_path)), tmp_path)
    root = write_inat(tmp_path / "inat")
    (root / "train_val2018/Animalia/0/tra_03.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"(?s)1 of 20 image files are missing.*tra_03.jpg"):
        get_dataset("inat2018").build(DataConfig(name="inat2018", root=str(root)), tmp_path / "o")
    d = json.loads((root / "val2018.json").read_text())
    d["annotations"][0]["category_id"] = 99
    (root / "val2018.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match=r"val2018.json: category_id\(s\) \[99\]"):
        get_dataset("inat2018").build(DataConfig(name="inat2018", root=str(root)), tmp_path / "o")


def test_inat_duplicate_annotation_is_reported(tmp_path):
    """An image annotated twice would silently double its weight: one error names both entries."""
    root = write_inat(tmp_path / "inat")
    d = json.loads((root / "train2018.json").read_text())
    d["annotations"].append(dict(d["annotations"][2], id=999))
    (root / "train2018.json").write_text(json.dumps(d))
    n = len(d["annotations"]) - 1
    with pytest.raises(ValueError, match=rf"train2018.json: 1 duplicate annotation\(s\): annotations\[{n}\] .* "
                                         r"repeats annotations\[2\]"):
        get_dataset("inat2018").build(DataConfig(name="inat2018", root=str(root)), tmp_path / "o")
