"""The shipped SLURM profile on a real one-node SLURM (localhost).

Where this runs as root on Linux with Debian's slurm packages installed or installable
(`slurm-wlm`, `munge`) and snakemake-executor-plugin-slurm importable, the test starts its
own munged, slurmctld and slurmd (own key, socket, ports and state under a temp dir; no
accounting daemon, so job status comes from squeue), runs the tiny demo workflow through
``--profile workflow/profiles/slurm`` and locally with the same config, checks that every job
went through sbatch and that the metrics are equal, and stops exactly the daemons it started
(by their pids). Anywhere else it skips, naming the reason.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY

SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "squeue", "sinfo", "scancel")
APT_PACKAGES = ["slurm-wlm", "munge"]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
DAEMON_START_S = 90  #: munged socket / node idle within this many seconds
WORKFLOW_S = 900  #: each snakemake run


def _which(name: str) -> str | None:
    return shutil.which(name, path=SBIN_PATH)


def _apt_install() -> str | None:
    """Install the Debian slurm packages; None on success, else why not. A temporary
    policy-rc.d keeps the packages' own services from starting (only the test's daemons run)."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = Path("/usr/sbin/policy-rc.d")
    made_policy = not policy.exists()
    if made_policy:
        policy.write_text("#!/bin/sh\nexit 101\n")
        policy.chmod(0o755)
    try:
        cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *APT_PACKAGES]
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True, timeout=600)
            p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        if p.returncode != 0:
            return f"`{' '.join(cmd)}` failed: {(p.stdout + p.stderr)[-600:]}"
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"apt-get install {' '.join(APT_PACKAGES)} failed: {e}"
    finally:
        if made_policy:
            policy.unlink()
    return None


def _skip_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return "needs Linux (one-node SLURM on localhost)"
    if os.geteuid() != 0:
        return "needs root (installs slurm-wlm/munge and starts munged, slurmctld, slurmd)"
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        return "snakemake-executor-plugin-slurm is not installed (pip install -r requirements.lock)"
    missing = [b for b in BINARIES if not _which(b)]
    if missing:
        if not _which("apt-get"):
            return f"SLURM binaries missing ({', '.join(missing)}) and no apt-get to install {APT_PACKAGES}"
        why = _apt_install()
        if why:
            return why
        missing = [b for b in BINARIES if not _which(b)]
        if missing:
            return f"after installing {APT_PACKAGES}, still missing: {', '.join(missing)}"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    """munged + slurmctld + slurmd started in the foreground by this test (Popen), so the
    pids are known and exactly these are stopped."""

    def __init__(self, root: Path):
        self.root = root
        self.procs: dict[str, subprocess.Popen] = {}
        self.logs = {n: root / f"{n}.log" for n in ("munged", "slurmctld", "slurmd")}
        self.conf = root / "slurm.conf"
        # The jobstep plugin runs each job's command under a nested `srun` with every SLURM_*
        # variable but a few removed, SLURM_CONF included: on a real cluster srun finds
        # /etc/slurm/slurm.conf, but this test's config lives in its temp dir (it leaves /etc
        # alone), so a tiny `srun` first on PATH puts SLURM_CONF back for the real srun.
        shim = root / "bin"
        shim.mkdir()
        (shim / "srun").write_text(f'#!/bin/sh\nSLURM_CONF={self.conf} exec {_which("srun")} "$@"\n')
        (shim / "srun").chmod(0o755)
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{shim}{os.pathsep}{SBIN_PATH}"}

    def log_tails(self) -> str:
        out = []
        for name, path in self.logs.items():
            text = path.read_text(errors="replace") if path.exists() else "(no log)"
            out.append(f"---- {name} log ({path}):\n{text[-3000:]}")
        for name, p in self.procs.items():
            out.append(f"---- {name}: pid {p.pid}, exit code {p.poll()}")
        return "\n".join(out)

    def fail(self, msg: str) -> None:
        raise AssertionError(f"{msg}\n{self.log_tails()}")

    def _start(self, name: str, cmd: list[str]) -> None:
        out = open(self.root / f"{name}.stdout", "w")
        self.procs[name] = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def _wait(self, what: str, ok) -> None:
        deadline = time.monotonic() + DAEMON_START_S
        while time.monotonic() < deadline:
            if ok():
                return
            for name, p in self.procs.items():
                if p.poll() is not None:
                    stdout = (self.root / f"{name}.stdout").read_text(errors="replace")[-2000:]
                    self.fail(f"{name} exited with code {p.returncode} while waiting for {what}:\n{stdout}")
            time.sleep(0.5)
        self.fail(f"timed out after {DAEMON_START_S} s waiting for {what}")

    def start(self) -> None:
        r = self.root
        key = r / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        sock = r / "munge.socket"
        self._start("munged", [_which("munged"), "--foreground", "--force", f"--socket={sock}",
                               f"--key-file={key}", f"--log-file={self.logs['munged']}",
                               f"--pid-file={r / 'munged.pid'}", f"--seed-file={r / 'munged.seed'}"])
        self._wait("the munge socket", sock.exists)
        host = socket.gethostname().split(".")[0]
        cpus = max(2, os.cpu_count() or 2)
        for d in ("state", "spool"):
            (r / d).mkdir()
        self.conf.write_text(f"""\
ClusterName=langtailtest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={sock}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={self.logs['slurmctld']}
SlurmdLogFile={self.logs['slurmd']}
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=600
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")
        self._start("slurmctld", [_which("slurmctld"), "-D", "-f", str(self.conf)])
        self._start("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", host])

        def idle() -> bool:
            p = subprocess.run([_which("sinfo"), "-h", "-o", "%T"], env=self.env, capture_output=True,
                               text=True, timeout=30)
            return p.returncode == 0 and p.stdout.strip() == "idle"

        self._wait("the node to be idle (sinfo)", idle)

    def stop(self) -> None:
        """Cancel this cluster's jobs, then stop the daemons this test started (by pid)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            subprocess.run([_which("scancel"), "--full", "--state=RUNNING"], env=self.env, capture_output=True,
                           timeout=30)
            subprocess.run([_which("scancel"), "--state=PENDING"], env=self.env, capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            os.kill(p.pid, signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = _skip_reason()
    if why:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("slurm")
    root.chmod(0o700)
    c = Cluster(root)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def _config() -> dict:
    demo = {k: dict(v) for k, v in TINY.items()}
    demo["finetune"].update(epochs=1, heads=["lgr"])
    return {"results_dir": "results", "datasets": {"demo": demo}}


def _snakemake(workdir: Path, *args: str, env=None, cluster: Cluster | None = None) -> str:
    cmd = SNAKEMAKE + ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(workdir), *args,
                       "results/demo/report.md"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKFLOW_S, env=env)
    except subprocess.TimeoutExpired as e:
        msg = f"{' '.join(cmd)} timed out after {WORKFLOW_S} s:\n{str(e.stdout)[-3000:]}\n{str(e.stderr)[-3000:]}"
        cluster.fail(msg) if cluster else pytest.fail(msg)
    out = p.stdout + p.stderr
    if p.returncode != 0:
        logs = "\n".join(f"---- {f}:\n{f.read_text(errors='replace')[-2000:]}"
                         for f in sorted(workdir.glob(".snakemake/slurm_logs/**/*.log")))
        msg = f"{' '.join(cmd)} failed (exit {p.returncode}):\n{out[-6000:]}\n{logs}"
        cluster.fail(msg) if cluster else pytest.fail(msg)
    return out


def _metrics(workdir: Path) -> dict[str, dict]:
    files = sorted((workdir / "results/demo/eval").glob("*/metrics.json"))
    assert files, f"no metrics under {workdir / 'results/demo/eval'}"
    return {f.parent.name: json.loads(f.read_text()) for f in files}


def _numbers(obj):
    """The numeric leaves of a metrics document (timestamps / paths and wall times such as
    ``train_seconds`` left out)."""
    if isinstance(obj, dict):
        return {k: _numbers(v) for k, v in obj.items() if not isinstance(v, str) and not k.endswith("seconds")}
    if isinstance(obj, list):
        return [_numbers(v) for v in obj]
    return obj


def test_demo_through_slurm_profile_matches_local_run(cluster, tmp_path):
    local, slurm = tmp_path / "local", tmp_path / "slurm"
    for wd in (local, slurm):
        wd.mkdir()
        (wd / "config.yaml").write_text(yaml.safe_dump(_config()))

    t0 = time.monotonic()
    local_out = _snakemake(local, "--cores", "2")
    t_local = time.monotonic() - t0
    n_jobs = len(re.findall(r"^(?:local)?rule (?!all:)\w+:", local_out, flags=re.M))
    assert n_jobs >= 8, f"expected the whole demo chain to run locally, got {n_jobs} jobs:\n{local_out[-3000:]}"

    t0 = time.monotonic()
    out = _snakemake(slurm, "--profile", str(ROOT / "workflow/profiles/slurm"),
                     "--slurm-init-seconds-before-status-checks", "2", "--latency-wait", "5",
                     env=cluster.env, cluster=cluster)
    t_slurm = time.monotonic() - t0
    print(f"demo (tiny): local {t_local:.0f} s, SLURM {t_slurm:.0f} s, {n_jobs} jobs")

    # every job went through sbatch: one SLURM job id per workflow job, each one accepted by
    # slurmctld (its log has the batch submissions; there is no accounting database)
    ids = re.findall(r"submitted with SLURM jobid (\d+)", out)
    assert len(ids) == n_jobs == len(set(ids)), (
        f"{len(ids)} sbatch submissions for {n_jobs} jobs:\n{out[-4000:]}")
    ctld = cluster.logs["slurmctld"].read_text(errors="replace")
    submitted = set(re.findall(r"_slurm_rpc_submit_batch_job: JobId=(\d+)", ctld))
    assert set(ids) <= submitted, f"job ids {sorted(set(ids) - submitted)} not in the slurmctld log\n{cluster.log_tails()}"
    assert not re.search(r"^localrule (?!all:)\w+:", out, flags=re.M), f"a job ran outside SLURM:\n{out[-4000:]}"

    assert (slurm / "results/demo/report.md").exists()
    a, b = _metrics(local), _metrics(slurm)
    assert sorted(a) == sorted(b)
    for model in a:
        assert _numbers(a[model]) == _numbers(b[model]), f"{model}: SLURM metrics differ from the local run"


def test_profile_site_lines_and_config_resources_reach_the_jobs(tmp_path):
    """Dry run through the shipped profile (no SLURM needed): job needs from the dataset's
    `resources:`, site lines from the `slurm_*` config keys, torchrun for a multi-GPU stage."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -r requirements.lock)")
    cfg = _config()
    cfg["datasets"]["demo"]["pretrain"]["device"] = "auto"
    cfg["datasets"]["demo"]["resources"] = {"pretrain": {"gpus": 2, "cpus": 8, "mem_mb": 12000, "runtime": 30}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    cmd = SNAKEMAKE + ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--profile",
                       str(ROOT / "workflow/profiles/slurm"), "-n", "-p", "results/demo/pretrain/model.pt",
                       "--config", "slurm_partition=cpuq", "slurm_gpu_partition=gpuq", "slurm_gpu_model=a100"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    res = dict(re.findall(r"^rule (\w+):.*?^\s+resources: (.*?)$", out, flags=re.M | re.S))
    assert "gpu=2" in res["pretrain"] and "cpus_per_gpu=4" in res["pretrain"] and "gpu_model=a100" in res["pretrain"]
    assert "slurm_partition=gpuq" in res["pretrain"] and "mem_mb=12000" in res["pretrain"] and "runtime=30" in res["pretrain"]
    assert "gpu=0" in res["longtail"] and "slurm_partition=cpuq" in res["longtail"] and "gpu_model" not in res["longtail"]
    assert "LANGTAIL_JOB_GPUS=2 LANGTAIL_JOB_WORLD_SIZE=2 torchrun --standalone --nproc-per-node 2 --no-python " \
           "langtail pretrain" in out


_FAKE_SLURM = {  # just enough of SLURM for the plugin to submit: sbatch records its line, jobs "fail"
    "sbatch": 'echo "sbatch $*" >> "$FAKE_SBATCH_LOG"\necho 4242',
    "squeue": 'echo "4242|FAILED"', "sacct": 'echo "4242|FAILED"', "scancel": "exit 0", "sinfo": "exit 0",
    "sacctmgr": 'echo "proj1"',
}


def _sbatch_lines(tmp_path: Path, cfg: dict, target: str, *config: str) -> list[str]:
    """The sbatch calls plugin 2.8.0 makes for ``target`` with the shipped profile (fake SLURM)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name, body in _FAKE_SLURM.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    log = tmp_path / "sbatch.log"
    log.unlink(missing_ok=True)
    env = {**os.environ, "FAKE_SBATCH_LOG": str(log), "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    cmd = SNAKEMAKE + ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--profile",
                       str(ROOT / "workflow/profiles/slurm"), target, "--retries", "0",
                       "--slurm-init-seconds-before-status-checks", "1", "--config", *config]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert log.exists(), (p.stdout + p.stderr)[-4000:]
    return log.read_text().splitlines()


def test_sbatch_lines_the_profile_produces(tmp_path):
    """What sbatch really gets from plugin 2.8.0 (its own submit code, a fake sbatch): account,
    partitions, GPU model, cores and memory per GPU scaled with the GPU count, --requeue and
    the preemption signal."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError:
        pytest.skip("snakemake-executor-plugin-slurm is not installed (pip install -r requirements.lock)")
    site = ("slurm_partition=cpuq", "slurm_gpu_partition=gpuq", "slurm_gpu_model=a100", "slurm_account=proj1")
    cfg = _config()
    cfg["datasets"]["demo"]["pretrain"]["device"] = "auto"
    cfg["datasets"]["demo"]["resources"] = {"pretrain": {"gpus": 4, "cpus_per_gpu": 3, "mem_mb_per_gpu": 5000,
                                                         "runtime": 30}}
    (cpu,) = _sbatch_lines(tmp_path / "cpu", cfg, "results/demo/manifest.parquet", *site)
    assert " -A proj1 " in cpu and " -p cpuq " in cpu and "--cpus-per-task=1" in cpu and "--gpus" not in cpu
    gpu_dir = tmp_path / "gpu"
    (gpu_dir / "results" / "demo" / "arrays").mkdir(parents=True)
    for f in ("manifest.parquet", "corpus.parquet"):
        (gpu_dir / "results" / "demo" / f).touch()
    (gpu,) = _sbatch_lines(gpu_dir, cfg, "results/demo/pretrain/model.pt", *site)
    for part in (" -A proj1 ", " -p gpuq ", " -t 30 ", " --mem 20000 ", "--cpus-per-gpu=3", "--gpus=a100:4",
                 "--requeue", "--signal=TERM@120"):
        assert part in gpu, f"{part!r} not in {gpu}"
    assert "--ntasks" not in gpu  # one task: torchrun starts the 4 processes
