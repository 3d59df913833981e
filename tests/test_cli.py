"""The command line: one clear message per failure (no traceback unless --debug), exit codes."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from langtail.cli import main


def _langtail(*args: str) -> subprocess.CompletedProcess:
    env_path = str(ROOT / "src")
    return subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {env_path!r}); "
                           "from langtail.cli import main; sys.exit(main())", *args],
                          capture_output=True, text=True, timeout=300)


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if " ERROR " in ln]


def test_data_error_is_one_message_without_traceback(tmp_path):
    params = json.dumps({"data": {"name": "imagenet_lt", "root": str(tmp_path / "nowhere")}})
    p = _langtail("longtail", "--params", params, "--out", str(tmp_path / "m.parquet"))
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    errors = _errors(p.stderr)
    assert len(errors) == 2 and "nowhere" in errors[0] and "--debug" in errors[1], p.stderr
    assert not (tmp_path / "m.parquet").exists()


def test_debug_shows_the_traceback(tmp_path):
    params = json.dumps({"data": {"name": "imagenet_lt", "root": str(tmp_path / "nowhere")}})
    p = _langtail("--debug", "longtail", "--params", params, "--out", str(tmp_path / "m.parquet"))
    assert p.returncode != 0 and "Traceback" in p.stderr


def test_config_error_exits_2_naming_the_key(tmp_path):
    p = _langtail("longtail", "--params", json.dumps({"data": {"imbalance": 3}}), "--out", str(tmp_path / "m"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "imbalance" in p.stderr and "allowed" in p.stderr
    p = _langtail("longtail", "--params", "{not json", "--out", str(tmp_path / "m"))
    assert p.returncode == 2 and "not valid JSON" in p.stderr


def test_ctrl_c_exits_130_with_a_resume_hint(monkeypatch, tmp_path, caplog):
    from langtail.stages import longtail

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(longtail, "run", interrupted)
    assert main(["longtail", "--out", str(tmp_path / "m.parquet")]) == 130
    assert any("interrupted" in r.getMessage() for r in caplog.records)


def test_unknown_dataset_names_the_known_ones(tmp_path, caplog):
    assert main(["longtail", "--params", json.dumps({"data": {"name": "imagenet_xl"}}),
                 "--out", str(tmp_path / "m.parquet")]) == 1
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "imagenet_xl" in text and "imagenet_lt" in text


@pytest.mark.parametrize("stage", ["longtail", "finetune", "report"])
def test_help_names_the_stage_options(stage, capsys):
    with pytest.raises(SystemExit):
        main([stage, "--help"])
    assert "--params" in capsys.readouterr().out
