"""Recognition heads: LGR (paper Eq. 4-7), FC and KNN (Table 4 #5, #6).

Every head maps image embeddings ``E^I [B, D]`` to a dict of pre-softmax logits:
``{"image": [B, C]}`` and, for language-guided heads, ``{"text": [B, C]}``.
:func:`combine_probs` turns them into the final class probabilities.

The fine-tuning runs (``finetune.heads``: ``lgr``, ``fc``, ``fc_cvlp``, ``knn``) are registered
in :data:`langtail.registry.HEADS` at the end of this module; a head is
``factory(dim, num_classes, text_emb [C, M, D] | None, mask [C, M] | None, **options) -> nn.Module``
and declares (docs/extending.md "A new head"):

- ``keys``: the ``finetune`` keys its run reads (besides every head's, and the loss's);
- ``inputs``: ``"text_emb"`` (the anchor cache), ``"pretrain"`` (the CVLP checkpoint) it may
  read; ``info["needs"](cfg)``: the ones one run reads;
- ``info["options"](cfg, pretrain_path) -> dict``: the factory's keyword options of one run;
  they are stored in the checkpoint's ``extra`` and passed back when it is loaded;
- ``info["encoder"]``: ``"cvlp"`` (the CVLP visual encoder when ``finetune.init_from_pretrain``,
  held as ``freeze_visual`` / ``visual_eval_mode`` say, ``finetune.epochs``) or ``"baseline"``
  (``model.pretrained``, always fine-tuned in train mode, ``baseline_epochs``);
- ``info["anchors"]``: the head's buffer holding the ``[C, M, D]`` anchors in the checkpoint
  (None: no text); ``info["checkpoint"]``: what the checkpoint stores; ``info["label"]``: the
  report's row label; optional ``info["lr_overrides"](clf, cfg)`` (parameter-name prefix -> lr)
  and ``info["compare_to"]`` (the report plots this head's per-class gain over that head).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from langtail import io
from langtail.registry import HEADS, LOSSES


def _check_anchors(text_emb: torch.Tensor, mask: torch.Tensor) -> None:
    if text_emb.ndim != 3 or mask.shape != text_emb.shape[:2]:
        raise ValueError(f"anchor embeddings must be [C, M, D] with a [C, M] mask; got {tuple(text_emb.shape)} "
                         f"and {tuple(mask.shape)}")
    if not bool(mask.any(1).all()):
        raise ValueError("every class needs at least one anchor sentence (mask row all False)")


def _state_key(*tensors: torch.Tensor | None) -> tuple | None:
    """Identity of tensors' current contents: object, storage, in-place version, device, dtype, shape.

    ``Tensor._version`` increases on every in-place write (``copy_`` in ``load_state_dict``, optimizer
    steps), so a cached value keyed on it cannot outlive a change of its inputs. ``None`` (do not
    cache) for tensors without a version counter (created under ``torch.inference_mode``)."""
    try:
        return tuple((id(t), t.data_ptr(), t._version, t.device, t.dtype, tuple(t.shape)) if t is not None else None
                     for t in tensors)
    except RuntimeError:
        return None


class LGRHead(nn.Module):
    """Language-guided recognition head.

    Inputs fixed at construction (replace them with :meth:`set_anchors` or ``load_state_dict``):
    anchor-sentence embeddings ``E^T [C, M, D]`` (frozen, from the text-embedding cache) and
    ``mask [C, M]`` (False = padding slot).

    - Eq. 4: ``Q = Linear(LayerNorm(E^I))`` ``[B, D]``
    - Eq. 5: ``K = Linear(LayerNorm(E^T))`` ``[C, M, D]``, ``V = E^T``
    - Eq. 6: ``G = softmax_m(Q K^T / sqrt(D)) V`` ``[B, C, D]`` (padding masked out)
    - Eq. 7: ``P = softmax(MLP(E^I)) + softmax(cos(E^I, G) / tau)``; MLP = Linear(D, hidden)
      -> ReLU -> Linear(hidden, C), hidden = 4D.

    ``cos(E^I, G_c)`` is computed without materialising G: ``<E^I, G_c> = sum_m a_bcm <E^I, V_cm>``
    and ``||G_c||^2 = a_bc^T (V_c V_c^T) a_bc`` with ``V_c V_c^T [C, M, M]``, so the peak memory
    is ``O(B C M)`` instead of ``O(B C D)``. :meth:`forward_reference` is the literal formula.

    Derived state: ``V V^T`` and, outside training and without grad, ``K`` are cached, keyed by
    the identity and in-place version of every tensor they are computed from (see
    :func:`_state_key`), and dropped on ``load_state_dict``, ``set_anchors``, ``train()`` /
    ``eval()`` and device/dtype moves: new weights or anchors are always used.

    Switches (paper default first; the authors' released code second):

    - ``qk_bias``: bias in the Q and K projections (True; authors ``qkv_bias=False``).
    - ``init``: ``"pytorch"`` (PyTorch defaults) or ``"authors"`` (``W_q = W_k = I``, every other
      linear trunc_normal(std 0.02) with zero bias, LayerNorms weight 1 / bias 0).
    - ``v_detach``: ``||G||`` detached in the cosine (False; authors' iNaturalist configs):
      forward values unchanged, gradients differ.
    """

    def __init__(self, text_emb: torch.Tensor, mask: torch.Tensor | None = None, tau: float = 0.07,
                 hidden_mult: int = 4, qk_bias: bool = True, init: str = "pytorch", v_detach: bool = False):
        super().__init__()
        C, M, D = text_emb.shape
        if mask is None:
            mask = torch.ones(C, M, dtype=torch.bool)
        _check_anchors(text_emb, mask)
        self.ln_q = nn.LayerNorm(D)
        self.q = nn.Linear(D, D, bias=qk_bias)
        self.ln_k = nn.LayerNorm(D)
        self.k = nn.Linear(D, D, bias=qk_bias)
        self.mlp = nn.Sequential(nn.Linear(D, hidden_mult * D), nn.ReLU(inplace=True), nn.Linear(hidden_mult * D, C))
        self.tau = tau
        self.v_detach = v_detach
        self.register_buffer("text_emb", text_emb.float().clone(), persistent=True)
        self.register_buffer("mask", mask.bool().clone(), persistent=True)
        self._cache: dict[str, tuple[tuple, torch.Tensor]] = {}
        if init == "authors":
            self.init_authors()
        elif init != "pytorch":
            raise ValueError(f"unknown LGR init {init!r}; known: pytorch, authors")

    # shapes are read from the anchors, never stored separately
    num_classes = property(lambda self: self.text_emb.shape[0])
    num_anchors = property(lambda self: self.text_emb.shape[1])
    dim = property(lambda self: self.text_emb.shape[2])

    @torch.no_grad()
    def init_authors(self) -> None:
        """The authors' initialisation: linears trunc_normal(0.02) + zero bias, W_q = W_k = identity."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.eye_(self.q.weight)
        nn.init.eye_(self.k.weight)

    def invalidate(self) -> None:
        """Drop every cached derived tensor."""
        self._cache = {}

    @torch.no_grad()
    def set_anchors(self, text_emb: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Replace the anchors ``[C, M, D]`` (same C and D; M may differ) and their mask ``[C, M]``."""
        if mask is None:
            mask = torch.ones(text_emb.shape[:2], dtype=torch.bool)
        _check_anchors(text_emb, mask)
        if text_emb.shape[0] != self.num_classes or text_emb.shape[2] != self.dim:
            raise ValueError(f"anchors {tuple(text_emb.shape)} do not fit this head ([{self.num_classes}, M, {self.dim}])")
        self.text_emb = text_emb.to(self.text_emb).clone()
        self.mask = mask.to(self.mask.device, torch.bool).clone()
        self.invalidate()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        m = state_dict.get(prefix + "mask")
        e = state_dict.get(prefix + "text_emb")
        if m is not None and e is not None:
            _check_anchors(e, m.bool())
        self.invalidate()
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self.invalidate()
        return super()._apply(fn, *args, **kwargs)

    def train(self, mode: bool = True):
        self.invalidate()
        return super().train(mode)

    def _cached(self, name: str, key: tuple | None, fn) -> torch.Tensor:
        if key is None:
            return fn()
        hit = self._cache.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        val = fn()
        self._cache[name] = (key, val)
        return val

    def vvt(self) -> torch.Tensor:
        """``V_c V_c^T [C, M, M]`` of the masked anchors (cached on the anchors' state)."""
        def f():
            v = self.text_emb * self.mask[..., None]
            return torch.einsum("cmd,cnd->cmn", v, v)
        if torch.is_grad_enabled() and self.text_emb.requires_grad:
            return f()
        return self._cached("vvt", _state_key(self.text_emb, self.mask), f)

    def keys(self) -> torch.Tensor:
        """``K [C, M, D]``; cached outside training and without grad (keyed on anchors and weights)."""
        if self.training or torch.is_grad_enabled():
            return self.k(self.ln_k(self.text_emb))
        key = _state_key(self.text_emb, self.ln_k.weight, self.ln_k.bias, self.k.weight, self.k.bias)
        return self._cached("keys", key, lambda: self.k(self.ln_k(self.text_emb)))

    def attention(self, e_img: torch.Tensor) -> torch.Tensor:
        """Attention weights ``a [B, C, M]`` over each class's anchors (rows sum to 1)."""
        C, M, D = self.text_emb.shape
        q = self.q(self.ln_q(e_img))  # [B, D]
        k = self.keys().reshape(C * M, D)
        scores = (q @ k.t()).view(-1, C, M) / math.sqrt(D)
        scores = scores.masked_fill(~self.mask, float("-inf"))
        return scores.softmax(dim=-1)

    def text_logits(self, e_img: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """``cos(E^I, G) / tau [B, C]`` from ``E^I [B, D]`` and attention ``a [B, C, M]``."""
        C, M, D = self.text_emb.shape
        ev = (e_img @ self.text_emb.reshape(C * M, D).t()).view(-1, C, M)  # <E^I, V_cm>
        dot = (a * ev).sum(-1)  # [B, C] = <E^I, G_c>
        gnorm = torch.einsum("bcm,cmn,bcn->bc", a, self.vvt(), a).clamp_min(1e-12).sqrt()
        if self.v_detach:
            gnorm = gnorm.detach()
        cos = dot / (e_img.norm(dim=-1, keepdim=True).clamp_min(1e-12) * gnorm)
        return cos / self.tau

    def forward(self, e_img: torch.Tensor) -> dict[str, torch.Tensor]:
        """``E^I [B, D] -> {"image": MLP logits [B, C], "text": cos(E^I, G)/tau [B, C]}``."""
        a = self.attention(e_img)
        return {"image": self.mlp(e_img), "text": self.text_logits(e_img, a)}

    def forward_reference(self, e_img: torch.Tensor) -> dict[str, torch.Tensor]:
        """Literal Eq. 4-7 with G materialised ``[B, C, D]`` (for tests and small C)."""
        q = self.q(self.ln_q(e_img))  # [B, D]
        k = self.k(self.ln_k(self.text_emb))  # [C, M, D]
        scores = torch.einsum("bd,cmd->bcm", q, k) / math.sqrt(self.dim)
        scores = scores.masked_fill(~self.mask, float("-inf"))
        g = torch.einsum("bcm,cmd->bcd", scores.softmax(-1), self.text_emb)  # [B, C, D]
        gn = g.norm(dim=-1, keepdim=True)
        if self.v_detach:
            gn = gn.detach()
        cos = (F.normalize(e_img, dim=-1)[:, None, :] * (g / gn)).sum(-1)
        return {"image": self.mlp(e_img), "text": cos / self.tau}


class FCHead(nn.Module):
    """Vision-only linear classifier: ``[B, D] -> {"image": [B, C]}``.

    ``cosine_scale > 0``: the normalised classifier of LDAM (Cao et al. 2019, ``NormedLinear``):
    logits ``s * cos(E^I, W_c)`` (the bias is unused)."""

    def __init__(self, dim: int, num_classes: int, cosine_scale: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)
        self.cosine_scale = float(cosine_scale)

    @torch.no_grad()
    def init_from_text(self, class_emb: torch.Tensor) -> None:
        """LIFT's semantic-aware initialisation: ``W = normalize(class_emb [C, D])``, bias 0. With a
        cosine scale s the step-0 logits are ``s * cos(E^I, t_c)``: the zero-shot classifier at scale s."""
        if class_emb.shape != self.fc.weight.shape:
            raise ValueError(f"class text embeddings {tuple(class_emb.shape)} do not fit the head "
                             f"{tuple(self.fc.weight.shape)} ([C, D])")
        self.fc.weight.copy_(F.normalize(class_emb.float(), dim=-1))
        self.fc.bias.zero_()

    def forward(self, e_img: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cosine_scale > 0:
            return {"image": self.cosine_scale * F.normalize(e_img, dim=-1) @ F.normalize(self.fc.weight, dim=-1).t()}
        return {"image": self.fc(e_img)}


class KNNHead(nn.Module):
    """Vision-language nearest-neighbour head: class score = cosine to the class's anchors.

    ``k == 0``: cosine to the class prototype (mean of the normalised anchors);
    ``k > 0``: mean of the top-k anchor cosines of the class. Logits = score / tau.
    No parameters: fine-tuning adapts the visual encoder to the frozen text embeddings.
    Output ``{"text": [B, C]}``.
    """

    def __init__(self, text_emb: torch.Tensor, mask: torch.Tensor | None = None, tau: float = 0.07, k: int = 0):
        super().__init__()
        C, M, D = text_emb.shape
        if mask is None:
            mask = torch.ones(C, M, dtype=torch.bool)
        self.tau, self.k = tau, k
        t = F.normalize(text_emb.float(), dim=-1) * mask[..., None]
        proto = t.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        self.register_buffer("anchors", t)
        self.register_buffer("mask", mask.bool())
        self.register_buffer("proto", F.normalize(proto, dim=-1))

    def forward(self, e_img: torch.Tensor) -> dict[str, torch.Tensor]:
        e = F.normalize(e_img, dim=-1)
        if self.k <= 0:
            return {"text": e @ self.proto.t() / self.tau}
        C, M, D = self.anchors.shape
        sims = (e @ self.anchors.reshape(C * M, D).t()).view(-1, C, M)
        sims = sims.masked_fill(~self.mask, float("-inf"))
        k = min(self.k, M)
        top = sims.topk(k, dim=-1).values
        top = torch.where(torch.isinf(top), torch.zeros_like(top), top)
        n = self.mask.sum(1).clamp(max=k).clamp(min=1)
        return {"text": top.sum(-1) / n / self.tau}


def combine_probs(logits: dict[str, torch.Tensor], alpha: float = 0.5) -> torch.Tensor:
    """Final probabilities ``[B, C]``.

    With both branches: ``alpha * softmax(P^I) + (1 - alpha) * softmax(P^T)``; alpha = 0.5
    ranks classes exactly like the paper's Eq. 7 plain sum (it is the sum halved). The
    authors' code uses alpha = 0.2 (ImageNet-LT, Places-LT) and 0.7 (iNaturalist).
    """
    if "image" in logits and "text" in logits:
        return alpha * logits["image"].softmax(-1) + (1 - alpha) * logits["text"].softmax(-1)
    (only,) = logits.values()
    return only.softmax(-1)


class Classifier(nn.Module):
    """Visual encoder + head: ``[B, 3, H, W] -> logits dict`` (see module doc)."""

    def __init__(self, image: nn.Module, head: nn.Module, kind: str):
        super().__init__()
        self.image = image
        self.head = head
        self.kind = kind

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.image(x))


# ----------------------------------------------------------------------------- temperature, lr


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


# ----------------------------------------------------------------------------- registered heads

#: the finetune keys of the heads on the CVLP encoder: init, and how the encoder is held
CVLP_KEYS = ("epochs", "init_from_pretrain", "freeze_visual", "visual_eval_mode")
#: the keys of a text branch whose logits are ``cos / tau``
TEXT_KEYS = ("tau", "tau_from_pretrain")


def text_head_needs(cfg) -> tuple[str, ...]:
    """A language-guided head reads the anchors, and the CVLP checkpoint for init or its tau."""
    fc = cfg.finetune
    return ("text_emb",) + (("pretrain",) if fc.init_from_pretrain or fc.tau_from_pretrain else ())


def _anchor_init_needs(cfg) -> tuple[str, ...]:
    """A linear head initialised from the AnSS anchors' mean (``finetune.head_init: anchors``) reads them."""
    return ("text_emb",) if cfg.finetune.head_init == "anchors" else ()


def cvlp_head_needs(cfg) -> tuple[str, ...]:
    """A vision-only head on the CVLP encoder reads the CVLP checkpoint unless ``init_from_pretrain`` is off."""
    return (("pretrain",) if cfg.finetune.init_from_pretrain else ()) + _anchor_init_needs(cfg)


def _cosine_options(cfg, pretrain_path: Path | None) -> dict[str, Any]:
    """A linear head becomes a cosine classifier when the loss declares ``info["cosine_scale_key"]`` (LDAM)."""
    key = LOSSES.get(cfg.finetune.loss).info.get("cosine_scale_key")
    if key:
        return {"fc_cosine_scale": getattr(cfg.finetune, key)}
    scale = float(cfg.finetune.fc_cosine_scale)  # LIFT's cosine classifier
    return {"fc_cosine_scale": scale} if scale > 0 else {}


def _lgr_options(cfg, pretrain_path: Path | None) -> dict[str, Any]:
    fc = cfg.finetune
    return {"tau": finetune_tau(fc, pretrain_path), "lgr_qk_bias": fc.lgr_qk_bias, "lgr_init": fc.lgr_init,
            "v_detach": fc.v_detach}


def _knn_options(cfg, pretrain_path: Path | None) -> dict[str, Any]:
    return {"tau": finetune_tau(cfg.finetune, pretrain_path), "knn_k": cfg.finetune.knn_k}


def _anchors(name: str, text_emb: torch.Tensor | None) -> torch.Tensor:
    if text_emb is None:
        raise ValueError(f"head {name!r} needs anchor text embeddings")
    return text_emb


@HEADS.register("lgr", keys={"finetune": CVLP_KEYS + TEXT_KEYS + ("lgr_qk_bias", "lgr_init", "v_detach",
                                                                   "lgr_attention_lr")},
                inputs=("text_emb", "pretrain"),
                info={"needs": text_head_needs, "options": _lgr_options, "encoder": "cvlp", "anchors": "text_emb", "two_branch": True,
                      "lr_overrides": lambda clf, cfg: lgr_lr_overrides(clf, cfg.finetune.lgr_attention_lr),
                      "label": "VL-LTR (CVLP + AnSS + LGR)", "compare_to": "fc",
                      "checkpoint": "LGR weights + the [C, M, D] anchors and [C, M] mask as buffers; extra: tau, "
                                    "lgr_qk_bias, lgr_init, v_detach"})
def lgr(dim: int, num_classes: int, text_emb: torch.Tensor | None, mask: torch.Tensor | None, tau: float = 0.07,
        lgr_qk_bias: bool = True, lgr_init: str = "pytorch", v_detach: bool = False) -> LGRHead:
    """VL-LTR's language-guided head over the anchors ``[C, M, D]``."""
    return LGRHead(_anchors("lgr", text_emb), mask, tau, qk_bias=lgr_qk_bias, init=lgr_init, v_detach=v_detach)


@HEADS.register("fc", keys={"finetune": ("baseline_epochs", "baseline_projection", "epochs", "head_init",
                                         "fc_cosine_scale")},
                inputs=("text_emb",),
                info={"needs": _anchor_init_needs, "options": _cosine_options, "encoder": "baseline", "anchors": None,
                      "text_init": True,
                      "label": "Baseline (vision-only, FC)",
                      "checkpoint": "linear layer; extra: fc_cosine_scale under a cosine loss (LDAM)"})
def fc(dim: int, num_classes: int, text_emb: torch.Tensor | None, mask: torch.Tensor | None,
       fc_cosine_scale: float = 0.0) -> FCHead:
    """The vision-only baseline: ``model.pretrained`` encoder + linear classifier."""
    return FCHead(dim, num_classes, fc_cosine_scale)


@HEADS.register("fc_cvlp", keys={"finetune": CVLP_KEYS + ("head_init", "fc_cosine_scale")},
                inputs=("pretrain", "text_emb"),
                info={"needs": cvlp_head_needs, "options": _cosine_options, "encoder": "cvlp", "anchors": None,
                      "text_init": True,
                      "label": "CVLP + FC head",
                      "checkpoint": "linear layer; extra: fc_cosine_scale under a cosine loss (LDAM)"})
def fc_cvlp(dim: int, num_classes: int, text_emb: torch.Tensor | None, mask: torch.Tensor | None,
            fc_cosine_scale: float = 0.0) -> FCHead:
    """Table 4 #5: a linear classifier on the CVLP encoder."""
    return FCHead(dim, num_classes, fc_cosine_scale)


@HEADS.register("knn", keys={"finetune": CVLP_KEYS + TEXT_KEYS + ("knn_k",)}, inputs=("text_emb", "pretrain"),
                info={"needs": text_head_needs, "options": _knn_options, "encoder": "cvlp", "anchors": "anchors",
                      "label": "CVLP + KNN head",
                      "checkpoint": "normalised anchors, mask and class prototypes as buffers; extra: tau, knn_k"})
def knn(dim: int, num_classes: int, text_emb: torch.Tensor | None, mask: torch.Tensor | None, tau: float = 0.07,
        knn_k: int = 0) -> KNNHead:
    """Table 4 #6: cosine to the class's anchors, no parameters."""
    return KNNHead(_anchors("knn", text_emb), mask, tau, knn_k)
