"""``cifar10_lt`` / ``cifar100_lt``: CIFAR-LT exactly as LDAM-DRW ``imbalance_cifar.py``.

Input (``data.root``, default ``data``), the standard "python version" of CIFAR:

* a folder containing ``cifar-10-batches-py/`` (``data_batch_1..5``, ``test_batch``,
  ``batches.meta``) or ``cifar-100-python/`` (``train``, ``test``, ``meta``);
* that folder itself; or
* a ``.tar.gz`` / ``.tgz`` / ``.tar`` of it (e.g. the official ``cifar-10-python.tar.gz``),
  given directly or found in ``root`` under its official name. Members are read straight
  from the archive (nothing is extracted, so no path in the archive is ever written).

Each pickle (read with a restricted ``pickle.Unpickler(encoding="latin1")`` that resolves
only numpy arrays and bytes, so a crafted file cannot run code) holds ``data``: uint8 ``[N, 3072]``
(R plane, G plane, B plane, each 32x32 row-major) and ``labels`` (CIFAR-10) or
``fine_labels`` (CIFAR-100). Training data is ``data_batch_1..5`` concatenated in order
(the torchvision order that LDAM-DRW subsamples).

Checksums: the md5 of every file is compared with the official values (those of
``torchvision.datasets.CIFAR10/100``). A mismatch raises ``ValueError`` unless
``data.verify_checksums`` is false; then it is logged at WARNING level and recorded as
``checksums_verified: false`` (+ ``checksum_mismatches``) in the manifest metadata.
Missing files are downloaded with torchvision only if ``data.allow_download`` is true.

Long tail (``data.profile: exp``, the default): ``n_i = int(n_max * (1/IF) ** (i / (C-1)))``
with ``n_max`` = 5000 (CIFAR-10) or 500 (CIFAR-100) (or ``data.max_train_per_class`` if
smaller and > 0), classes in natural label order; the images of class ``i`` are picked by
``np.random.seed(seed); idx = where(labels == i); shuffle(idx); idx[:n_i]`` class by
class (:func:`~langtail.data.longtail.subsample_per_class`). Train totals for IF
100 / 50 / 10: CIFAR-10-LT 12,406 / 13,996 / 20,431; CIFAR-100-LT 10,847 / 12,608 / 19,573.
``profile: pareto`` is also accepted (a generated Pareto tail, not a published benchmark).

Test split: the full balanced test set (10,000 images; the first ``test_per_class`` per
class in file order when that is > 0). CIFAR has no validation split.

Outputs in ``out_dir``: ``images_train.npy`` / ``images_test.npy``, uint8 ``[N, 32, 32, 3]``
(HWC, RGB); manifest refs are ``"images_train.npy#<row>"``. Train rows are in selection
order (class 0's chosen images in shuffled order, then class 1, ...), exactly the order of
LDAM-DRW's ``self.data`` after ``gen_imbalanced_data``.
"""
from __future__ import annotations

import hashlib
import logging
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from langtail import io
from langtail.config import DataConfig
from langtail.data.folder import cap_per_class
from langtail.data.longtail import check_profile, make_profile, profile_summary, subsample_per_class
from langtail.data.manifest import ManifestBuild
from langtail.data.registry import register

log = logging.getLogger(__name__)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

CIFAR100_CLASSES = [
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
]


@dataclass(frozen=True)
class CifarSpec:
    title: str
    base_folder: str
    archive: str  #: official archive name
    train: tuple[tuple[str, str], ...]  #: (file, md5)
    test: tuple[tuple[str, str], ...]
    meta: tuple[str, str, str]  #: (file, key of the class names, md5)
    label_key: str
    n_max: int
    classes: tuple[str, ...]
    torchvision_class: str
    url: str


CIFAR10 = CifarSpec(
    title="CIFAR-10", base_folder="cifar-10-batches-py", archive="cifar-10-python.tar.gz",
    train=(("data_batch_1", "c99cafc152244af753f735de768cd75f"),
           ("data_batch_2", "d4bba439e000b95fd0a9bffe97cbabec"),
           ("data_batch_3", "54ebc095f3ab1f0389bbae665268c751"),
           ("data_batch_4", "634d18415352ddfa80567beed471001a"),
           ("data_batch_5", "482c414d41f54cd18b22e5b47cb7c3cb")),
    test=(("test_batch", "40351d587109b95175f43aff81a1287e"),),
    meta=("batches.meta", "label_names", "5ff9c542aee3614f3951f8cda6e48888"),
    label_key="labels", n_max=5000, classes=tuple(CIFAR10_CLASSES), torchvision_class="CIFAR10",
    url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz")

CIFAR100 = CifarSpec(
    title="CIFAR-100", base_folder="cifar-100-python", archive="cifar-100-python.tar.gz",
    train=(("train", "16019d7e3df5f24257cddd939b257f8d"),),
    test=(("test", "f0ef6b0ae62326f3e7ffdfab6717acfc"),),
    meta=("meta", "fine_label_names", "7973b15100ade9c7d40fb424638fde48"),
    label_key="fine_labels", n_max=500, classes=tuple(CIFAR100_CLASSES), torchvision_class="CIFAR100",
    url="https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")


# ----------------------------------------------------------------------------- reading


def locate(root: Path, spec: CifarSpec) -> tuple[str, Path] | None:
    """Where the files are: ``("dir", <base folder>)``, ``("tar", <archive>)`` or None."""
    if root.is_file():
        return ("tar", root) if root.name.endswith((".tar.gz", ".tgz", ".tar")) else None
    if root.name == spec.base_folder and root.is_dir():
        return "dir", root
    if (root / spec.base_folder).is_dir():
        return "dir", root / spec.base_folder
    if (root / spec.archive).is_file():
        return "tar", root / spec.archive
    return None


def _wanted(spec: CifarSpec) -> list[str]:
    return [spec.meta[0]] + [f for f, _ in spec.train] + [f for f, _ in spec.test]


def read_raw(kind: str, path: Path, spec: CifarSpec) -> dict[str, bytes]:
    """Bytes of every CIFAR file (meta, train, test), from a folder or an archive."""
    wanted = _wanted(spec)
    raw: dict[str, bytes] = {}
    if kind == "dir":
        for f in wanted:
            if (path / f).is_file():
                raw[f] = (path / f).read_bytes()
    else:
        # streaming read: one pass over the archive, members are never written to disk
        with tarfile.open(path, "r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                parts = Path(m.name).parts
                if len(parts) >= 2 and parts[-2] == spec.base_folder and parts[-1] in wanted:
                    fh = tf.extractfile(m)
                    if fh is not None:
                        raw[parts[-1]] = fh.read()
                if len(raw) == len(wanted):
                    break
    missing = [f for f in wanted if f not in raw]
    if missing:
        where = path if kind == "dir" else f"{path} (members {spec.base_folder}/...)"
        raise FileNotFoundError(f"{spec.title}: missing {missing} in {where}")
    return raw


def verify_md5(raw: dict[str, bytes], spec: CifarSpec) -> list[dict[str, str]]:
    """Mismatches ``[{"file", "md5", "expected"}]`` against the official md5s (empty = all ok)."""
    expected = dict(spec.train + spec.test)
    expected[spec.meta[0]] = spec.meta[2]
    bad = []
    for f in _wanted(spec):
        got = hashlib.md5(raw[f]).hexdigest()
        if got != expected[f]:
            bad.append({"file": f, "md5": got, "expected": expected[f]})
    return bad


# what the official (Python-2) and re-saved CIFAR pickles reference: numpy arrays and bytes
_CIFAR_GLOBALS = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                  ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}


class _CifarUnpickler(pickle.Unpickler):
    """Resolves only :data:`_CIFAR_GLOBALS`: a crafted file (e.g. with
    ``data.verify_checksums: false``) cannot run code while it is read."""

    def find_class(self, module: str, name: str):
        if (module, name) in _CIFAR_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a CIFAR pickle")


def _unpickle(blob: bytes, name: str, spec: CifarSpec) -> dict:
    import io as _bytes_io

    try:  # the official files are Python-2 pickles
        d = _CifarUnpickler(_bytes_io.BytesIO(blob), encoding="latin1").load()
    except pickle.UnpicklingError as e:
        raise ValueError(f"{spec.title}: {name} is not a CIFAR pickle ({e})") from e
    if not isinstance(d, dict):
        raise ValueError(f"{spec.title}: {name} is not a CIFAR pickle (got {type(d).__name__})")
    return d


def decode_batches(raw: dict[str, bytes], files: tuple[tuple[str, str], ...],
                   spec: CifarSpec) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate batches: (images uint8 ``[N, 32, 32, 3]`` (possibly a strided view),
    labels int64 ``[N]``)."""
    xs, ys = [], []
    for f, _ in files:
        d = _unpickle(raw[f], f, spec)
        if "data" not in d or spec.label_key not in d:
            raise ValueError(f"{spec.title}: {f} lacks 'data' or {spec.label_key!r} (keys {sorted(d)})")
        x = np.asarray(d["data"], dtype=np.uint8)
        y = np.asarray(d[spec.label_key], dtype=np.int64)
        if x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
            raise ValueError(f"{spec.title}: {f} has data {x.shape} and {len(y)} labels; "
                             "expected [N, 3072] and N labels")
        xs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        ys.append(y)
    x = xs[0] if len(xs) == 1 else np.concatenate(xs)  # a view when possible: callers index it
    y = np.concatenate(ys)
    C = len(spec.classes)
    if len(y) and (y.min() < 0 or y.max() >= C):
        raise ValueError(f"{spec.title}: labels outside [0, {C})")
    return x, y


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with io.atomic_path(path, ".npy") as tmp:
        with open(tmp, "wb") as f:
            np.save(f, arr, allow_pickle=False)


# ----------------------------------------------------------------------------- builders


class _CifarLT:
    name = ""
    spec: CifarSpec

    def class_names(self, cfg: DataConfig) -> list[str]:
        return list(self.spec.classes)

    def _source(self, cfg: DataConfig) -> tuple[str, Path]:
        spec = self.spec
        root = Path(cfg.root or "data").expanduser()
        found = locate(root, spec)
        is_archive = root.name.endswith((".tar.gz", ".tgz", ".tar"))
        if found is None and cfg.allow_download and not is_archive:
            import torchvision.datasets as tvd

            log.info("%s: downloading %s into %s (data.allow_download: true)", self.name, spec.url, root)
            cls = getattr(tvd, spec.torchvision_class)
            cls(root=str(root), train=True, download=True)
            found = locate(root, spec)
        if found is None:
            raise FileNotFoundError(
                f"{self.name}: {spec.title} not found at {root}. Put the python version of "
                f"{spec.title} ({spec.url}) there: either the folder {root / spec.base_folder}/ "
                f"or the archive {root / spec.archive}; or set data.root to the folder containing "
                f"{spec.base_folder}/ or to a .tar.gz of it; or set data.allow_download: true "
                "to let torchvision download it.")
        return found

    def build(self, cfg: DataConfig, out_dir: Path) -> ManifestBuild:
        spec = self.spec
        out_dir = Path(out_dir)
        if cfg.profile not in ("exp", "pareto"):
            raise ValueError(f"{self.name}: data.profile must be 'exp' (LDAM-DRW) or 'pareto', "
                             f"got {cfg.profile!r}")
        kind, path = self._source(cfg)
        raw = read_raw(kind, path, spec)

        bad = verify_md5(raw, spec)
        if bad:
            detail = "; ".join(f"{b['file']}: md5 {b['md5']} != official {b['expected']}" for b in bad)
            if cfg.verify_checksums:
                raise ValueError(
                    f"{self.name}: {path} does not hold the official {spec.title} files ({detail}). "
                    "Set data.verify_checksums: false to use them anyway "
                    "(recorded as checksums_verified: false in the manifest).")
            log.warning("%s: md5 mismatch accepted because data.verify_checksums is false: %s",
                        self.name, detail)

        names = _unpickle(raw[spec.meta[0]], spec.meta[0], spec).get(spec.meta[1])
        if names is not None and list(names) != list(spec.classes):
            raise ValueError(f"{self.name}: class names in {spec.meta[0]} differ from the "
                             f"standard {spec.title} list: {list(names)[:5]}...")
        x_tr, y_tr = decode_batches(raw, spec.train, spec)
        x_te, y_te = decode_batches(raw, spec.test, spec)
        del raw

        C = len(spec.classes)
        n_max = spec.n_max if cfg.max_train_per_class <= 0 else min(spec.n_max, cfg.max_train_per_class)
        counts = make_profile(cfg.profile, n_max, C, cfg.imbalance_factor, cfg.seed)
        check_profile(counts, n_max, cfg.imbalance_factor, self.name)
        keep = subsample_per_class(y_tr, counts, cfg.seed)
        te = cap_per_class(y_te, cfg.test_per_class)

        _save_npy(out_dir / "images_train.npy", x_tr[keep])
        _save_npy(out_dir / "images_test.npy", x_te[te])

        n_tr, n_te = len(keep), len(te)
        images = [f"images_train.npy#{i}" for i in range(n_tr)] + [f"images_test.npy#{i}" for i in range(n_te)]
        labels = y_tr[keep].tolist() + y_te[te].tolist()
        splits = ["train"] * n_tr + ["test"] * n_te
        meta = {
            "dataset": self.name, "source": str(path), "profile": cfg.profile, "seed": int(cfg.seed),
            "imbalance_factor_requested": float(cfg.imbalance_factor),
            "train_counts": [int(c) for c in counts], **profile_summary(counts),
            "checksums_verified": not bad, "checksum_mismatches": [b["file"] for b in bad],
            "test_per_class": int(cfg.test_per_class),
            "arrays": {"images_train.npy": [n_tr, 32, 32, 3], "images_test.npy": [n_te, 32, 32, 3]},
        }
        log.info("%s: IF %g -> %d train images (%d..%d per class), %d test images",
                 self.name, cfg.imbalance_factor, n_tr, max(counts), min(counts), n_te)
        return ManifestBuild(images=images, labels=labels, splits=splits, class_names=list(spec.classes),
                             image_root="", meta=meta)


@register("cifar10_lt")
class Cifar10LT(_CifarLT):
    name = "cifar10_lt"
    spec = CIFAR10


@register("cifar100_lt")
class Cifar100LT(_CifarLT):
    name = "cifar100_lt"
    spec = CIFAR100
