"""Offline compute nodes: the list of downloads, the check before a job, `langtail prefetch`."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from langtail.config import from_dict
from langtail.offline import OfflineMissing, needs, prefetch, require_local

CLIP = {"model": {"image_encoder": "RN50", "text_encoder": "clip", "pretrained": "openai",
                  "teacher": "RN50", "teacher_pretrained": "openai"},
        "captions": {"enabled": True, "model": "Salesforce/blip2-opt-2.7b"},
        "corpus": {"sources": ["wiki", "prompt"]}}


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants as hc

    cache = tmp_path / "hf"
    cache.mkdir()
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # open_clip's URL cache ~/.cache/clip
    return cache


def _fake_hub_file(cache: Path, repo: str, filename: str) -> None:
    d = cache / f"models--{repo.replace('/', '--')}"
    (d / "refs").mkdir(parents=True)
    (d / "refs" / "main").write_text("abc123")
    snap = d / "snapshots" / "abc123"
    snap.mkdir(parents=True)
    (snap / filename).write_bytes(b"weights")


def test_needs_of_a_clip_dataset():
    kinds = {(n.kind, n.name) for n in needs(from_dict(CLIP), "wiki")}
    assert ("open_clip", "open_clip RN50 weights (openai)") in kinds
    assert ("open_clip", "open_clip teacher RN50 weights (openai)") in kinds
    assert ("hf_model", "BLIP-2 Salesforce/blip2-opt-2.7b") in kinds
    assert any(k == "wiki_pages" for k, _ in kinds)


def test_missing_downloads_are_listed_before_the_job(empty_hf_cache, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    cfg = from_dict(CLIP)
    with pytest.raises(OfflineMissing) as e:
        require_local(cfg, "pretrain")
    msg = str(e.value)
    assert "open_clip RN50 weights (openai)" in msg and "teacher RN50" in msg and "langtail prefetch" in msg
    assert "BLIP-2" not in msg  # the captions job loads BLIP-2, not pretrain
    with pytest.raises(OfflineMissing, match="BLIP-2 Salesforce/blip2-opt-2.7b"):
        require_local(cfg, "captions")
    # once the weights are in the hub cache, the job may start, with the hub switched offline
    _fake_hub_file(empty_hf_cache, "timm/resnet50_clip.openai", "open_clip_model.safetensors")
    require_local(cfg, "pretrain")
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_wiki_pages_missing_from_cache_are_named(tmp_path):
    cfg = from_dict({"corpus": {"sources": ["wiki"]}})
    with pytest.raises(OfflineMissing, match=r"2 of 2 classes not in .*: cat, dog"):
        require_local(cfg, "corpus", tmp_path / "wiki", ["cat", "dog"])


def test_cli_fails_listing_what_is_missing(empty_hf_cache):
    env = {**os.environ, "LANGTAIL_OFFLINE": "1"}
    params = json.dumps({"model": CLIP["model"]})
    p = subprocess.run([sys.executable, "-m", "langtail.cli", "pretrain", "--params", params, "--manifest", "m",
                        "--corpus", "c", "--out", "o", "--cache-dir", "x"], env=env, capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 2, p.stderr
    assert "open_clip RN50 weights (openai)" in p.stderr and "LANGTAIL_OFFLINE=1" in p.stderr


def test_prefetch_demo_records_what_it_fetched(tmp_path):
    from langtail.corpus.wiki_cache import missing_from_cache
    from langtail.data.registry import get_dataset

    cfg = from_dict({"corpus": {"sources": ["wiki", "prompt"]}})
    rec = prefetch(cfg, "demo", tmp_path / "wiki", tmp_path / "prefetch.json")
    assert json.loads((tmp_path / "prefetch.json").read_text()) == rec
    assert [(i["kind"], i["status"]) for i in rec["items"]] == [("wiki_pages", "fetched")]
    assert not missing_from_cache(tmp_path / "wiki", get_dataset("demo").class_names(cfg.data))
    rec2 = prefetch(cfg, "demo", tmp_path / "wiki", tmp_path / "prefetch.json")
    assert rec2["items"][0]["status"] == "present"


def test_every_job_a_need_names_is_a_command():
    """A need listed under a job name no command has is never checked (was: ca4ltr-train)."""
    from langtail.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction")
    cfg = from_dict({**CLIP, "model": {**CLIP["model"], "text_encoder": "minilm", "text_model_path": "/no/minilm"}})
    jobs = {j for n in needs(cfg, "wiki") for j in n.jobs}
    assert jobs and jobs <= set(sub.choices), sorted(jobs - set(sub.choices))
    assert "ca4ltr-finetune" in jobs


def test_langtail_offline_implies_corpus_offline(tmp_path, monkeypatch):
    """On an offline node a missing (or stale) page fails naming the classes, never a fetch."""
    from langtail.config import CorpusConfig
    from langtail.corpus import wikipedia

    def no_network(*a, **k):
        raise AssertionError("the corpus stage crawled with LANGTAIL_OFFLINE=1")

    monkeypatch.setattr(wikipedia, "crawl", no_network)
    monkeypatch.setenv("LANGTAIL_OFFLINE", "1")
    with pytest.raises(wikipedia.OfflineCacheMiss, match="cat"):
        wikipedia.ensure_pages(["cat"], CorpusConfig(offline=False), tmp_path / "wiki")
