"""Scaling (issue #11): vectorised forms agree with the per-class / per-item loops they replace."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from langtail.data.folder import cap_per_class, occurrence_rank
from langtail.data.longtail import subsample_per_class
from langtail.models.text_cache import scatter_anchors


def _loop_scatter(cls, ids, all_emb, C, M):
    emb = torch.zeros(C, M, all_emb.shape[1])
    mask = torch.zeros(C, M, dtype=torch.bool)
    sid = torch.full((C, M), -1, dtype=torch.long)
    for c in np.unique(cls):
        i = ids[cls == c][:M]
        emb[c, :len(i)] = all_emb[torch.as_tensor(i)]
        mask[c, :len(i)] = True
        sid[c, :len(i)] = torch.as_tensor(i)
    return emb, mask, sid


def test_scatter_anchors_matches_the_per_class_loop():
    rng = np.random.default_rng(0)
    C, M, S = 7, 4, 60
    per = rng.integers(1, 7, size=C)  # some classes short of M (padding), some longer (truncated)
    per[3] = 0  # a class without anchors stays padding
    cls = np.repeat(np.arange(C), per)
    ids = rng.permutation(S)[:len(cls)]
    all_emb = torch.randn(S, 5)
    got = scatter_anchors(cls, ids, all_emb, C, M)
    want = _loop_scatter(cls, ids, all_emb, C, M)
    for g, w in zip(got, want):
        assert torch.equal(g, w)
    assert not got[1][3].any() and got[1][0].sum() == min(per[0], M)


def test_scatter_anchors_rejects_interleaved_classes_and_bad_ids():
    e = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="contiguous"):
        scatter_anchors(np.array([0, 1, 0]), np.array([0, 1, 2]), e, 2, 2)
    with pytest.raises(ValueError, match="0..1"):
        scatter_anchors(np.array([0, 2]), np.array([0, 1]), e, 2, 2)


def test_cap_per_class_and_occurrence_rank_match_the_loop():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 9, size=500)
    seen: dict[int, int] = {}
    ranks = []
    for y in labels.tolist():
        ranks.append(seen.get(y, 0))
        seen[y] = seen.get(y, 0) + 1
    assert occurrence_rank(labels).tolist() == ranks
    for cap in (0, 1, 5, 1000):
        want = np.arange(500) if cap <= 0 else np.asarray([i for i, r in enumerate(ranks) if r < cap])
        assert cap_per_class(labels, cap).tolist() == want.tolist()


def test_subsample_per_class_is_still_the_ldam_drw_stream():
    """Same indices as the LDAM-DRW loop (np.where per class + RandomState shuffle)."""
    rng = np.random.default_rng(2)
    labels = rng.integers(0, 6, size=400)
    counts = [int(min(n, 40 // (c + 1))) for c, n in enumerate(np.bincount(labels, minlength=6))]
    rs = np.random.RandomState(3)
    want = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        rs.shuffle(idx)
        want.append(idx[:n])
    assert subsample_per_class(labels, counts, 3).tolist() == np.concatenate(want).tolist()


class CountingEncoder:
    """A frozen stand-in text backbone: features = a deterministic function of the sentence."""

    frozen = True

    def __init__(self):
        self.encoded: list[str] = []

    def identity(self):
        return {"name": "counting", "weights": "-", "base_dim": 3, "trainable": False}

    def encode_base(self, sentences, batch_size=256, progress=False):
        self.encoded += list(sentences)
        return torch.tensor([[len(s), sum(map(ord, s)) % 97, s.count("a")] for s in sentences],
                            dtype=torch.float32).reshape(len(sentences), 3)


def test_text_cache_reuses_sentences_encoded_for_other_lists(tmp_path):
    """Zero-shot prompts are a subset of the corpus: only sentences never encoded run the encoder."""
    from langtail.models.text_cache import base_features

    enc = CountingEncoder()
    corpus = [f"a photo of a class {i}." for i in range(50)] + ["a tench is a fish."]
    full = base_features(enc, corpus, tmp_path)
    assert len(enc.encoded) == 51
    prompts = corpus[10:20] + ["a new sentence.", corpus[3]]
    got = base_features(enc, prompts, tmp_path)
    assert enc.encoded[51:] == ["a new sentence."]  # the other 11 came from the corpus's cache file
    assert torch.equal(got, CountingEncoder().encode_base(prompts))
    assert torch.equal(got[:10], full[10:20])
    # the exact list is now a cache hit: nothing encoded
    n = len(enc.encoded)
    assert torch.equal(base_features(enc, prompts, tmp_path), got) and len(enc.encoded) == n
    # another encoder identity never shares features
    other = CountingEncoder()
    other.identity = lambda: {"name": "other", "weights": "-", "base_dim": 3, "trainable": False}
    base_features(other, prompts, tmp_path)
    assert len(other.encoded) == len(prompts)


def test_text_cache_file_without_hashes_gets_them_on_an_exact_hit(tmp_path):
    from langtail import io
    from langtail.models.text_cache import base_features

    enc = CountingEncoder()
    corpus = [f"sentence {i}." for i in range(5)]
    base_features(enc, corpus, tmp_path)
    f = next(tmp_path.glob("text_base_*.safetensors"))
    t, meta = io.load_safetensors(f)
    io.save_safetensors(f, {"features": t["features"]}, meta)  # as written before sentence_hash existed
    base_features(enc, corpus, tmp_path)  # exact hit: upgrades the file
    assert "sentence_hash" in io.load_safetensors(f)[0]
    base_features(enc, corpus[1:3] + ["new."], tmp_path)
    assert enc.encoded[5:] == ["new."]


def test_lgr_head_at_1000_classes_never_forms_a_b_c_d_tensor():
    """LGR at C = 1,000, M = 64: no intermediate (forward or backward) has the [B, C, D] shape."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from langtail.models.heads import LGRHead

    B, C, M, D = 8, 1000, 64, 96
    head = LGRHead(torch.randn(C, M, D), torch.ones(C, M, dtype=torch.bool))
    shapes: list[tuple[int, ...]] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in (out if isinstance(out, (tuple, list)) else [out]):
                if isinstance(t, torch.Tensor):
                    shapes.append(tuple(t.shape))
            return out

    x = torch.randn(B, D, requires_grad=True)
    with Record():
        out = head(x)
        (out["image"].sum() + out["text"].sum()).backward()
    assert out["text"].shape == (B, C) and shapes
    bcd = [s for s in shapes if len(s) >= 3 and B in s and C in s and D in s]
    assert not bcd, f"[B, C, D]-sized intermediates: {bcd[:3]}"
    assert max(int(np.prod(s)) for s in shapes) <= max(C * M * D, B * C * M)  # the anchors / attention weights
