"""Image paths cannot leave their data root (issue #16): split files, folder scans, manifests.

Every test puts a marker image OUTSIDE the data root, records every path the process
opens or lists while the dataset code runs, and checks the offending lines are reported
and nothing outside the root was touched.
"""
from __future__ import annotations

import builtins
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from langtail.config import DataConfig
from langtail.stages import longtail
from langtail.data.paths import BadLinesError, PathChecker
from langtail.data.manifest import ImageStore, UnsafeImagePath
from langtail.data.registry import get_dataset
from langtail.data.synthetic_lt import synthetic_wnids, write_lt_tree


def run_longtail(data_cfg, out):
    """The longtail stage with this data section (everything else default)."""
    from langtail.config import DatasetConfig

    longtail.run(DatasetConfig(data=data_cfg), out)


@pytest.fixture
def outside(tmp_path):
    d = tmp_path / "outside"
    d.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "marker.jpg")
    (d / "sub").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(d / "sub" / "x.jpg")
    return d


@pytest.fixture
def touched(monkeypatch):
    """Every path passed to open / os.open / os.scandir / os.listdir / PIL.Image.open."""
    seen: list[str] = []

    def spy(fn):
        def wrapper(p, *a, **k):
            if isinstance(p, (str, bytes, os.PathLike)):
                seen.append(os.path.abspath(os.fsdecode(p)))
            return fn(p, *a, **k)
        return wrapper

    monkeypatch.setattr(builtins, "open", spy(builtins.open))
    monkeypatch.setattr(os, "scandir", spy(os.scandir))
    monkeypatch.setattr(os, "listdir", spy(os.listdir))
    monkeypatch.setattr(Image, "open", spy(Image.open))
    return seen


def _under(paths: list[str], d: Path) -> list[str]:
    real = os.path.realpath(d)
    return [p for p in paths if p.startswith(str(d)) or os.path.realpath(p).startswith(real)]


def test_split_file_lines_escaping_the_root_are_reported_and_never_read(tmp_path, outside, touched):
    root = tmp_path / "root"
    write_lt_tree(root, 2, train_counts=[3, 2], val_per_class=1, test_per_class=1, image_size=8)
    w = synthetic_wnids(2)
    os.symlink(outside / "marker.jpg", root / "train" / w[0] / "link.JPEG")  # symlinked file
    os.symlink(outside / "sub", root / "train" / "linkdir")  # symlinked folder
    p = root / "ImageNet_LT_train.txt"
    p.write_text(p.read_text()
                 + f"train/{w[0]}/../../../outside/marker.jpg 0\n"  # line 6: relative ..
                 + f"{outside / 'marker.jpg'} 0\n"  # line 7: absolute (read relative to the root)
                 + f"train/{w[0]}/link.JPEG 0\n"  # line 8: symlink to a file outside
                 + "train/linkdir/x.jpg 1\n")  # line 9: symlinked folder outside
    touched.clear()
    with pytest.raises(BadLinesError) as e:
        run_longtail(DataConfig(name="imagenet_lt", root=str(root)), tmp_path / "res" / "manifest.parquet")
    msg = str(e.value)
    assert msg.startswith("imagenet_lt: 4 bad line(s)")
    assert f"ImageNet_LT_train.txt:6: train/{w[0]}/../../../outside/marker.jpg 0: '..' leads outside the data root" in msg
    assert f"ImageNet_LT_train.txt:7: {outside / 'marker.jpg'} 0: file not found: {root}{outside / 'marker.jpg'}" in msg
    assert f"ImageNet_LT_train.txt:8: train/{w[0]}/link.JPEG 0: symlink to {os.path.realpath(outside / 'marker.jpg')}, " \
           "outside the data root" in msg
    assert "ImageNet_LT_train.txt:9: train/linkdir/x.jpg 1: folder resolves to" in msg
    assert "data.allow_symlinks_outside_root" in msg
    assert _under(touched, outside) == []  # nothing outside the root was opened or listed
    assert not (tmp_path / "res" / "manifest.parquet").exists()

    # the escapes by '..' stay errors with the opt-in; symlinks are then followed
    cfg = DataConfig(name="imagenet_lt", root=str(root), allow_symlinks_outside_root=True)
    with pytest.raises(BadLinesError) as e:
        get_dataset("imagenet_lt").build(cfg, tmp_path)
    assert str(e.value).startswith("imagenet_lt: 2 bad line(s)")  # lines 6 and 7
    p.write_text("".join(ln + "\n" for ln in p.read_text().splitlines() if "marker.jpg" not in ln))
    b = get_dataset("imagenet_lt").build(cfg, tmp_path)
    assert "train/linkdir/x.jpg" in b.images and b.meta["allow_symlinks_outside_root"] is True


def test_manifest_refs_are_checked_before_opening(tmp_path, outside, touched):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    Image.fromarray(np.full((4, 4, 3), 7, np.uint8)).save(root / "a" / "ok.jpg")
    os.symlink(outside / "marker.jpg", root / "a" / "link.jpg")
    store = ImageStore(tmp_path, root)
    assert store.load("a/ok.jpg").shape == (4, 4, 3)
    touched.clear()
    for ref in ("../outside/marker.jpg", str(outside / "marker.jpg"), "a/link.jpg", "../outside/x.npy#0"):
        with pytest.raises(UnsafeImagePath):
            store.load(ref)
    assert _under(touched, outside) == []
    assert ImageStore(tmp_path, root, allow_symlinks_outside_root=True).load("a/link.jpg").shape == (4, 4, 3)
    assert _under(touched, outside)  # the spy does see a read through an allowed symlink
    assert PathChecker(root).check(["a/ok.jpg", "a/missing.jpg", "a/../a/ok.jpg"]) == [
        (1, f"file not found: {root / 'a' / 'missing.jpg'}")]


def test_folder_scan_does_not_follow_symlinks_out(tmp_path, outside, touched):
    root = tmp_path / "tree"
    for c in ("cat", "dog"):
        (root / "train" / c).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((4, 4, 3), k, np.uint8)).save(root / "train" / c / f"{k}.jpg")
    os.symlink(outside / "marker.jpg", root / "train" / "cat" / "9.jpg")
    os.symlink(outside / "sub", root / "train" / "dog" / "more")
    touched.clear()
    cfg = DataConfig(name="folder", root=str(root), profile="file")
    with pytest.raises(BadLinesError) as e:
        get_dataset("folder").build(cfg, tmp_path)
    msg = str(e.value)
    assert f"{root / 'train' / 'cat'}: 9.jpg: symlink to {os.path.realpath(outside / 'marker.jpg')}" in msg
    assert f"{root / 'train' / 'dog'}: more: symlink to {os.path.realpath(outside / 'sub')}" in msg
    assert _under(touched, outside) == []
    b = get_dataset("folder").build(DataConfig(name="folder", root=str(root), profile="file",
                                               allow_symlinks_outside_root=True), tmp_path)
    assert "train/cat/9.jpg" in b.images and "train/dog/more/x.jpg" in b.images
