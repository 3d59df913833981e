"""Multi-process training (gloo on CPU, 2 processes) equals one process with the global batch.

The steps use the library pieces the stages use: ``EpochSampler`` (each rank's slice of the
global batch), ``distributed.gather`` (CVLP's class-wise contrastive loss over the global
batch, with gradient, one learnable tau), ``distributed.rank_slice`` (different sentences
per rank), ``train.loop.fit`` (DistributedDataParallel, rank-0 resume file) and the LGR head
with ``recognition_loss``. Tiny BatchNorm-free models keep it fast and exact (on CPU,
BatchNorm statistics stay per process; SyncBatchNorm needs GPUs).
"""
from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

N, C, F_IN, D, B = 64, 4, 8, 6, 16  #: images, classes, input features, embedding dim, global batch
EPOCHS, STEPS_PER_EPOCH = 2, N // B


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Data(torch.utils.data.Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.labels = np.repeat(np.arange(C), [28, 18, 12, 6])  # long-tailed, N images
        self.x = torch.randn(N, F_IN, generator=g) + torch.as_tensor(self.labels, dtype=torch.float32)[:, None]

    def __len__(self):
        return N

    def __getitem__(self, i):
        return {"image": self.x[i], "label": int(self.labels[i]), "row": i}


def _loader(ds: _Data, sampler_mode: str):
    from langtail import distributed
    from langtail.data.dataset import EpochSampler

    bs = distributed.per_rank_batch(B)
    samp = EpochSampler(ds.labels, sampler_mode, seed=0, rank=distributed.rank(), world=distributed.world_size(),
                        batch_size=bs)
    return torch.utils.data.DataLoader(ds, batch_size=bs, sampler=samp, drop_last=True)


def _train(kind: str, out: Path, kill_at_step: int = -1, term_at_step: int = -1) -> None:
    """Train ``kind`` (cvlp | lgr) for EPOCHS; rank 0 saves losses, grads and final weights."""
    from langtail import distributed
    from langtail.losses import LongTailLoss, class_contrastive_loss, cosine_matrix, recognition_loss
    from langtail.models.heads import Classifier, LGRHead
    from langtail.runtime import seed_everything
    from langtail.train.loop import fit

    device = distributed.setup("cpu")
    seed_everything(0)
    ds = _Data()
    loader = _loader(ds, "sqrt" if kind == "cvlp" else "balanced")
    losses, grads = [], []
    on_epoch = None
    if kind == "cvlp":
        sent = torch.randn(3 * C, F_IN)  # 3 sentences per class
        start, count = torch.arange(C) * 3, torch.full((C,), 3)
        model = torch.nn.Module()
        model.image = torch.nn.Linear(F_IN, D)
        model.text = torch.nn.Linear(F_IN, D)
        model.logit_scale = torch.nn.Parameter(torch.tensor(float(np.log(1 / 0.07))))

        def step(batch):
            x, y = batch["image"], batch["label"]
            r = distributed.rank_slice(torch.rand(len(y) * distributed.world_size()))
            sid = start[y] + (r * count[y]).long().clamp(max=2)
            img, txt = model.image(x), model.text(sent[sid])
            img, txt, y = distributed.gather(img), distributed.gather(txt), distributed.gather(y)
            loss = class_contrastive_loss(cosine_matrix(img, txt), y, y, model.logit_scale.exp().reciprocal())
            losses.append(loss.item())
            return loss
    else:
        emb = torch.nn.functional.normalize(torch.randn(C, 3, D), dim=-1)
        image = torch.nn.Sequential(torch.nn.Linear(F_IN, 16), torch.nn.ReLU(), torch.nn.Linear(16, D))
        model = Classifier(image, LGRHead(emb, None, 0.07), "lgr")
        # ldam: LDAM with DRW from the 2nd epoch; the class-weighted mean must be the global batch's
        loss_fn = LongTailLoss("ldam", np.bincount(ds.labels), drw_epoch=1, drw_beta=0.99) if kind == "ldam" else None
        on_epoch = loss_fn.set_epoch if loss_fn is not None else None

        def step(batch):
            out_ = model(batch["image"])
            loss = recognition_loss(out_["image"], out_["text"], batch["label"], loss_fn, 0.07, None)
            losses.append(distributed.all_mean(loss.item()))
            return loss

    n_steps = [0]

    def after_step():
        grads.append({k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None})
        n_steps[0] += 1
        if n_steps[0] == kill_at_step:
            os._exit(17)  # killed mid-epoch, no cleanup
        if n_steps[0] == term_at_step and distributed.is_main():
            os.kill(os.getpid(), signal.SIGTERM)  # as SLURM before a time limit: rank 0 only, the others must follow

    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)  # Adam would amplify float noise in ~0 grads
    res = fit(model, opt, loader, step, epochs=EPOCHS, resume_path=out / "model.resume", fingerprint="fp",
              device=device, desc=kind, after_step=after_step, on_epoch=on_epoch)
    if distributed.is_main():
        torch.save({"losses": losses, "grads": grads, "state": model.state_dict(), "history": res.history,
                    "resumed_from": res.resumed_from}, out / "result.pt")


def _rank_main(rank: int, world: int, port: int, kind: str, out: str, kill_at_step: int, term_at_step: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), LOCAL_WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    _train(kind, Path(out), kill_at_step, term_at_step)


def _run(kind: str, out: Path, world: int, kill_at_step: int = -1, term_at_step: int = -1) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_rank_main, args=(world, _free_port(), kind, str(out), kill_at_step, term_at_step), nprocs=world,
                       join=True, start_method="spawn")
    return torch.load(out / "result.pt")


def _close(a: dict, b: dict) -> None:
    assert len(a["losses"]) == len(b["losses"]) == EPOCHS * STEPS_PER_EPOCH
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=1e-5, atol=1e-6)
    for ga, gb in zip(a["grads"], b["grads"]):
        assert ga.keys() == gb.keys()
        for k in ga:
            torch.testing.assert_close(ga[k], gb[k], rtol=1e-4, atol=1e-6, msg=f"gradient of {k}")
    for k in a["state"]:
        torch.testing.assert_close(a["state"][k], b["state"][k], rtol=1e-4, atol=1e-6, msg=f"weights {k}")


@pytest.mark.parametrize("kind", ["cvlp", "lgr", "ldam"])
def test_two_ranks_equal_one_process_with_the_global_batch(kind, tmp_path):
    one = _run(kind, tmp_path / "one", world=1)
    two = _run(kind, tmp_path / "two", world=2)
    _close(one, two)
    if kind == "cvlp":  # tau was learned, and it is one value
        assert one["state"]["logit_scale"].numel() == 1
        assert not torch.isclose(one["state"]["logit_scale"], torch.tensor(float(np.log(1 / 0.07))))


def test_sampler_slices_partition_the_global_batches():
    from langtail.data.dataset import EpochSampler

    labels = np.repeat(np.arange(5), [40, 20, 10, 5, 3])
    one = list(EpochSampler(labels, "sqrt", seed=3, batch_size=8))
    parts = [list(EpochSampler(labels, "sqrt", seed=3, rank=r, world=2, batch_size=4)) for r in range(2)]
    n = len(labels) // 8
    assert all(len(p) == n * 4 for p in parts)
    merged = [i for b in range(n) for r in range(2) for i in parts[r][b * 4:(b + 1) * 4]]
    assert merged == one[:n * 8]


def test_killed_two_rank_run_resumes(tmp_path):
    full = _run("cvlp", tmp_path / "full", world=2)
    out = tmp_path / "killed"
    with pytest.raises(mp.ProcessExitedException):
        _run("cvlp", out, world=2, kill_at_step=STEPS_PER_EPOCH + 2)  # in epoch 2
    assert (out / "model.resume").exists() and not (out / "result.pt").exists()
    resumed = _run("cvlp", out, world=2)
    assert resumed["resumed_from"] == 1
    for k in full["state"]:
        torch.testing.assert_close(resumed["state"][k], full["state"][k], rtol=1e-5, atol=1e-6)
    assert resumed["history"] == full["history"]


@pytest.mark.parametrize("world", [pytest.param(1, marks=pytest.mark.slow), 2])
def test_sigterm_mid_epoch_then_rerun_equals_an_uninterrupted_run(world, tmp_path):
    """Preemption: SIGTERM mid-epoch -> a mid-epoch resume file, non-zero exit; the rerun resumes
    from that step (sampler position, RNG, partial epoch loss) and ends as an uninterrupted run."""
    full = _run("cvlp", tmp_path / "full", world=world)
    out = tmp_path / "term"
    with pytest.raises(mp.ProcessRaisedException, match="stopped on a signal at epoch 2, step 2"):
        _run("cvlp", out, world=world, term_at_step=STEPS_PER_EPOCH + 2)
    st = torch.load(out / "model.resume", weights_only=True)
    assert (st["epoch"], st["step"], len(st["epoch_loss"])) == (1, 2, world) and not (out / "result.pt").exists()
    resumed = _run("cvlp", out, world=world)
    assert resumed["resumed_from"] == 1
    np.testing.assert_allclose(resumed["losses"], full["losses"][STEPS_PER_EPOCH + 2:], rtol=1e-6)
    for k in full["state"]:
        torch.testing.assert_close(resumed["state"][k], full["state"][k], rtol=1e-5, atol=1e-6)
    assert resumed["history"] == full["history"]
