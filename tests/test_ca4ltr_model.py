"""CA4LTR model: attention shapes, key-padding masks, fusion, checkpoint round trip."""
from __future__ import annotations

import dataclasses
import pytest
import torch

from langtail.config import Ca4ltrConfig, ModelConfig
from langtail.models.ca4ltr import CA4LTR, CrossAttention, CrossModalBlock, build_ca4ltr, load_ca4ltr, save_ca4ltr
from langtail.models.classifier import fresh_image_encoder


def _model(bidirectional=False, bank=None, depth=2, **kw) -> CA4LTR:
    torch.manual_seed(0)
    cfg = Ca4ltrConfig(width=32, heads=4, depth=depth, ffn_mult=2, dropout=0.0, bidirectional=bidirectional, **kw)
    return build_ca4ltr(fresh_image_encoder(ModelConfig(image_encoder="demo_cnn", embed_dim=16)), 5, cfg, 12,
                        bank).eval()


def test_cross_attention_shapes_and_shared_bank_broadcast():
    torch.manual_seed(0)
    att = CrossAttention(32, 4)
    x, ctx = torch.randn(3, 7, 32), torch.randn(1, 5, 32)
    out = att(x, ctx)
    assert out.shape == (3, 7, 32)
    # a shared [1, T, d] context gives the same result as the context repeated per image
    assert torch.allclose(out, att(x, ctx.expand(3, -1, -1)), atol=1e-6)
    with pytest.raises(ValueError):
        CrossAttention(30, 4)


def test_block_shapes_both_directions():
    torch.manual_seed(0)
    img, txt = torch.randn(2, 16, 32), torch.randn(1, 6, 32)
    i1, t1 = CrossModalBlock(32, 4, bidirectional=False)(img, txt)
    assert i1.shape == (2, 16, 32) and t1.shape == (1, 6, 32) and torch.equal(t1, txt)
    i2, t2 = CrossModalBlock(32, 4, bidirectional=True)(img, txt)
    assert i2.shape == (2, 16, 32) and t2.shape == (2, 6, 32)  # text became per image


@pytest.mark.parametrize("bidirectional", [False, True])
def test_masked_text_token_does_not_change_output(bidirectional):
    m = _model(bidirectional)
    x = torch.randn(3, 3, 32, 32)
    text = torch.randn(3, 4, 12)
    mask = torch.tensor([[True, True, False, True], [True, False, False, False], [True, True, True, False]])
    out = m(x, text, mask)
    assert out.shape == (3, 5)
    changed = text.clone()
    changed[~mask] = 1e3 * torch.randn(int((~mask).sum()), 12)  # wild values in every masked slot
    assert torch.allclose(out, m(x, changed, mask), atol=1e-5)
    # an unmasked token does matter
    changed2 = text.clone()
    changed2[0, 0] += 5.0
    assert not torch.allclose(out[0], m(x, changed2, mask)[0], atol=1e-4)
    # dropping the masked slots altogether gives the same logits for image 1
    assert torch.allclose(out[1:2], m(x[1:2], text[1:2, :1], mask[1:2, :1]), atol=1e-5)


def test_all_masked_text_is_finite_and_bank_mask_respected():
    m = _model()
    x = torch.randn(2, 3, 32, 32)
    out = m(x, torch.randn(2, 3, 12), torch.zeros(2, 3, dtype=torch.bool))
    assert torch.isfinite(out).all()
    bank = torch.randn(6, 12)
    mb = _model(bank=bank)
    mb.bank_mask[4:] = False
    ref = mb(x)
    mb.text_bank[4:] = 100.0
    assert torch.allclose(ref, mb(x), atol=1e-5)


def test_one_backbone_pass_matches_tower_and_checkpoint_roundtrip(tmp_path):
    bank = torch.randn(10, 12)
    m = _model(bank=bank, bidirectional=True)
    x = torch.randn(2, 3, 32, 32)
    tok, pooled = m.image_features(x)
    assert tok.shape == (2, 16, 128) and torch.allclose(pooled, m.image(x), atol=1e-5)
    path = tmp_path / "model.pt"
    cfg = Ca4ltrConfig(width=32, heads=4, depth=2, ffn_mult=2, dropout=0.0, bidirectional=True)
    save_ca4ltr(path, m, "label", ModelConfig(image_encoder="demo_cnn", embed_dim=16), dataclasses.asdict(cfg), {"epochs": 1})
    m2, ck = load_ca4ltr(path)
    assert ck["source"] == "label" and ck["kind"] == "ca4ltr"
    assert torch.allclose(m(x), m2(x), atol=1e-6)
    with pytest.raises(ValueError, match="per-image text"):
        _model()(x)  # no bank stored, no text given
