"""Test-time ensembling (issue #23): the views, TTA of an identity transform equals no TTA (unit
and through the evaluate stage), the cost and the resize interpolation in metrics.json; and the
LIFT ingredients together in the stage chain (LoRA backbone, text-initialised cosine head, SGD,
logit-adjusted loss, five-crop TTA)."""
import dataclasses

import pytest
import torch

from conftest import TINY, run_chain, staged
from langtail.config import from_dict
from langtail.inference import TTA_VIEWS, tta_load_size, tta_views, with_tta


def test_views_are_torchvision_five_and_ten_crop():
    from torchvision.transforms import v2

    x = torch.randn(2, 3, 40, 40)
    ours = tta_views(x, "ten_crop", 32)
    ref = v2.TenCrop(32)(x)
    assert len(ours) == TTA_VIEWS["ten_crop"] == 10
    for a, b in zip(ours, ref):
        assert torch.equal(a, b)
    assert [v.shape for v in tta_views(x[..., :32, :32], "flip", 32)] == [(2, 3, 32, 32)] * 2
    with pytest.raises(ValueError, match="smaller than the crop"):
        tta_views(x, "five_crop", 48)
    with pytest.raises(ValueError, match="unknown"):
        tta_load_size("sixcrop", 32, 4)


@pytest.mark.parametrize("mode", ["flip", "five_crop", "ten_crop"])
def test_tta_of_identity_views_equals_no_tta(mode):
    """Every view equal to the image (crops of an un-expanded image; a mirror-symmetric image):
    the ensemble is the plain forward pass, for tensor and dict outputs."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    x = torch.randn(3, 3, 16, 16)
    x = (x + x.flip(-1)) / 2  # symmetric: flip is the identity too
    with torch.no_grad():
        plain = net(x)
        assert torch.allclose(with_tta(net, mode, 16)(x), plain, atol=1e-6)
        d = with_tta(lambda v: {"image": net(v), "text": 2 * net(v)}, mode, 16)(x)
        assert torch.allclose(d["text"], 2 * plain, atol=1e-6)
        assert not torch.allclose(with_tta(net, "five_crop", 12)(x), net(x[..., 2:14, 2:14]))  # real crops differ


LIFT_STYLE = {
    "model": {"backbone_mode": "lora", "lora_rank": 4},
    "finetune": {"heads": ["fc_cvlp"], "head_init": "text", "fc_cosine_scale": 25.0, "optimizer": "sgd",
                 "lr": 0.01, "weight_decay": 5e-4, "loss": "logit_adjusted", "sampler": "instance"},
}


def test_lift_ingredients_through_the_stage_chain(tmp_path):
    from langtail.stages import evaluate

    d = {k: dict(v) for k, v in TINY.items()}
    for sec, over in LIFT_STYLE.items():
        d[sec] = {**d.get(sec, {}), **over}
    cfg = from_dict(d)
    m = run_chain(cfg, tmp_path, heads=("fc_cvlp",))["fc_cvlp"]
    assert m["backbone_mode"] == "lora" and m["head_init"] == "text"
    assert 0 < m["params_trained"] < m["params_total"]
    assert m["tta"] == "none" and m["forward_passes"] == 1
    assert m["preprocess"] == {"image_size": 32, "crop": 32, "normalize": cfg.data.normalize,
                               "interpolation": "bilinear"}
    man, ck = tmp_path / "manifest.parquet", tmp_path / "fc_cvlp.pt"

    def ev(**kw):
        c = dataclasses.replace(cfg, evaluate=dataclasses.replace(cfg.evaluate, **kw))
        return evaluate.run(staged(c, "evaluate"), "fc_cvlp", man, ck, tmp_path / "eval" / str(kw))

    same = ev(tta="five_crop", tta_expand=0)  # five crops of the un-expanded image = the image
    assert same["forward_passes"] == 5
    for k in ("overall", "many", "medium", "few"):
        assert same[k] == m[k], k
    crops = ev(tta="five_crop", tta_expand=4)
    assert crops["tta_expand"] == 4 and crops["preprocess"]["image_size"] == 36
    assert crops["preprocess"]["crop"] == 32
