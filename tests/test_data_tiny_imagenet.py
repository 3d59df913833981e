"""``tiny_imagenet_lt`` on a fake ``tiny-imagenet-200`` tree."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from langtail.config import DataConfig
from langtail.data.longtail import exp_profile, subsample_per_class
from langtail.data.manifest import ImageStore, make_manifest
from langtail.data.registry import get_dataset

WNIDS = ["n02124075", "n04067472", "n01443537", "n04070727", "n02085620"]  # wnids.txt order (unsorted)
WORDS = {"n02124075": "Egyptian cat", "n04067472": "reel", "n01443537": "goldfish, Carassius auratus",
         "n04070727": "refrigerator, icebox", "n02085620": "Chihuahua"}


def make_tiny(root: Path, per_class: int = 20, val_per_class: int = 3, real: int = 2) -> Path:
    from PIL import Image

    t = root / "tiny-imagenet-200"
    t.mkdir(parents=True)
    (t / "wnids.txt").write_text("\n".join(WNIDS) + "\n")
    words = ["n00001740\tentity"] + [f"{w}\t{s}" for w, s in WORDS.items()] + ["n09999999\tother, thing"]
    (t / "words.txt").write_text("\n".join(words) + "\n")
    k = 0
    for w in WNIDS:
        d = t / "train" / w / "images"
        d.mkdir(parents=True)
        (t / "train" / w / f"{w}_boxes.txt").write_text("")
        for i in range(per_class):
            p = d / f"{w}_{i}.JPEG"
            if k < real:
                Image.fromarray(np.full((64, 64, 3), 9, np.uint8)).save(p, format="JPEG")
            else:
                p.touch()
            k += 1
    (t / "val" / "images").mkdir(parents=True)
    lines = []
    for i in range(val_per_class * len(WNIDS)):
        w = WNIDS[i % len(WNIDS)]
        (t / "val" / "images" / f"val_{i}.JPEG").touch()
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (t / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    (t / "test" / "images").mkdir(parents=True)
    return root


@pytest.fixture()
def tiny(tmp_path):
    return make_tiny(tmp_path / "data")


def cfg_for(root: Path, **kw) -> DataConfig:
    return DataConfig(name="tiny_imagenet_lt", root=str(root), **kw)


def test_recipe(tiny, tmp_path):
    cfg = cfg_for(tiny, imbalance_factor=10, max_train_per_class=20, seed=0)
    b = get_dataset("tiny_imagenet_lt").build(cfg, tmp_path / "out")
    df = make_manifest(b)
    assert b.class_names == ["Egyptian cat", "reel", "goldfish", "refrigerator", "Chihuahua"]
    assert b.meta["wnids"] == WNIDS and b.image_root == str((tiny / "tiny-imagenet-200").resolve())
    counts = exp_profile(20, 5, 10)
    tr = df[df["split"] == "train"]
    assert np.bincount(tr["label"]).tolist() == counts == b.meta["train_counts"]
    # the recorded file list is the seeded LDAM-style choice over name-sorted pools
    pool = [f"train/{w}/images/{f}" for w in WNIDS for f in sorted(f"{w}_{i}.JPEG" for i in range(20))]
    keep = subsample_per_class(np.repeat(np.arange(5), 20), counts, 0)
    assert sorted(tr["image"]) == sorted(pool[i] for i in keep)
    for ref, y in zip(tr["image"], tr["label"]):
        assert ref.split("/")[1] == WNIDS[y]
    te = df[df["split"] == "test"]
    assert len(te) == 15 and te["image"].iloc[0] == "val/images/val_0.JPEG" and te["label"].iloc[0] == 0
    assert ImageStore(tmp_path, b.image_root).load(f"train/{WNIDS[0]}/images/{WNIDS[0]}_0.JPEG").shape == (64, 64, 3)
    # class_names works without building, from the folder that contains tiny-imagenet-200
    assert get_dataset("tiny_imagenet_lt").class_names(cfg) == b.class_names


def test_deterministic_and_seed_dependent(tiny, tmp_path):
    mk = lambda seed: make_manifest(get_dataset("tiny_imagenet_lt").build(  # noqa: E731
        cfg_for(tiny / "tiny-imagenet-200", imbalance_factor=4, max_train_per_class=20, seed=seed), tmp_path))
    a, b, c = mk(0), mk(0), mk(1)
    assert a.equals(b)
    assert not a["image"].equals(c["image"])


def test_n_max_is_500_and_errors(tiny, tmp_path):
    with pytest.raises(ValueError, match="class 0 has 20 images, profile asks for 500"):
        get_dataset("tiny_imagenet_lt").build(cfg_for(tiny), tmp_path)
    with pytest.raises(ValueError, match="profile"):
        get_dataset("tiny_imagenet_lt").build(cfg_for(tiny, profile="file"), tmp_path)
    with pytest.raises(FileNotFoundError, match="tiny-imagenet-200.zip"):
        get_dataset("tiny_imagenet_lt").build(cfg_for(tmp_path / "nope"), tmp_path)
    t = tiny / "tiny-imagenet-200"
    (t / "val" / "images" / "val_4.JPEG").unlink()
    with pytest.raises(FileNotFoundError, match="1 of 15 image files are missing"):
        get_dataset("tiny_imagenet_lt").build(cfg_for(tiny, imbalance_factor=10, max_train_per_class=20), tmp_path)
    with open(t / "val" / "val_annotations.txt", "a") as f:
        f.write("val_99.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(ValueError, match=r"val_annotations.txt:16: wnid 'n00000000'"):
        get_dataset("tiny_imagenet_lt").build(cfg_for(tiny, imbalance_factor=10, max_train_per_class=20), tmp_path)


def test_tiny_imagenet_lt_totals_documented():
    assert [sum(exp_profile(500, 200, f)) for f in (100, 50, 10)] == [21_549, 25_082, 39_072]
