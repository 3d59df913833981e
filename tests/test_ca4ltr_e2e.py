"""CA4LTR end to end on a small generated manifest: train (2 epochs) + evaluate every text
source, then the text-quality study, whose table must read back as the metrics.

Text features come from a hash-seeded stand-in for MiniLM (fast, offline); the real MiniLM
path is exercised by ``test_ca4ltr_cli.py``.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from langtail import io
from langtail.schemas import CAPTIONS_SCHEMA
from langtail.config import Ca4ltrConfig, DataConfig, DatasetConfig, EvaluateConfig, FinetuneConfig, ModelConfig
from langtail.data.manifest import ManifestBuild, make_manifest, write_manifest
from langtail.report.ca4ltr import read_study_table
from langtail.schemas import PER_CLASS_COLUMNS
from langtail.stages import ca4ltr_evaluate, ca4ltr_finetune, text_quality

NAMES = ["kettle", "lynx", "violin", "tulip"]
TRAIN = [10, 6, 4, 2]
TEST = 3


def _hash_encoder(monkeypatch):
    for mod in (ca4ltr_finetune, ca4ltr_evaluate):
        monkeypatch.setattr(mod, "text_encoder", lambda cfg: HashEncoder())


class HashEncoder:
    """Deterministic 16-d 'sentence features' (a stand-in for the frozen MiniLM)."""

    frozen = True
    calls = 0

    def identity(self):
        return {"name": "hash16", "base_dim": 16}

    def encode_base(self, sentences, batch_size=256, progress=False):
        HashEncoder.calls += 1
        torch.rand(3)  # like building the real MiniLM: a cache miss draws from the global RNG
        return torch.stack([torch.from_numpy(np.random.default_rng(zlib.crc32(s.encode())).standard_normal(16)
                                             .astype(np.float32)) for s in sentences])


def _files(d: Path) -> tuple[Path, Path, Path]:
    labels = [c for c, n in enumerate(TRAIN) for _ in range(n)] + [c for c in range(len(NAMES)) for _ in range(TEST)]
    splits = ["train"] * sum(TRAIN) + ["test"] * (TEST * len(NAMES))
    rng = np.random.default_rng(0)
    # class colour + noise, so that two epochs learn something
    cols = np.array([[220, 40, 40], [40, 170, 60], [45, 80, 220], [230, 210, 40]], np.float64)
    imgs = np.clip(cols[labels][:, None, None, :] + rng.normal(0, 40, (len(labels), 32, 32, 3)), 0, 255)
    np.save(d / "images_train.npy", imgs.astype(np.uint8))
    build = ManifestBuild(images=[f"images_train.npy#{i}" for i in range(len(labels))], labels=labels,
                          splits=splits, class_names=NAMES)
    write_manifest(d / "manifest.parquet", make_manifest(build, 8, 3), {"dataset": "e2e", "class_names": NAMES,
                                                                         "image_root": ""})
    rows = [(c, f"a photo of a {n}." if k == 0 else f"The {n} can be seen in this small picture number {k}.")
            for c, n in enumerate(NAMES) for k in range(3)]
    io.write_parquet(d / "anchors.parquet", pd.DataFrame({
        "class_id": np.array([r[0] for r in rows], np.int32), "sentence_id": np.arange(len(rows), dtype=np.int32),
        "sentence": [r[1] for r in rows], "source": "prompt", "l_lin": np.zeros(len(rows), np.float32),
        "rank": np.tile(np.arange(3, dtype=np.int32), len(NAMES)), "selected": [True, True, False] * len(NAMES)}))
    caps = pd.DataFrame({"image": build.images, "image_index": np.arange(len(labels), dtype=np.int64),
                         "class_id": np.array(labels, np.int32), "split": splits,
                         "caption": [f"some {['red', 'green', 'blue', 'yellow'][y]} thing" for y in labels],
                         "model": "stub", "prompt": "", "max_new_tokens": np.int32(5)})
    io.write_parquet(d / "captions.parquet", caps, metadata={"enabled": True, "model": "stub"}, schema=CAPTIONS_SCHEMA)
    return d / "manifest.parquet", d / "anchors.parquet", d / "captions.parquet"


def _cfg() -> DatasetConfig:
    return DatasetConfig(data=DataConfig(name="e2e", many_threshold=8, few_threshold=3),
                         model=ModelConfig(image_encoder="demo_cnn", embed_dim=16),
                         finetune=FinetuneConfig(epochs=2, heads=["fc"]),
                         ca4ltr=Ca4ltrConfig(width=16, heads=2, depth=1, ffn_mult=2, dropout=0.0, epochs=2,
                                             batch_size=8, lr=3e-3, device="cpu", nonsense_per_image=2),
                         evaluate=EvaluateConfig(batch_size=16, device="cpu"))


def test_train_evaluate_and_study_table(tmp_path, monkeypatch):
    _hash_encoder(monkeypatch)
    manifest, anchors, captions = _files(tmp_path)
    cfg = _cfg()
    for source in ("label", "description", "caption", "nonsense"):
        out = tmp_path / "ca4ltr" / source / "model.pt"
        ca4ltr_finetune.run(cfg, source, manifest, out, tmp_path / "cache", anchors, captions)
        ck = io.torch_load(out)
        assert ck["kind"] == "ca4ltr" and ck["source"] == source and len(ck["extra"]["history"]) == 2
        assert not out.with_name("model.pt.resume").exists()
        m = ca4ltr_evaluate.run(cfg, manifest, out, tmp_path / "eval" / f"ca4ltr_{source}",
                                      tmp_path / "cache", anchors, captions)
        assert m["n_images"] == TEST * len(NAMES) and 0 <= m["overall"] <= 100 and m["source"] == source
        per = io.read_parquet(tmp_path / "eval" / f"ca4ltr_{source}" / "per_class.parquet", PER_CLASS_COLUMNS)
        assert per["train_count"].tolist() == TRAIN and per["n_test"].tolist() == [TEST] * len(NAMES)
        assert m["text_tokens"] == {"label": 4, "description": 8, "caption": 1, "nonsense": 2}[source]
        if source in ("caption", "nonsense"):
            assert m["text_mentions_class_pct"] == 0.0
    # features are cached: a second evaluation does not encode again
    calls = HashEncoder.calls
    ca4ltr_evaluate.run(cfg, manifest, tmp_path / "ca4ltr" / "nonsense" / "model.pt", tmp_path / "ev2",
                              tmp_path / "cache", anchors, captions)
    assert HashEncoder.calls == calls
    # the Pure baseline (normally the `fc` finetune run): reuse one evaluation's files
    (tmp_path / "eval" / "fc").mkdir()
    pure = io.read_json(tmp_path / "eval" / "ca4ltr_label" / "metrics.json")
    pure.update(overall=10.0, many=20.0, medium=5.0, few=0.0, model="fc")
    io.write_json(tmp_path / "eval" / "fc" / "metrics.json", pure)
    per = io.read_parquet(tmp_path / "eval" / "ca4ltr_label" / "per_class.parquet")
    io.write_parquet(tmp_path / "eval" / "fc" / "per_class.parquet", per)

    out = tmp_path / "text_quality.md"
    text_quality.run(cfg, "e2e", out, manifest, [tmp_path / "eval" / f"ca4ltr_{s}" for s in cfg.ca4ltr.sources],
                     tmp_path / "eval" / "fc")
    table = read_study_table(out)
    assert table["model"].tolist() == ["Pure (vision-only, FC)"] + [
        f"CA4LTR + {s}" for s in ("label", "description", "caption", "nonsense")]
    for s in ("label", "description", "caption", "nonsense"):
        m = io.read_json(tmp_path / "eval" / f"ca4ltr_{s}" / "metrics.json")
        row = table[table["model"] == f"CA4LTR + {s}"].iloc[0]
        for g in ("overall", "many", "medium", "few"):
            assert row[g] == pytest.approx(round(m[g], 1), abs=0.051)
        assert row["Δ overall vs Pure"] == pytest.approx(round(m["overall"] - 10.0, 1), abs=0.051)
    assert (tmp_path / "figures" / "text_quality_per_class.png").stat().st_size > 1000
    text = out.read_text()
    assert "random weights" in text and "Test-time text audit" in text


def test_caption_source_requires_captioned_test_split(tmp_path, monkeypatch):
    _hash_encoder(monkeypatch)
    manifest, anchors, captions = _files(tmp_path)
    caps = io.read_parquet(captions)
    io.write_parquet(captions, caps[caps["split"] == "train"], metadata={"enabled": True, "model": "stub"},
                     schema=CAPTIONS_SCHEMA)
    cfg = _cfg()
    out = tmp_path / "m.pt"
    ca4ltr_finetune.run(cfg, "caption", manifest, out, None, None, captions)
    with pytest.raises(ValueError, match=r"captions.splits: \[train, test\]"):
        ca4ltr_evaluate.run(cfg, manifest, out, tmp_path / "ev", None, None, captions)


def test_same_weights_with_cold_or_warm_text_cache(tmp_path, monkeypatch):
    _hash_encoder(monkeypatch)
    manifest, anchors, captions = _files(tmp_path)
    cfg = _cfg()
    sds = []
    for i in range(2):  # run 0 encodes (cache miss), run 1 reads the cache
        out = tmp_path / f"run{i}" / "model.pt"
        ca4ltr_finetune.run(cfg, "nonsense", manifest, out, tmp_path / "cache", anchors, captions)
        sds.append(io.torch_load(out)["state_dict"])
    assert all(torch.equal(sds[0][k], sds[1][k]) for k in sds[0])
