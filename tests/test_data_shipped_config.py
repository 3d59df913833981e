"""The shipped ``config.yaml`` points at standard locations, not at this build's ``../shared``."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from langtail.config import dataset_config
from langtail.data.registry import get_dataset

ROOT = Path(__file__).resolve().parents[1]


def _paths(obj, where=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, f"{where}.{k}" if where else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _paths(v, f"{where}[{i}]")
    elif isinstance(obj, str):
        yield where, obj


def test_no_shipped_path_leaves_the_project():
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    bad = [(k, v) for k, v in _paths(raw) if v.startswith(("..", "/")) or "shared/" in v]
    assert bad == []


@pytest.mark.parametrize("dataset,folder", [("cifar10_lt", "data/cifar10"), ("cifar100_lt", "data/cifar100")])
def test_missing_standard_location_says_what_to_do(tmp_path, monkeypatch, dataset, folder):
    raw = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg = dataset_config(raw, dataset)
    assert cfg.data.root == folder and cfg.corpus.descriptions_file.startswith("data/text/")
    monkeypatch.chdir(tmp_path)  # a fresh checkout: nothing under data/
    with pytest.raises(FileNotFoundError) as e:
        get_dataset(cfg.data.name).build(cfg.data, tmp_path / "out")
    msg = str(e.value)
    assert folder in msg and "allow_download: true" in msg and "https://www.cs.toronto.edu/" in msg
    from langtail.corpus.descriptions import load_descriptions

    with pytest.raises(FileNotFoundError, match="corpus.descriptions_file data/text/CuPL_prompts_cifar.*SuS-X"):
        load_descriptions(cfg.corpus.descriptions_file)
