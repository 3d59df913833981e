"""``folder`` builder (ImageFolder tree + generated long tail) and the shared file helpers."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from langtail.config import DataConfig
from langtail.data import folder as folder_mod
from langtail.data import paths as paths_mod
from langtail.data.longtail import exp_profile, pareto_profile
from langtail.data.manifest import ImageStore, UnreadableImage, make_manifest, write_manifest
from langtail.data.registry import get_dataset

CLASSES = ["cat", "dog", "eel", "fox"]


def write_image(path: Path, seed: int, size: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    px = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(px).save(path, format="PNG" if path.suffix.lower() == ".png" else "JPEG")


def make_tree(root: Path, per_class: int = 12, test: int = 3, val: int = 0) -> Path:
    """root/{train,test,val}/<class>/*.jpg|png; half JPEG, half PNG, one nested sub-folder."""
    k = 0
    for split, n in (("train", per_class), ("test", test), ("val", val)):
        for c in CLASSES:
            for i in range(n):
                ext = ".jpg" if i % 2 == 0 else ".PNG"
                sub = "nested/" if i == 1 else ""
                write_image(root / split / c / f"{sub}{c}_{i:03d}{ext}", k)
                k += 1
    (root / "train" / "cat" / "notes.txt").write_text("not an image")
    (root / "train" / ".hidden").mkdir()
    return root


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("folder"))


def build(root: Path, out: Path, **kw):
    cfg = DataConfig(name="folder", root=str(root), **kw)
    b = get_dataset("folder").build(cfg, out)
    return b, make_manifest(b, cfg.many_threshold, cfg.few_threshold)


def train_counts(df, C=len(CLASSES)):
    return np.bincount(df[df["split"] == "train"]["label"], minlength=C).tolist()


def test_exp_profile_and_layout(tree, tmp_path):
    b, df = build(tree, tmp_path, imbalance_factor=6)
    assert b.class_names == CLASSES
    assert train_counts(df) == exp_profile(12, 4, 6) == [12, 6, 3, 2]
    assert (df["split"] == "test").sum() == 12 and "val" not in set(df["split"])
    assert b.meta["split_dirs"] == {"test": "test"}
    assert b.meta["n_max"] == 12 and b.meta["imbalance_factor"] == 6.0 and b.meta["profile"] == "exp"
    assert b.image_root == str(tree.resolve())
    tr = df[df["split"] == "train"]
    assert not any(r.endswith(".txt") for r in df["image"])
    assert any("/nested/" in r for r in tr["image"])
    # every ref is a readable relative path, label matches its class folder
    store = ImageStore(tmp_path, b.image_root)
    for ref, name in zip(df["image"], df["class_name"]):
        assert ref.split("/")[1] == name and not Path(ref).is_absolute()
    assert store.load(df["image"].iloc[0]).shape == (8, 8, 3)


def test_pareto_profile_and_determinism(tree, tmp_path):
    b1, df1 = build(tree, tmp_path / "a", profile="pareto", imbalance_factor=4, seed=5)
    b2, df2 = build(tree, tmp_path / "b", profile="pareto", imbalance_factor=4, seed=5)
    assert df1.equals(df2) and b1.meta == b2.meta
    assert train_counts(df1) == pareto_profile(12, 4, 4, seed=5)
    assert b1.meta["profile"] == "pareto" and b1.meta["train_counts"] == train_counts(df1)
    assert b1.meta["imbalance_factor"] == 12 / 3
    _, df3 = build(tree, tmp_path / "c", profile="pareto", imbalance_factor=4, seed=6)
    tr1, tr3 = (set(d[d["split"] == "train"]["image"]) for d in (df1, df3))
    assert tr1 != tr3  # another seed picks other images (and maybe other counts)


def test_selection_is_seeded_subsample(tree, tmp_path):
    b, df = build(tree, tmp_path, imbalance_factor=6, seed=0)
    pool = [p for c in CLASSES for p in folder_mod.list_images(tree / "train" / c, tree)]
    labels = np.repeat(np.arange(4), 12)
    keep = folder_mod.subsample_per_class(labels, [12, 6, 3, 2], 0)
    assert sorted(df[df["split"] == "train"]["image"]) == sorted(pool[i] for i in keep)


def test_max_train_per_class_and_file_profile(tree, tmp_path):
    _, df = build(tree, tmp_path, imbalance_factor=2, max_train_per_class=8)
    assert train_counts(df) == exp_profile(8, 4, 2)
    _, df = build(tree, tmp_path, profile="file")
    assert train_counts(df) == [12] * 4
    _, df = build(tree, tmp_path, profile="file", max_train_per_class=5, test_per_class=1)
    assert train_counts(df) == [5] * 4 and (df["split"] == "test").sum() == 4


def test_impossible_profile_is_a_clear_error(tree, tmp_path):
    with pytest.raises(ValueError, match="0 training images"):
        build(tree, tmp_path, imbalance_factor=100)


def test_val_only_becomes_test_and_val_with_test(tmp_path):
    root = make_tree(tmp_path / "v", per_class=4, test=0, val=2)
    b, df = build(root, tmp_path / "o1", imbalance_factor=2)
    assert b.meta["split_dirs"] == {"test": "val"}
    assert (df["split"] == "test").sum() == 8
    assert all(r.startswith("val/") for r in df[df["split"] == "test"]["image"])
    root2 = make_tree(tmp_path / "vt", per_class=4, test=1, val=2)
    b, df = build(root2, tmp_path / "o2", imbalance_factor=2)
    assert b.meta["split_dirs"] == {"test": "test", "val": "val"}
    assert df.groupby("split").size().to_dict() == {"test": 4, "train": sum(exp_profile(4, 4, 2)), "val": 8}


def test_bad_layouts(tmp_path):
    with pytest.raises(ValueError, match="data.root"):
        get_dataset("folder").build(DataConfig(name="folder"), tmp_path)
    with pytest.raises(FileNotFoundError, match="train"):
        build(tmp_path / "nothing", tmp_path)
    root = make_tree(tmp_path / "t", per_class=2, test=1)
    write_image(root / "test" / "zebra" / "z.jpg", 1)
    with pytest.raises(ValueError, match="zebra"):
        build(root, tmp_path, imbalance_factor=2)
    (root / "train" / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        build(root, tmp_path, imbalance_factor=2)


def test_corrupt_image_is_not_checked_by_builder_but_raises_on_load(tmp_path):
    root = make_tree(tmp_path / "c", per_class=2, test=0)
    bad = root / "train" / "cat" / "cat_000.jpg"
    bad.write_bytes(b"not a jpeg")
    b, df = build(root, tmp_path, profile="file")
    assert "train/cat/cat_000.jpg" in set(df["image"])
    with pytest.raises(UnreadableImage):
        ImageStore(tmp_path, b.image_root).load("train/cat/cat_000.jpg")


def test_manifest_write_roundtrip(tree, tmp_path):
    b, df = build(tree, tmp_path, imbalance_factor=6)
    write_manifest(tmp_path / "m.parquet", df, {**b.meta, "class_names": b.class_names})
    first = (tmp_path / "m.parquet").read_bytes()
    b2, df2 = build(tree, tmp_path, imbalance_factor=6)
    write_manifest(tmp_path / "m.parquet", df2, {**b2.meta, "class_names": b2.class_names})
    assert (tmp_path / "m.parquet").read_bytes() == first


def test_find_missing_and_helpers(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"")
    refs = ["a/x.jpg", "a/y.jpg", "b/z.jpg"] + [f"c/{i}.jpg" for i in range(20)]
    bad = paths_mod.PathChecker(tmp_path).check(refs)
    assert len(bad) == 22 and bad[0] == (1, f"file not found: {tmp_path / 'a/y.jpg'}")
    with pytest.raises(FileNotFoundError) as e:
        paths_mod.check_refs("demo", tmp_path, refs, hint="put them there")
    msg = str(e.value)
    assert "22 of 23" in msg and "a/y.jpg" in msg and "put them there" in msg
    paths_mod.check_refs("demo", tmp_path, ["a/x.jpg"])
    assert folder_mod.cap_per_class(np.array([0, 1, 0, 0, 1, 2]), 2).tolist() == [0, 1, 2, 4, 5]
    assert folder_mod.cap_per_class(np.array([0, 1]), 0).tolist() == [0, 1]
    assert folder_mod.dedupe_names(["a", "b", "a"], ["1", "2", "3"]) == ["a (1)", "b", "a (3)"]


def test_verify_images_leaves_unreadable_files_out_of_the_manifest(tmp_path):
    """data.verify_images: the longtail stage decodes every image (parallel) and records the
    unreadable ones (zero bytes, HTML, truncated) as counted skips before any training job."""
    from langtail.config import from_dict
    from langtail.data.manifest import read_manifest
    from langtail.data.skipped import read_skipped
    from langtail.io import read_parquet_metadata
    from langtail.stages import longtail

    root = make_tree(tmp_path / "v", per_class=4, test=1)
    (root / "train" / "cat" / "cat_000.jpg").write_bytes(b"")
    (root / "train" / "dog" / "dog_002.jpg").write_text("<html><body>rate limited</body></html>")
    jpg = root / "test" / "cat" / "cat_000.jpg"
    jpg.write_bytes(jpg.read_bytes()[:40])
    out = tmp_path / "res" / "manifest.parquet"
    data = {"name": "folder", "root": str(root), "profile": "file"}
    longtail.run(from_dict({"data": {**data, "verify_images": True}}), out)
    df, meta = read_manifest(out)
    bad = {"train/cat/cat_000.jpg", "train/dog/dog_002.jpg", "test/cat/cat_000.jpg"}
    assert not bad & set(df["image"]) and meta["unreadable_images"] == 3
    skipped = read_skipped(out.parent / "skipped_images.parquet")
    assert set(skipped["image"]) == bad and set(skipped["stage"]) == {"longtail"}
    assert read_parquet_metadata(out.parent / "skipped_images.parquet")["n_skips"] == 3
    plain = tmp_path / "plain" / "manifest.parquet"
    longtail.run(from_dict({"data": data}), plain)  # off (default): nothing decoded, nothing dropped
    assert bad <= set(read_manifest(plain)[0]["image"])
