"""How the visual backbone trains (``model.backbone_mode``), one registered mode each.

A mode is ``factory(tower: ImageTower, cfg: ModelConfig) -> ImageTower``: it sets which
backbone parameters train (``requires_grad``) and may wrap or add modules (adapters,
low-rank updates). It declares the ``model`` keys it reads. The projection to the joint
space (``tower.proj``) and every head always train. :func:`apply_backbone_mode` is the one
entry point the stages call; :func:`frozen_modules` tells the training loop which
submodules must stay in eval mode (BatchNorm statistics fixed).

Built-in: ``full`` (every parameter trains), ``frozen`` (no backbone parameter trains; BN
statistics fixed), ``partial`` (the last ``model.partial_blocks`` blocks of
:func:`backbone_units` train). Other modes (``bitfit``, ``lora``, ``adapter``, ...) are
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
    """``(trained, total)`` parameter counts of ``module``; ``total`` includes the frozen backbones
    that are built at their first use (``parameter_count()``: they hold no parameter until then)."""
    total = sum(p.numel() for p in module.parameters())
    total += sum(m.parameter_count() for m in module.modules() if hasattr(m, "parameter_count"))
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


def backbone_units(backbone: nn.Module) -> list[nn.Module]:
    """The backbone's blocks in forward order, the units ``partial`` counts from the end.

    A backbone names them with ``units()`` (EfficientNet: stem, each MBConv block, head conv);
    otherwise ``stem`` + ``blocks`` (CIFAR ResNet: stem + 15 basic blocks) or, for a plain
    ``features`` Sequential (demo CNN), one unit per convolution with the layers that follow it.
    """
    if hasattr(backbone, "units"):
        return list(backbone.units())
    if isinstance(getattr(backbone, "blocks", None), nn.Sequential):
        stem = getattr(backbone, "stem", None)
        return ([stem] if stem is not None else []) + list(backbone.blocks)
    features = getattr(backbone, "features", None)
    if isinstance(features, nn.Sequential):
        units: list[list[nn.Module]] = []
        for layer in features:
            if isinstance(layer, nn.Conv2d) or not units:
                units.append([])
            units[-1].append(layer)
        return [nn.ModuleList(u) for u in units]
    raise ValueError(f"backbone_mode 'partial': {type(backbone).__name__} does not list its blocks "
                     "(give it a units() method returning them in forward order), so the last "
                     "model.partial_blocks cannot be chosen; use backbone_mode full or frozen")


@TUNING_MODES.register("partial", keys={"model": ("partial_blocks",)},
                       info={"doc": "only the last model.partial_blocks backbone blocks train (the rest is "
                                    "frozen, BN statistics fixed)"})
def partial(tower: nn.Module, cfg: ModelConfig) -> nn.Module:
    backbone = getattr(tower, "backbone", tower)
    units = backbone_units(backbone)
    n = int(cfg.partial_blocks)
    if not 0 < n <= len(units):
        raise ValueError(f"model.partial_blocks={n}: choose 1..{len(units)} (the {len(units)} blocks of "
                         f"{getattr(tower, 'name', type(backbone).__name__)})")
    frozen(tower, cfg)
    for unit in units[-n:]:
        for p in unit.parameters():
            p.requires_grad_(True)
    return tower
