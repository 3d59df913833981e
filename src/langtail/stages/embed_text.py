"""Stage ``embed_text`` (rule ``embed_text``, ``langtail embed-text``): anchor-sentence embeddings ``[C, M, D]``, computed once.

Reads ``anchors.parquet`` (selected rows, ordered by rank for AnSS / corpus order for
Cut Off), encodes them with the frozen CVLP linguistic encoder (backbone features come
from the cache written during pre-training, so the backbone does not run again) and
writes ``text_embeddings.safetensors`` (schema in :mod:`langtail.models.text_cache`).
Fine-tuning and inference load this file and never run the text encoder.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from langtail import io
from langtail.config import DatasetConfig
from langtail.data.manifest import read_manifest
from langtail.models.encoders import load_vl_checkpoint
from langtail.models.text_cache import encode_sentences, scatter_anchors
from langtail.schemas import ANCHORS_COLUMNS, CORPUS_COLUMNS

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {"anchors": ("num_anchors",)}


def run(cfg: DatasetConfig, manifest_path: Path, anchors_path: Path, corpus_path: Path, pretrain_path: Path, out: Path,
        cache_dir: Path) -> None:
    num_classes = len(read_manifest(manifest_path)[1]["class_names"])
    anchors = io.read_parquet(anchors_path, ANCHORS_COLUMNS)
    ameta = io.read_parquet_metadata(anchors_path)
    corpus = io.read_parquet(corpus_path, CORPUS_COLUMNS)
    model, mcfg, _ = load_vl_checkpoint(pretrain_path)
    model.eval()
    M = int(ameta.get("num_anchors", cfg.anchors.num_anchors))
    sel = anchors[anchors["selected"]].copy()
    order_key = "rank" if ameta.get("strategy", "anss") == "anss" else "sentence_id"
    sel = sel.sort_values(["class_id", order_key], kind="stable")
    all_emb = encode_sentences(model.text, corpus["sentence"].tolist(), cache_dir)  # cache hit after pretrain
    D = all_emb.shape[1]
    emb, mask, sid = scatter_anchors(sel["class_id"].to_numpy(), sel["sentence_id"].to_numpy(), all_emb,
                                     num_classes, M)
    empty = np.flatnonzero(~mask.any(1).numpy())
    if len(empty):
        raise ValueError(f"classes without any anchor sentence: {empty.tolist()[:10]}")
    io.save_safetensors(out, {"emb": emb, "mask": mask, "sentence_id": sid}, {
        "text_identity": json.dumps(model.text.identity(), sort_keys=True),
        "pretrain_sha256": io.file_sha256(pretrain_path),
        "num_anchors": str(M), "embed_dim": str(D), "strategy": str(ameta.get("strategy", "anss"))})
    log.info("embed_text: wrote [%d, %d, %d], %d padded slots", num_classes, M, D, int((~mask).sum()))
