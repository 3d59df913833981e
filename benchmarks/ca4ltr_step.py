"""Training-step cost of the CA4LTR fusion on a CIFAR ResNet-32 (how wide may the fusion be?).

Times one AdamW training step (forward, cross-entropy, backward, update) at batch 128, 32 px,
channels-last, with a 10-token class-level text bank (CIFAR-10 `label` source), for:

- ``fc``: ResNet-32 + linear head (the Pure baseline's step);
- ``ca4ltr-default``: CA4LTR with the ``ca4ltr`` defaults (d = 256, 2 blocks, FFN x4);
- ``ca4ltr-small``: d = 128, 1 block, FFN x2 (the CIFAR configs and the CIFAR-10-LT benchmark).

Random weights and inputs: timing only. The median of ``--reps`` steps after one warm-up step.

    python benchmarks/ca4ltr_step.py --reps 5
    python benchmarks/ca4ltr_step.py --device cuda --reps 50

Writes ``benchmarks/results/ca4ltr_step_<device>.json``.
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

from langtail.config import Ca4ltrConfig, ModelConfig  # noqa: E402
from langtail.models.ca4ltr import build_ca4ltr  # noqa: E402
from langtail.models.encoders import create_image_encoder  # noqa: E402

SETTINGS = {
    "fc": None,
    "ca4ltr-default": Ca4ltrConfig(),
    "ca4ltr-small": Ca4ltrConfig(width=128, depth=1, ffn_mult=2),
}


def step_seconds(name: str, device: str, reps: int, batch: int, classes: int) -> dict:
    torch.manual_seed(0)
    image = create_image_encoder(ModelConfig(image_encoder="resnet32", embed_dim=128))
    ca = SETTINGS[name]
    model = (torch.nn.Sequential(image, torch.nn.Linear(image.embed_dim, classes)) if ca is None
             else build_ca4ltr(image, classes, ca, bank=torch.randn(classes, 384)))
    model = model.to(device).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, classes, (batch,), device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    times = []
    for i in range(reps + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i:  # the first step is a warm-up
            times.append(time.perf_counter() - t)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    return {"setting": name, "params_m": round(params, 3), "step_s": round(statistics.median(times), 4),
            "fusion": None if ca is None else {"width": ca.width, "depth": ca.depth, "ffn_mult": ca.ffn_mult}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--classes", type=int, default=10)
    a = ap.parse_args()
    rows = [step_seconds(n, a.device, a.reps, a.batch_size, a.classes) for n in SETTINGS]
    base = rows[0]["step_s"]
    for r in rows:
        r["vs_fc"] = round(r["step_s"] / base, 2)
        print(f"{r['setting']:>15}: {r['step_s']:.3f} s/step  x{r['vs_fc']:.2f}  {r['params_m']:.2f} M params")
    out = ROOT / "benchmarks" / "results" / f"ca4ltr_step_{a.device.split(':')[0]}.json"
    res = {"command": f"python benchmarks/ca4ltr_step.py --device {a.device} --reps {a.reps}",
           "threads": torch.get_num_threads(), "batch_size": a.batch_size, "rows": rows}
    out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
