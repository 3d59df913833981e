"""Lightweight backbone tuning modes (issue #23): each mode trains exactly what it claims (counted,
and only those parameters change after an optimizer step); LoRA merged == unmerged; every mode on
the open_clip ViT path (tiny random ViT) and on the CNNs; checkpoints rebuild the structure."""
import dataclasses

import pytest
import torch

from langtail.config import ModelConfig
from langtail.models.encoders import create_image_encoder, create_vl_model, register_open_clip_config
from langtail.models.peft import merge_lora
from langtail.models.tuning import trainable_counts

TINY_VIT = "langtail-test-peft-vit"
LAYERS, WIDTH = 2, 64


@pytest.fixture(scope="module", autouse=True)
def tiny_vit():
    register_open_clip_config(TINY_VIT, {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": LAYERS, "width": WIDTH, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    })


def _cfg(encoder: str, mode: str, **kw) -> ModelConfig:
    text = "clip" if encoder == TINY_VIT else "minilm"
    return ModelConfig(image_encoder=encoder, text_encoder=text, embed_dim=32, backbone_mode=mode, **kw)


def _tower(encoder: str, mode: str, **kw):
    torch.manual_seed(0)
    cfg = _cfg(encoder, mode, **kw)
    return create_vl_model(cfg).image if encoder == TINY_VIT else create_image_encoder(cfg)


def _expected(tower, mode: str, **kw) -> set[str]:
    """Names of the parameters ``mode`` claims to train, derived independently of the mode's code."""
    names = [n for n, _ in tower.named_parameters()]
    proj = {n for n in names if n.startswith("proj.")}
    if mode == "bitfit":
        return proj | {n for n in names if n.startswith("backbone.") and n.endswith(".bias")}
    if mode == "lora":
        return proj | {n for n in names if ".parametrizations." in n and not n.endswith(".original")}
    if mode == "adapter":
        return proj | {n for n in names if ".adapter." in n}
    raise AssertionError(mode)


def _step_changes(tower) -> set[str]:
    before = {n: p.detach().clone() for n, p in tower.named_parameters()}
    opt = torch.optim.SGD([p for p in tower.parameters() if p.requires_grad], lr=0.5)
    tower.train()
    for _ in range(2):  # two steps: LoRA's B starts at 0, so A moves only from the second step
        out = tower(torch.randn(4, 3, 32, 32))
        opt.zero_grad()
        (out ** 2).sum().backward()
        opt.step()
    return {n for n, p in tower.named_parameters() if not torch.equal(p.detach(), before[n])}


@pytest.mark.parametrize("encoder", [TINY_VIT, "demo_cnn", "resnet32"])
@pytest.mark.parametrize("mode", ["bitfit", "lora", "adapter"])
def test_mode_trains_exactly_its_parameters(encoder, mode):
    tower = _tower(encoder, mode)
    want = _expected(tower, mode)
    trained = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trained == want and want
    n_trained, n_total = trainable_counts(tower)
    assert n_trained == sum(p.numel() for n, p in tower.named_parameters() if n in want) < n_total
    assert _step_changes(tower) <= want  # nothing outside the claim moves after optimizer steps
    assert tower.tuning and tower.backbone_mode == mode


def test_counts_of_lora_and_adapter_on_the_vit():
    """Closed-form counts on the tiny ViT (2 blocks, width 64): LoRA r=4 on q, v: 2 x (r*64 + 64*r)
    per block; AdaptFormer dim 8: LN(2*64) + down(64*8+8) + up(8*64+64) + scale per block."""
    lora = _tower(TINY_VIT, "lora", lora_rank=4)
    assert trainable_counts(lora)[0] == LAYERS * 2 * (4 * WIDTH + WIDTH * 4)
    ad = _tower(TINY_VIT, "adapter", adapter_dim=8)
    assert trainable_counts(ad)[0] == LAYERS * (2 * WIDTH + WIDTH * 8 + 8 + 8 * WIDTH + WIDTH + 1)


@pytest.mark.parametrize("encoder,targets", [(TINY_VIT, ["q", "v"]), (TINY_VIT, ["q", "k", "v", "out", "mlp"]),
                                             ("demo_cnn", ["conv"])])
def test_lora_merged_equals_unmerged(encoder, targets):
    tower = _tower(encoder, "lora", lora_targets=targets, lora_rank=2, lora_alpha=4.0)
    with torch.no_grad():  # non-zero updates (B starts at zero)
        for n, p in tower.named_parameters():
            if ".parametrizations." in n and not n.endswith(".original"):
                p.normal_(0, 0.05)
    tower.eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        unmerged = tower(x)
        merge_lora(tower)
        merged = tower(x)
    assert not any(".parametrizations." in n for n, _ in tower.named_parameters())
    assert torch.allclose(unmerged, merged, atol=1e-5, rtol=1e-4)
    assert not tower.tuning


def test_unknown_or_empty_targets_are_clear_errors():
    with pytest.raises(ValueError, match="lora_targets.*unknown"):
        _tower("demo_cnn", "lora", lora_targets=["qq"])
    with pytest.raises(ValueError, match="select no weight"):
        _tower("demo_cnn", "lora", lora_targets=["q", "v"])
    with pytest.raises(KeyError, match="unknown backbone mode"):
        _tower("demo_cnn", "nope")


def test_applying_a_mode_twice_adds_nothing():
    from langtail.models.tuning import apply_backbone_mode

    tower = _tower(TINY_VIT, "adapter")
    n = sum(p.numel() for p in tower.parameters())
    apply_backbone_mode(tower, _cfg(TINY_VIT, "adapter"))
    assert sum(p.numel() for p in tower.parameters()) == n and len(tower.tuning) == 1


@pytest.mark.parametrize("mode", ["lora", "adapter", "bitfit"])
def test_classifier_checkpoint_rebuilds_the_structure(tmp_path, mode):
    from langtail.models.classifier import create_head, read_classifier, save_classifier
    from langtail.models.heads import Classifier

    tower = _tower(TINY_VIT, mode)
    with torch.no_grad():
        for n, p in tower.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    clf = Classifier(tower, create_head("fc", tower.embed_dim, 5, None, None), "fc").eval()
    save_classifier(tmp_path / "m.pt", clf, _cfg(TINY_VIT, mode), {"num_classes": 5})
    back, ck = read_classifier(tmp_path / "m.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(clf(x)["image"], back(x)["image"], atol=1e-6)
    ex = ck["extra"]
    assert ex["backbone_mode"] == mode and 0 < ex["params_trained"] < ex["params_total"]


def test_cvlp_checkpoint_with_adapters_loads_back(tmp_path):
    from langtail.models.encoders import load_vl_checkpoint, save_vl_checkpoint

    cfg = dataclasses.replace(_cfg(TINY_VIT, "adapter"), train_text_encoder=True)
    torch.manual_seed(0)
    m = create_vl_model(cfg)
    with torch.no_grad():
        for n, p in m.image.named_parameters():
            if ".adapter." in n:
                p.normal_(0, 0.05)
    save_vl_checkpoint(tmp_path / "p.pt", m, cfg)
    image, _, ck = load_vl_checkpoint(tmp_path / "p.pt", image_only=True)
    x = torch.randn(2, 3, 32, 32)
    m.eval(), image.eval()
    with torch.no_grad():
        assert torch.allclose(m.image(x), image(x), atol=1e-6)
    assert ck["extra"]["backbone_mode"] == "adapter" and ck["extra"]["params_trained"] > 0
