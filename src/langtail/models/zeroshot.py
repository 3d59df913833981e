"""Zero-shot classifiers from the CVLP encoders: one text embedding per class, no fine-tuning.

Two definitions of a class's text embedding (``eval/<model>/`` names, ``langtail.config.ZEROSHOT_MODELS``):

- ``zeroshot``: the standard CLIP zero-shot classifier (Radford et al., 2021): the mean of
  the L2-normalised embeddings of the 80 CLIP ImageNet prompts ("a photo of a {}.", ...) of
  the class name, normalised again. No training image is used.
- ``zeroshot_anchors``: the mean of the normalised AnSS-selected anchor embeddings
  (``text_embeddings.safetensors``); AnSS ranked the sentences with labelled training images,
  so this is *not* zero-shot in CLIP's sense.

An image is assigned to the class whose embedding has the highest cosine with its image embedding.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from langtail.corpus.prompts import TEMPLATE_SETS, prompts_for
from langtail.models.text_cache import encode_sentences

PROMPT_TEMPLATES = "clip80"  #: template set of the standard zero-shot classifier


def anchor_class_embeddings(emb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``[C, M, D]`` anchors + ``[C, M]`` mask -> ``[C, D]`` normalised mean of the normalised anchors."""
    proto = (F.normalize(emb.float(), dim=-1) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    return F.normalize(proto, dim=-1)


@torch.no_grad()
def prompt_class_embeddings(text_encoder, class_names: Sequence[str], templates: str = PROMPT_TEMPLATES,
                            cache_dir: str | Path | None = None) -> torch.Tensor:
    """``[C, D]``: per class, the normalised mean of the normalised embeddings of its prompts
    (``templates`` of :data:`langtail.corpus.prompts.TEMPLATE_SETS`, filled with the class name)."""
    n = len(TEMPLATE_SETS[templates])
    if n == 0:
        raise ValueError(f"prompt template set {templates!r} is empty")
    sentences = [s for name in class_names for s in prompts_for(name, templates)]
    emb = F.normalize(encode_sentences(text_encoder, sentences, cache_dir).float(), dim=-1)  # [C * n, D]
    return F.normalize(emb.view(len(class_names), n, -1).mean(1), dim=-1)


def zeroshot_scores(image_encoder: torch.nn.Module, class_emb: torch.Tensor):
    """``x [B, 3, H, W] -> cosine [B, C]`` against ``class_emb [C, D]`` (normalised rows)."""
    def fn(x: torch.Tensor) -> torch.Tensor:
        e = F.normalize(image_encoder(x).float(), dim=-1)
        return e @ class_emb.to(e.device, e.dtype).t()
    return fn


def load_zeroshot(model_name: str, pretrain_path: str | Path, text_emb_path: str | Path | None,
                  class_names: Sequence[str], device: torch.device | str = "cpu",
                  cache_dir: str | Path | None = None):
    """``(image encoder, class embeddings [C, D] on device, description)`` of zero-shot model
    ``model_name`` (``zeroshot``: prompts of ``class_names`` through the checkpoint's text encoder;
    ``zeroshot_anchors``: ``text_emb_path``'s anchors). ``cache_dir``: the text-feature cache
    (prompts already encoded in pre-training are reused, :func:`~langtail.models.text_cache.base_features`)."""
    from langtail.models.encoders import load_vl_checkpoint
    from langtail.models.text_cache import read_text_embeddings

    if model_name == "zeroshot":
        vl = load_vl_checkpoint(pretrain_path, device)[0].eval()
        proto = prompt_class_embeddings(vl.text, class_names, cache_dir=cache_dir)
        return vl.image, proto.to(device), f"mean of the {len(TEMPLATE_SETS[PROMPT_TEMPLATES])} CLIP prompt embeddings"
    if model_name == "zeroshot_anchors":
        if text_emb_path is None:
            raise ValueError("zeroshot_anchors needs text_embeddings.safetensors (the embed_text stage)")
        image = load_vl_checkpoint(pretrain_path, device, image_only=True)[0].eval()
        emb, mask, _ = read_text_embeddings(text_emb_path)
        return image, anchor_class_embeddings(emb, mask).to(device), "mean of the selected anchor embeddings"
    raise KeyError(f"unknown zero-shot model {model_name!r}; known: zeroshot, zeroshot_anchors")
