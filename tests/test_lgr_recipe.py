"""LGR head switches of the authors' released code (issue #15) and stale derived state (issue #12).

Each switch is pinned with hand-built tensors: Q/K bias, identity initialisation, inherited
temperature, v_detach, shot-group boundaries, alpha combination, attention learning rate.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from langtail import io
from langtail.config import FinetuneConfig, ModelConfig
from langtail.data.manifest import shot_group, shot_groups
from langtail.models.classifier import create_head, fresh_image_encoder, read_classifier, save_classifier
from langtail.models.heads import Classifier, LGRHead, combine_probs, finetune_tau, lgr_lr_overrides
from langtail.train.loop import param_groups


def _anchors(C=4, M=3, D=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = torch.randn(C, M, D, generator=g)
    mask = torch.ones(C, M, dtype=torch.bool)
    mask[1, 2] = False
    return V, mask


# ---- Q/K bias


def test_qk_bias_off_equals_zero_bias_and_nonzero_bias_matters():
    V, mask = _anchors()
    torch.manual_seed(0)
    with_b = LGRHead(V, mask, qk_bias=True)
    no_b = LGRHead(V, mask, qk_bias=False)
    assert no_b.q.bias is None and no_b.k.bias is None
    with torch.no_grad():
        with_b.q.bias.zero_()
        with_b.k.bias.zero_()
    no_b.load_state_dict({k: v for k, v in with_b.state_dict().items() if k not in ("q.bias", "k.bias")})
    e = torch.randn(5, 6)
    a, b = with_b(e), no_b(e)
    assert torch.allclose(a["text"], b["text"], atol=1e-6) and torch.equal(a["image"], b["image"])
    with torch.no_grad():
        with_b.q.bias.fill_(3.0)  # a non-zero query bias changes the attention, hence the text logits
    assert not torch.allclose(with_b(e)["text"], b["text"], atol=1e-3)


def test_state_dict_without_bias_does_not_load_into_head_with_bias():
    V, mask = _anchors()
    no_b = LGRHead(V, mask, qk_bias=False)
    with pytest.raises(RuntimeError, match="q.bias"):
        LGRHead(V, mask, qk_bias=True).load_state_dict(no_b.state_dict())


# ---- initialisation


def test_authors_init_gives_q_equal_layernorm_of_x():
    V, mask = _anchors(D=8)
    torch.manual_seed(1)
    h = LGRHead(V, mask, qk_bias=False, init="authors")
    x = torch.randn(7, 8) * 3 + 1
    assert torch.allclose(h.q(h.ln_q(x)), F.layer_norm(x, (8,)), atol=1e-6)
    assert torch.allclose(h.k(h.ln_k(V)), F.layer_norm(V, (8,)), atol=1e-6)
    for lin in (h.mlp[0], h.mlp[2]):
        assert torch.count_nonzero(lin.bias) == 0
        assert lin.weight.abs().max() <= 2.0 and 0.01 < float(lin.weight.detach().std()) < 0.03
    h2 = LGRHead(V, mask, qk_bias=True, init="authors")  # biases exist but start at zero
    assert torch.count_nonzero(h2.q.bias) == 0 and torch.allclose(h2.q(h2.ln_q(x)), F.layer_norm(x, (8,)), atol=1e-6)
    with pytest.raises(ValueError, match="unknown LGR init"):
        LGRHead(V, mask, init="xavier")


def test_pytorch_init_is_not_identity():
    V, mask = _anchors(D=8)
    h = LGRHead(V, mask)
    assert not torch.allclose(h.q.weight, torch.eye(8))


# ---- v_detach


def test_v_detach_same_forward_different_gradients():
    V, mask = _anchors()
    torch.manual_seed(2)
    ref = LGRHead(V, mask, tau=0.1)
    det = LGRHead(V, mask, tau=0.1, v_detach=True)
    det.load_state_dict(ref.state_dict())
    e = torch.randn(3, 6)
    grads = []
    for h in (ref, det):
        out = h(e)["text"]
        assert torch.allclose(out, ref(e)["text"], atol=1e-6)  # forward unchanged
        assert torch.allclose(out, h.forward_reference(e)["text"], atol=1e-5)
        h.zero_grad()
        (out * torch.arange(4.0)).sum().backward()
        grads.append(h.q.weight.grad.clone())
        # efficient and literal formulas agree on the gradient too
        h.zero_grad()
        (h.forward_reference(e)["text"] * torch.arange(4.0)).sum().backward()
        assert torch.allclose(grads[-1], h.q.weight.grad, atol=1e-5)
    assert not torch.allclose(grads[0], grads[1], atol=1e-6)


def test_v_detach_gradient_is_dot_over_detached_norm():
    # literal authors' formula: cos = <n(e), G / ||G||.detach()>
    V, mask = _anchors()
    torch.manual_seed(3)
    h = LGRHead(V, mask, tau=1.0, v_detach=True)
    e = torch.randn(2, 6)
    h(e)["text"].sum().backward()
    got = h.q.weight.grad.clone()
    h.zero_grad()
    q = h.q(h.ln_q(e))
    k = h.k(h.ln_k(V))
    a = (torch.einsum("bd,cmd->bcm", q, k) / math.sqrt(6)).masked_fill(~mask, float("-inf")).softmax(-1)
    g = torch.einsum("bcm,cmd->bcd", a, V)
    (F.normalize(e, dim=-1)[:, None] * g / g.norm(dim=-1, keepdim=True).detach()).sum(-1).sum().backward()
    assert torch.allclose(got, h.q.weight.grad, atol=1e-5)


# ---- temperature inherited from pre-training


def test_tau_inherited_equals_checkpoint(tmp_path):
    path = tmp_path / "model.pt"
    io.torch_save(path, {"model_cfg": {}, "state_dict": {"logit_scale": torch.tensor(math.log(1 / 0.0312))}, "extra": {}})
    assert finetune_tau(FinetuneConfig(tau_from_pretrain=True), path) == pytest.approx(0.0312, rel=1e-6)
    assert finetune_tau(FinetuneConfig(tau=0.05), path) == 0.05  # paper default: fixed
    bad = tmp_path / "bad.pt"
    io.torch_save(bad, {"state_dict": {}})
    with pytest.raises(ValueError, match="logit_scale"):
        finetune_tau(FinetuneConfig(tau_from_pretrain=True), bad)


# ---- shot groups


@pytest.mark.parametrize("count,inclusive,exclusive", [
    (101, "many", "many"), (100, "many", "medium"), (99, "medium", "medium"), (21, "medium", "medium"),
    (20, "few", "medium"), (19, "few", "few"), (1, "few", "few")])
def test_shot_group_boundaries(count, inclusive, exclusive):
    assert shot_group(count, 100, 20) == inclusive  # paper / authors' default
    assert shot_group(count, 100, 20, inclusive=True) == inclusive
    assert shot_group(count, 100, 20, inclusive=False) == exclusive  # OLTR's > 100 / < 20
    assert shot_groups([count], 100, 20, inclusive=False) == [exclusive]


# ---- inference combination


def test_alpha_combination_by_hand():
    li = torch.tensor([[math.log(3.0), 0.0]])  # softmax -> (0.75, 0.25)
    lt = torch.tensor([[0.0, math.log(4.0)]])  # softmax -> (0.2, 0.8)
    assert combine_probs({"image": li, "text": lt}, 0.2)[0].tolist() == pytest.approx([0.2 * 0.75 + 0.8 * 0.2, 0.2 * 0.25 + 0.8 * 0.8])
    assert combine_probs({"image": li, "text": lt}, 0.7)[0].tolist() == pytest.approx([0.7 * 0.75 + 0.3 * 0.2, 0.7 * 0.25 + 0.3 * 0.8])
    # alpha = 0.5 ranks like the paper's plain sum P^I + P^T
    assert combine_probs({"image": li, "text": lt}, 0.5)[0].tolist() == pytest.approx([(0.75 + 0.2) / 2, (0.25 + 0.8) / 2])


# ---- attention learning rate (authors' text_lr)


def test_lgr_attention_lr_groups():
    V, mask = _anchors()
    clf = Classifier(torch.nn.Linear(6, 6), LGRHead(V, mask), "lgr")
    groups = param_groups(clf, 0.05, lgr_lr_overrides(clf, 1e-6))
    ids = {id(p): g for g in groups for p in g["params"]}
    assert ids[id(clf.head.q.weight)]["lr"] == 1e-6 and ids[id(clf.head.ln_k.bias)]["lr"] == 1e-6
    assert ids[id(clf.head.q.weight)]["weight_decay"] == 0.05 and ids[id(clf.head.ln_k.bias)]["weight_decay"] == 0.0
    assert "lr" not in ids[id(clf.head.mlp[0].weight)] and "lr" not in ids[id(clf.image.weight)]
    assert sum(len(g["params"]) for g in groups) == len(list(clf.parameters()))
    assert len(param_groups(clf, 0.05, lgr_lr_overrides(clf, 0.0))) == 2  # default: one lr


# ---- stale derived state (issue #12): loading weights / anchors into an existing head


def _pair(seed_a=0, seed_b=1):
    Va, ma = _anchors(seed=seed_a)
    Vb, mb = _anchors(seed=seed_b)
    mb = mb.clone()
    mb[2, 1:] = False
    torch.manual_seed(seed_a)
    a = LGRHead(Va, ma)
    torch.manual_seed(seed_b)
    b = LGRHead(Vb, mb)
    return a, b


def test_load_state_dict_into_eval_head_equals_fresh_head():
    a, b = _pair()
    e = torch.randn(5, 6)
    a.eval()
    with torch.no_grad():
        a(e)  # fills the eval caches (K, V V^T) from a's weights and anchors
        a.load_state_dict(b.state_dict())
        got = a(e)
        b.eval()
        want = b(e)
    assert torch.allclose(got["text"], want["text"], atol=1e-6) and torch.allclose(got["image"], want["image"])


def test_set_anchors_and_inplace_weight_change_invalidate_caches():
    a, b = _pair()
    e = torch.randn(5, 6)
    a.eval()
    with torch.no_grad():
        a(e)
        a.set_anchors(b.text_emb, b.mask)
        assert torch.allclose(a(e)["text"], a.forward_reference(e)["text"], atol=1e-5)
        a.k.weight.mul_(2.0)  # e.g. an optimizer step on the key projection
        assert torch.allclose(a(e)["text"], a.forward_reference(e)["text"], atol=1e-5)
    with pytest.raises(ValueError, match="at least one anchor"):
        a.set_anchors(b.text_emb, torch.zeros_like(b.mask))


def test_load_rejects_empty_anchor_rows():
    a, b = _pair()
    sd = b.state_dict()
    sd["mask"] = torch.zeros_like(sd["mask"])
    with pytest.raises(ValueError, match="at least one anchor"):
        a.load_state_dict(sd)


# ---- strict classifier loading


def _classifier(qk_bias=True):
    mc = ModelConfig(image_encoder="demo_cnn", embed_dim=6)
    image = fresh_image_encoder(mc)
    V, mask = _anchors()
    head = create_head("lgr", image.embed_dim, 4, V, mask, 0.1, lgr_qk_bias=qk_bias, lgr_init="authors")
    return Classifier(image, head, "lgr"), mc


def test_load_classifier_roundtrip_and_strict(tmp_path):
    clf, mc = _classifier(qk_bias=False)
    extra = {"num_classes": 4, "tau": 0.1, "lgr_qk_bias": False, "lgr_init": "authors", "v_detach": False}
    path = tmp_path / "model.pt"
    save_classifier(path, clf, mc, extra)
    got, _ = read_classifier(path)
    x = torch.randn(2, 3, 32, 32)
    clf.eval()
    with torch.no_grad():
        assert torch.allclose(got(x)["text"], clf(x)["text"], atol=1e-5)
    ck = io.torch_load(path)
    ck["state_dict"]["head.bogus"] = torch.zeros(1)
    io.torch_save(path, ck)
    with pytest.raises(ValueError, match="bogus"):
        read_classifier(path)
    del ck["state_dict"]["head.bogus"]
    del ck["state_dict"]["head.mlp.0.weight"]
    io.torch_save(path, ck)
    with pytest.raises(ValueError, match="mlp.0.weight"):
        read_classifier(path)


def test_load_classifier_rejects_a_checkpoint_with_unexpected_keys(tmp_path):
    """Loading was strict=False: an extra or renamed tensor was silently ignored."""
    mc = ModelConfig(image_encoder="demo_cnn", embed_dim=6)
    image = fresh_image_encoder(mc)
    V, mask = _anchors()
    clf = Classifier(image, create_head("lgr", image.embed_dim, 4, V, mask, 0.1), "lgr")
    path = tmp_path / "model.pt"
    save_classifier(path, clf, mc, {"num_classes": 4, "tau": 0.1})
    ck = io.torch_load(path)
    ck["state_dict"]["head.q_proj.weight"] = ck["state_dict"].pop("head.q.weight")
    io.torch_save(path, ck)
    with pytest.raises(ValueError, match="q_proj.weight"):
        read_classifier(path)


def test_head_built_under_inference_mode_still_works():
    V, mask = _anchors()
    with torch.inference_mode():
        h = LGRHead(V, mask).eval()
        e = torch.randn(2, 6)
        assert torch.allclose(h(e)["text"], h.forward_reference(e)["text"], atol=1e-5)


@pytest.mark.parametrize("freeze,eval_mode", [(True, False), (False, True), (False, False)])
def test_visual_encoder_mode(freeze, eval_mode):
    from langtail.models.classifier import set_visual_mode

    image = torch.nn.Sequential(torch.nn.Linear(6, 6), torch.nn.BatchNorm1d(6))
    V, mask = _anchors()
    clf = Classifier(image, LGRHead(V, mask), "lgr")
    clf.train()
    set_visual_mode(clf, freeze, eval_mode)
    before = image[1].running_mean.clone()
    clf(torch.randn(8, 6) + 5)
    still = torch.equal(before, image[1].running_mean)
    assert still == (freeze or eval_mode)  # BN statistics frozen in eval mode
    assert clf.head.training
    assert all(p.requires_grad != freeze for p in image.parameters())
