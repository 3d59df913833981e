"""ImageNet-LT / Places-LT class subsets (issue #11) and split-file errors (issue #12) on
generated trees in the exact OLTR layout (``langtail.data.synthetic_lt``)."""
from __future__ import annotations

import re

import numpy as np
import pytest

from langtail.config import DataConfig
from langtail.corpus.classes import get_class_list
from langtail.stages import longtail
from langtail.data.paths import BadLinesError
from langtail.data.manifest import read_manifest
from langtail.data.registry import get_dataset
from langtail.data.synthetic_lt import imagenet_lt_counts, synthetic_wnids, write_lt_tree

#: 12 classes: 4 many (>= 100), 3 medium (21..99), 5 few (<= 20) training images (paper's shot groups)
COUNTS = [130, 110, 101, 100, 60, 40, 25, 20, 19, 12, 6, 5]
GROUPS = ["many"] * 4 + ["medium"] * 3 + ["few"] * 5


def run_longtail(data_cfg, out):
    """The longtail stage with this data section (everything else default)."""
    from langtail.config import DatasetConfig

    longtail.run(DatasetConfig(data=data_cfg), out)


@pytest.mark.parametrize("layout,name,shipped", [("imagenet", "imagenet_lt", "imagenet1k"),
                                                  ("places", "places_lt", "places365")])
def test_longtail_stage_on_a_dozen_class_tree(tmp_path, layout, name, shipped):
    tree = write_lt_tree(tmp_path / "tree", 12, layout=layout, train_counts=COUNTS, val_per_class=2,
                         test_per_class=3, image_size=16, seed=1)
    out = tmp_path / "res" / "manifest.parquet"
    cfg = DataConfig(name=name, root=str(tmp_path / "tree"), profile="file", image_size=16)
    run_longtail(cfg, out)
    df, meta = read_manifest(out)
    # rows: every split-file line, in file order
    assert df.groupby("split").size().to_dict() == {"train": sum(COUNTS), "val": 24, "test": 36}
    assert len(df) == sum(COUNTS) + 24 + 36
    # the class set comes from the split files (labels 0..11), names from the standard list
    names = get_class_list(shipped)[:12]
    assert meta["class_names"] == names and meta["class_names_source"] == "langtail.corpus.classes"
    assert get_dataset(name).class_names(cfg) == names  # what the corpus stage sees
    assert meta["source_labels"] == list(range(12)) and meta["num_classes_published"] == 365 + 635 * (layout == "imagenet")
    # counts and groups per class
    tr = df[df["split"] == "train"]
    assert np.bincount(tr["label"], minlength=12).tolist() == COUNTS
    per_class = df.drop_duplicates("label").sort_values("label")
    assert per_class["class_count"].tolist() == COUNTS
    assert per_class["group"].tolist() == GROUPS
    assert per_class["class_name"].tolist() == names
    assert (meta["n_max"], meta["n_min"]) == (130, 5)
    # refs are the split-file paths (leading "/" of Places lines dropped), images decode
    first = (tmp_path / "tree" / f"{tree['prefix']}_train.txt").read_text().splitlines()[0].rsplit(" ", 1)[0]
    assert df["image"].iloc[0] == first.lstrip("/")
    from langtail.data.dataset import store_for

    assert store_for(out, meta).load(df["image"].iloc[-1]).shape == (16, 16, 3)


def test_labels_that_occur_define_the_classes_and_data_classes_restricts(tmp_path):
    ids = [3, 17, 500, 999]
    write_lt_tree(tmp_path / "t", 4, train_counts=[30, 20, 10, 5], val_per_class=1, test_per_class=2,
                  label_ids=ids, image_size=8)
    full = get_class_list("imagenet1k")
    out = tmp_path / "a" / "manifest.parquet"
    run_longtail(DataConfig(name="imagenet_lt", root=str(tmp_path / "t")), out)
    df, meta = read_manifest(out)
    assert meta["class_names"] == [full[i] for i in ids] and meta["source_labels"] == ids
    assert sorted(df["label"].unique().tolist()) == [0, 1, 2, 3]  # re-indexed 0..K-1

    # restrict to two classes, by name and by id: re-indexed 0..1 in label order, names kept
    cfg = DataConfig(name="imagenet_lt", root=str(tmp_path / "t"), classes=[full[999], 17])
    out = tmp_path / "b" / "manifest.parquet"
    run_longtail(cfg, out)
    df, meta = read_manifest(out)
    assert meta["class_names"] == [full[17], full[999]] and meta["source_labels"] == [17, 999]
    assert get_dataset("imagenet_lt").class_names(cfg) == [full[17], full[999]]
    assert df.groupby(["split", "label"]).size().to_dict() == {
        ("test", 0): 2, ("test", 1): 2, ("train", 0): 20, ("train", 1): 5, ("val", 0): 1, ("val", 1): 1}
    assert meta["classes_selected"] == [full[999], 17]

    for wanted, err in (([full[4]], r"class\(es\) without training images in the split files: 4"),
                        (["no such thing"], "'no such thing': no such class"),
                        ([1000], "label id out of range")):
        with pytest.raises(ValueError, match=err):
            run_longtail(DataConfig(name="imagenet_lt", root=str(tmp_path / "t"), classes=wanted),
                         tmp_path / "c" / "manifest.parquet")
    # a dataset that cannot honour data.classes says so instead of ignoring it
    with pytest.raises(ValueError, match="cannot be restricted to a class subset"):
        run_longtail(DataConfig(name="demo", classes=["x"]), tmp_path / "d" / "manifest.parquet")


def test_label_in_val_or_test_but_not_in_train_names_the_class(tmp_path):
    write_lt_tree(tmp_path / "t", 3, train_counts=[4, 3, 2], val_per_class=1, test_per_class=1, image_size=8)
    wnid = synthetic_wnids(3)[2]
    # drop class 2 from train: its val and test lines remain
    p = tmp_path / "t" / "ImageNet_LT_train.txt"
    p.write_text("".join(ln + "\n" for ln in p.read_text().splitlines() if not ln.endswith(" 2")))
    name = get_class_list("imagenet1k")[2]
    with pytest.raises(BadLinesError) as e:
        run_longtail(DataConfig(name="imagenet_lt", root=str(tmp_path / "t")), tmp_path / "o" / "manifest.parquet")
    msg = str(e.value)
    assert f"ImageNet_LT_val.txt:3: train/{wnid}/{wnid}_2.JPEG 2: class 2 ({name!r}) has 1 val line(s) but " \
           "no training image in ImageNet_LT_train.txt" in msg
    assert "ImageNet_LT_test.txt:3: " in msg and "has 1 test line(s)" in msg


def test_every_bad_line_in_one_error(tmp_path):
    """Malformed lines, out-of-range labels, a wnid folder that disagrees with its label and
    a missing file are all reported together, each as file:line: text: reason."""
    write_lt_tree(tmp_path / "t", 3, train_counts=[5, 4, 3], val_per_class=1, test_per_class=1, image_size=8)
    w = synthetic_wnids(3)
    p = tmp_path / "t" / "ImageNet_LT_train.txt"
    lines = p.read_text().splitlines()
    lines[1] = f"train/{w[0]}/{w[0]}_1.JPEG 1"  # folder w0 holds label 0 on the other lines
    lines[6] = "just-a-path.JPEG"
    lines.append("train/x.JPEG 1000")
    lines.append(f"train/{w[2]}/gone.JPEG 2")
    p.write_text("\n".join(lines) + "\n")
    t = tmp_path / "t" / "ImageNet_LT_test.txt"
    t.write_text(t.read_text() + "val/n90000000/also gone.JPEG seven\n")
    with pytest.raises(BadLinesError) as e:
        get_dataset("imagenet_lt").build(DataConfig(name="imagenet_lt", root=str(tmp_path / "t")), tmp_path)
    msg = str(e.value)
    assert msg.startswith("imagenet_lt: 5 bad line(s)")
    assert re.search(rf"ImageNet_LT_train.txt:2: train/{w[0]}/{w[0]}_1.JPEG 1: label 1 disagrees with its folder "
                     rf"'{w[0]}', which holds label 0 on 6 of its 7 lines", msg)
    assert "ImageNet_LT_train.txt:7: just-a-path.JPEG: malformed line" in msg
    assert "ImageNet_LT_train.txt:13: train/x.JPEG 1000: label 1000 out of range [0, 1000)" in msg
    assert f"ImageNet_LT_train.txt:14: train/{w[2]}/gone.JPEG 2: file not found" in msg
    assert "ImageNet_LT_test.txt:4: val/n90000000/also gone.JPEG seven: malformed line" in msg


def test_generator_is_deterministic_and_sized(tmp_path):
    a = write_lt_tree(tmp_path / "a", 5, train_counts=[9, 7, 5, 3, 1], val_per_class=2, test_per_class=2,
                      image_size=8, seed=3)
    b = write_lt_tree(tmp_path / "b", 5, train_counts=[9, 7, 5, 3, 1], val_per_class=2, test_per_class=2,
                      image_size=8, seed=3)
    assert a["sizes"] == {"train": 25, "val": 10, "test": 10} and a["bytes"] == b["bytes"]
    for f in sorted((tmp_path / "a").rglob("*")):
        if f.is_file():
            assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()
    c = np.asarray(imagenet_lt_counts(1000))
    assert (c[0], c[-1], int(c.sum())) == (1280, 5, 115_846) and np.all(np.diff(c) <= 0)
    groups = ((c > 100).sum(), ((c >= 20) & (c <= 100)).sum(), (c < 20).sum())
    assert abs(groups[0] - 385) < 40 and abs(groups[1] - 479) < 40 and abs(groups[2] - 136) < 40


@pytest.mark.parametrize("classes", [[], [3, 0]])
def test_corpus_stage_on_a_split_file_tree_reads_only_declared_keys(tmp_path, classes):
    """The corpus stage takes imagenet_lt's class list from the split files (and ``data.classes``)
    under the command's key guard: every key it reads is declared, so its rule passes it."""
    import pandas as pd

    from langtail.config import CorpusConfig, DatasetConfig
    from langtail.stages import corpus
    from conftest import staged

    write_lt_tree(tmp_path / "tree", 4, train_counts=[7, 6, 5, 5], val_per_class=1, test_per_class=1, image_size=8)
    cfg = DatasetConfig(data=DataConfig(name="imagenet_lt", root=str(tmp_path / "tree"), profile="file",
                                        classes=classes),
                        corpus=CorpusConfig(sources=["prompt"]))
    corpus.run(staged(cfg, "corpus"), tmp_path / "corpus.parquet", tmp_path / "stats.parquet", tmp_path / "wiki")
    names = get_class_list("imagenet1k")
    want = [names[i] for i in (sorted(classes) if classes else range(4))]
    got = pd.read_parquet(tmp_path / "stats.parquet")
    assert got["class_name"].tolist() == want
