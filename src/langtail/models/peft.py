"""Lightweight fine-tuning of the visual backbone (LIFT, Shi et al. ICML 2024): ``bitfit``, ``lora``, ``adapter``.

Each is a :data:`langtail.registry.TUNING_MODES` part, ``factory(tower, cfg) -> tower``: it
adds its modules to ``tower.backbone`` (if not already there with the same settings, so
applying a mode twice is a no-op), then lets only its own parameters train; the projection
``tower.proj`` (and every head) always trains. Every application is recorded in
``tower.tuning`` (a list of ``{"mode": name, <its model keys>}``), stored in checkpoints and
replayed by :func:`replay_tuning` to rebuild the same structure before loading weights.

- ``bitfit`` (Ben Zaken et al. 2022): only the backbone's biases train (LayerNorm / BatchNorm
  biases included, as LIFT's ``bias_tuning`` over every parameter named ``*bias``).
- ``lora`` (Hu et al. 2022): ``W + (alpha / r) B A`` on the weights named by
  ``model.lora_targets``, a parametrisation (:mod:`torch.nn.utils.parametrize`), so it also
  covers weights a module reads directly (``nn.MultiheadAttention.in_proj_weight``).
  Targets: ``q``, ``k``, ``v`` (rows of the packed attention input projection
  ``in_proj_weight`` / timm ``qkv``), ``out`` (attention output projection), ``mlp`` (every
  linear of a block's MLP), ``conv`` (every convolution; LoRA of the flattened
  ``[out, in*k*k]`` kernel, the ConvLoRA form), ``auto`` = ``q, v`` (LIFT) on transformers and
  ``conv`` on CNNs. ``A`` Kaiming-uniform, ``B`` zero, so the output is unchanged at step 0.
  :func:`merge_lora` folds ``B A`` into the weights (same outputs, no extra parameters).
- ``adapter``: AdaptFormer (Chen et al. 2022) as LIFT uses it: in every transformer block a
  bottleneck ``scale * up(ReLU(down(LN(x))))`` (dim ``model.adapter_dim``; ``up`` zero,
  learnable ``scale`` 1) on the block's residual stream before its MLP norm, added to the MLP
  output. CNN backbones (no transformer block): the Conv-Adapter form (Chen et al. 2022,
  "Conv-Adapter"): a parallel ``1x1 conv(stride) -> ReLU -> 1x1 conv`` bottleneck beside every
  spatial convolution (kernel > 1), zero-initialised, with a learnable scale.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrize

from langtail.config import ModelConfig
from langtail.registry import TUNING_MODES

#: the model keys each lightweight mode reads (besides ``backbone_mode``)
LORA_KEYS = ("lora_rank", "lora_alpha", "lora_targets")
ADAPTER_KEYS = ("adapter_dim",)
LORA_TARGETS = ("auto", "q", "k", "v", "out", "mlp", "conv")


def _backbone(tower: nn.Module) -> nn.Module:
    return getattr(tower, "backbone", tower)


def train_only(tower: nn.Module, trains: Callable[[str, nn.Parameter], bool]) -> None:
    """Backbone parameters train iff ``trains(name, p)``; everything outside the backbone trains."""
    back = _backbone(tower)
    for p in tower.parameters():
        p.requires_grad_(True)
    for n, p in back.named_parameters():
        p.requires_grad_(bool(trains(n, p)))


def _record(tower: nn.Module, rec: dict[str, Any]) -> bool:
    """Append ``rec`` to ``tower.tuning``; False if an equal record is already there (structure exists)."""
    hist = list(getattr(tower, "tuning", []))
    if rec in hist:
        return False
    tower.tuning = hist + [rec]
    return True


# ----------------------------------------------------------------------------- bitfit


@TUNING_MODES.register("bitfit", info={"doc": "only the backbone's biases train (BitFit)"})
def bitfit(tower: nn.Module, cfg: ModelConfig) -> nn.Module:
    _record(tower, {"mode": "bitfit"})
    if not any(n.split(".")[-1] == "bias" for n, _ in _backbone(tower).named_parameters()):
        raise ValueError(f"backbone_mode bitfit: {getattr(tower, 'name', 'backbone')} has no bias parameter")
    train_only(tower, lambda n, p: n.split(".")[-1] == "bias")
    return tower


# ----------------------------------------------------------------------------- lora


class LoRADelta(nn.Module):
    """Parametrisation ``W -> W + (alpha / r) * B A`` on row blocks ``rows`` of ``W [O, ...]``.

    One ``(A [r, fan_in], B [n_rows, r])`` pair per row block (q, k, v of a packed projection);
    rows outside every block are unchanged."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float, rows: list[tuple[int, int]]):
        super().__init__()
        fan_in = weight[0].numel()
        self.rows = [tuple(r) for r in rows]
        self.shape = tuple(weight.shape)
        self.scaling = float(alpha) / rank
        self.A = nn.ParameterList([nn.Parameter(torch.empty(rank, fan_in, dtype=weight.dtype)) for _ in rows])
        self.B = nn.ParameterList([nn.Parameter(torch.zeros(e - s, rank, dtype=weight.dtype)) for s, e in rows])
        for a in self.A:
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))

    def delta(self) -> torch.Tensor:
        """``[O, fan_in]`` update (zero rows outside the blocks)."""
        parts, at = [], 0
        out = self.shape[0]
        fan_in = self.A[0].shape[1]
        for (s, e), a, b in zip(self.rows, self.A, self.B):
            if s > at:
                parts.append(a.new_zeros(s - at, fan_in))
            parts.append(b @ a)
            at = e
        if at < out:
            parts.append(self.A[0].new_zeros(out - at, fan_in))
        return torch.cat(parts) * self.scaling

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + self.delta().view(self.shape).to(w.dtype)


def _attn_weights(back: nn.Module) -> Iterable[tuple[nn.Module, str, int]]:
    """``(module, weight name, embed dim)`` of packed q/k/v projections and ``(module, name, 0)`` of outputs."""
    for name, m in back.named_modules():
        if isinstance(m, nn.MultiheadAttention) and m.in_proj_weight is not None:
            yield m, "in_proj_weight", m.embed_dim
            yield m.out_proj, "weight", 0
        elif name.split(".")[-1] in ("attn", "attention") and isinstance(getattr(m, "qkv", None), nn.Linear):
            yield m.qkv, "weight", m.qkv.in_features  # timm Attention
            if isinstance(getattr(m, "proj", None), nn.Linear):
                yield m.proj, "weight", 0


def _lora_sites(back: nn.Module, targets: list[str]) -> list[tuple[nn.Module, str, list[tuple[int, int]]]]:
    """``(module, weight name, row blocks)`` of every weight ``targets`` select (adapters excluded)."""
    bad = [t for t in targets if t not in LORA_TARGETS]
    if bad:
        raise ValueError(f"model.lora_targets: unknown {bad}; known: {', '.join(LORA_TARGETS)}")
    attn = list(_attn_weights(back))
    if "auto" in targets:
        targets = [t for t in targets if t != "auto"] + (["q", "v"] if attn else ["conv"])
    sites: list = []
    qkv = [i for i, t in enumerate("qkv") if t in targets]
    for m, wname, dim in attn:
        if dim and qkv:
            sites.append((m, wname, [(i * dim, (i + 1) * dim) for i in qkv]))
        elif not dim and "out" in targets:
            sites.append((m, wname, [(0, getattr(m, wname).shape[0])]))
    for name, m in back.named_modules():
        if "adapter" in name:
            continue
        if "mlp" in targets and ".mlp" in f".{name}" and isinstance(m, nn.Linear):
            sites.append((m, "weight", [(0, m.out_features)]))
        if "conv" in targets and isinstance(m, nn.Conv2d):
            sites.append((m, "weight", [(0, m.out_channels)]))
    return sites


@TUNING_MODES.register("lora", keys={"model": LORA_KEYS},
                       info={"doc": "low-rank updates W + alpha/r B A of model.lora_targets; merge_lora folds them"})
def lora(tower: nn.Module, cfg: ModelConfig) -> nn.Module:
    targets = [cfg.lora_targets] if isinstance(cfg.lora_targets, str) else list(cfg.lora_targets)
    if cfg.lora_rank < 1:
        raise ValueError(f"model.lora_rank must be >= 1 (got {cfg.lora_rank})")
    rec = {"mode": "lora", "lora_rank": int(cfg.lora_rank), "lora_alpha": float(cfg.lora_alpha),
           "lora_targets": targets}
    back = _backbone(tower)
    if _record(tower, rec):
        sites = _lora_sites(back, targets)
        if not sites:
            raise ValueError(f"model.lora_targets {targets} select no weight of {getattr(tower, 'name', 'backbone')}"
                             f" (transformers: q, k, v, out, mlp; CNNs: conv; auto picks)")
        for m, wname, rows in sites:
            parametrize.register_parametrization(m, wname, LoRADelta(getattr(m, wname), cfg.lora_rank,
                                                                     cfg.lora_alpha, rows))
    train_only(tower, lambda n, p: ".parametrizations." in f".{n}" and not n.endswith(".original"))
    return tower


def merge_lora(tower: nn.Module) -> nn.Module:
    """Fold every LoRA update into its weight (outputs unchanged; the LoRA parameters are gone)."""
    for m in list(_backbone(tower).modules()):
        if parametrize.is_parametrized(m):
            for wname in list(m.parametrizations.keys()):
                if any(isinstance(p, LoRADelta) for p in m.parametrizations[wname]):
                    parametrize.remove_parametrizations(m, wname, leave_parametrized=True)
    tower.tuning = [r for r in getattr(tower, "tuning", []) if r["mode"] != "lora"]
    return tower


# ----------------------------------------------------------------------------- adapter


class Bottleneck(nn.Module):
    """AdaptFormer branch ``[..., D] -> [..., D]``: ``scale * up(ReLU(down(LN(x))))``, ``up`` zero-initialised."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.ln = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, width)
        self.up = nn.Linear(width, dim)
        self.scale = nn.Parameter(torch.ones(1))
        nn.init.kaiming_normal_(self.down.weight, a=math.sqrt(5))
        for t in (self.down.bias, self.up.weight, self.up.bias):
            nn.init.zeros_(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(self.down(self.ln(x)))) * self.scale


class ConvBottleneck(nn.Module):
    """Conv-Adapter branch ``[B, Ci, H, W] -> [B, Co, H/s, W/s]``: ``scale * up(ReLU(down_s(x)))`` (1x1 convs)."""

    def __init__(self, cin: int, cout: int, width: int, stride):
        super().__init__()
        self.down = nn.Conv2d(cin, width, 1, stride=stride)
        self.up = nn.Conv2d(width, cout, 1)
        self.scale = nn.Parameter(torch.ones(1))
        nn.init.kaiming_normal_(self.down.weight, a=math.sqrt(5))
        for t in (self.down.bias, self.up.weight, self.up.bias):
            nn.init.zeros_(t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(self.down(x))) * self.scale


def _vit_blocks(back: nn.Module) -> list[tuple[nn.Module, nn.Module, nn.Module, int]]:
    """``(block, mlp norm, mlp, width)`` of every transformer block (open_clip ``ln_2``, timm ``norm2``)."""
    out = []
    for m in back.modules():
        norm = getattr(m, "ln_2", None) or getattr(m, "norm2", None)
        mlp = getattr(m, "mlp", None)
        if isinstance(norm, nn.LayerNorm) and isinstance(mlp, nn.Module):
            out.append((m, norm, mlp, norm.normalized_shape[0]))
    return out


def _add_vit_adapter(block: nn.Module, norm: nn.Module, mlp: nn.Module, dim: int, width: int) -> None:
    block.adapter = Bottleneck(dim, width)
    state: dict[str, torch.Tensor] = {}
    norm.register_forward_pre_hook(lambda mod, args: state.__setitem__("x", args[0]))
    mlp.register_forward_hook(lambda mod, args, out: out + block.adapter(state.pop("x")))


def _add_conv_adapter(conv: nn.Conv2d, width: int) -> None:
    conv.adapter = ConvBottleneck(conv.in_channels, conv.out_channels, width, conv.stride)

    def hook(mod, args, out):
        side = mod.adapter(args[0])
        if side.shape != out.shape:
            raise ValueError(f"adapter beside {mod}: output {tuple(out.shape)} vs bottleneck {tuple(side.shape)} "
                             "(padding is not 'same'); this backbone cannot take conv adapters")
        return out + side

    conv.register_forward_hook(hook)


@TUNING_MODES.register("adapter", keys={"model": ADAPTER_KEYS},
                       info={"doc": "AdaptFormer bottleneck beside every transformer block's MLP (CNNs: a "
                                    "parallel 1x1-conv bottleneck beside every spatial conv)"})
def adapter(tower: nn.Module, cfg: ModelConfig) -> nn.Module:
    if cfg.adapter_dim < 1:
        raise ValueError(f"model.adapter_dim must be >= 1 (got {cfg.adapter_dim})")
    back = _backbone(tower)
    if _record(tower, {"mode": "adapter", "adapter_dim": int(cfg.adapter_dim)}):
        blocks = _vit_blocks(back)
        convs = [m for m in back.modules() if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1]
        if blocks:
            for block, norm, mlp, dim in blocks:
                _add_vit_adapter(block, norm, mlp, dim, cfg.adapter_dim)
        elif convs:
            for conv in convs:
                _add_conv_adapter(conv, cfg.adapter_dim)
        else:
            raise ValueError(f"backbone_mode adapter: {getattr(tower, 'name', 'backbone')} has neither transformer "
                             "blocks nor spatial convolutions to put adapters beside; use lora or bitfit")
    train_only(tower, lambda n, p: ".adapter." in f".{n}")
    return tower


# ----------------------------------------------------------------------------- records


def replay_tuning(tower: nn.Module, records: list[dict[str, Any]] | None, base: ModelConfig | None = None) -> nn.Module:
    """Re-apply the structural modes of ``records`` (``tower.tuning`` of a saved model) in order."""
    import dataclasses

    base = base or ModelConfig()
    for rec in records or []:
        cfg = dataclasses.replace(base, backbone_mode=rec["mode"], **{k: v for k, v in rec.items() if k != "mode"})
        TUNING_MODES.get(rec["mode"])(tower, cfg)
    return tower
