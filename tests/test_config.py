"""Config: schema generated from the dataclasses, clear errors naming the bad key."""
from pathlib import Path

import pytest
import yaml

from langtail.config import ConfigError, dataset_config, load_yaml, validate_config, workflow_schema

ROOT = Path(__file__).resolve().parents[1]


def test_repo_config_is_valid_and_merges_defaults():
    raw = load_yaml(ROOT / "config.yaml")
    validate_config(raw)
    cfg = dataset_config(raw, "demo")
    assert cfg.data.name == "demo"
    assert cfg.finetune.heads == raw["defaults"]["finetune"]["heads"]
    assert cfg.pretrain.tau_init == 0.07  # untouched default


def test_schema_file_is_up_to_date():
    on_disk = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    assert on_disk == workflow_schema(), "regenerate: langtail schema --out workflow/schemas/config.schema.yaml"


def test_unknown_key_is_named():
    raw = {"datasets": {"demo": {"finetune": {"lr": 0.1, "learning_rat": 0.1}}}}
    with pytest.raises(ConfigError) as e:
        validate_config(raw)
    assert "datasets.demo.finetune" in str(e.value) and "learning_rat" in str(e.value)


def test_wrong_type_is_named():
    raw = {"datasets": {"demo": {"pretrain": {"epochs": "ten"}}}}
    with pytest.raises(ConfigError) as e:
        validate_config(raw)
    assert "datasets.demo.pretrain.epochs" in str(e.value)


def test_bad_enum_and_unknown_section():
    with pytest.raises(ConfigError, match="datasets.demo.anchors.strategy"):
        validate_config({"datasets": {"demo": {"anchors": {"strategy": "random"}}}})
    with pytest.raises(ConfigError, match="finetuning"):
        validate_config({"datasets": {"demo": {"finetuning": {}}}})
    with pytest.raises(ConfigError, match="not in the config"):
        dataset_config({"datasets": {"demo": {}}}, "cifar10_lt")
