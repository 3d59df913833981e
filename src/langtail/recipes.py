"""Paper recipes: the built-in ablation variants (paper Table 4 / Table 10), the authors'
released-code settings and LIFT's (``lift``), as config overrides (plain data; :func:`langtail.config.variant_overrides`
applies them to a dataset wildcard ``<dataset>+<variant>``). Documented in docs/method.md.
"""
from __future__ import annotations

from typing import Any

#: Built-in ablation variants (paper Table 4 / Table 10). A dataset wildcard
#: ``<dataset>+<variant>`` applies the overrides on top of the dataset's config; the
#: config's top-level ``variants:`` adds more (or replaces these by name).
BUILTIN_VARIANTS: dict[str, dict[str, Any]] = {
    "no_cvlp": {"pretrain": {"enabled": False}},                         # Table 4 #2
    # Table 4 #3: "without CLIP weights" and, as the table's row says, pre-trained without L_dis
    "no_clip_weights": {"model": {"pretrained": "", "teacher": "", "teacher_pretrained": ""},
                        "pretrain": {"distill": "none", "lambda_ccl": 1.0}},
    "no_distill": {"pretrain": {"distill": "none", "lambda_ccl": 1.0}},   # Table 4 #4
    "cutoff": {"anchors": {"strategy": "cutoff"}},                         # Table 4 #7
    "prompt_only": {"corpus": {"sources": ["prompt"]}},                    # Table 10
    # the authors' released code (ChangyaoTian/VL-LTR), the parts that hold for every dataset;
    # per-dataset numbers (alpha, lrs, v_detach, frozen encoder): AUTHORS_CODE_DATASETS
    "authors_code": {
        "data": {"shot_bounds": "inclusive", "many_threshold": 100, "few_threshold": 20},
        "pretrain": {"ccl_reduction": "code", "distill_mode": "code", "lambda_ccl": 0.5},
        "finetune": {"lgr_qk_bias": False, "lgr_init": "authors", "tau_from_pretrain": True,
                     "visual_eval_mode": True, "warmup_epochs": 0, "lgr_attention_lr": 1e-6},
        "evaluate": {"amp": True, "group_ranking": "logit_sum", "recipe": "authors_code"},
    },
    # LIFT (Shi et al. ICML 2024, shijxcs/LIFT): lightweight fine-tuning (AdaptFormer) of the
    # visual encoder, text-initialised cosine classifier, logit-adjusted loss, SGD, 10 epochs,
    # five-crop test-time ensembling; the row is the fc_cvlp head (its encoder: the CVLP
    # checkpoint, which for LIFT's datasets is CLIP unchanged: pretrain.enabled false in
    # LIFT_DATASETS). Per-dataset backbone and adapter width: LIFT_DATASETS; docs/method.md "LIFT".
    "lift": {
        "model": {"backbone_mode": "adapter"},
        "finetune": {"heads": ["fc_cvlp"], "head_init": "text", "fc_cosine_scale": 25.0, "optimizer": "sgd",
                     "momentum": 0.9, "lr": 0.01, "weight_decay": 5e-4, "epochs": 10, "baseline_epochs": 10,
                     "warmup_epochs": 0, "loss": "logit_adjusted", "la_tau": 1.0, "sampler": "instance",
                     "freeze_visual": False, "visual_eval_mode": False, "init_from_pretrain": True},
        "evaluate": {"tta": "five_crop", "tta_expand": 24, "recipe": "lift"},
    },
}

#: ``authors_code`` overrides that depend on the dataset (``data.name``), from the released
#: R-50 configs (configs/<dataset>/{pretrain,finetune}/*_r50.py) and engine.py
#: (alpha 0.7 for iNaturalist, 0.2 otherwise). Documented in docs/method.md.
AUTHORS_CODE_DATASETS: dict[str, dict[str, Any]] = {
    "imagenet_lt": {"pretrain": {"eval_mode": True, "epochs": 50, "lr": 5e-5, "batch_size": 256, "warmup_epochs": 5},
                    "finetune": {"epochs": 50, "lr": 1e-3, "batch_size": 128, "alpha": 0.2,
                                 "freeze_visual": True, "v_detach": False}},
    "places_lt": {"pretrain": {"eval_mode": True, "epochs": 50, "lr": 5e-5, "batch_size": 256, "warmup_epochs": 5},
                  "finetune": {"epochs": 50, "lr": 1e-4, "batch_size": 128, "alpha": 0.2,
                               "freeze_visual": True, "v_detach": False}},
    "inat2018": {"pretrain": {"eval_mode": False, "epochs": 100, "lr": 5e-4, "batch_size": 256, "warmup_epochs": 5},
                 "finetune": {"epochs": 360, "lr": 2e-5, "batch_size": 128, "alpha": 0.7,
                              "freeze_visual": False, "v_detach": True}},
}

#: LIFT's model (CLIP ViT-B/16, no CVLP, no distillation) for its benchmarks
_LIFT_MODEL = {"image_encoder": "ViT-B-16", "text_encoder": "clip", "pretrained": "openai", "embed_dim": 512,
               "teacher": "", "teacher_pretrained": "", "backbone_mode": "adapter"}
_LIFT_PRETRAIN = {"enabled": False, "distill": "none", "lambda_ccl": 1.0}
#: ``lift`` overrides per dataset (``data.name``), from LIFT's configs and scripts
#: (configs/model/clip_vit_b16_peft.yaml, utils/config.py, scripts/run_tab1to4_main_results.sh):
#: adapter width 2^floor(log2(C / 2L)) with L = 12 blocks; iNaturalist 20 epochs; CIFAR at 224 px.
LIFT_DATASETS: dict[str, dict[str, Any]] = {
    "imagenet_lt": {"model": {**_LIFT_MODEL, "adapter_dim": 32}, "pretrain": _LIFT_PRETRAIN},
    "places_lt": {"model": {**_LIFT_MODEL, "adapter_dim": 8}, "pretrain": _LIFT_PRETRAIN},
    "inat2018": {"model": {**_LIFT_MODEL, "adapter_dim": 256}, "pretrain": _LIFT_PRETRAIN,
                 "finetune": {"epochs": 20, "baseline_epochs": 20}},
    "cifar100_lt": {"model": {**_LIFT_MODEL, "adapter_dim": 4}, "pretrain": _LIFT_PRETRAIN,
                    "data": {"image_size": 224, "normalize": "clip"}},
}


def lift_adapter_dim(num_classes: int, num_blocks: int = 12) -> int:
    """LIFT's default bottleneck width: ``2 ** max(0, floor(log2(C / (2 L))))``."""
    import math

    return 2 ** max(0, int(math.log2(num_classes / (num_blocks * 2))))
