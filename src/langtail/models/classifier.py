"""Classifier factory: visual encoder + recognition head, keyed by head name.

Heads are the parts of :data:`langtail.registry.HEADS` (built-ins in
:mod:`langtail.models.heads`: ``lgr`` (VL-LTR), ``fc`` (vision-only baseline, no CVLP),
``fc_cvlp`` (FC on the CVLP encoder, Table 4 #5), ``knn`` (Table 4 #6); more from plugins,
docs/extending.md). A head's options are its factory's keyword arguments.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Sequence

import torch

from langtail import io
from langtail.config import ModelConfig
from langtail.models.encoders import create_image_encoder, create_vl_model
from langtail.models.heads import Classifier
from langtail.registry import HEADS, Part

#: the ``model`` keys that decide the visual encoder of a classifier (all it stores and reads)
IMAGE_KEYS = ("image_encoder", "text_encoder", "pretrained", "embed_dim")


def image_model_config(cfg: ModelConfig) -> ModelConfig:
    """A ``ModelConfig`` with only :data:`IMAGE_KEYS` taken from ``cfg`` (the rest default)."""
    return ModelConfig(**{k: getattr(cfg, k) for k in IMAGE_KEYS})


def head_option_names(part: Part) -> tuple[str, ...]:
    """The options of a head: its factory's keyword parameters after ``(dim, num_classes, text_emb, mask)``."""
    params = list(inspect.signature(part.factory).parameters.values())[4:]
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def create_head(kind: str, dim: int, num_classes: int, text_emb: torch.Tensor | None, mask: torch.Tensor | None,
                tau: float | None = None, **options: Any) -> torch.nn.Module:
    """Head ``kind`` (a :data:`~langtail.registry.HEADS` name) for ``dim``-d image embeddings;
    ``text_emb [C, M, D]`` / ``mask [C, M]`` for the language-guided heads. Options the head
    does not take (e.g. ``tau`` for ``fc``) are ignored, so one call fits every head."""
    part = HEADS.get(kind)
    if tau is not None:
        options["tau"] = tau
    names = head_option_names(part)
    return part(dim, num_classes, text_emb, mask, **{k: v for k, v in options.items() if k in names})


def fresh_image_encoder(cfg: ModelConfig):
    """Image tower initialised from ``cfg.pretrained`` (CLIP weights or random), no CVLP."""
    cfg = image_model_config(cfg)
    return create_vl_model(cfg).image if cfg.text_encoder == "clip" else create_image_encoder(cfg)


def save_classifier(path, clf: Classifier, model_cfg: ModelConfig, extra: dict[str, Any],
                    class_names: Sequence[str] | None = None, preprocess: dict[str, Any] | None = None) -> None:
    """Write a fine-tuned classifier (safe-loader checkpoint, :func:`langtail.io.torch_save`).

    Keys: ``kind``, ``model_cfg`` (:data:`IMAGE_KEYS`), ``state_dict`` (with the head's anchor
    buffers), ``extra``; and, for inference without the manifest (:mod:`langtail.predict`),
    ``class_names`` (``C`` strings, label order) and ``preprocess`` (``image_size``,
    ``normalize``: the evaluation transform). Checkpoints written before those two keys
    existed still load; :func:`langtail.predict.load_classifier` then asks for them.
    """
    ck: dict[str, Any] = {"kind": clf.kind, "model_cfg": dataclasses.asdict(image_model_config(model_cfg)),
                          "state_dict": clf.state_dict(), "extra": extra}
    if class_names is not None:
        ck["class_names"] = [str(c) for c in class_names]
    if preprocess is not None:
        ck["preprocess"] = {"image_size": int(preprocess["image_size"]), "normalize": str(preprocess["normalize"])}
    io.torch_save(path, ck)


def read_classifier(path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a fine-tuned classifier and return it with its raw checkpoint dict (the stages'
    reader; head buffers (anchor embeddings) come from the checkpoint). The public API for
    inference is :func:`langtail.load_classifier` (a :class:`~langtail.predict.Predictor`)."""
    ck = io.torch_load(path)
    return classifier_from_checkpoint(ck, path, device), ck


def classifier_from_checkpoint(ck: dict[str, Any], path, device: str | torch.device = "cpu") -> Classifier:
    """The classifier of an already loaded checkpoint dict ``ck`` (``path`` names it in errors).
    The head's anchors come from its declared ``info["anchors"]`` buffer, its options from ``extra``."""
    cfg = dataclasses.replace(ModelConfig(**ck["model_cfg"]), pretrained="")
    sd = ck["state_dict"]
    image = fresh_image_encoder(cfg)
    ex = ck["extra"]
    part = HEADS.get(ck["kind"])
    buf = part.info.get("anchors")
    emb = sd.get(f"head.{buf}") if buf else None
    mask = sd.get("head.mask") if buf else None
    head = create_head(ck["kind"], image.embed_dim, ex["num_classes"], emb, mask,
                       **{k: ex[k] for k in head_option_names(part) if k in ex})
    clf = Classifier(image, head, ck["kind"])
    try:
        clf.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: checkpoint does not match the {ck['kind']!r} classifier it describes "
                         f"({cfg.image_encoder}): {e}; rerun the finetune stage") from e
    return clf.to(device).eval()


def set_visual_mode(clf: Classifier, freeze: bool, eval_mode: bool) -> None:
    """Call at every training step (after ``clf.train()``): a frozen visual encoder (``freeze``,
    no gradients) or ``eval_mode`` (the authors' code) keeps it in eval mode, so BatchNorm
    statistics do not move; the head stays in training mode."""
    if freeze:
        for p in clf.image.parameters():
            p.requires_grad_(False)
    if freeze or eval_mode:
        clf.image.eval()
