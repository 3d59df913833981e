"""A 2 x 2 sweep run by the workflow on the tiny demo: validation carved from train, best_val
checkpoints, two seeds per cell; the sweep table has one row per cell with its spread."""
import pytest
import yaml

from conftest import TINY
from test_workflow import _snakemake


@pytest.mark.slow  # 16 training/evaluation jobs (~6 min on 2 busy cores); the dry run is in test_workflow.py
def test_two_by_two_sweep_table_has_every_cell_with_its_spread(tmp_path):
    demo = {k: dict(v) for k, v in TINY.items()}
    demo["data"]["val_from_train"] = 0.2
    # the fc baseline reads only the manifest: the sweep needs longtail + the cells' jobs
    demo["finetune"].update(heads=["fc"], seeds=[0, 1], select="best_val", epochs=2)
    raw = {"results_dir": "results", "datasets": {"demo": demo},
           "sweeps": {"grid": {"finetune.lr": [1e-3, 3e-3], "finetune.weight_decay": [0.0, 0.05]}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(raw))
    _snakemake(tmp_path, "--cores", "2", "results/demo/sweeps/grid.md")
    text = (tmp_path / "results/demo/sweeps/grid.md").read_text()
    rows = [ln for ln in text.splitlines() if ln.startswith("| ") and "grid_" in ln]
    assert len(rows) == 4, text
    for ln in rows:  # test overall and val overall: mean ± std over the two seeds
        assert ln.count(" ± ") >= 2 and "| 2 |" in ln, ln
    assert sum("(best val)" in ln for ln in rows) == 1 and "Best on validation: **grid_" in text
    assert "| 0.001 | 0.0 |" in rows[0] and "| 0.003 | 0.05 |" in rows[3]
    for cell in range(4):  # every cell trained in its own folder, with its event files; cell 1
        owner = "demo" if cell == 1 else f"demo+grid_{cell}"  # restates the base values: the base run
        for rep in ("", "/seed1"):
            assert any((tmp_path / f"results/{owner}/finetune/fc{rep}/tb").glob("events.out.tfevents.*"))
    assert not (tmp_path / "results/demo+grid_1").exists()
