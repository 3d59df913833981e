"""How the visual backbone trains (``model.backbone_mode``), one registered mode each.

A mode is ``factory(tower: ImageTower, cfg: ModelConfig) -> ImageTower``: it sets which
backbone parameters train (``requires_grad``) and may wrap or add modules (adapters,
low-rank updates). It declares the ``model`` keys it reads. The projection to the joint
space (``tower.proj``) and every head always train. :func:`apply_backbone_mode` is the one
entry point the stages call; :func:`frozen_modules` tells the training loop which
submodules must stay in eval mode (BatchNorm statistics fixed).

Built-in: ``full`` (every parameter trains), ``frozen`` (no backbone parameter trains; BN
statistics fixed). Other modes (``partial``, ``bitfit``, ``lora``, ``adapter``, ...) are
registered in their own modules with :data:`langtail.registry.TUNING_MODES`.
"""
from __future__ import annotations

import torch.nn as nn

from langtail.config import ModelConfig
from langtail.registry import TUNING_MODES


def apply_backbone_mode(tower: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Apply ``cfg.backbone_mode`` to ``tower`` (an :class:`~langtail.models.encoders.ImageTower`)."""
    tower = TUNING_MODES.get(cfg.backbone_mode)(tower, cfg)
    tower.backbone_mode = cfg.backbone_mode
    return tower


def trainable_counts(module: nn.Module) -> tuple[int, int]:
    """``(trained, total)`` parameter counts of ``module``."""
    total = sum(p.numel() for p in module.parameters())
    trained = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return trained, total


def tuning_info(tower: nn.Module) -> dict:
    """What a checkpoint's ``extra`` stores about the tower's tuning: ``backbone_mode`` (the last
    mode applied; ``full`` when none), ``tuning`` (the structural records replayed on load:
    :func:`langtail.models.peft.replay_tuning`), ``params_trained`` / ``params_total`` (image tower)."""
    trained, total = trainable_counts(tower)
    records = list(getattr(tower, "tuning", []))
    return {"backbone_mode": getattr(tower, "backbone_mode", "full"), "tuning": records,
            "params_trained": trained, "params_total": total}


def frozen_modules(tower: nn.Module) -> list[nn.Module]:
    """Backbone submodules with parameters, none of which train: kept in eval mode while training."""
    backbone = getattr(tower, "backbone", tower)
    out = []
    for m in backbone.modules():
        own = list(m.parameters(recurse=False))
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and own and not any(p.requires_grad for p in own):
            out.append(m)
    return out


def set_frozen_eval(tower: nn.Module) -> None:
    """Call after ``model.train()``: frozen BatchNorms keep their running statistics."""
    for m in frozen_modules(tower):
        m.eval()


@TUNING_MODES.register("full", info={"doc": "every backbone parameter trains"})
def full(tower: nn.Module, cfg: ModelConfig) -> nn.Module:
    for p in tower.parameters():
        p.requires_grad_(True)
    return tower


@TUNING_MODES.register("frozen", info={"doc": "no backbone parameter trains; BN statistics fixed; "
                                              "features can be cached"})
def frozen(tower: nn.Module, cfg: ModelConfig) -> nn.Module:
    for p in getattr(tower, "backbone", tower).parameters():
        p.requires_grad_(False)
    return tower
