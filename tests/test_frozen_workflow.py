"""The demo workflow under ``model.backbone_mode: frozen`` runs to report.md on cached image features."""
import re
from pathlib import Path

import pytest
import yaml

from conftest import TINY
from test_workflow import _snakemake

pytestmark = pytest.mark.slow  # a full Snakemake run (~13 jobs); the stages in-process: test_frozen_features.py


def _config(**over) -> dict:
    demo = {k: dict(v) for k, v in TINY.items()}
    demo["model"]["backbone_mode"] = "frozen"
    demo["finetune"]["heads"] = ["lgr"]  # the fc head on cached features: tests/test_frozen_features.py
    for sec, vals in over.items():
        demo.setdefault(sec, {}).update(vals)
    return {"results_dir": "results", "datasets": {"demo": demo}}


def _output(wd: Path, *args: str) -> str:
    """stdout + stderr of a Snakemake run that must succeed."""
    p = _snakemake(wd, *args)
    return p.stdout + p.stderr


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
    assert "VL-LTR" in report
    assert "Image backbone: `frozen`: features computed once" in report and "no augmentation" in report
    f = ImageFeatures(res / "image_features.safetensors")
    assert f.kind == "pooled"
    assert not (res / "image_tokens.safetensors").exists()  # no CA4LTR job: no tokens cached
    assert len(list((res / "cache").glob("image_pooled_*.safetensors"))) == 1
    import json

    for m in ("lgr", "zeroshot", "zeroshot_anchors"):
        assert json.loads((res / "eval" / m / "metrics.json").read_text())["image_features"] == "cached", m


def test_frozen_rerun_plans_nothing_and_ca4ltr_asks_for_tokens(built):
    out = _output(built, "-n", "results/demo/report.md")
    assert "Nothing to be done" in out
    cfg = _config(ca4ltr={"sources": ["label"], "epochs": 1, "width": 16, "device": "cpu"})
    (built / "config.yaml").write_text(yaml.safe_dump(cfg))
    out = _output(built, "-n", "-p", "results/demo/eval/ca4ltr_label/metrics.json")
    jobs = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M) if m.group(1) != "total"}
    assert jobs == {"image_features": 1, "ca4ltr_finetune": 1, "ca4ltr_evaluate": 1}, out[-3000:]
    assert "--kind tokens" in out and "--features results/demo/image_tokens.safetensors" in out
