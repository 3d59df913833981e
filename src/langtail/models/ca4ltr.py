"""CA4LTR: image tokens attend to text tokens (cross-modal attention) -> linear classifier.

The authors describe the method only in prose (pre-trained image and text models combined
through cross-modal attention; code unreleased), so the architecture below fills in the
details; every choice the source does not fix is marked *(choice)*.

Notation: batch B, image tokens L with backbone width F, projected image feature D
(``ImageTower.embed_dim``), text tokens T with MiniLM width F_t = 384, fusion width d,
heads h, classes C.

1. **Image tokens** ``X0 = W_i ImageTower.forward_tokens(x)``: ``[B, L, F] -> [B, L, d]``
   (CNN feature-map cells: L = 16 for ``demo_cnn`` at 32 px, 64 for ``resnet32``; ViT
   patches for towers that provide them). *(choice)* No positional embedding: the fused
   tokens are mean-pooled (permutation invariant) and CNN cells already carry local
   context, so the model stays resolution-agnostic.
   **Pooled image feature** ``p = ImageTower(x)`` ``[B, D]``; for mean-pooled CNN backbones
   it is computed from the same feature map (``proj(mean_L(tokens))``: one backbone pass).
2. **Text tokens** ``Y0 = W_t E``: ``[B|1, T, F_t] -> [B|1, T, d]``, ``E`` = frozen MiniLM
   sentence features (one token per sentence, cached once, :mod:`langtail.corpus.ca4ltr_text`).
   Class-level sources (label, description) use one bank ``[1, T, F_t]`` stored in the
   model (buffer ``text_bank``, ``T = C x k``) and shared by every image; per-image sources
   (caption, nonsense) pass ``[B, T, F_t]`` with the forward call. ``text_mask [B|1, T]``
   (True = real token) masks padding / missing text. *(choice)* Sentence-level tokens:
   ``base_features`` caches pooled sentence features; word-level MiniLM states would
   multiply the cache by the sentence length for little gain with short texts.
3. **Cross-modal blocks** (``depth`` of them; pre-LN, residual), for block input (X, Y)::

       X' = X  + MHA(q = LN(X), k = v = LN(Y), key_padding_mask = ~text_mask)   # image <- text
       Y' = Y  + MHA(q = LN(Y), k = v = LN(X))              (only if bidirectional)  # text <- image
       X'' = X' + FFN(LN(X'))          FFN = Linear(d, m d) -> GELU -> Linear(m d, d)
       Y'' = Y' + FFN_t(LN(Y'))        (only if bidirectional)

   MHA: h heads of width d / h, ``softmax(Q K^T / sqrt(d / h)) V``, masked keys get
   weight 0; an image whose text tokens are all masked gets a zero attention output
   (no NaN). *(choice)* Both directions of a block read the block's inputs (co-attention,
   as in ViLBERT), so neither direction depends on the order. Masked text tokens are
   never keys and never pooled, so they cannot change the output (tested).
4. **Fusion + classifier**: ``z = [LN(mean_L X_depth) ; p]`` ``[B, d + D]`` ->
   dropout -> ``Linear(d + D, C)``; trained with cross-entropy. *(choice)* concatenating
   the pooled image feature keeps a direct image path, so a useless text source can at
   worst be ignored (the summary: text "compensates" the image model, not replaces it).

Cost per block: ``O(B L T d)`` attention (a shared bank's keys/values are projected once per
batch and the B images' queries are folded into one matmul, never copying K, V per image). The class banks grow with C (``T = C k``):
keep ``k`` small for 1000-class datasets (``ca4ltr.label_templates``,
``ca4ltr.description_per_class``).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn as nn

from langtail import io
from langtail.config import Ca4ltrConfig, ModelConfig


class CrossAttention(nn.Module):
    """Multi-head attention of ``x [B, Lq, d]`` over ``ctx [B|1, Lk, d]`` -> ``[B, Lq, d]``.

    ``mask [B|1, Lk]`` bool, True = attend. A query row whose keys are all masked returns 0.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"width {dim} is not divisible by heads {heads}")
        self.h, self.dh = heads, dim // heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        B, Lq, d = x.shape
        Bk, Lk, _ = ctx.shape
        shared = Bk == 1 and B > 1  # one context for all (class bank): fold B into the queries
        if mask is not None and shared and mask.shape[0] != 1:
            ctx, Bk, shared = ctx.expand(B, -1, -1), B, False
        q = self.q(x).view(B, Lq, self.h, self.dh).transpose(1, 2)  # [B, h, Lq, dh]
        if shared:  # [1, h, B*Lq, dh]: a broadcast matmul would materialise K, V per image
            q = q.transpose(0, 1).reshape(1, self.h, B * Lq, self.dh)
        k, v = self.kv(ctx).view(Bk, Lk, 2, self.h, self.dh).permute(2, 0, 3, 1, 4)  # [Bk, h, Lk, dh] each
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.dh)  # [B|1, h, Lq|B*Lq, Lk]
        if mask is not None:
            keep = mask[:, None, None, :]
            scores = scores.masked_fill(~keep, float("-inf"))
            attn = scores.softmax(-1)
            attn = torch.where(keep.any(-1, keepdim=True), attn, torch.zeros_like(attn))  # all masked -> 0
        else:
            attn = scores.softmax(-1)
        o = self.drop(attn) @ v  # [B|1, h, Lq|B*Lq, dh]
        if shared:
            o = o.view(self.h, B, Lq, self.dh).transpose(0, 1)
        return self.out(o.transpose(1, 2).reshape(B, Lq, d))


class FeedForward(nn.Sequential):
    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__(nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mult * dim, dim),
                         nn.Dropout(dropout))


class CrossModalBlock(nn.Module):
    """One pre-LN block: image <- text attention (+ text <- image if bidirectional) and FFNs.

    ``(img [B, L, d], txt [B|1, T, d], txt_mask [B|1, T] | None) -> (img [B, L, d], txt)``.
    """

    def __init__(self, dim: int, heads: int, ffn_mult: int = 4, dropout: float = 0.0, bidirectional: bool = False):
        super().__init__()
        self.bidirectional = bidirectional
        self.ln_img_q = nn.LayerNorm(dim)
        self.ln_txt_kv = nn.LayerNorm(dim)
        self.img_from_txt = CrossAttention(dim, heads, dropout)
        self.ln_img_ffn = nn.LayerNorm(dim)
        self.ffn_img = FeedForward(dim, ffn_mult, dropout)
        self.drop = nn.Dropout(dropout)
        if bidirectional:
            self.ln_txt_q = nn.LayerNorm(dim)
            self.ln_img_kv = nn.LayerNorm(dim)
            self.txt_from_img = CrossAttention(dim, heads, dropout)
            self.ln_txt_ffn = nn.LayerNorm(dim)
            self.ffn_txt = FeedForward(dim, ffn_mult, dropout)

    def forward(self, img: torch.Tensor, txt: torch.Tensor, txt_mask: torch.Tensor | None = None):
        kv = self.ln_txt_kv(txt)
        new_img = img + self.drop(self.img_from_txt(self.ln_img_q(img), kv, txt_mask))
        if self.bidirectional:
            B = img.shape[0]
            q = self.ln_txt_q(txt).expand(B, -1, -1)
            txt = txt.expand(B, -1, -1) + self.drop(self.txt_from_img(q, self.ln_img_kv(img)))
            txt = txt + self.ffn_txt(self.ln_txt_ffn(txt))
        img = new_img + self.ffn_img(self.ln_img_ffn(new_img))
        return img, txt


def _pools_from_tokens(image: nn.Module) -> bool:
    """Backbones whose forward is exactly the mean of their token grid (one pass suffices)."""
    from langtail.models.encoders import DemoCNN, ResNetCifar

    return isinstance(getattr(image, "backbone", None), (DemoCNN, ResNetCifar))


class CA4LTR(nn.Module):
    """Image tower + cross-modal fusion + linear classifier (see the module docstring).

    ``forward(x [B, 3, H, W], text [B, T, F_t] | None, text_mask [B, T] | None) -> logits [B, C]``;
    with ``text=None`` the stored class-level bank is used.
    """

    def __init__(self, image: nn.Module, num_classes: int, text_dim: int = 384, width: int = 256, heads: int = 4,
                 depth: int = 2, ffn_mult: int = 4, dropout: float = 0.1, bidirectional: bool = False,
                 bank: torch.Tensor | None = None, bank_mask: torch.Tensor | None = None):
        super().__init__()
        self.image = image
        self.num_classes, self.text_dim, self.width = num_classes, text_dim, width
        self.img_in = nn.Linear(image.feat_dim, width)
        self.txt_in = nn.Linear(text_dim, width)
        self.blocks = nn.ModuleList(CrossModalBlock(width, heads, ffn_mult, dropout, bidirectional)
                                    for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width + image.embed_dim, num_classes)
        bank = torch.zeros(0, text_dim) if bank is None else bank.float()
        if bank_mask is None:
            bank_mask = torch.ones(bank.shape[0], dtype=torch.bool)
        self.register_buffer("text_bank", bank.clone(), persistent=True)
        self.register_buffer("bank_mask", bank_mask.bool().clone(), persistent=True)
        self._one_pass = _pools_from_tokens(image)

    def image_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(tokens [B, L, F], pooled [B, D])`` of images ``[B, 3, H, W]`` or cached tokens ``[B, L, F]``."""
        tok = self.image.forward_tokens(x)
        if x.dim() == 3:  # cached tokens: pooled as the backbone pools them
            return tok, self.image(tok)
        pooled = self.image.proj(tok.mean(1)) if self._one_pass else self.image(x)
        return tok, pooled

    def fuse(self, tok: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None) -> torch.Tensor:
        """Fused, pooled image representation ``[B, d]``."""
        img = self.img_in(tok)
        txt = self.txt_in(text)
        for blk in self.blocks:
            img, txt = blk(img, txt, text_mask)
        return self.norm(img).mean(1)

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None,
                text_mask: torch.Tensor | None = None) -> torch.Tensor:
        if text is None:
            if self.text_bank.shape[0] == 0:
                raise ValueError("this CA4LTR model has no class-level text bank: pass per-image text")
            text, text_mask = self.text_bank[None], self.bank_mask[None]
        tok, pooled = self.image_features(x)
        z = torch.cat([self.fuse(tok, text, text_mask), pooled], dim=-1)
        return self.fc(self.drop(z))


# ----------------------------------------------------------------------------- build / checkpoints


def build_ca4ltr(image: nn.Module, num_classes: int, cfg: Ca4ltrConfig, text_dim: int = 384,
                 bank: torch.Tensor | None = None) -> CA4LTR:
    return CA4LTR(image, num_classes, text_dim, cfg.width, cfg.heads, cfg.depth, cfg.ffn_mult, cfg.dropout,
                  cfg.bidirectional, bank)


def save_ca4ltr(path, model: CA4LTR, source: str, model_cfg: ModelConfig, ca4ltr_cfg: dict[str, Any],
                extra: dict[str, Any]) -> None:
    """Checkpoint: ``kind`` ("ca4ltr"), ``source``, ``model_cfg`` (the image-encoder keys),
    ``ca4ltr_cfg`` (the ``ca4ltr`` keys the run read), ``state_dict`` (incl. the class-level
    text bank), ``extra`` (num_classes, text_dim, history, ...)."""
    from langtail.models.classifier import image_model_config

    io.torch_save(path, {"kind": "ca4ltr", "source": source, "model_cfg": dataclasses.asdict(image_model_config(model_cfg)),
                         "ca4ltr_cfg": dict(ca4ltr_cfg), "state_dict": model.state_dict(),
                         "extra": {"num_classes": model.num_classes, "text_dim": model.text_dim, **extra}})


def load_ca4ltr(path, device: str | torch.device = "cpu") -> tuple[CA4LTR, dict[str, Any]]:
    """Rebuild a trained CA4LTR model (eval mode) and return it with the raw checkpoint."""
    from langtail.models.classifier import fresh_image_encoder

    ck = io.torch_load(path)
    if ck.get("kind") != "ca4ltr":
        raise ValueError(f"{path}: not a CA4LTR checkpoint (kind={ck.get('kind')!r})")
    mcfg = dataclasses.replace(ModelConfig(**ck["model_cfg"]), pretrained="")
    cfg = Ca4ltrConfig(**ck["ca4ltr_cfg"])
    sd = ck["state_dict"]
    model = build_ca4ltr(fresh_image_encoder(mcfg), ck["extra"]["num_classes"], cfg, ck["extra"]["text_dim"],
                         sd["text_bank"])
    model.load_state_dict(sd)
    return model.to(device).eval(), ck
