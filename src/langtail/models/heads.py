"""Recognition heads: LGR (paper Eq. 4-7), FC and KNN (Table 4 #5, #6).

Every head maps image embeddings ``E^I [B, D]`` to a dict of pre-softmax logits:
``{"image": [B, C]}`` and, for language-guided heads, ``{"text": [B, C]}``.
:func:`combine_probs` turns them into the final class probabilities.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class LGRHead(nn.Module):
    """Language-guided recognition head.

    Inputs fixed at construction: anchor-sentence embeddings ``E^T [C, M, D]`` (frozen,
    from the text-embedding cache) and ``mask [C, M]`` (False = padding slot).

    - Eq. 4: ``Q = Linear(LayerNorm(E^I))`` ``[B, D]``
    - Eq. 5: ``K = Linear(LayerNorm(E^T))`` ``[C, M, D]``, ``V = E^T``
    - Eq. 6: ``G = softmax_m(Q K^T / sqrt(D)) V`` ``[B, C, D]`` (padding masked out)
    - Eq. 7: ``P = softmax(MLP(E^I)) + softmax(cos(E^I, G) / tau)``; MLP = Linear(D, hidden)
      -> ReLU -> Linear(hidden, C), hidden = 4D.

    ``cos(E^I, G_c)`` is computed without materialising G: ``<E^I, G_c> = sum_m a_bcm <E^I, V_cm>``
    and ``||G_c||^2 = a_bc^T (V_c V_c^T) a_bc`` with ``V_c V_c^T [C, M, M]`` precomputed, so the
    peak memory is ``O(B C M)`` instead of ``O(B C D)``. K does not depend on the image: it is
    computed once per forward in training and cached in eval mode.
    :meth:`forward_reference` is the literal formula, kept for tests.
    """

    def __init__(self, text_emb: torch.Tensor, mask: torch.Tensor | None = None, tau: float = 0.07,
                 hidden_mult: int = 4):
        super().__init__()
        C, M, D = text_emb.shape
        if mask is None:
            mask = torch.ones(C, M, dtype=torch.bool)
        if not bool(mask.any(1).all()):
            raise ValueError("every class needs at least one anchor sentence (mask row all False)")
        self.num_classes, self.num_anchors, self.dim = C, M, D
        self.ln_q = nn.LayerNorm(D)
        self.q = nn.Linear(D, D)
        self.ln_k = nn.LayerNorm(D)
        self.k = nn.Linear(D, D)
        self.mlp = nn.Sequential(nn.Linear(D, hidden_mult * D), nn.ReLU(inplace=True), nn.Linear(hidden_mult * D, C))
        self.tau = tau
        self.register_buffer("text_emb", text_emb.float().clone(), persistent=True)
        self.register_buffer("mask", mask.bool().clone(), persistent=True)
        v = self.text_emb * self.mask[..., None]
        self.register_buffer("vvt", torch.einsum("cmd,cnd->cmn", v, v), persistent=False)
        self._k_cache: torch.Tensor | None = None

    def train(self, mode: bool = True):  # invalidate the key cache when switching modes
        self._k_cache = None
        return super().train(mode)

    def keys(self) -> torch.Tensor:
        """``K [C, M, D]``; cached outside training (and without grad)."""
        if self.training or torch.is_grad_enabled():
            return self.k(self.ln_k(self.text_emb))
        if self._k_cache is None or self._k_cache.device != self.text_emb.device:
            self._k_cache = self.k(self.ln_k(self.text_emb))
        return self._k_cache

    def attention(self, e_img: torch.Tensor) -> torch.Tensor:
        """Attention weights ``a [B, C, M]`` over each class's anchors (rows sum to 1)."""
        C, M, D = self.text_emb.shape
        q = self.q(self.ln_q(e_img))  # [B, D]
        k = self.keys().reshape(C * M, D)
        scores = (q @ k.t()).view(-1, C, M) / math.sqrt(D)
        scores = scores.masked_fill(~self.mask, float("-inf"))
        return scores.softmax(dim=-1)

    def text_logits(self, e_img: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        C, M, D = self.text_emb.shape
        ev = (e_img @ self.text_emb.reshape(C * M, D).t()).view(-1, C, M)  # <E^I, V_cm>
        dot = (a * ev).sum(-1)  # [B, C] = <E^I, G_c>
        gnorm2 = torch.einsum("bcm,cmn,bcn->bc", a, self.vvt, a).clamp_min(1e-12)
        cos = dot / (e_img.norm(dim=-1, keepdim=True).clamp_min(1e-12) * gnorm2.sqrt())
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
        cos = F.cosine_similarity(e_img[:, None, :], g, dim=-1)
        return {"image": self.mlp(e_img), "text": cos / self.tau}


class FCHead(nn.Module):
    """Vision-only linear classifier: ``[B, D] -> {"image": [B, C]}``."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, e_img: torch.Tensor) -> dict[str, torch.Tensor]:
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
