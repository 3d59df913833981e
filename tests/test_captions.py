"""Caption stage: tiny random BLIP-2 saved with save_pretrained, run through run_captions."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from langtail import io
from langtail.config import CaptionsConfig
from langtail.data.manifest import ManifestBuild, make_manifest, write_manifest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from langtail.captions import blip2  # noqa: E402
from langtail.captions import shards as stage  # noqa: E402
from langtail.captions.shards import read_captions, select_images  # noqa: E402
from langtail.schemas import CAPTIONS_COLUMNS  # noqa: E402
from langtail.config import DatasetConfig  # noqa: E402
from langtail.stages import captions as captions_stage  # noqa: E402


def run_captions(manifest, cfg: CaptionsConfig, out, shard_dir):
    """The captions stage with this captions section (everything else default)."""
    captions_stage.run(DatasetConfig(captions=cfg), manifest, out, shard_dir)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    # 32px input keeps the test fast; the stage code path is the same as for 224px
    return blip2.save_tiny_blip2(tmp_path_factory.mktemp("blip2") / "tiny", image_size=32)


def _manifest(folder: Path, labels: list[int], splits: list[str] | None = None, seed: int = 0) -> Path:
    n = len(labels)
    rng = np.random.default_rng(seed)
    np.save(folder / "images_train.npy", rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8))
    splits = splits or ["train"] * n
    build = ManifestBuild(images=[f"images_train.npy#{i}" for i in range(n)], labels=labels, splits=splits,
                          class_names=[f"class{c}" for c in range(max(labels) + 1)])
    path = folder / "manifest.parquet"
    write_manifest(path, make_manifest(build), {"dataset": "t", "image_root": ""})
    return path


def _cfg(model: Path, **kw) -> CaptionsConfig:
    base = dict(enabled=True, model=str(model), per_class=0, batch_size=4, shard_size=4,
                max_new_tokens=5, device="cpu", dtype="auto")
    base.update(kw)
    return CaptionsConfig(**base)


def test_schema_and_metadata(tmp_path, tiny_model):
    m = _manifest(tmp_path, [0, 0, 1, 1, 1, 2])
    out = tmp_path / "captions.parquet"
    run_captions(m, _cfg(tiny_model, shard_size=4), out, tmp_path / "shards")
    df = read_captions(out)
    assert list(df.columns) == list(CAPTIONS_COLUMNS)
    io.check_columns(df, CAPTIONS_COLUMNS, where="captions")
    assert str(df["image_index"].dtype) == "int64" and str(df["max_new_tokens"].dtype) == "int32"
    assert df["image_index"].tolist() == list(range(6))
    assert df["class_id"].tolist() == [0, 0, 1, 1, 1, 2]
    assert df["image"].tolist() == [f"images_train.npy#{i}" for i in range(6)]
    assert (df["model"] == str(tiny_model)).all() and (df["max_new_tokens"] == 5).all()
    assert df["caption"].map(lambda s: isinstance(s, str) and len(s) > 0).all()
    assert all(len(c.split()) <= 5 for c in df["caption"])
    meta = io.read_parquet_metadata(out)
    assert meta["enabled"] is True and meta["n_images"] == 6 and meta["n_shards"] == 2
    assert meta["max_new_tokens"] == 5 and meta["prompt"] == "" and meta["num_beams"] == 1
    assert meta["do_sample"] is False and meta["dtype"] == "float32"
    assert meta["elapsed_s"] > 0 and meta["images_per_s"] > 0
    assert sorted(p.name for p in (tmp_path / "shards").iterdir()) == ["shard_00000.parquet", "shard_00001.parquet"]


def test_prompt_conditioned_returns_continuation_only(tmp_path, tiny_model):
    m = _manifest(tmp_path, [0, 1, 2])
    out = tmp_path / "captions.parquet"
    run_captions(m, _cfg(tiny_model, prompt="a photo of", max_new_tokens=3), out, tmp_path / "shards")
    df = read_captions(out)
    assert (df["prompt"] == "a photo of").all()
    assert all(0 < len(c.split()) <= 3 for c in df["caption"])


def test_per_class_selection_first_k_in_manifest_order(tmp_path):
    labels = [2, 0, 0, 1, 0, 2, 0, 1, 2, 2]
    splits = ["train"] * 7 + ["test"] * 3
    man = make_manifest(ManifestBuild(images=[f"x.npy#{i}" for i in range(10)], labels=labels,
                                      splits=splits, class_names=["a", "b", "c"]))
    sel = select_images(man, ["train"], per_class=2)
    assert sel["image_index"].tolist() == [0, 1, 2, 3, 5]
    assert sel["class_id"].tolist() == [2, 0, 0, 1, 2]
    both = select_images(man, ["train", "test"], per_class=1)  # per (split, class)
    assert both["image_index"].tolist() == [0, 1, 3, 7, 8]
    assert len(select_images(man, ["train", "test"], per_class=0)) == 10
    with pytest.raises(ValueError, match="unknown split"):
        select_images(man, ["trian"], per_class=1)


def test_per_class_run(tmp_path, tiny_model):
    m = _manifest(tmp_path, [0, 0, 0, 1, 1, 1, 1, 2])
    out = tmp_path / "captions.parquet"
    run_captions(m, _cfg(tiny_model, per_class=2), out, tmp_path / "shards")
    df = read_captions(out)
    assert df["image_index"].tolist() == [0, 1, 3, 4, 7]
    assert df.groupby("class_id").size().to_dict() == {0: 2, 1: 2, 2: 1}


def test_resume_after_kill(tmp_path, tiny_model, monkeypatch):
    m = _manifest(tmp_path, [0, 1, 2, 0, 1, 2, 0, 1, 2, 0])  # 10 images, shards of 4 -> 3 shards
    out, shards = tmp_path / "captions.parquet", tmp_path / "shards"
    cfg = _cfg(tiny_model, shard_size=4, batch_size=2)
    reference_out = tmp_path / "reference.parquet"
    run_captions(m, cfg, reference_out, tmp_path / "ref_shards")

    real_generate = blip2.Blip2Captioner.generate
    calls: list[int] = []

    def killed_after_shard_1(self, enc):
        if len(calls) == 2:  # 2 batches of 2 = shard 0 finished
            raise KeyboardInterrupt("simulated kill")
        calls.append(enc["pixel_values"].shape[0])
        return real_generate(self, enc)

    monkeypatch.setattr(blip2.Blip2Captioner, "generate", killed_after_shard_1)
    with pytest.raises(KeyboardInterrupt):
        run_captions(m, cfg, out, shards)
    assert not out.exists()
    assert sorted(p.name for p in shards.iterdir()) == ["shard_00000.parquet"]  # no temp files left
    mtime0 = (shards / "shard_00000.parquet").stat().st_mtime_ns

    def counting(self, enc):
        calls.append(enc["pixel_values"].shape[0])
        return real_generate(self, enc)

    calls.clear()
    monkeypatch.setattr(blip2.Blip2Captioner, "generate", counting)
    run_captions(m, cfg, out, shards)
    assert sum(calls) == 6  # only shards 1 and 2 (4 + 2 images) were generated
    assert (shards / "shard_00000.parquet").stat().st_mtime_ns == mtime0
    meta = io.read_parquet_metadata(out)
    assert meta["shards_reused"] == 1 and meta["n_images"] == 10
    pd.testing.assert_frame_equal(read_captions(out), read_captions(reference_out))

    # everything done: no model load, no generation
    calls.clear()
    monkeypatch.setattr(blip2, "load_blip2", lambda *a, **k: pytest.fail("model loaded although all shards exist"))
    run_captions(m, cfg, out, shards)
    assert calls == [] and io.read_parquet_metadata(out)["shards_reused"] == 3


def test_stale_shards_are_redone(tmp_path, tiny_model, monkeypatch):
    m = _manifest(tmp_path, [0, 1, 2, 0, 1, 2])
    out, shards = tmp_path / "captions.parquet", tmp_path / "shards"
    run_captions(m, _cfg(tiny_model, shard_size=2), out, shards)
    assert len(list(shards.iterdir())) == 3
    real_generate = blip2.Blip2Captioner.generate
    calls: list[int] = []

    def counting(self, enc):
        calls.append(enc["pixel_values"].shape[0])
        return real_generate(self, enc)

    monkeypatch.setattr(blip2.Blip2Captioner, "generate", counting)
    # other generation settings -> every shard is redone
    run_captions(m, _cfg(tiny_model, shard_size=2, max_new_tokens=3), out, shards)
    assert sum(calls) == 6
    assert io.read_parquet_metadata(out)["shards_reused"] == 0
    # other image list (per_class=1: 3 images, 2 shards) -> redone, surplus shard removed
    calls.clear()
    run_captions(m, _cfg(tiny_model, shard_size=2, max_new_tokens=3, per_class=1), out, shards)
    assert sum(calls) == 3
    assert sorted(p.name for p in shards.iterdir()) == ["shard_00000.parquet", "shard_00001.parquet"]
    assert read_captions(out)["image_index"].tolist() == [0, 1, 2]


def test_captions_do_not_depend_on_labels(tmp_path, tiny_model):
    """Same pixels, permuted labels/class names -> identical captions per image."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    ma = _manifest(a, [0, 1, 2, 0, 1, 2])
    mb = _manifest(b, [2, 0, 1, 1, 2, 0])
    run_captions(ma, _cfg(tiny_model), a / "c.parquet", a / "s")
    run_captions(mb, _cfg(tiny_model), b / "c.parquet", b / "s")
    ca, cb = read_captions(a / "c.parquet"), read_captions(b / "c.parquet")
    assert ca["caption"].tolist() == cb["caption"].tolist()
    assert ca["caption"].nunique() > 1  # captions do depend on the pixels
    with pytest.raises(ValueError, match="fixed string"):
        run_captions(ma, _cfg(tiny_model, prompt="a photo of a {class_name}"), a / "x.parquet", a / "s")


def test_disabled_writes_empty_file(tmp_path):
    out = tmp_path / "captions.parquet"
    run_captions(tmp_path / "no_manifest_needed.parquet", CaptionsConfig(enabled=False), out, tmp_path / "shards")
    df = read_captions(out)
    assert len(df) == 0 and list(df.columns) == list(CAPTIONS_COLUMNS)
    assert io.read_parquet_metadata(out) == {"enabled": False}
    import pyarrow.parquet as pq

    assert pq.read_schema(out).remove_metadata() == stage.CAPTIONS_SCHEMA
    assert list((tmp_path / "shards").iterdir()) == []


def test_offline_unknown_model_error(tmp_path, monkeypatch):
    m = _manifest(tmp_path, [0, 1])
    monkeypatch.setattr(blip2, "_hub_reachable", lambda timeout=3.0: False)  # no network, also on CI
    with pytest.raises(blip2.CaptionModelUnavailable) as ei:
        run_captions(m, _cfg("langtail-test/no-such-blip2-model"), tmp_path / "c.parquet", tmp_path / "s")
    msg = str(ei.value)
    assert "not in the local HF cache" in msg and ("no network" in msg or "HF_HUB_OFFLINE" in msg or "offline" in msg)
    assert "huggingface-cli download langtail-test/no-such-blip2-model" in msg
    assert "captions.model" in msg and "captions.enabled: false" in msg
    with pytest.raises(blip2.CaptionModelUnavailable, match="does not exist"):
        run_captions(m, _cfg(tmp_path / "missing_dir"), tmp_path / "c.parquet", tmp_path / "s")
    assert not (tmp_path / "c.parquet").exists()


def test_caption_text_for_the_corpus(tmp_path):
    """The corpus reads captions of training images only (test captions never become class text)."""
    from langtail.corpus.build import load_caption_text

    df = pd.DataFrame({"class_id": np.array([1, 0, 1, 1, 0, 0], dtype=np.int32),
                       "caption": ["a dog on grass", "a cat", "A dog  on grass ", "", "a cat", "a red car"],
                       "split": ["train", "train", "train", "train", "test", "test"]})
    df.to_parquet(tmp_path / "c.parquet")
    assert load_caption_text(tmp_path / "c.parquet", 2) == [["a cat"], ["a dog on grass", "A dog  on grass "]]
    with pytest.raises(ValueError, match="outside 0..0"):
        load_caption_text(tmp_path / "c.parquet", 1)


def test_loads_from_prefilled_hf_cache(tmp_path, tiny_model, monkeypatch):
    """A Hub id whose files are in the HF cache loads with no network at all."""
    import shutil

    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--langtail-test--tiny-blip2"
    shutil.copytree(tiny_model, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(blip2, "_hub_reachable", lambda timeout=3.0: pytest.fail("network probed"))
    m = _manifest(tmp_path, [0, 1])
    out = tmp_path / "c.parquet"
    run_captions(m, _cfg("langtail-test/tiny-blip2"), out, tmp_path / "s")
    df = read_captions(out)
    assert len(df) == 2 and (df["model"] == "langtail-test/tiny-blip2").all()
