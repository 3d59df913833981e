"""Classifier factory: visual encoder + recognition head, keyed by head name.

Head names (finetune runs): ``lgr`` (VL-LTR), ``fc`` (vision-only baseline, no CVLP),
``fc_cvlp`` (FC on the CVLP encoder, Table 4 #5), ``knn`` (Table 4 #6).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from langtail import io
from langtail.config import HEAD_NAMES, ModelConfig
from langtail.models.encoders import create_image_encoder, create_vl_model
from langtail.models.heads import Classifier, FCHead, KNNHead, LGRHead

#: the ``model`` keys that decide the visual encoder of a classifier (all it stores and reads)
IMAGE_KEYS = ("image_encoder", "text_encoder", "pretrained", "embed_dim")


def image_model_config(cfg: ModelConfig) -> ModelConfig:
    """A ``ModelConfig`` with only :data:`IMAGE_KEYS` taken from ``cfg`` (the rest default)."""
    return ModelConfig(**{k: getattr(cfg, k) for k in IMAGE_KEYS})


def create_head(kind: str, dim: int, num_classes: int, text_emb: torch.Tensor | None, mask: torch.Tensor | None,
                tau: float = 0.07, knn_k: int = 0) -> torch.nn.Module:
    if kind in ("fc", "fc_cvlp"):
        return FCHead(dim, num_classes)
    if text_emb is None:
        raise ValueError(f"head {kind!r} needs anchor text embeddings")
    if kind == "lgr":
        return LGRHead(text_emb, mask, tau)
    if kind == "knn":
        return KNNHead(text_emb, mask, tau, knn_k)
    raise KeyError(f"unknown head {kind!r}; known: {', '.join(HEAD_NAMES)}")


def fresh_image_encoder(cfg: ModelConfig):
    """Image tower initialised from ``cfg.pretrained`` (CLIP weights or random), no CVLP."""
    cfg = image_model_config(cfg)
    return create_vl_model(cfg).image if cfg.text_encoder == "clip" else create_image_encoder(cfg)


def save_classifier(path, clf: Classifier, model_cfg: ModelConfig, extra: dict[str, Any]) -> None:
    io.torch_save(path, {"kind": clf.kind, "model_cfg": dataclasses.asdict(image_model_config(model_cfg)),
                         "state_dict": clf.state_dict(), "extra": extra})


def load_classifier(path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a fine-tuned classifier; head buffers (anchor embeddings) come from the checkpoint."""
    ck = io.torch_load(path)
    cfg = dataclasses.replace(ModelConfig(**ck["model_cfg"]), pretrained="")
    sd = ck["state_dict"]
    image = fresh_image_encoder(cfg)
    ex = ck["extra"]
    emb = sd.get("head.text_emb", sd.get("head.anchors"))
    mask = sd.get("head.mask")
    head = create_head(ck["kind"], image.embed_dim, ex["num_classes"], emb, mask, ex.get("tau", 0.07),
                       ex.get("knn_k", 0))
    clf = Classifier(image, head, ck["kind"])
    clf.load_state_dict(sd, strict=False)
    return clf.to(device).eval(), ck
