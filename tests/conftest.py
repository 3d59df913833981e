"""Shared fixtures: a tiny demo configuration and an in-process stage chain."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"

# rules call `langtail` from PATH: make the running interpreter's scripts visible
os.environ["PATH"] = str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", "")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

TINY = {
    "data": {"name": "demo", "imbalance_factor": 10, "max_train_per_class": 30, "test_per_class": 4},
    "corpus": {"sources": ["wiki", "prompt"]},
    "model": {"image_encoder": "demo_cnn", "text_encoder": "minilm", "embed_dim": 32},
    "pretrain": {"epochs": 1, "batch_size": 64, "lr": 2e-3, "device": "cpu"},
    "anchors": {"num_anchors": 8, "images_per_class": 5},
    "finetune": {"epochs": 2, "batch_size": 64, "lr": 1e-3, "device": "cpu", "heads": ["lgr", "fc"]},
    "evaluate": {"device": "cpu"},
}


@pytest.fixture
def tiny_cfg():
    from langtail.config import from_dict

    return from_dict(TINY)


def staged(cfg, stage: str, **wildcards):
    """``cfg`` as the command gives it to ``stage``: reading an undeclared key raises."""
    from langtail.config import restrict
    from langtail.stages import stage_keys

    return restrict(cfg, stage_keys(stage, cfg, **wildcards), stage)


def run_chain(cfg, out: Path, heads=("lgr",)) -> dict:
    """longtail -> corpus -> pretrain -> anchors -> embed_text -> finetune -> evaluate, in-process,
    each stage seeing only the config keys it declares."""
    from langtail.stages import anchors, corpus, embed_text, evaluate, finetune, longtail, pretrain

    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    man = out / "manifest.parquet"
    longtail.run(staged(cfg, "longtail"), man)
    corpus.run(staged(cfg, "corpus"), out / "corpus.parquet", out / "corpus_stats.parquet", out / "wiki_cache")
    pretrain.run(staged(cfg, "pretrain"), man, out / "corpus.parquet", out / "pretrain.pt", cache)
    anchors.run(staged(cfg, "anchors"), man, out / "corpus.parquet", out / "pretrain.pt", out / "anchors.parquet", cache)
    embed_text.run(staged(cfg, "embed_text"), man, out / "anchors.parquet", out / "corpus.parquet", out / "pretrain.pt",
                   out / "text_emb.safetensors", cache)
    metrics = {}
    for h in heads:
        finetune.run(staged(cfg, "finetune", head=h), h, man, out / f"{h}.pt", out / "text_emb.safetensors",
                     out / "pretrain.pt")
        metrics[h] = evaluate.run(staged(cfg, "evaluate"), h, man, out / f"{h}.pt", out / "eval" / h,
                                  out / "text_emb.safetensors")
    return metrics
