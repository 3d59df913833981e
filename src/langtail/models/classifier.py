"""Classifier factory: visual encoder + recognition head, keyed by head name.

Head names (finetune runs): ``lgr`` (VL-LTR), ``fc`` (vision-only baseline, no CVLP),
``fc_cvlp`` (FC on the CVLP encoder, Table 4 #5), ``knn`` (Table 4 #6).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

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


#: LGR switches stored in a fine-tuned checkpoint's ``extra`` (key -> LGRHead argument); a
#: checkpoint without them was trained with the defaults.
LGR_OPTIONS = {"lgr_qk_bias": "qk_bias", "lgr_init": "init", "v_detach": "v_detach"}


def create_head(kind: str, dim: int, num_classes: int, text_emb: torch.Tensor | None, mask: torch.Tensor | None,
                tau: float = 0.07, knn_k: int = 0, lgr_qk_bias: bool = True, lgr_init: str = "pytorch",
                v_detach: bool = False, fc_cosine_scale: float = 0.0) -> torch.nn.Module:
    """Head ``kind`` for ``dim``-d image embeddings; ``text_emb [C, M, D]`` / ``mask [C, M]`` for lgr, knn.
    ``fc_cosine_scale > 0``: fc / fc_cvlp as a cosine classifier with that scale (LDAM)."""
    if kind in ("fc", "fc_cvlp"):
        return FCHead(dim, num_classes, fc_cosine_scale)
    if text_emb is None:
        raise ValueError(f"head {kind!r} needs anchor text embeddings")
    if kind == "lgr":
        return LGRHead(text_emb, mask, tau, qk_bias=lgr_qk_bias, init=lgr_init, v_detach=v_detach)
    if kind == "knn":
        return KNNHead(text_emb, mask, tau, knn_k)
    raise KeyError(f"unknown head {kind!r}; known: {', '.join(HEAD_NAMES)}")


def fresh_image_encoder(cfg: ModelConfig):
    """Image tower initialised from ``cfg.pretrained`` (CLIP weights or random), no CVLP."""
    cfg = image_model_config(cfg)
    return create_vl_model(cfg).image if cfg.text_encoder == "clip" else create_image_encoder(cfg)


def weights_id(state_dict: dict[str, torch.Tensor]) -> str:
    """16 hex digits of sha256 over a state dict's names and tensor bytes (key order): the
    same weights give the same id wherever they were trained or stored (a checkpoint's
    ``extra["run_id"]``, which an evaluation records as ``checkpoint_id``)."""
    import hashlib

    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode() + b"\0" + str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


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


def load_classifier(path, device: str | torch.device = "cpu") -> tuple[Classifier, dict[str, Any]]:
    """Rebuild a fine-tuned classifier; head buffers (anchor embeddings) come from the checkpoint."""
    ck = io.torch_load(path)
    return classifier_from_checkpoint(ck, path, device), ck


def classifier_from_checkpoint(ck: dict[str, Any], path, device: str | torch.device = "cpu") -> Classifier:
    """The classifier of an already loaded checkpoint dict ``ck`` (``path`` names it in errors)."""
    cfg = dataclasses.replace(ModelConfig(**ck["model_cfg"]), pretrained="")
    sd = ck["state_dict"]
    image = fresh_image_encoder(cfg)
    ex = ck["extra"]
    emb = sd.get("head.text_emb", sd.get("head.anchors"))
    mask = sd.get("head.mask")
    lgr = {k: ex[k] for k in (*LGR_OPTIONS, "fc_cosine_scale") if k in ex}
    head = create_head(ck["kind"], image.embed_dim, ex["num_classes"], emb, mask, ex.get("tau", 0.07),
                       ex.get("knn_k", 0), **lgr)
    clf = Classifier(image, head, ck["kind"])
    try:
        clf.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: checkpoint does not match the {ck['kind']!r} classifier it describes "
                         f"({cfg.image_encoder}): {e}; rerun the finetune stage") from e
    return clf.to(device).eval()


def pretrain_tau(pretrain_path) -> float:
    """The learned CVLP temperature ``tau = 1 / exp(logit_scale)`` of a pretrain checkpoint."""
    ck = io.torch_load(pretrain_path)
    ls = ck.get("state_dict", {}).get("logit_scale")
    if ls is None:
        raise ValueError(f"{pretrain_path}: no 'logit_scale' in the checkpoint; it is not a CVLP checkpoint "
                         "(set finetune.tau_from_pretrain: false to use finetune.tau)")
    return float(torch.exp(-torch.as_tensor(ls, dtype=torch.float64)))


def finetune_tau(fc, pretrain_path) -> float:
    """Text-branch temperature of a fine-tuning run: ``fc.tau`` (fixed, paper default) or, with
    ``fc.tau_from_pretrain`` (authors' code), the learned tau of ``pretrain_path``."""
    return pretrain_tau(pretrain_path) if fc.tau_from_pretrain else float(fc.tau)


def lgr_lr_overrides(clf: Classifier, attention_lr: float) -> dict[str, float]:
    """``{param-name prefix: lr}`` for :func:`langtail.train.loop.param_groups`: the LGR head's
    LayerNorms and Q/K projections at ``attention_lr`` (the authors' ``text_lr``); ``{}`` when 0
    or for other heads."""
    if attention_lr <= 0 or not isinstance(clf.head, LGRHead):
        return {}
    return {f"head.{m}.": attention_lr for m in ("ln_q", "q", "ln_k", "k")}


def set_visual_mode(clf: Classifier, freeze: bool, eval_mode: bool) -> None:
    """Call at every training step (after ``clf.train()``): a frozen visual encoder (``freeze``,
    no gradients) or ``eval_mode`` (the authors' code) keeps it in eval mode, so BatchNorm
    statistics do not move; the head stays in training mode."""
    if freeze:
        for p in clf.image.parameters():
            p.requires_grad_(False)
    if freeze or eval_mode:
        clf.image.eval()
