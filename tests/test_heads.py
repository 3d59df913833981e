"""LGR head (Eq. 4-7), KNN and FC heads, probability combination."""
import math

import pytest
import torch
import torch.nn.functional as F

from langtail.models.heads import FCHead, KNNHead, LGRHead, combine_probs


def test_lgr_uniform_attention_hand_example():
    # Q = 0 (zero query weights) -> uniform attention over the valid anchors of each class.
    V = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],      # class 0: two anchors
                      [[1.0, 1.0], [5.0, -5.0]]])    # class 1: second slot is padding
    mask = torch.tensor([[True, True], [True, False]])
    head = LGRHead(V, mask, tau=0.5)
    torch.nn.init.zeros_(head.q.weight)
    torch.nn.init.zeros_(head.q.bias)
    e = torch.tensor([[2.0, 0.0]])
    out = head(e)
    # G_0 = mean(V_00, V_01) = (0.5, 0.5); G_1 = V_10 = (1, 1) (padding ignored)
    cos0 = (2 * 0.5) / (2 * math.sqrt(0.5))
    cos1 = 2 / (2 * math.sqrt(2))
    assert out["text"][0].tolist() == pytest.approx([cos0 / 0.5, cos1 / 0.5], rel=1e-5)
    assert out["image"].shape == (1, 2)


def test_lgr_efficient_equals_reference():
    torch.manual_seed(0)
    C, M, D, B = 5, 4, 8, 3
    V = torch.randn(C, M, D)
    mask = torch.rand(C, M) > 0.3
    mask[:, 0] = True
    head = LGRHead(V, mask, tau=0.07)
    e = torch.randn(B, D)
    a, b = head(e), head.forward_reference(e)
    assert torch.allclose(a["text"], b["text"], atol=1e-4)
    assert torch.allclose(a["image"], b["image"])
    head.eval()
    with torch.no_grad():
        c = head(e)  # cached keys path
        c2 = head(e)
    assert torch.allclose(c["text"], b["text"], atol=1e-4) and torch.allclose(c["text"], c2["text"])


def test_lgr_masked_slot_does_not_matter():
    torch.manual_seed(1)
    V = torch.randn(3, 4, 6)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1, 2:] = False
    h1 = LGRHead(V, mask)
    V2 = V.clone()
    V2[1, 2:] = 100.0
    h2 = LGRHead(V2, mask)
    h2.load_state_dict({k: v for k, v in h1.state_dict().items() if k != "text_emb"}, strict=False)
    e = torch.randn(2, 6)
    assert torch.allclose(h1(e)["text"], h2(e)["text"], atol=1e-5)


def test_lgr_gradients_reach_query_key_and_mlp():
    head = LGRHead(torch.randn(4, 3, 8))
    out = head(torch.randn(2, 8, requires_grad=True))
    (out["image"].sum() + out["text"].sum()).backward()
    for p in (head.q.weight, head.k.weight, head.mlp[0].weight):
        assert p.grad is not None and p.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        LGRHead(torch.randn(2, 2, 4), torch.tensor([[True, False], [False, False]]))


def test_combine_probs_alpha_half_ranks_like_plain_sum():
    torch.manual_seed(2)
    li, lt = torch.randn(6, 5), torch.randn(6, 5)
    p = combine_probs({"image": li, "text": lt}, 0.5)
    plain = li.softmax(-1) + lt.softmax(-1)
    assert torch.allclose(p * 2, plain)
    assert torch.equal(p.argmax(1), plain.argmax(1))
    assert torch.allclose(combine_probs({"image": li}), li.softmax(-1))


def test_knn_head_prototype_and_topk():
    V = torch.tensor([[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, -1.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    h = KNNHead(V, mask, tau=1.0, k=0)
    out = h(torch.tensor([[1.0, 1.0]]))["text"]
    assert out[0].tolist() == pytest.approx([1 / math.sqrt(2), 1 / math.sqrt(2)], rel=1e-5)
    h2 = KNNHead(V, mask, tau=1.0, k=1)
    assert h2(torch.tensor([[0.0, 1.0]]))["text"][0].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_fc_head_shape():
    assert FCHead(8, 3)(torch.randn(4, 8))["image"].shape == (4, 3)
    assert F.softmax(torch.zeros(1, 3), -1).sum() == pytest.approx(1.0)
