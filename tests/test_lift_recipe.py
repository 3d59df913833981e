"""The built-in ``lift`` recipe (issue #23): LIFT's published settings per benchmark, the generic
part on every shipped dataset, and the report / ablation rows that name it."""
from pathlib import Path

import pytest

from langtail.config import check_consistency, dataset_config, load_yaml
from langtail.recipes import LIFT_DATASETS, lift_adapter_dim
from langtail.stages import stage_owner

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name,classes", [("imagenet_lt", 1000), ("places_lt", 365), ("inat2018", 8142),
                                          ("cifar100_lt", 100)])
def test_lift_recipe_per_dataset(name, classes):
    raw = load_yaml(ROOT / "config.yaml")
    cfg = dataset_config(raw, f"{name}+lift")
    check_consistency(cfg)
    m, ft, ev = cfg.model, cfg.finetune, cfg.evaluate
    assert (m.image_encoder, m.text_encoder, m.pretrained) == ("ViT-B-16", "clip", "openai")
    assert m.backbone_mode == "adapter" and m.adapter_dim == lift_adapter_dim(classes) == LIFT_DATASETS[name]["model"]["adapter_dim"]
    assert not cfg.pretrain.enabled and not m.teacher  # no CVLP: fc_cvlp runs on CLIP unchanged
    assert ft.epochs == (20 if name == "inat2018" else 10) and ft.lr == 0.01 and ft.optimizer == "sgd"
    assert ft.weight_decay == 5e-4 and ft.momentum == 0.9 and ft.batch_size == 128
    assert ft.loss == "logit_adjusted" and ft.la_tau == 1.0 and ft.fc_cosine_scale == 25.0
    assert ft.head_init == "text" and ft.heads == ["fc_cvlp"]
    assert (ev.tta, ev.tta_expand, ev.recipe) == ("five_crop", 24, "lift") and cfg.data.image_size == 224
    assert stage_owner(raw, f"{name}+lift", "pretrain") == f"{name}+lift"
    if name != "cifar100_lt":  # same split file and evaluation as the VL-LTR run
        assert stage_owner(raw, f"{name}+lift", "longtail") == name


def test_lift_crop_margin_scales_with_the_image_size():
    raw = load_yaml(ROOT / "config.yaml")
    cfg = dataset_config(raw, "demo+lift")
    assert cfg.data.image_size == 32 and cfg.evaluate.tta_expand == 3  # 24 px at 224 -> 3 px at 32


def test_lift_rows_in_report_and_ablations():
    from langtail.config import from_dict
    from langtail.report.markdown import accuracy_section, row_kind
    from langtail.stages.ablations import rows_needed

    r = {"overall": 50.0, "many": 60.0, "medium": 50.0, "few": 40.0, "recipe": "lift", "params_m": 1.0,
         "gflops": 0.1, "tta": "five_crop", "forward_passes": 5, "backbone_mode": "adapter",
         "params_trained": 1000, "params_total": 100000}
    assert row_kind("fc_cvlp", r) == "lift" and row_kind("lgr", r) == "lgr"
    assert row_kind("fc", {"backbone_mode": "lora", "head_init": "text"}) == "lift"
    assert row_kind("fc", {"backbone_mode": "full", "head_init": "random"}) == "fc"
    text = "\n".join(accuracy_section({"fc_cvlp": r, "lgr": {**r, "recipe": "paper", "tta": "none",
                                                              "forward_passes": 1, "backbone_mode": "full"}}, 32))
    assert "LIFT (lightweight fine-tuning" in text and "| five_crop | 5 | adapter | 0.00 M / 0.10 M (1.0 %) |" in text
    cfg = from_dict({"report": {"ablations": ["lift"]}})
    assert ("lift", "fc_cvlp") in rows_needed(cfg) and (None, "lgr") in rows_needed(cfg)


def test_lift_row_in_the_ca4ltr_study_table():
    from langtail.config import from_dict
    from langtail.report.ca4ltr import study_rows, study_table

    acc = {"overall": 40.0, "many": 50.0, "medium": 40.0, "few": 30.0}
    cfg = from_dict({"ca4ltr": {"sources": ["label"]}})
    rows = study_rows({"label": {**acc, "text_tokens": 1, "epochs": 3}}, cfg, {**acc, "overall": 35.0}, acc,
                      {**acc, "overall": 45.0, "backbone_mode": "adapter", "head_init": "text", "epochs": 10})
    assert [r["key"] for r in rows] == ["fc", "lgr", "lift", "ca4ltr_label"]
    assert rows[2]["delta"] == 10.0 and "LIFT (adapter" in rows[2]["model"] and rows[2]["epochs"] == 10
    assert "LIFT (adapter, text-init cosine head)" in study_table(rows)
