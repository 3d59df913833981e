"""Zero-shot rows (issue #12) and the authors' evaluation switches (issue #15)."""
import json
import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from langtail.corpus.prompts import CLIP_IMAGENET_TEMPLATES, prompts_for
from langtail.inference import inference_autocast
from langtail.metrics import accuracy_table
from langtail.models.zeroshot import anchor_class_embeddings, prompt_class_embeddings


class _HashText(torch.nn.Module):
    """A deterministic text encoder: sentence -> fixed random vector (records what it saw)."""

    frozen = False

    def __init__(self, dim=5):
        super().__init__()
        self.dim, self.seen = dim, []

    def forward(self, sentences):
        self.seen += list(sentences)
        out = []
        for s in sentences:
            g = torch.Generator().manual_seed(sum(map(ord, s)) * 7919 + len(s))
            out.append(torch.randn(self.dim, generator=g) * (1 + len(s) % 3))
        return torch.stack(out)


def test_prompt_ensemble_is_mean_of_normalised_prompt_embeddings():
    enc = _HashText()
    names = ["apple", "tiger_shark"]
    got = prompt_class_embeddings(enc, names)
    assert got.shape == (2, 5)
    assert len(enc.seen) == 2 * len(CLIP_IMAGENET_TEMPLATES) == 160  # 80 prompts per class, nothing else
    for c, name in enumerate(names):
        ps = prompts_for(name)
        assert enc.seen[c * 80:(c + 1) * 80] == ps
        assert ("a photo of a tiger shark." in ps) == (name == "tiger_shark")
        want = F.normalize(F.normalize(_HashText()(ps), dim=-1).mean(0), dim=0)
        assert torch.allclose(got[c], want, atol=1e-6)


def test_anchor_mean_respects_mask():
    emb = torch.tensor([[[3.0, 0.0], [0.0, 1.0]], [[0.0, 2.0], [100.0, 0.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    got = anchor_class_embeddings(emb, mask)
    assert torch.allclose(got[0], F.normalize(torch.tensor([1.0, 1.0]), dim=0))
    assert torch.allclose(got[1], torch.tensor([0.0, 1.0]))  # the padding slot is ignored


def test_group_pred_drives_groups_and_per_class_not_overall():
    labels = np.array([0, 0, 1, 2])
    pred = np.array([0, 1, 1, 2])        # overall 75 %
    group_pred = np.array([0, 0, 0, 0])  # class 0 all right, others wrong
    groups = np.array(["many", "medium", "few"], dtype=object)
    m, per = accuracy_table(pred, labels, ["a", "b", "c"], np.array([100, 50, 20]), groups, group_pred)
    assert m["overall"] == 75.0
    assert (m["many"], m["medium"], m["few"]) == (100.0, 0.0, 0.0)
    assert per["correct"].tolist() == [2, 0, 0]
    m2, _ = accuracy_table(pred, labels, ["a", "b", "c"], np.array([100, 50, 20]), groups)
    assert (m2["many"], m2["medium"], m2["few"]) == (50.0, 100.0, 100.0)


def test_amp_on_cpu_falls_back_to_float32_with_a_log_line(caplog):
    with caplog.at_level(logging.INFO, logger="langtail.inference"):
        with inference_autocast(torch.device("cpu"), True, "eval lgr"):
            y = torch.ones(2, 2) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    assert "fp16 autocast needs CUDA" in caplog.text and "eval lgr" in caplog.text
    caplog.clear()
    with inference_autocast(torch.device("cpu"), False):
        pass
    assert caplog.text == ""


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_amp_on_cuda_is_fp16():
    with inference_autocast(torch.device("cuda"), True):
        y = torch.ones(2, 2, device="cuda") @ torch.ones(2, 2, device="cuda")
    assert y.dtype == torch.float16


@pytest.mark.slow
def test_tiny_chain_with_authors_switches_and_both_zeroshot_rows(tmp_path):
    """(slow: ~75 s on 2 busy cores) The demo chain with every authors' switch on (CPU: amp falls back), plus both zero-shot rows."""
    from conftest import TINY, run_chain, staged

    from langtail.config import deep_merge, from_dict
    from langtail.recipes import BUILTIN_VARIANTS
    from langtail.stages.evaluate import run as run_evaluate
    from langtail.models.classifier import read_classifier
    from langtail.models.heads import pretrain_tau

    over = deep_merge(BUILTIN_VARIANTS["authors_code"], {"finetune": {"v_detach": True, "freeze_visual": True}})
    cfg = from_dict(deep_merge(deep_merge(TINY, over), {"finetune": {"epochs": 1}, "evaluate": {"device": "cpu"}}))
    out = tmp_path / "run"
    m = run_chain(cfg, out)["lgr"]
    assert m["recipe"] == "authors_code" and m["group_ranking"] == "logit_sum" and m["amp"] is False
    clf, ck = read_classifier(out / "lgr.pt")
    assert clf.head.q.bias is None and clf.head.v_detach
    assert ck["extra"]["tau"] == pytest.approx(pretrain_tau(out / "pretrain.pt")) and clf.head.tau == ck["extra"]["tau"]
    for name in ("zeroshot", "zeroshot_anchors"):
        z = run_evaluate(staged(cfg, "evaluate"), name, out / "manifest.parquet", out / "pretrain.pt",
                         out / "eval" / name, out / "text_emb.safetensors")
        assert z["model"] == name and 0.0 <= z["overall"] <= 100.0
        assert json.loads((out / "eval" / name / "metrics.json").read_text())["class_text"] == z["class_text"]
    assert "prompt" in z["class_text"] or "anchor" in z["class_text"]
