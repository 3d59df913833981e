"""Job launch: per-dataset job resources, the launch prefix, and the check inside a job
that it got exactly what its rule asked for (plugin double launch, issues #316 / #459)."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from langtail.config import ConfigError, from_dict
from langtail.launch import job_resources
from langtail.distributed import ENV_GPUS, ENV_WORLD_SIZE, LaunchError, check_launch, launch_prefix


def _job(env: dict, gpus: int = 0) -> dict:
    return {**env, ENV_GPUS: str(gpus), ENV_WORLD_SIZE: str(env.pop("_world", 1))}


def test_no_request_no_check():
    info = check_launch({"SLURM_NTASKS": "4"}, cuda_device_count=lambda: 0)
    assert (info.rank, info.world_size) == (0, 1)


def test_single_cpu_job_passes():
    info = check_launch(_job({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}), cuda_device_count=lambda: 0)
    assert info.world_size == 1


def test_double_launch_fails_naming_the_plugin_issue():
    env = _job({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}, gpus=2)
    env[ENV_WORLD_SIZE] = "2"
    with pytest.raises(LaunchError) as e:
        check_launch({**env, "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}, cuda_device_count=lambda: 2)
    msg = str(e.value)
    assert "SLURM_NTASKS=2" in msg and "SLURM_STEP_NUM_TASKS=2" in msg and "#316" in msg


def test_world_size_must_match_request():
    env = _job({"WORLD_SIZE": "1"}, gpus=2)
    env[ENV_WORLD_SIZE] = "2"
    with pytest.raises(LaunchError, match="WORLD_SIZE=1, but the job asked for 2"):
        check_launch(env, cuda_device_count=lambda: 2)
    env.update(WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", RANK="1", LOCAL_RANK="1")
    info = check_launch(env, cuda_device_count=lambda: 2)
    assert (info.rank, info.world_size, info.local_rank, info.visible_gpus) == (1, 2, 1, 2)


def test_visible_gpus_must_cover_request():
    with pytest.raises(LaunchError, match=r"asked for 2 GPU\(s\) but sees 1 visible"):
        check_launch(_job({}, gpus=2) | {ENV_WORLD_SIZE: "2", "WORLD_SIZE": "2"}, cuda_device_count=lambda: 1)
    # outside SLURM (a local run on a multi-GPU box) more visible GPUs are fine ...
    assert check_launch(_job({}, gpus=1), cuda_device_count=lambda: 4).visible_gpus == 4
    # ... inside a SLURM job they mean the allocation differs from the request
    with pytest.raises(LaunchError, match="SLURM allocation shows 4 visible"):
        check_launch(_job({"SLURM_JOB_ID": "3"}, gpus=1), cuda_device_count=lambda: 4)


def test_cli_fails_before_the_stage_runs(tmp_path):
    env = {**os.environ, ENV_GPUS: "0", ENV_WORLD_SIZE: "1", "SLURM_NTASKS": "3"}
    p = subprocess.run([sys.executable, "-m", "langtail.cli", "validate-config", str(ROOT / "config.yaml")],
                       env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "SLURM_NTASKS=3" in p.stderr and "ok" not in p.stdout


def test_launch_prefix():
    cfg = from_dict({"resources": {"pretrain": {"gpus": 4}, "anchors": {"gpus": 1}}})
    assert launch_prefix(job_resources(cfg, "longtail"), "longtail") == f"{ENV_GPUS}=0 {ENV_WORLD_SIZE}=1 "
    assert launch_prefix(job_resources(cfg, "anchors"), "anchors") == f"{ENV_GPUS}=1 {ENV_WORLD_SIZE}=1 "
    assert launch_prefix(job_resources(cfg, "pretrain"), "pretrain") == (
        f"{ENV_GPUS}=4 {ENV_WORLD_SIZE}=4 torchrun --standalone --nproc-per-node 4 --no-python ")


@pytest.mark.parametrize("over, match", [
    ({"resources": {"corpus": {"gpus": 1}}}, "resources.corpus.gpus: 1, but the corpus job runs on CPU only"),
    ({"resources": {"evaluate": {"gpus": 2}}}, "resources.evaluate.gpus: 2, but evaluate runs as one process"),
    ({"pretrain": {"device": "cuda"}}, "resources.pretrain.gpus: 0, but pretrain.device is 'cuda'"),
    ({"pretrain": {"device": "cpu"}, "resources": {"pretrain": {"gpus": 1}}}, "pretrain.device is 'cpu'"),
    ({"resources": {"finetune": {"cpus": 0}}}, "resources.finetune.cpus: 0 is below 1"),
])
def test_job_resources_errors_name_the_key(over, match):
    cfg = from_dict(over)
    job = next(iter(over.get("resources", {"pretrain": 0})))
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace(")", r"\)")):
        job_resources(cfg, job)


def test_partial_resources_keep_the_jobs_own_defaults():
    cfg = from_dict({"resources": {"pretrain": {"gpus": 2}}})
    default = from_dict({}).resources.pretrain
    assert (cfg.resources.pretrain.gpus, cfg.resources.pretrain.mem_mb) == (2, default.mem_mb)
    with pytest.raises(ConfigError, match=r"resources.pretrain: unknown key\(s\) \['gpu'\]"):
        from_dict({"resources": {"pretrain": {"gpu": 2}}})


def test_cores_memory_and_loader_workers_scale_with_the_gpus(monkeypatch):
    from langtail import distributed

    per_gpu = {"cpus_per_gpu": 12, "mem_mb_per_gpu": 48000, "cpus": 16, "mem_mb": 64000}
    cfg = from_dict({"pretrain": {"device": "auto"}, "resources": {"pretrain": {"gpus": 8, **per_gpu}}})
    r = job_resources(cfg, "pretrain")
    assert (r.cpus, r.mem_mb) == (96, 384000)  # per GPU x 8 replaces the fixed totals
    one = from_dict({"pretrain": {"device": "auto"}, "resources": {"pretrain": {"gpus": 1, **per_gpu}}})
    assert (job_resources(one, "pretrain").cpus, job_resources(one, "pretrain").mem_mb) == (12, 48000)
    fixed = from_dict({"pretrain": {"device": "auto"}, "resources": {"pretrain": {"gpus": 8, "cpus": 16}}})
    assert job_resources(fixed, "pretrain").cpus == 16  # without per-GPU amounts: the totals as given
    with pytest.raises(ConfigError, match="resources.pretrain.cpus_per_gpu"):
        job_resources(from_dict({"resources": {"pretrain": {"cpus_per_gpu": -1}}}), "pretrain")
    # loader workers: the job's cores shared by its ranks (one core for each rank itself)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)), raising=False)
    monkeypatch.setattr(distributed, "world_size", lambda: 8)
    assert distributed.workers_per_rank(8) == 7 and distributed.workers_per_rank(4) == 4
    monkeypatch.setattr(distributed, "world_size", lambda: 1)
    assert distributed.workers_per_rank(8) == 8 and distributed.workers_per_rank(0) == 0
