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

#: the ``model`` keys of the backbone's tuning mode (:mod:`langtail.models.tuning`, ``peft``)
TUNING_KEYS = ("backbone_mode", "partial_blocks", "lora_rank", "lora_alpha", "lora_targets", "adapter_dim")
#: the ``model`` keys that decide the visual encoder of a classifier (all it stores and reads):
#: the encoder and how its backbone trains (:data:`TUNING_KEYS`)
IMAGE_KEYS = ("image_encoder", "text_encoder", "pretrained", "embed_dim") + TUNING_KEYS


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


def drop_projection(image: torch.nn.Module) -> None:
    """Remove an image tower's projection in place: it then outputs the backbone's pooled
    features ``[B, F]`` (``embed_dim = feat_dim``)."""
    image.proj, image.embed_dim = torch.nn.Identity(), image.feat_dim


def fresh_image_encoder(cfg: ModelConfig, tuning: list[dict[str, Any]] | None = None, project: bool = True):
    """Image tower initialised from ``cfg.pretrained`` (CLIP weights or random), no CVLP, in
    ``cfg.backbone_mode``; with ``tuning`` (a saved tower's records) the tower is built plain and
    those records are replayed instead (the exact structure of a checkpoint). ``project=False``:
    no projection, the tower outputs the backbone's pooled features ``[B, F]``
    (``finetune.baseline_projection: false``, a linear probe)."""
    cfg = image_model_config(cfg)
    if tuning is not None and (tuning or cfg.backbone_mode != "frozen"):  # frozen: no structure to replay
        cfg = dataclasses.replace(cfg, backbone_mode="full")
    image = create_vl_model(cfg).image if cfg.text_encoder == "clip" else create_image_encoder(cfg)
    if not project:
        drop_projection(image)
    if tuning is not None:
        from langtail.models.peft import replay_tuning

        replay_tuning(image, tuning, cfg)
    return image


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
    from langtail.models.tuning import tuning_info

    info = tuning_info(clf.image)
    ck: dict[str, Any] = {"kind": clf.kind, "model_cfg": dataclasses.asdict(image_model_config(model_cfg)),
                          "state_dict": clf.state_dict(), "image_tuning": info["tuning"],
                          "extra": {**{k: v for k, v in info.items() if k != "tuning"},
                                    "params_head": sum(p.numel() for p in clf.head.parameters()), **extra}}
    if class_names is not None:
        ck["class_names"] = [str(c) for c in class_names]
    if preprocess is not None:
        from langtail.data.dataset import preprocess_info

        ck["preprocess"] = preprocess_info(preprocess["image_size"], preprocess["normalize"])
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
    image = fresh_image_encoder(cfg, ck.get("image_tuning", []))
    if isinstance(getattr(image, "proj", None), torch.nn.Linear) and "image.proj.weight" not in sd:
        drop_projection(image)  # saved without its projection (finetune.baseline_projection: false)
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
