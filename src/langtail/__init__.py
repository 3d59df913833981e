"""langtail: long-tailed image recognition guided by language (VL-LTR, CA4LTR).

Public Python API (imported lazily, so ``import langtail`` stays light):

- :func:`load_classifier` (:func:`langtail.predict.load_classifier`): a fine-tuned checkpoint
  as a :class:`~langtail.predict.Predictor`;
  ``langtail.load_classifier("results/demo/finetune/lgr/model.pt").predict(images)`` returns
  a DataFrame of top-k classes (paths, PIL images or ``uint8 [H, W, 3]`` arrays).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {"load_classifier": "langtail.predict", "Predictor": "langtail.predict"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'langtail' has no attribute {name!r}")


__all__ = ["Predictor", "__version__", "load_classifier"]
