"""The ``lift`` recipe through the Snakemake workflow on the tiny demo (issue #23): results/demo+lift/
report.md labels its run LIFT with its tuning mode, trained/total parameters and TTA cost, and
results/demo/ablations.md puts the LIFT row beside VL-LTR and the FC baseline (one split file,
one evaluation). About 28 min on a loaded 2-core machine (the main demo chain + the lift chain)."""
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from test_workflow import ROOT, SNAKEMAKE, _config


def check_lift_results(res: Path) -> None:
    """The assertions on a results/ tree built with ``report.ablations: [lift]``."""
    m = json.loads((res / "demo+lift/eval/fc_cvlp/metrics.json").read_text())
    assert m["recipe"] == "lift" and m["backbone_mode"] == "adapter" and m["head_init"] == "text"
    assert m["tta"] == "five_crop" and m["forward_passes"] == 5 and m["tta_expand"] == 3
    assert m["preprocess"]["interpolation"] == "bilinear" and m["preprocess"]["image_size"] == 35
    assert 0 < m["params_trained"] < m["params_total"] and m["train_seconds"] > 0 and m["epochs"] == 10
    report = (res / "demo+lift/report.md").read_text()
    assert "LIFT (lightweight fine-tuning" in report and "| five_crop | 5 | adapter |" in report
    abl = (res / "demo/ablations.md").read_text()
    assert "| LIFT | LIFT: lightweight" in abl and "| #1 | full: CVLP + AnSS + LGR" in abl
    # the LIFT run shares the base run's split: the manifest is not rebuilt for the variant
    assert not (res / "demo+lift/manifest.parquet").exists()


@pytest.mark.slow
def test_lift_recipe_runs_to_a_report(tmp_path):
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(_config(report={"ablations": ["lift"]})))
    cmd = SNAKEMAKE + ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path), "--cores", "2",
                       "results/demo+lift/report.md", "results/demo/ablations.md"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stderr[-4000:]
    check_lift_results(tmp_path / "results")
