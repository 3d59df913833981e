"""Inference cost of the LGR head vs an FC head (paper Table 5: params, GFLOPs, time).

Times the full classifier (visual encoder + head) at batch 128 with cached anchor
embeddings, in eval mode, for two settings:

- ``rn50``: open_clip RN50 visual tower (random weights: timing only), 224 px,
  ImageNet-LT scale C = 1000, M = 64, D = 1024;
- ``resnet32``: CIFAR ResNet-32, 32 px, C = 100, M = 64, D = 128.

It also times the literal Eq. 4-7 implementation that materialises G ``[B, C, D]``
(``LGRHead.forward_reference``) to show what the factorised form saves.

    python benchmarks/lgr_overhead.py --setting rn50 --reps 3          # CPU (slow: ~minutes)
    python benchmarks/lgr_overhead.py --setting rn50 --device cuda --reps 50
Writes ``benchmarks/results/lgr_overhead_<setting>_<device>.json``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from langtail.config import ModelConfig  # noqa: E402
from langtail.models.encoders import create_image_encoder  # noqa: E402
from langtail.models.heads import Classifier, FCHead, LGRHead  # noqa: E402

SETTINGS = {
    "rn50": dict(image_encoder="RN50", image_size=224, C=1000, M=64, D=1024),
    "resnet32": dict(image_encoder="resnet32", image_size=32, C=100, M=64, D=128),
}


class _Ref(torch.nn.Module):
    def __init__(self, head: LGRHead):
        super().__init__()
        self.head = head

    def forward(self, e):
        return self.head.forward_reference(e)


def gflops(model: torch.nn.Module, x: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad():
        model(x)  # warm-up: the LGR keys K [C, M, D] are computed once and cached (eval mode)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return fc.get_total_flops() / 2 / 1e9 / x.shape[0]  # multiply-adds per image, as papers count GFLOPs


def timeit(model, x, reps: int, device) -> float:
    with torch.no_grad():
        model(x)  # warm-up (and K cache)
        ts = []
        for _ in range(reps):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1000


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--setting", choices=sorted(SETTINGS), default="resnet32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--no-reference", action="store_true", help="skip the literal (G materialised) variant")
    a = ap.parse_args()
    s = SETTINGS[a.setting]
    dev = torch.device(a.device)
    torch.manual_seed(0)
    image = create_image_encoder(ModelConfig(image_encoder=s["image_encoder"], embed_dim=s["D"]))
    D = image.embed_dim
    emb = torch.randn(s["C"], s["M"], D)
    models = {
        "fc": Classifier(image, FCHead(D, s["C"]), "fc"),
        "lgr": Classifier(image, LGRHead(emb), "lgr"),
    }
    if not a.no_reference:
        models["lgr_reference"] = Classifier(image, _Ref(models["lgr"].head), "lgr")
    x = torch.randn(a.batch_size, 3, s["image_size"], s["image_size"], device=dev)
    res = {"setting": a.setting, **s, "device": str(dev), "batch_size": a.batch_size, "reps": a.reps,
           "torch_threads": torch.get_num_threads(),
           "command": f"python benchmarks/lgr_overhead.py --setting {a.setting} --device {a.device} "
                      f"--batch-size {a.batch_size} --reps {a.reps}"}
    for name, m in models.items():
        m.to(dev).eval()
        params = sum(p.numel() for p in m.parameters()) / 1e6
        res[name] = {"params_m": round(params, 2), "gflops_per_image": round(gflops(m, x[:2]), 3),
                     "ms_per_batch": round(timeit(m, x, a.reps, dev), 1)}
        print(name, res[name], flush=True)
    res["lgr_time_overhead_pct"] = round(100 * (res["lgr"]["ms_per_batch"] / res["fc"]["ms_per_batch"] - 1), 1)
    if "lgr_reference" in res:
        res["reference_time_overhead_pct"] = round(
            100 * (res["lgr_reference"]["ms_per_batch"] / res["fc"]["ms_per_batch"] - 1), 1)
    out = ROOT / "benchmarks" / "results" / f"lgr_overhead_{a.setting}_{dev.type}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k.endswith("overhead_pct")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
