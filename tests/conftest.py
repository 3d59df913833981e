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


def run_chain(cfg, out: Path, heads=("lgr",)) -> dict:
    """longtail -> corpus -> pretrain -> anchors -> embed_text -> finetune -> evaluate, in-process."""
    from langtail.anchors import run_anchors
    from langtail.corpus.stage import run_corpus
    from langtail.data.build import run_longtail
    from langtail.data.registry import get_dataset
    from langtail.embed import run_embed_text
    from langtail.evaluate import run_evaluate
    from langtail.train.finetune import run_finetune
    from langtail.train.pretrain import run_pretrain

    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    man = out / "manifest.parquet"
    run_longtail(cfg.data, man)
    b = get_dataset("demo")
    run_corpus(b.class_names(cfg.data), cfg.corpus, out / "corpus.parquet", out / "corpus_stats.parquet",
               out / "wiki_cache", builtin_pages=b.pages(cfg.data))
    run_pretrain(cfg, man, out / "corpus.parquet", out / "pretrain.pt", cache)
    run_anchors(cfg, man, out / "corpus.parquet", out / "pretrain.pt", out / "anchors.parquet", cache)
    run_embed_text(cfg, out / "anchors.parquet", out / "corpus.parquet", out / "pretrain.pt",
                   out / "text_emb.safetensors", cache, len(b.class_names(cfg.data)))
    metrics = {}
    for h in heads:
        run_finetune(cfg, h, man, out / "text_emb.safetensors", out / "pretrain.pt", out / f"{h}.pt")
        metrics[h] = run_evaluate(cfg, h, man, out / f"{h}.pt", out / "text_emb.safetensors", out / "eval" / h)
    return metrics
