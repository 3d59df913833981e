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


# ---- variants (issue #12: every builtin variant runs on every shipped dataset; #15: authors_code)

from langtail.config import check_consistency, from_dict  # noqa: E402
from langtail.recipes import AUTHORS_CODE_DATASETS, BUILTIN_VARIANTS  # noqa: E402
from langtail.stages import stage_owner  # noqa: E402


@pytest.mark.parametrize("variant", sorted(BUILTIN_VARIANTS))
def test_every_shipped_dataset_x_builtin_variant_is_runnable(variant):
    raw = load_yaml(ROOT / "config.yaml")
    for ds in raw["datasets"]:
        cfg = dataset_config(raw, f"{ds}+{variant}")  # raises ConfigError if not runnable
        check_consistency(cfg)


def test_no_clip_weights_is_paper_table4_row3():
    raw = load_yaml(ROOT / "config.yaml")
    cfg = dataset_config(raw, "imagenet_lt+no_clip_weights")
    assert cfg.model.pretrained == "" and cfg.model.teacher == ""  # no CLIP weights anywhere
    assert cfg.pretrain.distill == "none" and cfg.pretrain.lambda_ccl == 1.0  # w/o L_dis
    assert cfg.pretrain.enabled  # but with CVLP
    base = dataset_config(raw, "imagenet_lt")
    assert base.pretrain.distill == "logits" and base.model.teacher  # the base run distils


def test_distillation_without_teacher_is_rejected_naming_keys():
    raw = {"datasets": {"demo": {"pretrain": {"distill": "logits", "lambda_ccl": 0.5}}}}
    with pytest.raises(ConfigError, match="model.teacher") as e:
        dataset_config(raw, "demo")
    assert "dataset 'demo'" in str(e.value)
    raw["variants"] = {"mine": {"pretrain": {"distill": "feature"}}}
    raw["datasets"]["demo"]["pretrain"] = {}
    with pytest.raises(ConfigError, match="variant 'mine'"):
        dataset_config(raw, "demo+mine")


def test_paper_defaults():
    cfg = from_dict({})
    assert cfg.finetune.alpha == 0.5 and cfg.pretrain.distill_mode == "paper"
    assert cfg.data.shot_bounds == "inclusive" and (cfg.data.many_threshold, cfg.data.few_threshold) == (100, 20)
    assert cfg.finetune.lgr_qk_bias and cfg.finetune.lgr_init == "pytorch" and not cfg.finetune.v_detach
    assert not cfg.finetune.tau_from_pretrain and cfg.evaluate.recipe == "paper"
    raw = load_yaml(ROOT / "config.yaml")
    for ds in raw["datasets"]:  # the shipped config follows the paper: alpha = plain sum
        assert dataset_config(raw, ds).finetune.alpha == 0.5, ds


@pytest.mark.parametrize("name", sorted(AUTHORS_CODE_DATASETS))
def test_authors_code_recipe_per_dataset(name):
    raw = load_yaml(ROOT / "config.yaml")
    ds = {"inat2018": "inat2018", "imagenet_lt": "imagenet_lt", "places_lt": "places_lt"}[name]
    cfg = dataset_config(raw, f"{ds}+authors_code")
    assert cfg.evaluate.recipe == "authors_code"
    assert cfg.finetune.alpha == (0.7 if name == "inat2018" else 0.2)
    assert cfg.finetune.v_detach == (name == "inat2018")
    assert cfg.finetune.freeze_visual == (name != "inat2018")
    assert not cfg.finetune.lgr_qk_bias and cfg.finetune.lgr_init == "authors" and cfg.finetune.tau_from_pretrain
    assert cfg.pretrain.distill_mode == "code" and cfg.pretrain.ccl_reduction == "code"
    assert cfg.evaluate.amp and cfg.evaluate.group_ranking == "logit_sum"
    assert cfg.pretrain.eval_mode == (name != "inat2018") and cfg.finetune.lgr_attention_lr == 1e-6
    assert dataset_config(raw, ds).evaluate.recipe == "paper"


def test_stage_owner_compares_values():
    raw = load_yaml(ROOT / "config.yaml")
    # authors_code restates the paper's shot groups: longtail and corpus are reused, pretrain is not
    assert stage_owner(raw, "imagenet_lt+authors_code", "longtail") == "imagenet_lt"
    assert stage_owner(raw, "imagenet_lt+authors_code", "corpus") == "imagenet_lt"
    assert stage_owner(raw, "imagenet_lt+authors_code", "pretrain") == "imagenet_lt+authors_code"
    # a variant touching only an inference key reuses every training stage
    raw["variants"] = {"alpha02": {"finetune": {"alpha": 0.2}}, "same": {"finetune": {"alpha": 0.5}}}
    assert stage_owner(raw, "demo+alpha02", "embed_text") == "demo"
    assert stage_owner(raw, "demo+alpha02", "finetune") == "demo"  # alpha is read at evaluation only
    assert stage_owner(raw, "demo+alpha02", "evaluate") == "demo+alpha02"
    assert stage_owner(raw, "demo+same", "evaluate") == "demo"
