"""Launch policy of the workflow's jobs: which config section's ``device`` a job runs on, which
jobs train with DDP, the validated resources of a job kind (``resources.<job>``) and the site's
SLURM specifics (top-level ``slurm_*`` keys, :data:`langtail.config.SLURM_SITE_KEYS`).
Used by ``workflow/rules/common.smk`` and :mod:`langtail.distributed`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from langtail.config import SLURM_SITE_KEYS, ConfigError, DatasetConfig, JobResources, ResourcesConfig

#: the config section whose ``device`` each job kind of :class:`ResourcesConfig` runs on;
#: job kinds not listed run on CPU only (their ``gpus`` must be 0)
JOB_DEVICE_SECTION: dict[str, str] = {
    "captions": "captions", "pretrain": "pretrain", "anchors": "pretrain", "finetune": "finetune",
    "ca4ltr": "ca4ltr", "evaluate": "evaluate",
}
#: job kinds that train with DistributedDataParallel when given more than one GPU
DDP_JOBS: tuple[str, ...] = ("pretrain", "finetune", "ca4ltr")


def job_resources(cfg: DatasetConfig, job: str) -> JobResources:
    """The validated :class:`JobResources` of job kind ``job`` (a field of
    :class:`ResourcesConfig`); raises :class:`ConfigError` naming ``resources.<job>.<key>``."""
    if job not in {f.name for f in dataclasses.fields(ResourcesConfig)}:
        raise ConfigError(f"unknown job kind {job!r}; known: {[f.name for f in dataclasses.fields(ResourcesConfig)]}")
    r: JobResources = getattr(cfg.resources, job)
    where = f"resources.{job}"
    for key, low in (("gpus", 0), ("cpus", 1), ("mem_mb", 1), ("runtime", 1), ("cpus_per_gpu", 0), ("mem_mb_per_gpu", 0)):
        if getattr(r, key) < low:
            raise ConfigError(f"{where}.{key}: {getattr(r, key)} is below {low}")
    section = JOB_DEVICE_SECTION.get(job)
    if section is None:
        if r.gpus:
            raise ConfigError(f"{where}.gpus: {r.gpus}, but the {job} job runs on CPU only; set 0")
        return r
    device = getattr(cfg, section).device
    if r.gpus and device == "cpu":
        raise ConfigError(f"{where}.gpus: {r.gpus} GPUs requested but {section}.device is 'cpu'; "
                          "set gpus: 0 or device: auto/cuda")
    if not r.gpus and device.startswith("cuda"):
        raise ConfigError(f"{where}.gpus: 0, but {section}.device is {device!r}: the job would get no GPU "
                          "on a cluster; set gpus: 1 (or more) or device: auto")
    if r.gpus > 1 and job not in DDP_JOBS:
        raise ConfigError(f"{where}.gpus: {r.gpus}, but {job} runs as one process on one GPU; set 1 "
                          f"(multi-GPU jobs: {', '.join(DDP_JOBS)})")
    if r.gpus > 1 and device.startswith("cuda:"):
        raise ConfigError(f"{where}.gpus: {r.gpus} with {section}.device {device!r} (one fixed GPU); "
                          "use device: cuda or auto")
    return per_gpu_totals(r)


def per_gpu_totals(r: JobResources) -> JobResources:
    """``r`` with ``cpus`` / ``mem_mb`` the job totals of its per-GPU amounts (when set and the
    job has GPUs): 8 GPUs at ``cpus_per_gpu: 12`` ask for 96 cores, not a fixed 16."""
    if r.gpus < 1:
        return r
    return dataclasses.replace(r, cpus=r.cpus_per_gpu * r.gpus if r.cpus_per_gpu > 0 else r.cpus,
                               mem_mb=r.mem_mb_per_gpu * r.gpus if r.mem_mb_per_gpu > 0 else r.mem_mb)


def slurm_site(raw: Mapping[str, Any]) -> dict[str, str]:
    """The site's SLURM specifics (:data:`SLURM_SITE_KEYS`) from a workflow config, "" when unset."""
    return {k: "" if raw.get(k) is None else str(raw.get(k)) for k in SLURM_SITE_KEYS}
