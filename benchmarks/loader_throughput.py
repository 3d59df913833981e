"""Data-loader throughput (images/s) through the project's manifest -> DataLoader path.

Sources:

* ``cifar10_lt``: the ``cifar10_lt`` builder (IF 100, 12,406 training images) on the real
  CIFAR-10 tarball (``../shared/data/cifar-10-python-from-jpeg.tar.gz``, or ``--cifar-root``),
  array-backed refs (``images_train.npy#<row>``, memory-mapped);
* ``jpeg_folder``: ``--n-jpeg`` (default 2,000) JPEGs of ``--jpeg-size`` px (default 256,
  quality 90, CIFAR images upsampled bicubically so they compress like photos) in a
  temporary ImageFolder tree, built with the ``folder`` builder (``profile: file``);
  refs are file paths decoded with PIL.

Preprocessing (``langtail.data.dataset.build_transform``): ``cifar32`` = 32 px random crop
(4 px reflect padding) + horizontal flip; ``clip224_train`` = 224 px random-resized-crop
(bicubic) + flip; ``clip224_eval`` = 224 px bicubic resize + centre crop (CLIP's own
preprocessing); all normalised to float ``[3, S, S]``.

Loader: ``langtail.data.dataset.make_loader`` (``ManifestDataset`` + ``collate_skip``,
instance sampler, batch ``--batch-size``) with ``num_workers`` in ``--workers``. With
``num_workers=0`` the transforms run in the main process with ``torch.get_num_threads()``
intra-op threads; ``--main-threads`` also measures that case with other thread counts
(per-image transforms on small tensors are much faster with 1 thread; DataLoader workers
already use 1). Each measurement times ``--n-images`` images after ``1 + 2 * num_workers``
untimed batches (warm-up + what the workers prefetched meanwhile); the figure is images /
wall-clock seconds, the median of ``--repeats`` runs. The result, with the command and the
machine, goes to ``--out``::

    python benchmarks/loader_throughput.py            # writes benchmarks/results/loader_throughput.json
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from langtail import io
from langtail.config import DataConfig
from langtail.data.manifest import ImageStore, make_manifest
from langtail.data.registry import get_dataset

ROOT = Path(__file__).resolve().parents[1]
REAL_CIFAR10 = ROOT.parent / "shared" / "data" / "cifar-10-python-from-jpeg.tar.gz"
TRANSFORMS = {  # name -> build_transform kwargs
    "cifar32": dict(train=True, image_size=32, normalize="cifar"),
    "clip224_train": dict(train=True, image_size=224, normalize="clip"),
    "clip224_eval": dict(train=False, image_size=224, normalize="clip"),
}


def _loader_parts():
    """(ManifestDataset-based make_loader, build_transform) from the lead's dataset module, or
    a minimal local equivalent if that module is not there."""
    try:
        from langtail.data.dataset import build_transform, make_loader
        return make_loader, build_transform, "langtail.data.dataset.make_loader"
    except ImportError:  # pragma: no cover - fallback for a tree without dataset.py
        from torch.utils.data import DataLoader, Dataset
        from torchvision.transforms import v2

        class _DS(Dataset):
            def __init__(self, df, store, tf):
                self.refs, self.labels, self.store, self.tf = df["image"].tolist(), df["label"].tolist(), store, tf

            def __len__(self):
                return len(self.refs)

            def __getitem__(self, i):
                return self.tf(self.store.load(self.refs[i])), self.labels[i]

        def make_loader(df, store, tf, batch_size, *, train, num_workers=0, **_):
            return DataLoader(_DS(df, store, tf), batch_size=batch_size, shuffle=train, num_workers=num_workers,
                              drop_last=train)

        def build_transform(train, image_size=32, normalize="cifar", augment=True):
            ops = [v2.ToImage()]
            if image_size <= 64:
                ops += [v2.RandomCrop(image_size, padding=4, padding_mode="reflect"), v2.RandomHorizontalFlip()]
            elif train:
                ops += [v2.RandomResizedCrop(image_size, scale=(0.5, 1.0), antialias=True), v2.RandomHorizontalFlip()]
            else:
                ops += [v2.Resize(image_size, antialias=True), v2.CenterCrop(image_size)]
            return v2.Compose(ops + [v2.ToDtype(torch.float32, scale=True)])

        return make_loader, build_transform, "local minimal Dataset (langtail.data.dataset not found)"


def _cifar_manifest(work: Path, cifar_root: Path):
    cfg = DataConfig(name="cifar10_lt", root=str(cifar_root), imbalance_factor=100, verify_checksums=False)
    b = get_dataset("cifar10_lt").build(cfg, work / "cifar")
    df = make_manifest(b)
    return df[df["split"] == "train"].reset_index(drop=True), ImageStore(work / "cifar", b.image_root)


def _jpeg_manifest(work: Path, cifar_root: Path, n: int, size: int, seed: int = 0):
    from PIL import Image

    from langtail.data import cifar

    root = work / "jpegs"
    if cifar_root.exists():
        raw = cifar.read_raw(*cifar.locate(cifar_root, cifar.CIFAR10), cifar.CIFAR10)
        x, y = cifar.decode_batches(raw, cifar.CIFAR10.train[:1], cifar.CIFAR10)
        src = "CIFAR-10 data_batch_1 upsampled"
    else:
        rng = np.random.default_rng(seed)
        x, y = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8), rng.integers(0, 10, n)
        src = "random 16 px noise upsampled"
    for i in range(n):
        p = root / "train" / f"class_{int(y[i]):02d}" / f"{i:05d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(x[i])).resize((size, size), Image.BICUBIC).save(p, quality=90)
    cfg = DataConfig(name="folder", root=str(root), profile="file")
    b = get_dataset("folder").build(cfg, work / "jpeg_manifest")
    df = make_manifest(b)
    mean_kb = np.mean([(root / r).stat().st_size for r in df["image"][:200]]) / 1024
    return df, ImageStore(work / "jpeg_manifest", b.image_root), {"source": src, "mean_file_kib": round(mean_kb, 1)}


def measure(make_loader, tf, df, store, batch_size: int, workers: int, n_images: int) -> dict:
    """Steady-state images/s: the first ``1 + 2 * workers`` batches (warm-up and whatever the
    workers prefetched meanwhile, prefetch_factor 2) are consumed untimed, then ``n_images``
    are timed; epochs are chained if the split is smaller."""
    loader = make_loader(df, store, tf, batch_size, train=True, num_workers=workers)

    def batches():
        while True:
            yield from loader  # noqa: F821 (deleted after the generator is closed)

    it = batches()
    for _ in range(1 + 2 * workers):
        next(it)
    seen, t0 = 0, time.perf_counter()
    while seen < n_images:
        batch = next(it)
        x = batch["image"] if isinstance(batch, dict) else batch[0]
        seen += int(x.shape[0])
    dt = time.perf_counter() - t0
    it.close()
    del loader
    return {"images": seen, "seconds": round(dt, 3), "images_per_s": round(seen / dt, 1)}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cifar-root", default=str(REAL_CIFAR10), help="CIFAR-10 folder or tarball")
    ap.add_argument("--n-jpeg", type=int, default=2000)
    ap.add_argument("--jpeg-size", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", default="0,2", help="comma-separated num_workers values")
    ap.add_argument("--n-images", type=int, default=1024, help="images measured per setting")
    ap.add_argument("--transforms", default=",".join(TRANSFORMS))
    ap.add_argument("--main-threads", default="1", help="extra torch thread counts measured for num_workers=0 "
                    "('' = only the default)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per setting; the median is reported")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loader_throughput.json"))
    args = ap.parse_args(argv)

    torch.manual_seed(0)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")  # mmap'd rows
    logging.basicConfig(level=logging.ERROR)
    make_loader, build_transform, loader_impl = _loader_parts()
    cifar_root = Path(args.cifar_root)
    results, sources = [], {}
    with tempfile.TemporaryDirectory(prefix="langtail_bench_") as tmp:
        work = Path(tmp)
        t = time.perf_counter()
        if cifar_root.exists():
            data = {"cifar10_lt": _cifar_manifest(work, cifar_root)}
            sources["cifar10_lt"] = {"source": str(cifar_root), "build_s": round(time.perf_counter() - t, 2),
                                     "train_images": len(data["cifar10_lt"][0])}
        else:
            data = {}
            sources["cifar10_lt"] = {"skipped": f"{cifar_root} not found"}
        t = time.perf_counter()
        df, store, info = _jpeg_manifest(work, cifar_root, args.n_jpeg, args.jpeg_size)
        data["jpeg_folder"] = (df, store)
        sources["jpeg_folder"] = {**info, "n": len(df), "size_px": args.jpeg_size,
                                  "generate_and_build_s": round(time.perf_counter() - t, 2)}
        for name, (df, store) in data.items():
            for tname in args.transforms.split(","):
                tf = build_transform(**TRANSFORMS[tname])
                default_threads = torch.get_num_threads()
                settings = [(int(v), default_threads) for v in args.workers.split(",")]
                if 0 in [w for w, _ in settings]:
                    settings += [(0, int(t)) for t in args.main_threads.split(",") if t and int(t) != default_threads]
                for w, threads in settings:
                    torch.set_num_threads(threads)
                    try:
                        runs = [measure(make_loader, tf, df, store, args.batch_size, w, args.n_images)
                                for _ in range(args.repeats)]
                    finally:
                        torch.set_num_threads(default_threads)
                    ips = [x["images_per_s"] for x in runs]
                    r = {"source": name, "transform": tname, "num_workers": w,
                         "main_process_threads": threads if w == 0 else None,
                         "images_per_s": float(np.median(ips)), "images_per_s_runs": ips,
                         "images_per_run": runs[0]["images"]}
                    print(f"{name:12s} {tname:14s} workers={w} threads={threads if w == 0 else 1}: "
                          f"{r['images_per_s']:8.1f} images/s", flush=True)
                    results.append(r)

    out = {
        "benchmark": "loader_throughput",
        "command": "python " + " ".join(shlex.quote(a) for a in
                                        ["benchmarks/loader_throughput.py", *(argv or sys.argv[1:])]),
        "loader": loader_impl, "batch_size": args.batch_size, "sources": sources, "results": results,
        "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
        "torch": torch.__version__, "machine": platform.machine(),
        "note": "CPU-only decode + transform; the machine was shared with other jobs, so figures are lower bounds",
    }
    io.write_json(args.out, out)
    print(f"wrote {args.out}")
    return out


if __name__ == "__main__":
    main()
