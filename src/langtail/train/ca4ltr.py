"""CA4LTR training helpers: text features per batch and batched prediction.

The stages are :mod:`langtail.stages.ca4ltr_finetune` and :mod:`langtail.stages.ca4ltr_evaluate`;
the text of each source comes from :mod:`langtail.corpus.ca4ltr_text`.
"""
from __future__ import annotations

import logging
from pathlib import Path

from typing import Sequence

import numpy as np
import pandas as pd
import torch

from langtail.config import DatasetConfig
from langtail.corpus.ca4ltr_text import SOURCES, TextSource, make_source
from langtail.models.ca4ltr import CA4LTR
from langtail.models.text_cache import LazyMiniLM, per_image_features, sentence_features

log = logging.getLogger(__name__)

class TextInputs:
    """Text features for the model: a class bank, or per-manifest-row features gathered by loader row."""

    def __init__(self, bank: torch.Tensor | None = None, texts: list[list[str]] | None = None,
                 feats: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        self.bank, self.texts, self.feats, self.mask = bank, texts or [], feats, mask

    @classmethod
    def build(cls, src: TextSource, encoder: LazyMiniLM, cache_dir: Path | None,
              image_index: np.ndarray | None = None, split: str = "") -> "TextInputs":
        if src.class_level:
            return cls(bank=sentence_features(encoder, src.bank, cache_dir))
        texts = src.for_images(image_index.tolist(), split)
        feats, mask = per_image_features(encoder, texts, cache_dir)
        return cls(texts=texts, feats=feats, mask=mask)

    @property
    def tokens_per_image(self) -> int:
        return int(self.bank.shape[0]) if self.bank is not None else int(self.mask.shape[1])

    def batch(self, rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-image ``(text [B, K, F], mask [B, K])`` for loader rows; ``(None, None)`` for a class bank."""
        if self.bank is not None:
            return None, None
        r = rows.cpu()
        return self.feats[r].to(device, non_blocking=True), self.mask[r].to(device, non_blocking=True)


def text_encoder(cfg: DatasetConfig) -> LazyMiniLM:
    """The frozen MiniLM that embeds CA4LTR text (``model.text_model_path``)."""
    if cfg.model.text_encoder != "minilm":
        log.info("CA4LTR always embeds text with the frozen MiniLM (model.text_encoder=%s is used by VL-LTR only)",
                 cfg.model.text_encoder)
    return LazyMiniLM(cfg.model.text_model_path)


@torch.no_grad()
def predict(model: CA4LTR, texts: TextInputs, loader, device: torch.device, desc: str = "eval",
            logit_shift: torch.Tensor | None = None, forward=None):
    """``(pred [N], labels [N], rows [N], skipped)`` over a loader; ``logit_shift [C]`` is added
    to the logits before the argmax (post-hoc logit adjustment); ``forward(images, text, mask)``
    replaces ``model`` (test-time ensembling: :func:`langtail.inference.with_tta`)."""
    from tqdm.auto import tqdm

    model.eval()
    preds, labels, rows, skipped = [], [], [], 0
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=2.0, disable=None):
        skipped += batch["skipped"]
        if "image" not in batch:
            continue
        t, m = texts.batch(batch["row"], device)
        z = (forward or model)(batch["image"].to(device), t, m)
        if logit_shift is not None:
            z = z.float() + logit_shift.to(device=z.device, dtype=torch.float32)
        preds.append(z.argmax(1).cpu())
        labels.append(batch["label"])
        rows.append(batch["row"])
    if not preds:
        raise ValueError(f"{desc}: no readable images")
    return torch.cat(preds).numpy(), torch.cat(labels).numpy(), torch.cat(rows).numpy(), skipped


def build_source(source: str, cfg, manifest: pd.DataFrame, class_names: Sequence[str],
                 anchors_path: str | Path | None = None, captions_path: str | Path | None = None) -> TextSource:
    """The :class:`~langtail.corpus.ca4ltr_text.TextSource` of ``source`` under ``cfg`` (a
    ``Ca4ltrConfig``), reading the upstream artifacts it needs: ``anchors.parquet``
    (description, nonsense) or ``captions.parquet`` (caption; refused when the captions stage
    was switched off)."""
    from langtail import io
    from langtail.schemas import ANCHORS_COLUMNS

    if source not in SOURCES:
        raise ValueError(f"unknown CA4LTR text source {source!r}; known: {', '.join(SOURCES)}")
    anchors = io.read_parquet(anchors_path, ANCHORS_COLUMNS) if anchors_path is not None and source in (
        "description", "nonsense", "nonsense_bank") else None
    if source != "caption" or captions_path is None:
        return make_source(source, cfg, manifest, class_names, anchors)
    from langtail.captions.blip2 import is_tiny_caption_model
    from langtail.captions.shards import read_captions

    caps = read_captions(captions_path)
    cmeta = io.read_parquet_metadata(captions_path)
    if not cmeta.get("enabled", len(caps) > 0):
        raise ValueError("text source 'caption': the captions stage is switched off; set captions.enabled: true, "
                         "captions.splits: [train, test], captions.per_class: 0")
    model = str(cmeta.get("model", ""))
    return make_source(source, cfg, manifest, class_names, captions=caps,
                       caption_info={"caption_model": model, "tiny_random_captioner": is_tiny_caption_model(model)})
