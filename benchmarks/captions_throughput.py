"""Caption-stage throughput (images/s) through the real captions stage code path (``langtail.stages.captions.run``).

Default: a tiny randomly initialised BLIP-2 (built offline by
``langtail.captions.blip2.save_tiny_blip2``) on CPU, batch 16, 64 random 224px images.
This measures the stage's overhead (manifest, image loading, processor, generate loop,
shard writes), not BLIP-2 itself. For the real model on a GPU (see docs/captions.md)::

    python benchmarks/captions_throughput.py --model Salesforce/blip2-opt-2.7b \\
        --device cuda --dtype auto --batch-size 16 --n-images 512 --max-new-tokens 30 \\
        --out benchmarks/results/captions_throughput_blip2-opt-2.7b.json

A warm-up run (one batch) precedes ``--repeats`` measured runs; the figure is the median
of the stage's own ``images_per_s`` (generation + image loading time summed over shards,
model load excluded). The result, with the command line and the machine, goes to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from langtail import io
from langtail.captions.blip2 import save_tiny_blip2
from langtail.config import DatasetConfig
from langtail.stages import captions as captions_stage
from langtail.config import CaptionsConfig
from langtail.data.manifest import ManifestBuild, make_manifest, write_manifest

ROOT = Path(__file__).resolve().parents[1]


def _manifest(folder: Path, n: int, size: int, num_classes: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    np.save(folder / "images_train.npy", rng.integers(0, 256, size=(n, size, size, 3), dtype=np.uint8))
    labels = [i % num_classes for i in range(n)]
    build = ManifestBuild(images=[f"images_train.npy#{i}" for i in range(n)], labels=labels,
                          splits=["train"] * n, class_names=[f"class{c}" for c in range(num_classes)])
    path = folder / "manifest.parquet"
    write_manifest(path, make_manifest(build), {"dataset": "bench", "image_root": ""})
    return path


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="tiny", help="'tiny' (random tiny BLIP-2) or a HF id / local dir")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--n-images", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--max-new-tokens", type=int, default=30)
    ap.add_argument("--prompt", default="")
    ap.add_argument("--repeats", type=int, default=3, help="measured runs; the median is reported")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/captions_throughput.json"))
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="langtail_captions_bench_") as tmp:
        tmp = Path(tmp)
        model = str(save_tiny_blip2(tmp / "tiny_blip2")) if args.model == "tiny" else args.model
        manifest = _manifest(tmp, args.n_images, args.image_size)
        cfg = CaptionsConfig(enabled=True, model=model, prompt=args.prompt, max_new_tokens=args.max_new_tokens,
                             per_class=0, splits=["train"], batch_size=args.batch_size, device=args.device,
                             dtype=args.dtype, shard_size=max(args.n_images, 1))
        # warm-up: one batch (first-call initialisation, CUDA kernels) on its own shards
        warm = CaptionsConfig(**{**cfg.__dict__, "per_class": max(1, args.batch_size // 8)})
        captions_stage.run(DatasetConfig(captions=warm), manifest, tmp / "warm.parquet", tmp / "warm_shards")
        rates, walls = [], []
        for r in range(args.repeats):
            out = tmp / f"captions_{r}.parquet"
            t0 = time.perf_counter()
            captions_stage.run(DatasetConfig(captions=cfg), manifest, out, tmp / f"shards_{r}")
            walls.append(time.perf_counter() - t0)
            meta = io.read_parquet_metadata(out)
            rates.append(meta["images_per_s"])
        captions = io.read_parquet(out)["caption"].head(3).tolist()

    device_name = (torch.cuda.get_device_name(0) if meta["device"].startswith("cuda") else platform.processor()
                   or platform.machine())
    result = {
        "benchmark": "captions_throughput",
        "command": "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, ROOT), *sys.argv[1:]])
        if argv is None else "python benchmarks/captions_throughput.py " + " ".join(map(shlex.quote, argv)),
        "model": "tiny random BLIP-2 (save_tiny_blip2)" if args.model == "tiny" else args.model,
        "device": meta["device"],
        "device_name": device_name,
        "dtype": meta["dtype"],
        "batch_size": args.batch_size,
        "n_images": meta["n_images"],
        "image_size": args.image_size,
        "max_new_tokens": args.max_new_tokens,
        "prompt": args.prompt,
        "images_per_s": float(np.median(rates)),  # median over --repeats runs
        "images_per_s_runs": rates,
        "wall_s_incl_model_load_runs": [round(w, 3) for w in walls],
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "python": platform.python_version(),
        "example_captions": captions,
    }
    io.write_json(args.out, result)
    print(json.dumps({k: result[k] for k in ("command", "device", "dtype", "n_images", "images_per_s")}))
    return result


if __name__ == "__main__":
    main()
