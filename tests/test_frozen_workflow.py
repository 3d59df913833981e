"""The demo workflow under ``model.backbone_mode: frozen`` runs to report.md on cached image features."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import ROOT, TINY

SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile")]


def _config(**over) -> dict:
    demo = {k: dict(v) for k, v in TINY.items()}
    demo["model"]["backbone_mode"] = "frozen"
    for sec, vals in over.items():
        demo.setdefault(sec, {}).update(vals)
    return {"results_dir": "results", "datasets": {"demo": demo}}


def _snakemake(wd: Path, *args: str) -> str:
    p = subprocess.run(SNAKEMAKE + ["--directory", str(wd), *args], capture_output=True, text=True, timeout=900)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-4000:]
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    wd = tmp_path_factory.mktemp("wf_frozen")
    (wd / "config.yaml").write_text(yaml.safe_dump(_config()))
    _snakemake(wd, "--cores", "2", "results/demo/report.md")
    return wd


def test_frozen_demo_runs_to_report_on_cached_features(built):
    from langtail.data.features import ImageFeatures

    res = built / "results" / "demo"
    report = (res / "report.md").read_text()
    assert "VL-LTR" in report and "Baseline (vision-only, FC)" in report
    assert "Image backbone: `frozen`: features computed once" in report and "no augmentation" in report
    f = ImageFeatures(res / "image_features.safetensors")
    assert f.kind == "pooled"
    assert not (res / "image_tokens.safetensors").exists()  # no CA4LTR job: no tokens cached
    assert len(list((res / "cache").glob("image_pooled_*.safetensors"))) == 1
    import json

    for m in ("lgr", "fc", "zeroshot", "zeroshot_anchors"):
        assert json.loads((res / "eval" / m / "metrics.json").read_text())["image_features"] == "cached", m


def test_frozen_rerun_plans_nothing_and_ca4ltr_asks_for_tokens(built):
    out = _snakemake(built, "-n", "results/demo/report.md")
    assert "Nothing to be done" in out
    cfg = _config(ca4ltr={"sources": ["label"], "epochs": 1, "width": 16, "device": "cpu"})
    (built / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = _snakemake(built, "-n", "-p", "results/demo/eval/ca4ltr_label/metrics.json")
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}
    assert jobs == {"image_features": 1, "ca4ltr_finetune": 1, "ca4ltr_evaluate": 1}, out[-3000:]
    assert "--kind tokens" in out and "--features results/demo/image_tokens.safetensors" in out
