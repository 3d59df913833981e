"""CIFAR-10-LT / CIFAR-100-LT builders.

* A generated CIFAR-100 stand-in in the real ``cifar-100-python`` pickle format (random
  pixels, the true class structure: 500 train / 100 test per class, ``fine_labels``).
* The real CIFAR-10 tarball from ``../shared/data`` (JPEG-decoded copy, md5s differ from
  the official ones), skipped only if the file is absent.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

from langtail.config import DataConfig
from langtail.data import cifar
from langtail.data.manifest import ImageStore, make_manifest, read_manifest, write_manifest
from langtail.data.registry import get_dataset

REAL_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-python-from-jpeg.tar.gz"


# ----------------------------------------------------------------------------- helpers


def write_cifar100_standin(root: Path, seed: int = 0) -> Path:
    """``root/cifar-100-python/{train,test,meta}``: real pickle layout, random pixels."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    for name, per_class in (("train", 500), ("test", 100)):
        labels = rng.permutation(np.repeat(np.arange(100), per_class)).tolist()
        n = len(labels)
        data = np.frombuffer(rng.bytes(n * 3072), dtype=np.uint8).reshape(n, 3072)
        entry = {"filenames": [f"img_{i}.png" for i in range(n)], "batch_label": f"{name} stand-in",
                 "fine_labels": labels, "coarse_labels": [y // 5 for y in labels], "data": data}
        with open(d / name, "wb") as f:  # protocol 4 loads much faster than the originals' 2
            pickle.dump(entry, f, protocol=4)
    with open(d / "meta", "wb") as f:
        pickle.dump({"fine_label_names": list(cifar.CIFAR100_CLASSES),
                     "coarse_label_names": [f"super_{i}" for i in range(20)]}, f, protocol=2)
    return root


def write_cifar10_tiny(root: Path, per_class_train: int = 60, per_class_test: int = 5) -> Path:
    """A small ``cifar-10-batches-py`` (5 train batches + test + meta) for fast error tests."""
    rng = np.random.default_rng(1)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    labels = rng.permutation(np.repeat(np.arange(10), per_class_train))
    for b, chunk in enumerate(np.array_split(labels, 5), 1):
        data = rng.integers(0, 256, size=(len(chunk), 3072), dtype=np.uint8)
        with open(d / f"data_batch_{b}", "wb") as f:
            pickle.dump({"data": data, "labels": chunk.tolist(), "batch_label": "x", "filenames": []}, f, protocol=2)
    te = np.repeat(np.arange(10), per_class_test)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({"data": rng.integers(0, 256, size=(len(te), 3072), dtype=np.uint8),
                     "labels": te.tolist(), "batch_label": "x", "filenames": []}, f, protocol=2)
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(cifar.CIFAR10_CLASSES), "num_cases_per_batch": 10000}, f, protocol=2)
    return root


def manifest_of(builder, cfg: DataConfig, out: Path):
    b = builder.build(cfg, out)
    df = make_manifest(b, cfg.many_threshold, cfg.few_threshold, cfg.shot_bounds == "inclusive")
    return b, df


def groups_per_class(df) -> dict[str, int]:
    g = df[df["split"] == "train"].drop_duplicates("label")["group"]
    return {k: int((g == k).sum()) for k in ("many", "medium", "few")}


@pytest.fixture(scope="module")
def c100_root(tmp_path_factory):
    return write_cifar100_standin(tmp_path_factory.mktemp("c100"))


# ----------------------------------------------------------------------------- unit


def test_official_md5s_match_torchvision():
    tv = pytest.importorskip("torchvision.datasets")
    for spec, cls in ((cifar.CIFAR10, tv.CIFAR10), (cifar.CIFAR100, tv.CIFAR100)):
        assert [list(x) for x in spec.train] == cls.train_list
        assert [list(x) for x in spec.test] == cls.test_list
        assert spec.meta == (cls.meta["filename"], cls.meta["key"], cls.meta["md5"])
        assert spec.base_folder == cls.base_folder and spec.archive == cls.filename


def test_class_names_match_shipped_lists():
    classes = pytest.importorskip("langtail.corpus.classes")
    assert get_dataset("cifar10_lt").class_names(DataConfig()) == classes.get_class_list("cifar10")
    assert get_dataset("cifar100_lt").class_names(DataConfig()) == classes.get_class_list("cifar100")


# ----------------------------------------------------------------------------- CIFAR-100 stand-in


@pytest.mark.parametrize("IF,total", [(100, 10_847), (50, 12_608), (10, 19_573)])
def test_cifar100_lt_totals(c100_root, tmp_path, IF, total, caplog):
    # the CIFAR-LT convention (LDAM-DRW, config.yaml): many > 100, few < 20 -> 35 / 35 / 30 at IF 100
    cfg = DataConfig(name="cifar100_lt", root=str(c100_root), imbalance_factor=IF, verify_checksums=False,
                     shot_bounds="exclusive")
    with caplog.at_level(logging.WARNING):
        b, df = manifest_of(get_dataset("cifar100_lt"), cfg, tmp_path)
    assert any("md5 mismatch accepted" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert b.meta["checksums_verified"] is False
    tr = df[df["split"] == "train"]
    assert len(tr) == total
    assert (df["split"] == "test").sum() == 10_000
    assert set(df["split"]) == {"train", "test"}
    counts = np.bincount(tr["label"], minlength=100)
    assert counts[0] == 500 and counts[-1] == 500 // IF
    assert list(counts) == sorted(counts, reverse=True)
    if IF == 100:
        assert groups_per_class(df) == {"many": 35, "medium": 35, "few": 30}
        # array-backed refs resolve to the right pixels
        arr = np.load(tmp_path / "images_train.npy", mmap_mode="r")
        assert arr.shape == (total, 32, 32, 3) and arr.dtype == np.uint8
        assert np.load(tmp_path / "images_test.npy", mmap_mode="r").shape == (10_000, 32, 32, 3)
        store = ImageStore(tmp_path)
        ref = tr["image"].iloc[123]
        assert ref == "images_train.npy#123"
        assert store.load(ref).shape == (32, 32, 3)
        assert_ldam_selection(c100_root, tmp_path, b)


def assert_ldam_selection(c100_root: Path, out: Path, b) -> None:
    """Train rows == LDAM-DRW: np.random.seed(0); per class shuffle(where(labels == c))[:n_c]."""
    with open(c100_root / "cifar-100-python" / "train", "rb") as f:
        d = pickle.load(f, encoding="latin1")
    x = d["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y = np.asarray(d["fine_labels"])
    np.random.seed(0)  # the literal LDAM-DRW procedure, global RNG
    sel = []
    for c in range(100):
        idx = np.where(y == c)[0]
        np.random.shuffle(idx)
        sel.extend(idx[: int(500 * 0.01 ** (c / 99.0))])
    assert np.array_equal(np.load(out / "images_train.npy"), x[sel])
    assert b.labels[: len(sel)] == y[sel].tolist()


def test_cifar100_checksum_mismatch_rejected(c100_root, tmp_path):
    cfg = DataConfig(name="cifar100_lt", root=str(c100_root))
    with pytest.raises(ValueError, match="verify_checksums"):
        get_dataset("cifar100_lt").build(cfg, tmp_path)
    assert not (tmp_path / "images_train.npy").exists()


def test_cifar100_test_cap(c100_root, tmp_path):
    cfg = DataConfig(name="cifar100_lt", root=str(c100_root), verify_checksums=False, test_per_class=3,
                     max_train_per_class=50, imbalance_factor=10)
    b, df = manifest_of(get_dataset("cifar100_lt"), cfg, tmp_path)
    te = df[df["split"] == "test"]
    assert len(te) == 300 and set(np.bincount(te["label"])) == {3}
    counts = np.bincount(df[df["split"] == "train"]["label"], minlength=100)
    assert counts[0] == 50 and counts[-1] == 5


def test_small_cifar10_from_tarball(tmp_path):
    raw = write_cifar10_tiny(tmp_path / "raw")
    tgz = tmp_path / "c10.tar.gz"
    with tarfile.open(tgz, "w:gz") as tf:
        tf.add(raw / "cifar-10-batches-py", arcname="./cifar-10-batches-py")
    cfg = DataConfig(name="cifar10_lt", root=str(tgz), verify_checksums=False, max_train_per_class=60,
                     imbalance_factor=10)
    b, df = manifest_of(get_dataset("cifar10_lt"), cfg, tmp_path / "out")
    counts = np.bincount(df[df["split"] == "train"]["label"], minlength=10)
    assert counts.tolist() == [int(60 * 0.1 ** (i / 9)) for i in range(10)]
    assert (df["split"] == "test").sum() == 50
    assert b.meta["source"] == str(tgz)


# ----------------------------------------------------------------------------- errors (small CIFAR-10)


def test_missing_files_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py") as e:
        get_dataset("cifar10_lt").build(DataConfig(name="cifar10_lt", root=str(tmp_path)), tmp_path / "out")
    assert "allow_download" in str(e.value)


def test_incomplete_folder_and_bad_profile(tmp_path):
    root = write_cifar10_tiny(tmp_path / "raw")
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    cfg = DataConfig(name="cifar10_lt", root=str(root), verify_checksums=False, max_train_per_class=60)
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        get_dataset("cifar10_lt").build(cfg, tmp_path / "out")
    cfg.profile = "file"
    with pytest.raises(ValueError, match="profile"):
        get_dataset("cifar10_lt").build(cfg, tmp_path / "out")


def test_small_cifar10_pareto_and_base_folder_root(tmp_path):
    root = write_cifar10_tiny(tmp_path / "raw")
    cfg = DataConfig(name="cifar10_lt", root=str(root / "cifar-10-batches-py"), verify_checksums=False,
                     max_train_per_class=60, imbalance_factor=10, profile="pareto")
    b, df = manifest_of(get_dataset("cifar10_lt"), cfg, tmp_path / "out")
    counts = np.bincount(df[df["split"] == "train"]["label"], minlength=10)
    assert counts[0] == 60 and counts[-1] == 6 and list(counts) == sorted(counts, reverse=True)
    assert b.meta["profile"] == "pareto" and b.meta["imbalance_factor"] == 10.0


# ----------------------------------------------------------------------------- real CIFAR-10


@pytest.fixture(scope="session")
def real_cifar10(tmp_path_factory):
    """The shared tarball's members, unpacked once per session (read member by member,
    only the CIFAR files, so no archive path is ever used to write)."""
    if not REAL_CIFAR10.is_file():
        pytest.skip(f"real CIFAR-10 tarball not found at {REAL_CIFAR10} (clone the repo next to shared/)")
    raw = cifar.read_raw("tar", REAL_CIFAR10, cifar.CIFAR10)
    root = tmp_path_factory.mktemp("real_c10")
    (root / "cifar-10-batches-py").mkdir()
    for name, blob in raw.items():
        (root / "cifar-10-batches-py" / name).write_bytes(blob)
    return root


@pytest.mark.shared_data
@pytest.mark.parametrize("IF,total,per_class,groups", [
    (100, 12_406, [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50], {"many": 8, "medium": 2, "few": 0}),
    (50, 13_996, None, None),
    (10, 20_431, None, None),
])
def test_real_cifar10_lt(real_cifar10, tmp_path, IF, total, per_class, groups):
    cfg = DataConfig(name="cifar10_lt", root=str(real_cifar10), imbalance_factor=IF, verify_checksums=False)
    b, df = manifest_of(get_dataset("cifar10_lt"), cfg, tmp_path)
    tr = df[df["split"] == "train"]
    assert len(tr) == total
    assert (df["split"] == "test").sum() == 10_000
    counts = np.bincount(tr["label"], minlength=10)
    assert counts[-1] == 5000 // IF
    if per_class is not None:
        assert counts.tolist() == per_class
        assert groups_per_class(df) == groups
    assert b.meta["checksums_verified"] is False and len(b.meta["checksum_mismatches"]) == 7


@pytest.mark.shared_data
def test_real_cifar10_checksums_rejected_from_tarball(tmp_path):
    if not REAL_CIFAR10.is_file():
        pytest.skip(f"real CIFAR-10 tarball not found at {REAL_CIFAR10}")
    cfg = DataConfig(name="cifar10_lt", root=str(REAL_CIFAR10))
    with pytest.raises(ValueError, match="md5") as e:
        get_dataset("cifar10_lt").build(cfg, tmp_path)
    assert "data_batch_1" in str(e.value) and "verify_checksums: false" in str(e.value)


@pytest.mark.shared_data
def test_real_cifar10_manifest_byte_identical(real_cifar10, tmp_path):
    paths = []
    for run in ("a", "b"):
        out = tmp_path / run
        cfg = DataConfig(name="cifar10_lt", root=str(real_cifar10), verify_checksums=False)
        b, df = manifest_of(get_dataset("cifar10_lt"), cfg, out)
        meta = {**b.meta, "class_names": b.class_names, "image_root": b.image_root}
        write_manifest(out / "manifest.parquet", df, meta)
        paths.append(out)
    for name in ("manifest.parquet", "images_train.npy", "images_test.npy"):
        h = [hashlib.sha256((p / name).read_bytes()).hexdigest() for p in paths]
        assert h[0] == h[1], name
    df, meta = read_manifest(paths[0] / "manifest.parquet")
    assert meta["checksums_verified"] is False and meta["dataset"] == "cifar10_lt"
    # first train rows: the class-0 (airplane) images chosen by LDAM-DRW's shuffle
    store = ImageStore(paths[0])
    img = store.load(df["image"].iloc[0])
    assert img.shape == (32, 32, 3) and img.dtype == np.uint8 and df["class_name"].iloc[0] == "airplane"


def test_download_only_when_allowed(tmp_path, monkeypatch):
    """allow_download hands the job to torchvision (faked here: no network in tests)."""
    tvd = pytest.importorskip("torchvision.datasets")
    calls = []

    def fake_cifar10(root, train=True, download=False):
        calls.append((root, download))
        write_cifar10_tiny(Path(root))

    monkeypatch.setattr(tvd, "CIFAR10", fake_cifar10)
    root = tmp_path / "dl"
    cfg = DataConfig(name="cifar10_lt", root=str(root), verify_checksums=False, max_train_per_class=60,
                     imbalance_factor=10)
    with pytest.raises(FileNotFoundError):
        get_dataset("cifar10_lt").build(cfg, tmp_path / "out")
    assert calls == []
    cfg.allow_download = True
    b = get_dataset("cifar10_lt").build(cfg, tmp_path / "out")
    assert calls == [(str(root), True)] and len(b.images) > 0
