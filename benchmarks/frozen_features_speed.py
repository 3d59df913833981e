"""Seconds per epoch of the demo's fc fine-tuning: on cached frozen features vs on images.

Builds the demo manifest of ``config.yaml`` (24 classes, IF 50, up to 300 train images per
class, 32 px), then trains the ``fc`` head with the demo's finetune settings (batch 128, sqrt
sampling, channels-last) for ``--epochs`` epochs, through the real stages:

- ``full`` (images): the backbone (``--encoder``) trains with the head, images decoded and
  augmented every epoch (the demo default);
- ``frozen`` (cached features): ``langtail image-features`` once (its time is reported
  separately, a one-off cost), then the head on ``image_features.safetensors``.

Seconds per epoch = the checkpoint's ``extra.seconds / epochs`` (the training loop's wall time).

    python benchmarks/frozen_features_speed.py --epochs 3
    python benchmarks/frozen_features_speed.py --epochs 3 --encoder resnet32

Writes ``benchmarks/results/frozen_features_speed_<encoder>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from langtail import io  # noqa: E402
from langtail.config import dataset_config, load_yaml, restrict  # noqa: E402
from langtail.stages import finetune, image_features, longtail, stage_keys  # noqa: E402


def _staged(cfg, stage, **wc):
    return restrict(cfg, stage_keys(stage, cfg, **wc), stage)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--encoder", default="demo_cnn")
    args = ap.parse_args()
    raw = load_yaml(ROOT / "config.yaml")
    raw["datasets"]["demo"]["model"]["image_encoder"] = args.encoder
    raw["datasets"]["demo"]["finetune"].update(epochs=args.epochs, baseline_epochs=args.epochs, device="cpu")
    raw["datasets"]["demo"].setdefault("pretrain", {})["device"] = "cpu"
    out: dict = {"encoder": args.encoder, "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        man = d / "manifest.parquet"
        longtail.run(_staged(dataset_config(raw, "demo"), "longtail"), man)
        for mode in ("full", "frozen"):
            raw["datasets"]["demo"]["model"]["backbone_mode"] = mode
            cfg = dataset_config(raw, "demo")
            feats = None
            if mode == "frozen":
                t0 = time.perf_counter()
                feats = image_features.run(_staged(cfg, "image_features", kind="pooled"), "pooled", man,
                                           d / "image_features.safetensors", d / "cache")
                out["image_features_s"] = round(time.perf_counter() - t0, 2)
            finetune.run(_staged(cfg, "finetune", head="fc"), "fc", man, d / f"fc_{mode}.pt", features_path=feats)
            ex = io.torch_load(d / f"fc_{mode}.pt")["extra"]
            out[f"{mode}_s_per_epoch"] = round(ex["seconds"] / args.epochs, 3)
            out[f"{mode}_final_loss"] = round(ex["history"][-1]["loss"], 4)
    out["speedup"] = round(out["full_s_per_epoch"] / out["frozen_s_per_epoch"], 1)
    path = ROOT / "benchmarks" / "results" / f"frozen_features_speed_{args.encoder}.json"
    io.write_json(path, out)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
