"""``model.backbone_mode: frozen``: image features cached once (content-keyed), every stage on them.

The chain runs on the demo data with ``demo_cnn`` at random init (its torch-seed-0 init is the
frozen backbone); MiniLM is the real, offline text encoder.
"""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from conftest import TINY, staged
from langtail import io
from langtail.config import from_dict
from langtail.data.features import ImageFeatures, weights_sha256

FROZEN = copy.deepcopy(TINY)
FROZEN["model"].update(backbone_mode="frozen")
FROZEN["finetune"]["heads"] = ["lgr", "fc"]


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():
    """Stages on cached pooled features use one intra-op thread (a process-wide setting): restore it."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _features(cfg, out, kind="pooled", name="image_features.safetensors"):
    from langtail.stages import image_features

    return image_features.run(staged(cfg, "image_features", kind=kind), kind, out / "manifest.parquet", out / name,
                              out / "cache")


@pytest.fixture(scope="module")
def frozen_run(tmp_path_factory):
    """longtail -> image_features -> corpus -> pretrain -> anchors -> embed_text -> finetune (fc, lgr) -> evaluate."""
    from langtail.stages import anchors, corpus, embed_text, evaluate, finetune, longtail, pretrain

    cfg = from_dict(FROZEN)
    out = tmp_path_factory.mktemp("frozen")
    man = out / "manifest.parquet"
    longtail.run(staged(cfg, "longtail"), man)
    feats = _features(cfg, out)
    corpus.run(staged(cfg, "corpus"), out / "corpus.parquet", out / "corpus_stats.parquet", out / "wiki_cache")
    cache = out / "cache"
    pretrain.run(staged(cfg, "pretrain"), man, out / "corpus.parquet", out / "pretrain.pt", cache, features_path=feats)
    anchors.run(staged(cfg, "anchors"), man, out / "corpus.parquet", out / "pretrain.pt", out / "anchors.parquet",
                cache, feats)
    embed_text.run(staged(cfg, "embed_text"), man, out / "anchors.parquet", out / "corpus.parquet", out / "pretrain.pt",
                   out / "text_emb.safetensors", cache)
    metrics = {}
    for h in ("fc", "lgr"):
        finetune.run(staged(cfg, "finetune", head=h), h, man, out / f"{h}.pt", out / "text_emb.safetensors",
                     out / "pretrain.pt", features_path=feats)
        metrics[h] = evaluate.run(staged(cfg, "evaluate"), h, man, out / f"{h}.pt", out / "eval" / h,
                                  out / "text_emb.safetensors", cache, feats)
    return cfg, out, metrics


def test_features_file_schema_reads_back(frozen_run):
    from langtail.data.manifest import read_manifest

    cfg, out, _ = frozen_run
    f = ImageFeatures(out / "image_features.safetensors")
    df, _ = read_manifest(out / "manifest.parquet")
    assert f.kind == "pooled" and f.data.shape == (len(df), 128) and f.data.dtype == torch.float32
    assert f.valid.all() and f.views == 0
    assert np.array_equal(f.rows_of(df), np.arange(len(df)))  # aligned to manifest rows
    assert np.array_equal(f.rows_of(df.iloc[[5, 2]]), [5, 2])
    for k in ("key", "identity", "weights_sha256", "feat_dim", "bytes_per_image", "unreadable"):
        assert k in f.meta, k
    assert f.meta["bytes_per_image"] == str(128 * 4)
    assert sorted(p.name for p in (out / "cache").glob("image_*")) == [f"image_pooled_{f.meta['key']}.safetensors"]


def test_second_run_reuses_the_cache_and_key_follows_content(frozen_run, monkeypatch):
    from langtail.models import image_cache

    cfg, out, _ = frozen_run
    calls = []
    real = image_cache.compute
    monkeypatch.setattr(image_cache, "compute", lambda *a, **k: calls.append(1) or real(*a, **k))
    _features(cfg, out, name="again.safetensors")
    assert calls == []  # a second run (another head, a rerun) does not recompute
    assert (out / "again.safetensors").read_bytes() == (out / "image_features.safetensors").read_bytes()
    key0 = ImageFeatures(out / "image_features.safetensors").meta["key"]
    for section, change in (("data", {"image_size": 28}), ("data", {"normalize": "imagenet"}),
                            ("model", {"image_encoder": "resnet32"}), ("model", {"frozen_views": 1})):
        raw = copy.deepcopy(FROZEN)
        raw[section].update(change)
        _features(from_dict(raw), out, name="other.safetensors")
        assert ImageFeatures(out / "other.safetensors").meta["key"] != key0, change
    assert len(calls) == 4


def test_key_changes_with_weights_and_manifest(frozen_run, tmp_path):
    from langtail.data.manifest import read_manifest
    from langtail.models.classifier import fresh_image_encoder
    from langtail.models.image_cache import cache_key, identity

    cfg, out, _ = frozen_run
    torch.manual_seed(0)
    tower = fresh_image_encoder(cfg.model)
    ident = identity(tower, "pooled", 32, "cifar", 0, out / "manifest.parquet")
    assert cache_key(ident) == ImageFeatures(out / "image_features.safetensors").meta["key"]
    with torch.no_grad():
        next(tower.backbone.parameters()).add_(1e-3)
    assert cache_key(identity(tower, "pooled", 32, "cifar", 0, out / "manifest.parquet")) != cache_key(ident)
    df, meta = read_manifest(out / "manifest.parquet")
    meta["arrays_dir"] = str(out / "arrays")
    io.write_parquet(tmp_path / "m.parquet", df.iloc[:-1], metadata=meta)
    torch.manual_seed(0)
    assert cache_key(identity(fresh_image_encoder(cfg.model), "pooled", 32, "cifar", 0, tmp_path / "m.parquet")) \
        != cache_key(ident)


def test_frozen_run_never_updates_the_backbone(frozen_run):
    from langtail.models.classifier import read_classifier as load_classifier
    from langtail.models.encoders import load_vl_checkpoint

    cfg, out, _ = frozen_run
    f = ImageFeatures(out / "image_features.safetensors")
    sha = f.meta["weights_sha256"]
    assert load_vl_checkpoint(out / "pretrain.pt", image_only=True)[0].backbone is not None
    assert weights_sha256(load_vl_checkpoint(out / "pretrain.pt", image_only=True)[0].backbone) == sha
    for h in ("fc", "lgr"):
        clf, ck = load_classifier(out / f"{h}.pt")
        assert weights_sha256(clf.image.backbone) == sha, h
        assert ck["extra"]["history"]  # it trained
    # ... while the projection of CVLP did train
    vl = load_vl_checkpoint(out / "pretrain.pt")[0]
    torch.manual_seed(0)
    from langtail.models.encoders import create_vl_model

    fresh = create_vl_model(dataclasses.replace(cfg.model))
    assert not torch.allclose(vl.image.proj.weight, fresh.image.proj.weight)


def test_cached_logits_equal_image_logits(frozen_run):
    """The fc head on cached features gives the logits of the same weights run on the images."""
    from langtail.data.dataset import eval_loader
    from langtail.data.manifest import read_manifest
    from langtail.models.classifier import read_classifier as load_classifier

    cfg, out, metrics = frozen_run
    df, meta = read_manifest(out / "manifest.parquet")
    test = df[df.split == "test"].reset_index(drop=True)
    clf, _ = load_classifier(out / "fc.pt")
    f = ImageFeatures(out / "image_features.safetensors")
    with torch.no_grad():
        a = torch.cat([clf(b["image"])["image"] for b in eval_loader(test, out / "manifest.parquet", meta, cfg.data, 64, features=f)])
        b = torch.cat([clf(b["image"])["image"] for b in eval_loader(test, out / "manifest.parquet", meta, cfg.data, 64)])
    assert a.shape == (len(test), 24)
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert metrics["fc"]["image_features"] == "cached" and metrics["fc"]["n_images"] == len(test)


def test_predict_on_image_files_from_a_frozen_checkpoint(frozen_run, tmp_path):
    """``langtail predict`` on PNG files with a frozen-mode checkpoint: the top-1 class is the
    one the cached features give (the checkpoint holds the frozen backbone)."""
    from PIL import Image

    from langtail.cli import main
    from langtail.data.dataset import store_for
    from langtail.data.manifest import read_manifest
    from langtail.models.classifier import read_classifier as load_classifier
    from langtail.predict import read_predictions

    cfg, out, _ = frozen_run
    df, meta = read_manifest(out / "manifest.parquet")
    store = store_for(out / "manifest.parquet", meta)
    test = df[df.split == "test"].iloc[:4]
    paths = []
    for i, ref in enumerate(test["image"]):
        paths.append(str(tmp_path / f"img{i}.png"))
        Image.fromarray(store.load(ref)).save(paths[-1])
    assert main(["predict", "--model", str(out / "fc.pt"), *paths, "--top-k", "1", "--device", "cpu",
                 "--out", str(tmp_path / "p.csv")]) == 0
    pred, _ = read_predictions(tmp_path / "p.csv")
    f = ImageFeatures(out / "image_features.safetensors")
    clf, _ = load_classifier(out / "fc.pt")
    with torch.no_grad():
        want = clf(f.data[torch.as_tensor(f.rows_of(test))])["image"].argmax(1).tolist()
    pred = pred[pred["rank"] == 1].sort_values("input")
    assert pred["class_id"].tolist() == want


def test_linear_probe_baseline_reads_the_pooled_features(frozen_run, tmp_path):
    """``finetune.baseline_projection: false``: the fc baseline is a linear probe on the backbone's
    F-d pooled features (no D-dim projection); the checkpoint reloads without it, evaluation and
    the cached-vs-image logits agree, and only the head's F * C + C parameters train."""
    from langtail.data.dataset import eval_loader
    from langtail.data.manifest import read_manifest
    from langtail.models.classifier import read_classifier as load_classifier
    from langtail.stages import evaluate, finetune

    cfg, out, metrics = frozen_run
    probe = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, baseline_projection=False))
    man, feats = out / "manifest.parquet", out / "image_features.safetensors"
    finetune.run(staged(probe, "finetune", head="fc"), "fc", man, tmp_path / "fc.pt", features_path=feats)
    ck = io.torch_load(tmp_path / "fc.pt")
    F_dim = ImageFeatures(feats).data.shape[1]
    assert not any(k.startswith("image.proj.") for k in ck["state_dict"])
    assert ck["state_dict"]["head.fc.weight"].shape == (24, F_dim)
    m = evaluate.run(staged(probe, "evaluate"), "fc", man, tmp_path / "fc.pt", tmp_path / "eval", None,
                     out / "cache", feats)
    assert m["params_trained"] == 0 and m["params_head"] == F_dim * 24 + 24
    assert metrics["fc"]["params_trained"] == F_dim * cfg.model.embed_dim + cfg.model.embed_dim  # the projection
    clf, _ = load_classifier(tmp_path / "fc.pt")
    assert clf.image.embed_dim == F_dim
    df, meta = read_manifest(man)
    test = df[df.split == "test"].reset_index(drop=True)
    f = ImageFeatures(feats)
    with torch.no_grad():
        a = torch.cat([clf(b["image"])["image"] for b in eval_loader(test, man, meta, cfg.data, 64, features=f)])
        b = torch.cat([clf(b["image"])["image"] for b in eval_loader(test, man, meta, cfg.data, 64)])
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-4)
    assert abs(100 * (a.argmax(1).numpy() == test["label"].to_numpy()).mean() - m["overall"]) < 1e-6


def test_frozen_needs_the_features_file(frozen_run, tmp_path):
    from langtail.stages import finetune

    cfg, out, _ = frozen_run
    with pytest.raises(ValueError, match="--features"):
        finetune.run(staged(cfg, "finetune", head="fc"), "fc", out / "manifest.parquet", tmp_path / "fc.pt")


def test_ca4ltr_trains_and_evaluates_on_cached_tokens(frozen_run):
    """CA4LTR (label text) under frozen: tokens [N, L, F] float16 cached once, logits equal the images'."""
    from langtail.data.dataset import eval_loader
    from langtail.data.manifest import read_manifest
    from langtail.models.ca4ltr import load_ca4ltr
    from langtail.stages import ca4ltr_evaluate, ca4ltr_finetune

    raw = copy.deepcopy(FROZEN)
    raw["ca4ltr"] = {"sources": ["label"], "epochs": 1, "width": 16, "batch_size": 32, "device": "cpu"}
    cfg = from_dict(raw)
    _, out, _ = frozen_run
    man = out / "manifest.parquet"
    tok = _features(cfg, out, "tokens", "image_tokens.safetensors")
    f = ImageFeatures(tok)
    assert f.kind == "tokens" and f.data.dtype == torch.float16 and f.data.shape[1:] == (16, 128)
    assert f.meta["bytes_per_image"] == str(16 * 128 * 2) and f.meta["tokens_per_image"] == "16"
    with pytest.raises(ValueError, match="tokens"):
        ca4ltr_finetune.run(staged(cfg, "ca4ltr_finetune", source="label"), "label", man, out / "ca.pt",
                            out / "cache", features_path=out / "image_features.safetensors")
    ca4ltr_finetune.run(staged(cfg, "ca4ltr_finetune", source="label"), "label", man, out / "ca.pt", out / "cache",
                        features_path=tok)
    m = ca4ltr_evaluate.run(staged(cfg, "ca4ltr_evaluate"), man, out / "ca.pt", out / "eval" / "ca", out / "cache",
                            features_path=tok)
    assert m["n_images"] > 0
    model, _ = load_ca4ltr(out / "ca.pt")
    assert weights_sha256(model.image.backbone) == f.meta["weights_sha256"]
    df, meta = read_manifest(man)
    test = df[df.split == "test"].reset_index(drop=True).iloc[:16]
    with torch.no_grad():
        a = torch.cat([model(b["image"]) for b in eval_loader(test, man, meta, cfg.data, 16, features=f)])
        b = torch.cat([model(b["image"]) for b in eval_loader(test, man, meta, cfg.data, 16)])
    assert torch.allclose(a, b, atol=2e-2, rtol=1e-2)  # float16 tokens
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.9


def test_augmented_views_drawn_per_sample_and_epoch(frozen_run):
    """model.frozen_views: K views of each training image; one drawn per sample and epoch from the seed."""
    from langtail.data.dataset import train_loader
    from langtail.data.manifest import read_manifest

    raw = copy.deepcopy(FROZEN)
    raw["model"]["frozen_views"] = 2
    cfg = from_dict(raw)
    _, out, _ = frozen_run
    path = _features(cfg, out, name="views.safetensors")
    f = ImageFeatures(path)
    df, meta = read_manifest(out / "manifest.parquet")
    tr = df[df.split == "train"].reset_index(drop=True)
    assert f.views == 2 and f.view_data.shape == (2, len(tr), 128)
    assert not torch.allclose(f.view_data[0], f.view_data[1])  # two different augmentations

    def epoch(e, augment=True):
        ld = train_loader(tr, out / "manifest.parquet", meta, cfg.data, batch_size=16, sampler="instance", seed=3,
                          augment=augment, device=torch.device("cpu"), features=f)
        ld.sampler.set_epoch(e)
        return torch.cat([b["image"] for b in ld]), torch.cat([b["row"] for b in ld])

    x0, r0 = epoch(0)
    x0b, _ = epoch(0)
    x1, _ = epoch(1)
    assert torch.equal(x0, x0b) and not torch.equal(x0, x1)  # deterministic from (seed, epoch)
    pos = torch.as_tensor([int(np.flatnonzero(f.view_rows == f.rows_of(tr)[r])[0]) for r in r0.tolist()])
    cand = f.view_data[:, pos]
    assert all(any(torch.equal(x0[i], cand[k, i]) for k in range(2)) for i in range(len(x0)))
    picked = torch.tensor([[torch.equal(x0[i], cand[k, i]) for k in range(2)] for i in range(len(x0))])
    assert picked[:, 0].any() and picked[:, 1].any()  # both views are drawn
    xn, rn = epoch(0, augment=False)  # a stage with augment off trains on the un-augmented features
    assert torch.equal(xn, f.data[torch.as_tensor(f.rows_of(tr))[rn]])
