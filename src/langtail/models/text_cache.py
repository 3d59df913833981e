"""Text features computed once and cached on disk; the ``[C, M, D]`` anchor-embedding file.

- :func:`base_features`: frozen text-backbone features ``[S, F]`` of a sentence list,
  cached in ``cache_dir`` under a key = sha256(encoder identity + sentences). Pretraining
  and anchor selection both use the whole corpus, so the backbone runs once per corpus.
- :func:`encode_sentences`: projected, final embeddings ``[S, D]`` (no grad).
- ``text_embeddings.safetensors`` (written by ``langtail embed-text``): tensors
  ``emb [C, M, D] float32`` (zeros in padding slots), ``mask [C, M] bool``,
  ``sentence_id [C, M] int64`` (-1 = padding); metadata (all str): ``text_identity``
  (JSON), ``pretrain_sha256``, ``num_anchors``, ``embed_dim``, ``strategy``.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from langtail import io

log = logging.getLogger(__name__)


def _key(identity: dict[str, Any], sentences: Sequence[str]) -> str:
    h = hashlib.sha256(json.dumps(identity, sort_keys=True).encode())
    for s in sentences:
        h.update(s.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def sentence_hashes(sentences: Sequence[str]) -> np.ndarray:
    """``[S]`` int64: an 8-byte BLAKE2b digest of each sentence (content key of the text cache)."""
    buf = b"".join(hashlib.blake2b(s.encode(), digest_size=8).digest() for s in sentences)
    return np.frombuffer(buf, dtype="<i8").copy() if sentences else np.zeros(0, dtype=np.int64)


def _cached_rows(cache_dir: Path, ident_json: str) -> tuple[np.ndarray, torch.Tensor | None]:
    """``(hashes [N] sorted, features [N, F])`` of every cache file of this encoder that records its
    sentences' hashes (files without them are skipped)."""
    hs, fs = [], []
    for f in sorted(cache_dir.glob("text_base_*.safetensors")):
        try:
            t, meta = io.load_safetensors(f)
        except Exception as e:  # noqa: BLE001 - a damaged cache file is re-encoded, not fatal
            log.warning("text cache: skipping unreadable %s (%s)", f, e)
            continue
        if meta.get("identity") == ident_json and "sentence_hash" in t:
            hs.append(t["sentence_hash"].numpy())
            fs.append(t["features"])
    if not hs:
        return np.zeros(0, dtype=np.int64), None
    h = np.concatenate(hs)
    h, first = np.unique(h, return_index=True)
    return h, torch.cat(fs)[torch.as_tensor(first)]


def base_features(text_encoder, sentences: Sequence[str], cache_dir: str | Path | None,
                  batch_size: int = 256) -> torch.Tensor:
    """``[S, F]`` backbone features of ``sentences`` (frozen encoders only), cached on disk.

    The cache file of a list is keyed by the encoder identity + the whole list. On a miss, the
    features of sentences already encoded for *other* lists (files that record
    ``sentence_hash [N]``) are reused by content: only the new sentences run through the encoder
    (e.g. the zero-shot prompts are the corpus's prompt sentences, encoded in pre-training).
    """
    if not getattr(text_encoder, "frozen", False):
        raise ValueError("base_features caches only frozen text backbones")
    ident = {k: v for k, v in text_encoder.identity().items() if k not in ("embed_dim",)}
    ident_json = json.dumps(ident, sort_keys=True)
    path = Path(cache_dir) / f"text_base_{_key(ident, sentences)}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        t, meta = io.load_safetensors(path)
        if "sentence_hash" not in t and len(t["features"]) == len(sentences):
            # a file from before content reuse: record its sentences' hashes so other lists can reuse it
            io.save_safetensors(path, {"features": t["features"], "sentence_hash": torch.as_tensor(
                sentence_hashes(list(sentences)))}, {"identity": meta.get("identity", ident_json)})
        return t["features"]
    sentences = list(sentences)
    hashes = sentence_hashes(sentences)
    feats = None
    todo = np.arange(len(sentences))
    if path is not None and path.parent.is_dir() and len(sentences):
        known_h, known_f = _cached_rows(path.parent, ident_json)
        if known_f is not None:
            pos = np.clip(np.searchsorted(known_h, hashes), 0, len(known_h) - 1)
            hit = known_h[pos] == hashes
            if hit.any():
                feats = torch.zeros(len(sentences), known_f.shape[1], dtype=torch.float32)
                feats[torch.as_tensor(np.flatnonzero(hit))] = known_f[torch.as_tensor(pos[hit])].float()
                todo = np.flatnonzero(~hit)
                log.info("text cache: %d of %d sentences reused from earlier lists", int(hit.sum()), len(sentences))
    if len(todo):
        log.info("encoding %d sentences with %s", len(todo), ident.get("name"))
        new = text_encoder.encode_base([sentences[i] for i in todo], batch_size=batch_size,
                                       progress=len(todo) > 2000).detach().float().cpu()
        if feats is None:
            feats = new
        else:
            feats[torch.as_tensor(todo)] = new
    elif feats is None:  # empty list
        feats = text_encoder.encode_base([], batch_size=batch_size).detach().float().cpu()
    if path is not None:
        io.save_safetensors(path, {"features": feats, "sentence_hash": torch.as_tensor(hashes)},
                            {"identity": ident_json})
    return feats


@torch.no_grad()
def encode_sentences(text_encoder, sentences: Sequence[str], cache_dir: str | Path | None) -> torch.Tensor:
    """Final text embeddings ``[S, D]`` on CPU (backbone features cached when frozen)."""
    if getattr(text_encoder, "frozen", False):
        feats = base_features(text_encoder, sentences, cache_dir)
        dev = next(text_encoder.parameters()).device
        return torch.cat([text_encoder.project(feats[i:i + 4096].to(dev)).cpu() for i in range(0, len(feats), 4096)])
    return text_encoder(list(sentences)).cpu()


def scatter_anchors(class_id: np.ndarray, sentence_id: np.ndarray, all_emb: torch.Tensor, num_classes: int,
                    M: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(emb [C, M, D], mask [C, M], sentence_id [C, M])`` from the selected rows, in one gather.

    ``class_id`` / ``sentence_id`` ``[N]``: the selected anchors grouped by class (rows of a class
    contiguous, in slot order); a class's first ``M`` rows fill slots ``0..M-1``, the rest of its
    slots stay padding (mask False, sentence id -1). ``all_emb`` ``[S, D]``: every corpus
    sentence's embedding. Vectorised: no loop over the C classes.
    """
    cls = np.asarray(class_id, dtype=np.int64)
    ids = np.asarray(sentence_id, dtype=np.int64)
    if len(cls) and (cls.min() < 0 or cls.max() >= num_classes):
        raise ValueError(f"anchor class ids must be in 0..{num_classes - 1}; got {int(cls.min())}..{int(cls.max())}")
    starts = np.r_[0, np.flatnonzero(np.diff(cls)) + 1] if len(cls) else np.zeros(0, dtype=np.int64)
    if len(np.unique(cls[starts])) != len(starts):
        raise ValueError("anchor rows of a class must be contiguous (sort by class_id first)")
    slot = np.arange(len(cls)) - np.repeat(starts, np.diff(np.r_[starts, len(cls)]))
    keep = slot < M
    c_t, s_t = torch.as_tensor(cls[keep]), torch.as_tensor(slot[keep])
    i_t = torch.as_tensor(ids[keep])
    emb = torch.zeros(num_classes, M, all_emb.shape[1], dtype=all_emb.dtype)
    mask = torch.zeros(num_classes, M, dtype=torch.bool)
    sid = torch.full((num_classes, M), -1, dtype=torch.long)
    emb[c_t, s_t] = all_emb[i_t]
    mask[c_t, s_t] = True
    sid[c_t, s_t] = i_t
    return emb, mask, sid


def read_text_embeddings(path: str | Path) -> tuple[torch.Tensor, torch.Tensor, dict[str, str]]:
    """``(emb [C, M, D], mask [C, M], metadata)`` from ``text_embeddings.safetensors``."""
    t, meta = io.load_safetensors(path)
    for k in ("emb", "mask"):
        if k not in t:
            raise ValueError(f"{path}: missing tensor {k!r}; rerun `langtail embed-text`")
    return t["emb"].float(), t["mask"].bool(), meta


# ----------------------------------------------------------------------------- frozen MiniLM features (CA4LTR)


class LazyMiniLM:
    """The frozen MiniLM backbone, loaded only when a sentence list is not in the cache.

    Same ``identity()`` as :class:`langtail.models.minilm.MiniLMText` (so cache entries are
    shared); ``encode_base`` -> ``[S, 384]``.
    """

    frozen = True

    def __init__(self, model_path: str = "", device: str = "cpu"):
        from langtail.models.minilm import minilm_base_dim, minilm_path

        self.model_path = model_path or minilm_path()
        self.device = device
        self._enc = None
        self.base_dim = minilm_base_dim(self.model_path)

    def _load(self):
        if self._enc is None:
            from langtail.models.minilm import MiniLMText

            self._enc = MiniLMText(8, self.model_path, trainable=False).to(self.device)
            self.base_dim = self._enc.base_dim
        return self._enc

    def identity(self) -> dict[str, Any]:
        if self.base_dim is None:
            self._load()
        return {"name": "minilm", "weights": self.model_path, "base_dim": self.base_dim, "trainable": False}

    def encode_base(self, sentences: Sequence[str], batch_size: int = 256, progress: bool = False):
        return self._load().encode_base(sentences, batch_size=batch_size, progress=progress)


def sentence_features(encoder: LazyMiniLM, sentences: Sequence[str], cache_dir: str | Path | None):
    """``[S, F]`` float32 MiniLM features of ``sentences`` (cached)."""
    import torch

    if not sentences:
        return torch.zeros(0, encoder.identity()["base_dim"])
    return base_features(encoder, list(sentences), cache_dir)


def per_image_features(encoder: LazyMiniLM, texts: Sequence[Sequence[str]], cache_dir: str | Path | None):
    """``(feats [N, K, F], mask [N, K] bool)`` for per-image sentence lists (K = longest list;
    ``mask`` False = padding). Each distinct sentence is encoded once."""
    import torch

    uniq: dict[str, int] = {}
    for t in texts:
        for s in t:
            uniq.setdefault(s, len(uniq))
    feats = sentence_features(encoder, list(uniq), cache_dir)
    N, K = len(texts), max([len(t) for t in texts] + [1])
    idx = torch.zeros(N, K, dtype=torch.long)
    mask = torch.zeros(N, K, dtype=torch.bool)
    for i, t in enumerate(texts):
        for j, s in enumerate(t):
            idx[i, j] = uniq[s]
            mask[i, j] = True
    out = feats[idx] if len(feats) else torch.zeros(N, K, encoder.identity()["base_dim"])
    return out * mask[..., None], mask
