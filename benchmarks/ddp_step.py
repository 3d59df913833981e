"""Per-step cost of DistributedDataParallel in the LGR fine-tuning step (issue #21).

Two gloo ranks on CPU train an LGR classifier (C = 1000 classes, M = 64 anchors, small D)
for ``--steps`` steps, in two settings:

- ``before``: buffers synchronised before every forward (``broadcast_buffers=True``, the
  default the loop used; torch 2.14: ``forward_sync_buffers=True``: the anchor buffer ``[C, M, D]`` and the head's
  other buffers are re-sent from rank 0 before every step), ``find_unused_parameters=True``
  (autograd graph walked every step), and a host sync per step (``isfinite`` + ``loss.item()``),
  as the loop did;
- ``after``: :data:`langtail.distributed.DDP_OPTIONS` (no buffer broadcast, static graph)
  and the loss kept on the device (read once at the end), as ``train.loop.fit`` does now.

Bytes communicated per step are the input sizes of the gloo collectives the torch profiler
records on rank 0 (``record_shapes``), against the gradient size (trainable parameters).

    python benchmarks/ddp_step.py --steps 30 --dim 64
Writes ``benchmarks/results/ddp_step_gloo.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

BEFORE = {"forward_sync_buffers": True, "find_unused_parameters": True, "static_graph": False}
AFTER = {"forward_sync_buffers": False, "find_unused_parameters": False, "static_graph": True}  # = DDP_OPTIONS


def _model(C: int, M: int, D: int, F: int):
    from langtail.models.heads import Classifier, LGRHead

    torch.manual_seed(0)
    emb = torch.nn.functional.normalize(torch.randn(C, M, D), dim=-1)
    image = torch.nn.Sequential(torch.nn.Linear(F, 256), torch.nn.ReLU(), torch.nn.Linear(256, D))
    image.embed_dim = D
    return Classifier(image, LGRHead(emb, None, 0.07), "lgr")


def _comm_bytes(prof) -> tuple[int, dict[str, int]]:
    """Bytes of the gloo/c10d collectives in a profile (input shapes x 4 bytes: float32)."""
    total, by_op = 0, {}
    for ev in prof.events():
        name = ev.name
        if not any(k in name for k in ("gloo:", "c10d::", "nccl:")) or not ev.input_shapes:
            continue
        n = 0
        for shape in ev.input_shapes:
            if shape and all(isinstance(d, int) for d in shape):
                k = 1
                for d in shape:
                    k *= d
                n += k
        total += 4 * n
        by_op[name] = by_op.get(name, 0) + 4 * n
    return total, by_op


def _rank(rank: int, world: int, port: int, args, out: str) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from langtail import distributed
    from langtail.losses import recognition_loss

    device = distributed.setup("cpu")
    g = torch.Generator().manual_seed(rank)
    b = args.batch // world
    batches = [{"image": torch.randn(b, args.features, generator=g),
                "label": torch.randint(0, args.classes, (b,), generator=g)} for _ in range(4)]
    runs = {}
    for mode in ("before", "after"):  # both wrapped first, then timed in alternating rounds (less drift)
        model = _model(args.classes, args.anchors, args.dim, args.features)
        distributed.DDP_OPTIONS.clear()
        distributed.DDP_OPTIONS.update(BEFORE if mode == "before" else AFTER)

        def step_fn(batch, model=model):
            o = model(batch["image"])
            return recognition_loss(o["image"], o["text"], batch["label"])

        runs[mode] = (model, distributed.wrap_step(model, step_fn, device),
                      torch.optim.SGD(model.parameters(), lr=0.01), dict(distributed.DDP_OPTIONS))
    acc = {m: torch.zeros((), dtype=torch.float64) for m in runs}

    def one(mode, i):
        model, ddp, opt, _ = runs[mode]
        loss = ddp(batches[i % len(batches)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if mode == "before":  # the old loop: a host sync per step
            if not torch.isfinite(loss):
                raise FloatingPointError
            acc[mode] += loss.item()
        else:
            acc[mode] += loss.detach()

    times = {m: [] for m in runs}
    for i in range(3):  # warm-up (DDP's first steps build buckets / record the static graph)
        for m in runs:
            one(m, i)
    for r in range(args.steps // args.block):
        for m in (("before", "after") if r % 2 == 0 else ("after", "before")):
            distributed.barrier()
            t0 = time.perf_counter()
            for i in range(args.block):
                one(m, i)
            times[m].append((time.perf_counter() - t0) / args.block)
    from torch.profiler import ProfilerActivity, profile

    results = {}
    for m, (model, _, _, opts) in runs.items():
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for i in range(args.profile_steps):
                one(m, i)
        comm, by_op = _comm_bytes(prof)
        grad = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
        buffers = sum(t.numel() * t.element_size() for t in model.buffers())
        results[m] = {"step_ms_median": 1000 * statistics.median(times[m]),
                      "step_ms_mean": 1000 * statistics.mean(times[m]),
                      "comm_bytes_per_step": comm / args.profile_steps, "gradient_bytes": grad,
                      "buffer_bytes": buffers,
                      "comm_by_op_per_step": {k: v / args.profile_steps for k, v in sorted(by_op.items())},
                      "ddp_options": opts}
    distributed.barrier()
    if rank == 0:
        Path(out).write_text(json.dumps(results, indent=1))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--profile-steps", type=int, default=5)
    ap.add_argument("--block", type=int, default=5, help="steps per timed block (blocks alternate the settings)")
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--anchors", type=int, default=64)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--features", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64, help="global batch")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "ddp_step_gloo.json"))
    args = ap.parse_args(argv)
    from langtail import distributed

    assert AFTER == distributed.DDP_OPTIONS, "benchmark 'after' must be the loop's settings"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tmp = Path(args.out).with_suffix(".part")
    mp.start_processes(_rank, args=(2, port, args, str(tmp)), nprocs=2, join=True, start_method="spawn")
    res = json.loads(tmp.read_text())
    tmp.unlink()
    record = {"command": "python benchmarks/ddp_step.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "setting": {"world": 2, "backend": "gloo", "device": "cpu", "C": args.classes, "M": args.anchors,
                          "D": args.dim, "global_batch": args.batch, "steps": args.steps, "block": args.block,
                          "torch_threads_per_rank": 1},
              "machine_note": "shared 2-core CPU machine (other jobs running): times are indicative",
              **res}
    Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    for mode in ("before", "after"):
        r = res[mode]
        print(f"{mode:6s}: step {r['step_ms_median']:.1f} ms (median), comm {r['comm_bytes_per_step'] / 1e6:.2f} MB/step,"
              f" gradients {r['gradient_bytes'] / 1e6:.2f} MB, buffers {r['buffer_bytes'] / 1e6:.2f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
