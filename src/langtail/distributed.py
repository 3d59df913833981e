"""Launching jobs on one or several GPUs: what a workflow job asked for, and the check that
it got exactly that.

A workflow job's ``langtail`` call is prefixed by :func:`launch_prefix`
(``LANGTAIL_JOB_GPUS=G LANGTAIL_JOB_WORLD_SIZE=W`` and, for a multi-GPU training job,
``torchrun --standalone --nproc-per-node W --no-python``). Inside the job,
:func:`check_launch` compares that request with what the process sees (its world size,
the SLURM task count, the visible GPUs) and fails listing every difference. It guards against
the snakemake-executor-plugin-slurm double launch (plugin issues #316 / #459: older versions
added ``--ntasks-per-gpu``, so SLURM started the whole command once per GPU, and N copies
trained and wrote the same files) and against a GPU request that did not reach SLURM.
"""
from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from typing import Callable, Mapping

log = logging.getLogger(__name__)

#: environment variables set by :func:`launch_prefix` (the job's request)
ENV_GPUS = "LANGTAIL_JOB_GPUS"
ENV_WORLD_SIZE = "LANGTAIL_JOB_WORLD_SIZE"


class LaunchError(RuntimeError):
    """The job was not started the way its rule asked (message lists every difference)."""


@dataclass(frozen=True)
class LaunchInfo:
    """What :func:`check_launch` found: the process's rank among ``world_size`` processes
    (torchrun's RANK/WORLD_SIZE/LOCAL_RANK; 0/1/0 for a plain single-process job) and the
    number of GPUs it sees."""

    rank: int
    world_size: int
    local_rank: int
    visible_gpus: int


def launch_prefix(resources: object, job: str) -> str:
    """Shell prefix of a workflow job's ``langtail`` call for its ``JobResources``
    (``resources.gpus``): records the request in the environment and, for a training job
    (:data:`langtail.launch.DDP_JOBS`) with more than one GPU, starts one process per GPU with
    ``torchrun --standalone``. Ends with a space (or is the bare environment prefix)."""
    from langtail.launch import DDP_JOBS

    gpus = int(getattr(resources, "gpus"))
    world = gpus if gpus > 1 and job in DDP_JOBS else 1
    prefix = f"{ENV_GPUS}={gpus} {ENV_WORLD_SIZE}={world} "
    if world > 1:
        prefix += f"torchrun --standalone --nproc-per-node {world} --no-python "
    return prefix


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError as e:
        raise LaunchError(f"environment variable {name}={value!r} is not an integer") from e


def _cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_launch(env: Mapping[str, str] | None = None,
                 cuda_device_count: Callable[[], int] = _cuda_device_count) -> LaunchInfo:
    """Check that this process was started as its workflow job asked; raise
    :class:`LaunchError` listing every difference, else return the :class:`LaunchInfo`.

    Checked when the job's request is in ``env`` (:data:`ENV_GPUS` / :data:`ENV_WORLD_SIZE`,
    set by :func:`launch_prefix`; a hand-run ``langtail`` call without them is not checked):

    - SLURM started the command once (``SLURM_NTASKS`` and ``SLURM_STEP_NUM_TASKS`` at most 1):
      langtail jobs are one task; torchrun, not SLURM, starts one process per GPU;
    - the process group has the requested size (``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``);
    - at least the requested GPUs are visible; inside a SLURM job exactly as many
      (more means the allocation is not what the rule asked for).
    """
    env = os.environ if env is None else env
    rank = _int_env(env, "RANK", 0)
    world = _int_env(env, "WORLD_SIZE", 1)
    local_rank = _int_env(env, "LOCAL_RANK", 0)
    if ENV_WORLD_SIZE not in env and ENV_GPUS not in env:
        return LaunchInfo(rank, world, local_rank, -1)
    want_world = _int_env(env, ENV_WORLD_SIZE, 1)
    want_gpus = _int_env(env, ENV_GPUS, 0)
    problems: list[str] = []
    for var in ("SLURM_NTASKS", "SLURM_STEP_NUM_TASKS"):
        n = _int_env(env, var, 1)
        if n > 1:
            problems.append(
                f"{var}={n}: SLURM started this command {n} times (one task each), but a langtail job "
                "is one task (torchrun starts one process per GPU). This is the "
                "snakemake-executor-plugin-slurm double launch (plugin issues #316/#459, "
                "--ntasks-per-gpu): do not set `tasks`/`tasks_per_gpu`/`mpi` resources in the profile, "
                "and use the pinned plugin (requirements.lock)")
    if world != want_world:
        problems.append(f"WORLD_SIZE={world}, but the job asked for {want_world} process(es) "
                        f"({ENV_WORLD_SIZE}); a multi-GPU job must be started by its rule's torchrun prefix")
    local_world = _int_env(env, "LOCAL_WORLD_SIZE", world)
    if local_world != world:
        problems.append(f"LOCAL_WORLD_SIZE={local_world} != WORLD_SIZE={world}: langtail jobs are single-node "
                        "(torchrun --standalone)")
    visible = -1
    if want_gpus > 0:
        visible = cuda_device_count()
        in_slurm = "SLURM_JOB_ID" in env
        cvd = env.get("CUDA_VISIBLE_DEVICES")
        seen = f"{visible} visible GPU(s) (CUDA_VISIBLE_DEVICES={cvd!r})"
        if visible < want_gpus:
            problems.append(f"the job asked for {want_gpus} GPU(s) but sees {seen}; on SLURM check that the "
                            "job got --gpus (sbatch line in the job log) and that the partition has GPUs "
                            "(slurm_gpu_partition in the profile)")
        elif in_slurm and visible != want_gpus:
            problems.append(f"the job asked for {want_gpus} GPU(s) but its SLURM allocation shows {seen}")
        if world > 1 and world != want_gpus:
            problems.append(f"{world} processes for {want_gpus} GPU(s): one process per GPU expected")
    if problems:
        raise LaunchError("this job was not started as its rule asked:\n  - " + "\n  - ".join(problems))
    if want_gpus or world > 1:
        log.info("launch ok: rank %d of %d, %s GPU(s) visible", rank, world, visible if visible >= 0 else "-")
    return LaunchInfo(rank, world, local_rank, visible)


# ----------------------------------------------------------------------------- multi-process training
# Under torchrun (WORLD_SIZE > 1) a training stage runs once per GPU (or per CPU process with
# gloo). The stage's `batch_size` stays the GLOBAL batch: every rank draws the same epoch
# sequence (langtail.data.dataset.EpochSampler) and takes its slice of each global batch, so
# N ranks with B/N images each see exactly the images one process with B would, and the
# sampling rates (instance, sqrt, class-balanced) do not change. Contrastive losses gather
# the embeddings of all ranks with gradient (:func:`gather`), so positives and negatives are
# those of the global batch; langtail.train.loop.fit wraps the model in
# DistributedDataParallel (SyncBatchNorm on GPU) and only rank 0 writes files.


def _dist():
    import torch.distributed as dist

    return dist


def is_distributed() -> bool:
    """True inside a process group of more than one process."""
    dist = _dist()
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return _dist().get_world_size() if is_distributed() else 1


def rank() -> int:
    return _dist().get_rank() if is_distributed() else 0


def is_main() -> bool:
    """Rank 0 (or a single process): the one that writes checkpoints, logs and progress."""
    return rank() == 0


def setup(device_name: str):
    """The ``torch.device`` of this process for a stage's ``device`` setting; under torchrun
    (``WORLD_SIZE`` > 1) also join the process group: NCCL with ``cuda:<LOCAL_RANK>`` on GPU,
    gloo on CPU. Single-process runs: the stage's device as before."""
    import atexit

    import torch

    from langtail.runtime import resolve_device

    env = os.environ
    world = _int_env(env, "WORLD_SIZE", 1)
    device = resolve_device(device_name)
    if world == 1:
        return device
    dist = _dist()
    if device.type == "cuda":
        device = torch.device("cuda", _int_env(env, "LOCAL_RANK", 0))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    if not is_main():  # progress and INFO logs from rank 0 only
        logging.getLogger("langtail").setLevel(logging.WARNING)
    log.info("distributed: %d processes (%s), this is rank %d on %s", world,
             dist.get_backend(), dist.get_rank(), device)
    return device


def per_rank_batch(global_batch: int) -> int:
    """Images per rank for a stage's (global) ``batch_size``; it must divide evenly."""
    w = world_size()
    if global_batch % w:
        raise ValueError(f"batch_size {global_batch} is not divisible by the {w} processes of this job; "
                         f"use a multiple of {w} (or resources.<stage>.gpus that divides it)")
    return global_batch // w


def workers_per_rank(requested: int) -> int:
    """DataLoader workers for this process: ``requested`` (``data.num_workers``), capped so
    that the ranks of a job share its cores (cores this process may use // ranks, minus one
    for the rank itself): 8 ranks on 64 cores get 7 workers each, not 8 x 8 decoders."""
    if requested <= 0:
        return requested
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    cap = max(0, cores // world_size() - 1)
    if requested > cap:
        log.info("data.num_workers %d -> %d per process (%d cores, %d process(es))", requested, cap, cores,
                 world_size())
    return min(requested, cap)


def gather(x):
    """Concatenate ``x [b, ...]`` of every rank in rank order -> ``[b * world, ...]``. With
    gradient when ``x`` requires it (as open_clip's gather_with_grad: the backward pass returns
    to each rank the gradient of its own slice, summed over ranks). Identity for a
    single process. Every rank must pass the same ``b``."""
    if not is_distributed():
        return x
    if x.requires_grad:
        return _gather_with_grad().apply(x)
    return _all_gather_cat(x)


def _all_gather_cat(x):
    import torch

    parts = [torch.empty_like(x) for _ in range(world_size())]
    _dist().all_gather(parts, x.contiguous())
    return torch.cat(parts, 0)


_GATHER_FN = None


def _gather_with_grad():
    """Autograd all-gather (torch.distributed.nn.functional.all_gather is deprecated): forward
    concatenates every rank's ``[b, ...]``; backward sums the incoming gradient over ranks
    (every rank's loss uses every slice) and returns this rank's slice. all_reduce + slice
    rather than reduce_scatter, which gloo lacks."""
    global _GATHER_FN
    if _GATHER_FN is None:
        import torch

        class _GatherWithGrad(torch.autograd.Function):
            @staticmethod
            def forward(ctx, x):
                ctx.b = x.shape[0]
                return _all_gather_cat(x)

            @staticmethod
            def backward(ctx, g):
                g = g.contiguous().clone()
                _dist().all_reduce(g)
                r = rank()
                return g[r * ctx.b:(r + 1) * ctx.b]

        _GATHER_FN = _GatherWithGrad
    return _GATHER_FN


def rank_slice(x):
    """This rank's slice of a global-batch tensor ``[b * world, ...] -> [b, ...]`` (the inverse
    of :func:`gather`): e.g. random draws made identically on every rank for the global batch,
    so each rank uses different ones and the union equals a single-process run."""
    w = world_size()
    if w == 1:
        return x
    b = x.shape[0] // w
    return x[rank() * b:(rank() + 1) * b]


def all_mean(value: float) -> float:
    """Mean of a float over ranks (itself for one process)."""
    import torch

    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if _dist().get_backend() == "nccl":
        t = t.cuda()
    _dist().all_reduce(t)
    return float(t.item()) / world_size()


def all_sum(x):
    """Sum of tensor ``x`` over ranks (a copy; no gradient); ``x`` itself for one process."""
    if not is_distributed():
        return x
    t = x.detach().clone()
    _dist().all_reduce(t)
    return t


_CPU_GROUP = None


def any_rank(flag: bool) -> bool:
    """True on every rank when ``flag`` is True on any (a one-integer all-reduce over a gloo
    group on the CPU: no GPU synchronisation, cheap enough for every step). A collective."""
    global _CPU_GROUP
    if not is_distributed():
        return bool(flag)
    import torch

    dist = _dist()
    if _CPU_GROUP is None:
        _CPU_GROUP = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
    t = torch.tensor([int(bool(flag))], dtype=torch.int32)
    dist.all_reduce(t, group=_CPU_GROUP)
    return bool(t.item())


def all_gather_objects(obj) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable values);
    ``[obj]`` for a single process. A collective: every rank must call it."""
    if not is_distributed():
        return [obj]
    out: list = [None] * world_size()
    _dist().all_gather_object(out, obj)
    return out


def barrier() -> None:
    if is_distributed():
        _dist().barrier()


def wrap_step(model, step_fn, device):
    """``DistributedDataParallel`` around a training step: ``ddp(batch)`` runs
    ``step_fn(batch)`` (which uses ``model``'s submodules) with gradient averaging over ranks.
    BatchNorm layers of ``model`` become SyncBatchNorm on GPU (in place: ``model`` stays the
    object the step and the checkpoint use); on CPU (gloo) BatchNorm keeps per-rank statistics.
    Settings: :data:`DDP_OPTIONS`.
    None when ``model`` has no trainable parameter (the step then runs as is)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    class _Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, batch):
            return step_fn(batch)

    if not any(p.requires_grad for p in model.parameters()):
        return None  # nothing to synchronise (e.g. a frozen encoder with a parameter-free head)
    if device.type == "cuda":
        for name, child in list(model.named_children()):
            setattr(model, name, torch.nn.SyncBatchNorm.convert_sync_batchnorm(child))
    elif any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        log.warning("multi-process CPU training: BatchNorm statistics are per process (SyncBatchNorm needs GPUs)")
    return DistributedDataParallel(_Step(), device_ids=[device.index] if device.type == "cuda" else None,
                                   **DDP_OPTIONS)


#: DistributedDataParallel settings of :func:`wrap_step` (benchmarks/ddp_step.py measures them):
#: - ``forward_sync_buffers=False`` (torch 2.14's name for ``broadcast_buffers=False``, which
#:   it deprecates; buffers are still synchronised once at construction): buffers are not
#:   re-sent from rank 0 before every step; the
#:   LGR head's anchors ``[C, M, D]`` are constant (262 MB at ImageNet-LT size), and BatchNorm
#:   statistics are SyncBatchNorm's global ones on GPU (rank 0 writes the checkpoint either way);
#: - ``static_graph=True`` instead of ``find_unused_parameters=True``: the parameters a step
#:   uses are the same every step, so DDP records them once instead of walking the autograd
#:   graph after every forward (parameters a step never uses are still handled).
DDP_OPTIONS = {"forward_sync_buffers": False, "static_graph": True, "find_unused_parameters": False}


@contextlib.contextmanager
def main_first():
    """Run the block on rank 0 first, then on the other ranks (e.g. filling a shared cache:
    rank 0 computes and writes it, the others read it instead of racing to write it)."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()
