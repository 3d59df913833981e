"""Shared training loop: cosine schedule, AMP, channels-last, per-epoch resumable checkpoints.

:func:`fit` runs ``epochs`` epochs of ``step_fn(batch) -> loss`` over ``loader``. After every
epoch it atomically writes a resume file (model + optimizer + scheduler + epoch + RNG
states + history) next to the final output; a rerun after a kill continues from the last
finished epoch and, on CPU with ``num_workers: 0``, ends with the same weights as an
uninterrupted run (all randomness is either restored from the checkpoint or derived from
``(seed, epoch)``). The resume file holds only tensors and plain values (RNG states via
:func:`langtail.runtime.rng_state`), so it loads with the safe loader (:func:`langtail.io.torch_load`); an
old resume file that needs the unsafe loader is refused (delete it, or opt in with
``--trust-checkpoint``). It carries a fingerprint of the run's configuration and inputs;
a stale one (different config) is discarded with a log line.

In a process group (torchrun, :mod:`langtail.distributed`) the step runs inside
DistributedDataParallel (gradients averaged over ranks; BatchNorm made SyncBatchNorm on GPU),
the history holds the loss averaged over ranks, and only rank 0 writes the resume file; every
rank resumes from it.

Preemption (:mod:`langtail.train.preempt`): on SIGTERM / SIGUSR1 every rank stops after the
same step (the flag is or-ed over ranks each step on a CPU gloo group), rank 0 writes a
mid-epoch resume file (``step`` within the epoch, ``epoch_loss`` per rank, the RNG state after
that step; the sampler restarts at that position) and :class:`~langtail.train.preempt.Preempted`
is raised (non-zero exit); the rerun continues from that step with the same result as an
uninterrupted run. Per-step cost: the loss, its sum and the non-finite count stay on the
device; they are read (one host sync) every ``sync_every`` steps and at the epoch's end.
"""
from __future__ import annotations

import functools
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from tqdm.auto import tqdm

from langtail import io
from langtail.runtime import rng_state, set_rng_state
from langtail.data.skipped import SkipLog
from langtail.models.tuning import set_frozen_eval
from langtail.train import preempt
from langtail.train.steps import LossAccumulator, backward_step, check_batch, epoch_batches, merge_rank_skips

log = logging.getLogger(__name__)


def cosine_lambda(total_steps: int, warmup_steps: int = 0) -> Callable[[int], float]:
    """LR multiplier: linear warm-up then cosine decay to 0 over ``total_steps``."""

    def f(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        t = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return f


def make_optimizer(name: str, groups: list[dict], lr: float, momentum: float = 0.9) -> torch.optim.Optimizer:
    """``adamw`` or ``sgd`` (with ``momentum``, LIFT's) over :func:`param_groups` ``groups``."""
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    raise ValueError(f"unknown optimizer {name!r}; known: adamw, sgd")


def param_groups(model: torch.nn.Module, weight_decay: float,
                 lr_by_prefix: dict[str, float] | None = None) -> list[dict]:
    """AdamW groups: no decay on 1-d params (norms, biases) and the temperature.

    ``lr_by_prefix``: parameters whose name starts with a key get that learning rate (their own
    decay / no-decay groups); the rest use the optimizer's lr. Empty groups are dropped."""
    lr_by_prefix = lr_by_prefix or {}
    groups: dict[tuple[str | None, bool], list] = {}
    for n, p in model.named_parameters():
        if not p.requires_grad:
            continue
        pre = next((k for k in lr_by_prefix if n.startswith(k)), None)
        groups.setdefault((pre, p.ndim <= 1 or "logit_scale" in n), []).append(p)
    out = []
    for pre in [None, *lr_by_prefix]:
        for nd in (False, True):
            ps = groups.get((pre, nd), [])
            if not ps and pre is not None:
                continue
            g: dict[str, Any] = {"params": ps, "weight_decay": 0.0 if nd else weight_decay}
            if pre is not None:
                g["lr"] = lr_by_prefix[pre]
            out.append(g)
    return out


@dataclass
class FitResult:
    history: list[dict[str, float]] = field(default_factory=list)
    skipped: int = 0
    skips: SkipLog = field(default_factory=SkipLog)  #: the skipped images (write with data.skipped.write_skipped)
    seconds: float = 0.0
    resumed_from: int = 0
    #: the checkpoint the model holds at the end: ``{"rule": "last"|"best_val", "epoch": int
    #: (1-based)[, "val_overall": float]}`` (see :func:`fit`'s ``select``)
    selected: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """What one :func:`fit` call trains with: the step (DDP-wrapped in a process group), the
    schedule, the AMP settings and, under ``best_val``, the best epoch's weights so far."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    step: Callable[[dict[str, Any]], torch.Tensor]
    sched: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    amp_dtype: torch.dtype
    desc: str
    best: dict[str, Any] = field(default_factory=dict)  #: epoch, val_overall, state (CPU tensors)
    steps_per_epoch: int = 1
    sync_every: int = 50

    @property
    def parts(self) -> dict[str, Any]:
        """What the resume file holds a state dict of."""
        return {"model": self.model, "optimizer": self.optimizer, "scheduler": self.sched, "scaler": self.scaler}


def _setup(model, optimizer, loader, step_fn, device, epochs: int, warmup_epochs: int, amp: bool, desc: str,
           sync_every: int = 50) -> _Run:
    """The cosine schedule over every step, AMP (bf16 where supported, else fp16 + grad scaler)
    and, in a process group, the DistributedDataParallel step."""
    from langtail import distributed

    steps_per_epoch = max(1, len(loader))  # type: ignore[arg-type]
    step = distributed.wrap_step(model, step_fn, device) if distributed.is_distributed() else step_fn
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, cosine_lambda(epochs * steps_per_epoch, warmup_epochs * steps_per_epoch))
    use_amp = amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    return _Run(model, optimizer, step, sched, scaler, use_amp, amp_dtype, desc, steps_per_epoch=steps_per_epoch,
                sync_every=max(1, int(sync_every)))


@dataclass
class _Position:
    """Where a resumed run starts: ``epoch`` finished epochs, ``step`` steps of the next one
    (a mid-epoch file after a preemption), with that epoch's partial ``loss`` (this rank's
    ``(sum, steps)``) and the RNG state after that step."""

    epoch: int = 0
    step: int = 0
    loss: tuple[float, int] = (0.0, 0)
    rng: dict[str, Any] | None = None


def _resume(run: _Run, res: FitResult, path: Path, fingerprint: str) -> _Position:
    """Load a matching resume file into ``run`` and ``res``; where training continues."""
    from langtail import distributed

    if not path.exists():
        return _Position()
    try:
        st = io.torch_load(path)
    except io.UnsafeCheckpointError as e:
        raise io.UnsafeCheckpointError(f"{e}; or delete this resume file to train from scratch") from None
    if st.get("fingerprint") != fingerprint:
        log.warning("%s: ignoring stale resume file %s (config or inputs changed)", run.desc, path)
        return _Position()
    for k, obj in run.parts.items():
        obj.load_state_dict(st[k])
    run.best = st.get("best") or {}
    res.history = st["history"]
    res.skipped = st.get("skipped", 0)
    res.skips = SkipLog.from_list(st.get("skipped_images", []))
    pos = _Position(int(st["epoch"]), int(st.get("step", 0)), rng=st["rng"])
    if pos.step:
        losses = st["epoch_loss"]
        if len(losses) != distributed.world_size():
            raise RuntimeError(f"{path}: written mid-epoch by {len(losses)} process(es), resumed by "
                               f"{distributed.world_size()}; resume with the same GPU count or delete it")
        pos.loss = (float(losses[distributed.rank()][0]), int(losses[distributed.rank()][1]))
    else:
        set_rng_state(st["rng"])
    res.resumed_from = pos.epoch
    log.info("%s: resuming after epoch %d%s from %s", run.desc, pos.epoch, f", step {pos.step}" if pos.step else "",
             path)
    return pos


def _train_epoch(run: _Run, loader: Iterable, res: FitResult, device: torch.device, epoch: int, epochs: int,
                 hooks: "_Hooks", mid: int, pos: "_Position", save: Callable) -> tuple[float, int]:
    """One pass over ``loader`` (from step ``mid`` after a mid-epoch resume): ``(mean loss of this
    rank's steps, images this rank trained on)``. Unreadable images were substituted by the
    dataset (counted skips, merged over ranks at the end); a stop signal saves and raises."""
    from langtail import distributed

    batches = epoch_batches(loader, epoch, mid)
    if mid:  # the RNG as it was after this step (the loader's iterator already drew its seed)
        set_rng_state(pos.rng)
    acc = LossAccumulator(device, *(pos.loss if mid else (0.0, 0)))
    epoch_skips, n_img = SkipLog(), 0  # this rank's skips; merged over ranks at the epoch's end
    bar = tqdm(batches, desc=f"{run.desc} {epoch + 1}/{epochs}", leave=False, mininterval=2.0,
               total=run.steps_per_epoch, initial=mid, disable=None if distributed.is_main() else True)
    for batch in bar:
        check_batch(batch, run.desc)
        epoch_skips.add_batch(batch)
        batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
        with torch.autocast(device.type, dtype=run.amp_dtype, enabled=run.use_amp):
            loss = run.step(batch)
        backward_step(loss, run.optimizer, run.scaler, run.sched)
        if hooks.after_step is not None:
            hooks.after_step()
        acc.add(loss)
        n_img += int(batch["image"].shape[0])
        if acc.n % run.sync_every == 0:
            bar.set_postfix(loss=f"{acc.check(run.desc, epoch):.4f}")
        if acc.n < run.steps_per_epoch and distributed.any_rank(hooks.stop_requested()):
            acc.check(run.desc, epoch)
            merge_rank_skips(res, epoch_skips)
            save(epoch, acc.n, acc.state())
            raise preempt.Preempted(f"{run.desc}: stopped on a signal at epoch {epoch + 1}, step {acc.n}/"
                                    f"{run.steps_per_epoch}; the resume file is written: rerun to resume from there")
    acc.check(run.desc, epoch)
    merge_rank_skips(res, epoch_skips)
    return acc.mean(), n_img


def _validate(run: _Run, rec: dict[str, Any], validate: Callable[[], Mapping[str, float | None]], select: str) -> None:
    """Add ``val_<group>`` to the epoch record; under ``best_val`` keep the weights of the best
    ``val_overall`` so far (ties: the earlier epoch)."""
    scores = validate()
    rec.update({f"val_{k}": (None if v is None else float(v)) for k, v in scores.items()})
    v = rec.get("val_overall")
    if select == "best_val" and v is not None and (not run.best or v > run.best["val_overall"]):
        run.best = {"epoch": rec["epoch"], "val_overall": v,
                    "state": {k: t.detach().cpu().clone() for k, t in run.model.state_dict().items()}}


@dataclass
class _Hooks:
    """:func:`fit`'s per-step / per-epoch callbacks (see its docstring)."""

    after_step: Callable[[], None] | None = None
    on_epoch: Callable[[int], None] | None = None
    epoch_stats: Callable[[], dict[str, float]] | None = None
    validate: Callable[[], Mapping[str, float | None]] | None = None
    select: str = "last"
    tracker: Any = None
    desc: str = "train"
    stop_requested: Callable[[], bool] = lambda: False  #: set by :func:`langtail.train.preempt.watch`

    def __post_init__(self) -> None:
        if self.select not in ("last", "best_val"):
            raise ValueError(f"{self.desc}: select must be 'last' or 'best_val', got {self.select!r}")
        if self.select == "best_val" and self.validate is None:
            raise ValueError(f"{self.desc}: select best_val needs a validation split (none given)")


def _epoch(run: _Run, loader: Iterable, res: FitResult, device: torch.device, epoch: int, epochs: int,
           hooks: _Hooks, pos: _Position, save: Callable) -> dict[str, Any]:
    """Train epoch ``epoch`` (0-based), validate, append its record to ``res.history`` and track it."""
    from langtail import distributed

    run.model.train()
    set_frozen_eval(run.model)  # BatchNorms without a trained parameter keep their statistics
    if hooks.on_epoch is not None:
        hooks.on_epoch(epoch)
    te = time.time()
    mid = pos.step if epoch == pos.epoch else 0
    loss, n_img = _train_epoch(run, loader, res, device, epoch, epochs, hooks, mid, pos, save)
    throughput = n_img * distributed.world_size() / max(1e-9, time.time() - te)  # tracked, not in the history
    rec = {"epoch": epoch + 1, "loss": distributed.all_mean(loss), "lr": run.optimizer.param_groups[0]["lr"]}
    if hooks.epoch_stats is not None:
        rec.update({k: float(v) for k, v in hooks.epoch_stats().items()})
    if hooks.validate is not None:
        _validate(run, rec, hooks.validate, hooks.select)
    res.history.append(rec)
    log.info("%s epoch %d/%d loss %.4f%s", run.desc, epoch + 1, epochs, rec["loss"],
             f" val {rec['val_overall']:.2f}" if rec.get("val_overall") is not None else "")
    if hooks.tracker is not None:  # (the history stays deterministic: a resumed run's equals an uninterrupted one's)
        hooks.tracker.log_epoch({**rec, "images_per_s": throughput})
    return rec


def _save_resume(run: _Run, res: FitResult, path: Path, fingerprint: str, epoch: int, step: int = 0,
                 loss: tuple[float, int] = (0.0, 0)) -> None:
    """Rank 0 writes the resume file at ``epoch`` finished epochs + ``step`` steps; ``loss``:
    this rank's partial epoch loss (gathered: every rank resumes its own). A collective."""
    from langtail import distributed

    losses = distributed.all_gather_objects([float(loss[0]), int(loss[1])])
    if distributed.is_main():
        io.torch_save(path, {
            "fingerprint": fingerprint, "epoch": epoch, "step": step, "epoch_loss": losses,
            **{k: obj.state_dict() for k, obj in run.parts.items()}, "rng": rng_state(), "history": res.history,
            "skipped": res.skipped, "skipped_images": res.skips.to_list(), "best": run.best,
        })
    distributed.barrier()  # the next epoch (or a resume after a kill) sees this file


def _select(run: _Run, res: FitResult, select: str, epochs: int) -> None:
    """Load the selected epoch's weights into the model and record the choice in ``res.selected``."""
    if select == "best_val" and run.best:
        run.model.load_state_dict(run.best["state"])
        res.selected = {"rule": "best_val", "epoch": int(run.best["epoch"]), "val_overall": run.best["val_overall"]}
        log.info("%s: best_val selects epoch %d (val overall %.2f)", run.desc, run.best["epoch"], run.best["val_overall"])
        return
    if select == "best_val":
        raise ValueError(f"{run.desc}: select best_val, but no epoch recorded a validation accuracy")
    last = res.history[-1] if res.history else {}
    res.selected = {"rule": "last", "epoch": int(last.get("epoch", epochs)),
                    **({"val_overall": last["val_overall"]} if last.get("val_overall") is not None else {})}


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: Iterable,
    step_fn: Callable[[dict[str, Any]], torch.Tensor],
    *,
    epochs: int,
    resume_path: Path,
    fingerprint: str,
    device: torch.device,
    amp: bool = False,
    warmup_epochs: int = 0,
    desc: str = "train",
    after_step: Callable[[], None] | None = None,
    on_epoch: Callable[[int], None] | None = None,
    epoch_stats: Callable[[], dict[str, float]] | None = None,
    validate: Callable[[], Mapping[str, float | None]] | None = None,
    select: str = "last",
    tracker: Any = None,
    sync_every: int = 50,
) -> FitResult:
    """Train; ``step_fn`` receives a batch dict already on ``device`` and returns the loss
    (process groups: the module docstring). ``on_epoch(e)`` runs before every epoch with its 0-based index ``e`` (also after a resume:
    epoch-dependent losses such as LDAM-DRW follow the schedule, not the restart).
    ``epoch_stats()`` adds values to each epoch's history record (the CVLP temperature ``tau``).
    ``validate()`` (after every epoch, every rank): ``{overall, many, medium, few}`` on the val
    split (``val_<group>`` in the record); ``select``: ``last`` keeps the last epoch's weights,
    ``best_val`` those of the best ``val_overall`` (kept in the resume file); ``tracker``
    (:class:`langtail.train.tracking.Tracker`) gets every record (+ ``images_per_s``, all ranks):
    ``epoch`` (1-based), ``loss`` (epoch mean), ``lr`` (at its end), the stats, ``val_*``.
    ``sync_every``: steps between reads of the device-side loss sum (finiteness check, progress
    bar); a non-finite loss fails the run at the next read. A stop signal
    (:mod:`langtail.train.preempt`) writes a mid-epoch resume file and raises ``Preempted``."""
    from langtail import distributed

    hooks = _Hooks(after_step, on_epoch, epoch_stats, validate, select, tracker, desc)
    run = _setup(model, optimizer, loader, step_fn, device, epochs, warmup_epochs, amp, desc, sync_every)
    res = FitResult()
    distributed.barrier()  # rank 0 may still be writing the previous run's file
    pos = _resume(run, res, resume_path, fingerprint)
    save = functools.partial(_save_resume, run, res, resume_path, fingerprint)
    if tracker is not None:
        tracker.replay(res.history)
    t0 = time.time()
    with preempt.watch() as stop_requested:
        hooks.stop_requested = stop_requested
        for epoch in range(pos.epoch, epochs):
            _epoch(run, loader, res, device, epoch, epochs, hooks, pos, save)
            save(epoch + 1)
            if epoch + 1 < epochs and distributed.any_rank(stop_requested()):
                raise preempt.Preempted(f"{desc}: stopped on a signal after epoch {epoch + 1}; rerun to resume")
    res.seconds = time.time() - t0
    _select(run, res, select, epochs)
    if tracker is not None:
        tracker.close()
    if res.skipped:
        log.warning("%s: %d unreadable image(s) skipped", desc, res.skipped)
    return res


def finish(resume_path: Path) -> None:
    """Remove the resume file once the final artifact is written."""
    resume_path.unlink(missing_ok=True)
