"""Paper recipes: the built-in ablation variants (paper Table 4 / Table 10) and the authors'
released-code settings, as config overrides (plain data; :func:`langtail.config.variant_overrides`
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
