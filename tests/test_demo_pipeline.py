"""The demo dataset and the in-process stage chain: determinism, schemas, resume."""
import dataclasses
import json

import numpy as np
import pytest
import torch

from conftest import run_chain, staged
from langtail import io
from langtail.data.demo import class_names, make_page
from langtail.data.manifest import read_manifest
from langtail.schemas import MANIFEST_COLUMNS
from langtail.models.text_cache import read_text_embeddings
from langtail.schemas import ANCHORS_COLUMNS, CORPUS_COLUMNS, PER_CLASS_COLUMNS


def test_demo_profile_and_groups(tmp_path):
    from langtail.config import DataConfig, DatasetConfig
    from langtail.stages import longtail

    cfg = DataConfig(name="demo", imbalance_factor=50, max_train_per_class=300, test_per_class=2)
    longtail.run(DatasetConfig(data=cfg), tmp_path / "m.parquet")
    df, meta = read_manifest(tmp_path / "m.parquet")
    tr = df[df.split == "train"]
    counts = tr.groupby("label").size().to_numpy()
    assert len(class_names()) == len(set(class_names())) == 24
    assert counts[0] == 300 and counts[-1] == 6 and np.all(np.diff(counts) <= 0)
    groups = tr.drop_duplicates("label")["group"].value_counts().to_dict()
    assert groups == {"many": 7, "medium": 9, "few": 8}
    assert (df[df.split == "test"].groupby("label").size() == 2).all()
    # arrays live in the declared folder arrays/ (never undeclared files beside the manifest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["arrays", "m.parquet"]
    imgs = np.load(tmp_path / "arrays" / "images_train.npy")
    assert imgs.shape == (len(tr), 32, 32, 3) and imgs.dtype == np.uint8
    from langtail.data.dataset import store_for

    assert meta["arrays_dir"] == "arrays"
    assert np.array_equal(store_for(tmp_path / "m.parquet", meta).load(tr["image"].iloc[5]), imgs[5])
    assert meta["class_names"] == class_names()


def test_demo_pages_have_wiki_layout():
    page = make_page(3)
    assert page.splitlines()[0].startswith("A ")
    for h in ("== Appearance ==", "== History ==", "== References ==", "== External links =="):
        assert h in page


@pytest.fixture(scope="module")
def chain_runs(tmp_path_factory):
    from langtail.config import from_dict
    from conftest import TINY

    cfg = from_dict(TINY)
    a = tmp_path_factory.mktemp("run_a")
    b = tmp_path_factory.mktemp("run_b")
    return cfg, a, run_chain(cfg, a), b, run_chain(cfg, b)


def _untimed(m):
    """A metrics document without its wall times (``train_seconds``: the one field that differs between runs)."""
    if isinstance(m, dict):
        return {k: _untimed(v) for k, v in m.items() if not k.endswith("seconds")}
    return m


def test_same_seed_same_manifest_and_metrics(chain_runs):
    cfg, a, ma, b, mb = chain_runs
    assert (a / "manifest.parquet").read_bytes() == (b / "manifest.parquet").read_bytes()
    assert (a / "corpus.parquet").read_bytes() == (b / "corpus.parquet").read_bytes()
    assert json.dumps(_untimed(ma), sort_keys=True) == json.dumps(_untimed(mb), sort_keys=True)
    assert _untimed(io.read_json(a / "eval/lgr/metrics.json")) == _untimed(io.read_json(b / "eval/lgr/metrics.json"))


def test_artifact_schemas_read_back(chain_runs):
    cfg, a, *_ = chain_runs
    io.read_parquet(a / "manifest.parquet", MANIFEST_COLUMNS)
    corpus = io.read_parquet(a / "corpus.parquet", CORPUS_COLUMNS)
    anchors = io.read_parquet(a / "anchors.parquet", ANCHORS_COLUMNS)
    assert len(anchors) == len(corpus)
    sel = anchors[anchors.selected].groupby("class_id").size()
    assert (sel == cfg.anchors.num_anchors).all()
    # selected = the M lowest L_lin of each class
    for c, g in anchors.groupby("class_id"):
        kept = g[g.selected]["l_lin"].max()
        dropped = g[~g.selected]["l_lin"].min()
        assert kept <= dropped
    emb, mask, meta = read_text_embeddings(a / "text_emb.safetensors")
    assert emb.shape == (24, cfg.anchors.num_anchors, cfg.model.embed_dim) and emb.dtype == torch.float32
    assert mask.all() and json.loads(meta["text_identity"])["name"] == "minilm"
    per = io.read_parquet(a / "eval/lgr/per_class.parquet", PER_CLASS_COLUMNS)
    assert len(per) == 24
    m = io.read_json(a / "eval/lgr/metrics.json")
    assert set(m) >= {"overall", "many", "medium", "few", "image_branch", "text_branch"}
    # group accuracy is the per-image mean inside the group
    few = per[per.group == "few"]
    assert m["few"] == pytest.approx(100 * few.correct.sum() / few.n_test.sum())


def test_resume_after_kill_matches_uninterrupted(chain_runs, monkeypatch):
    """Kill finetune during epoch 2, rerun: same weights as the uninterrupted run."""
    import langtail.stages.finetune as ft

    cfg, a, *_ = chain_runs
    man, emb, pre = a / "manifest.parquet", a / "text_emb.safetensors", a / "pretrain.pt"
    out = a / "resumed.pt"
    real = ft.recognition_loss
    calls = {"n": 0}
    steps_per_epoch = len(read_manifest(man)[0].query("split == 'train'")) // cfg.finetune.batch_size

    def dying(*args, **kw):
        calls["n"] += 1
        if calls["n"] == steps_per_epoch + 1:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kw)

    monkeypatch.setattr(ft, "recognition_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        ft.run(cfg, "lgr", man, out, emb, pre)
    assert not out.exists() and out.with_name(out.name + ".resume").exists()
    monkeypatch.setattr(ft, "recognition_loss", real)
    ft.run(cfg, "lgr", man, out, emb, pre)
    assert not out.with_name(out.name + ".resume").exists()
    ref = io.torch_load(a / "lgr.pt")["state_dict"]
    got = io.torch_load(out)
    assert got["extra"]["resumed_from_epoch"] == 1
    for k, v in ref.items():
        assert torch.equal(v, got["state_dict"][k]), k


def test_fc_baseline_does_not_use_cvlp_weights(chain_runs):
    cfg, a, *_ = chain_runs
    from langtail.stages import finetune

    c = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, epochs=1))
    finetune.run(staged(c, "finetune", head="fc"), "fc", a / "manifest.parquet", a / "fc1.pt")
    assert io.torch_load(a / "fc1.pt")["extra"]["init"] == "model.pretrained"
