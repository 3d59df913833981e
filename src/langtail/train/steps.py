"""The per-step parts of the training loop (:func:`langtail.train.loop.fit`): where an epoch's
batches start after a mid-epoch resume, the optimizer step, the device-side loss sum (no host
sync per step) and the checks that keep every rank in the same collectives."""
from __future__ import annotations

import itertools
from typing import Any, Iterable, Iterator

import torch

from langtail.data.skipped import SkipLog


def epoch_batches(loader: Iterable, epoch: int, skip_steps: int) -> Iterator:
    """The batches of ``epoch`` after the first ``skip_steps`` (a mid-epoch resume): an
    :class:`~langtail.data.dataset.EpochSampler` starts at that position (nothing is loaded
    twice); another loader's first batches are loaded and dropped."""
    from langtail.data.dataset import EpochSampler

    sampler = getattr(loader, "sampler", None)
    if isinstance(sampler, EpochSampler):
        sampler.set_epoch(epoch, start=skip_steps * int(getattr(loader, "batch_size")))
        return iter(loader)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)
    return itertools.islice(iter(loader), skip_steps, None)


def backward_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer, scaler, sched) -> None:
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    sched.step()


class LossAccumulator:
    """An epoch's loss sum, step count and non-finite count, kept on the device: read (one host
    sync) only every ``sync_every`` steps and at the epoch's end, not after every step."""

    def __init__(self, device: torch.device, total: float = 0.0, n: int = 0):
        dt = torch.float64 if device.type in ("cpu", "cuda") else torch.float32
        self.total = torch.tensor(total, dtype=dt, device=device)
        self.bad = torch.zeros((), dtype=torch.int64, device=device)
        self.n = n

    def add(self, loss: torch.Tensor) -> None:
        loss = loss.detach()
        self.total += loss.to(self.total.dtype)
        self.bad += (~torch.isfinite(loss)).to(torch.int64)
        self.n += 1

    def check(self, desc: str, epoch: int) -> float:
        """Raise if a loss since the epoch's start was not finite; else the mean loss so far."""
        from langtail import distributed

        both = distributed.all_sum(torch.stack([self.total, self.bad.to(self.total.dtype)]))
        total, bad = (float(v) for v in both.tolist())
        total /= distributed.world_size()  # the mean over ranks (every rank stops on any rank's bad loss)
        if bad:
            raise FloatingPointError(f"{desc}: non-finite loss in {int(bad)} step(s) of epoch {epoch + 1} "
                                     f"(by step {self.n}); lower the learning rate")
        return total / max(1, self.n)

    def mean(self) -> float:
        return float(self.total) / max(1, self.n)

    def state(self) -> tuple[float, int]:
        return float(self.total), self.n


def check_batch(batch: dict[str, Any], desc: str) -> None:
    """A training batch always holds images: the training dataset substitutes unreadable ones
    (:meth:`langtail.data.dataset.ManifestDataset.substitute`), so no rank ever skips a step's
    collectives while the others wait in them."""
    if "image" not in batch:
        raise RuntimeError(f"{desc}: a training batch without images ({batch.get('skipped', 0)} unreadable); "
                           "training loaders must substitute unreadable images (langtail.data.dataset.make_loader)")


def merge_rank_skips(res: Any, skips: SkipLog) -> None:
    """Add every rank's ``skips`` (one epoch's, or a part of one) to ``res`` on every rank, in
    rank order: a skip seen by any rank is recorded once, and rank 0 writes them all.
    A collective: every rank calls it at the same point."""
    from langtail import distributed

    for items in distributed.all_gather_objects(skips.to_list()):
        for image, split, reason, times in items:
            res.skips.add(image, split, reason, times)
            res.skipped += int(times)
