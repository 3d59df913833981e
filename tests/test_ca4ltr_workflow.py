"""CA4LTR rules: inputs per source, per-run params, and the dry-run plan of the study target."""
from __future__ import annotations

import dataclasses
import re
import subprocess
import sys

import yaml

from conftest import ROOT, TINY
from langtail.config import DatasetConfig
from langtail.stages import ca4ltr_evaluate, ca4ltr_finetune


def test_rule_inputs_per_source():
    cfg = DatasetConfig()
    assert ca4ltr_finetune.inputs(cfg, "label") == ()
    assert ca4ltr_finetune.inputs(cfg, "description") == ("anchors",)
    assert ca4ltr_finetune.inputs(cfg, "nonsense") == ("anchors",)  # word counts of the description text
    assert ca4ltr_finetune.inputs(cfg, "caption") == ("captions",)
    cvlp = dataclasses.replace(cfg, ca4ltr=dataclasses.replace(cfg.ca4ltr, init="cvlp"))
    assert "pretrain" in ca4ltr_finetune.inputs(cvlp, "label")
    assert ca4ltr_evaluate.inputs(cvlp, "label") == () and ca4ltr_evaluate.inputs(cvlp, "caption") == ("captions",)


def test_study_target_plans_every_source(tmp_path):
    demo = {k: dict(v) for k, v in TINY.items()}
    demo["captions"] = {"enabled": True, "model": "tiny-random", "splits": ["train", "test"], "per_class": 0}
    demo["ca4ltr"] = {"sources": ["label", "caption", "nonsense"], "epochs": 1, "width": 16, "device": "cpu"}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"results_dir": "results", "datasets": {"demo": demo}}))
    p = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                        str(tmp_path), "-n", "-p", "results/demo/text_quality.md"],
                       capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", out, re.M)}
    assert counts["ca4ltr_finetune"] == 3 and counts["ca4ltr_evaluate"] == 3 and counts["text_quality"] == 1
    assert counts["captions"] == 1 and counts["finetune"] == 2  # Pure (fc) and VL-LTR (lgr) rows
    assert "ca4ltr-finetune" in out and "--source caption" in out and "--captions results/demo/captions.parquet" in out
    assert re.search(r"--source nonsense --manifest \S+ --anchors results/demo/anchors.parquet", out)
    assert "--lgr results/demo/eval/lgr" in out
