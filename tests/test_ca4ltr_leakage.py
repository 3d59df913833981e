"""No label reaches the test-time text of the per-image sources (caption, nonsense).

The captions come from the tiny random BLIP-2 built by ``captions.model: tiny-random``
(through the captions stage hook), for train *and* test images. Fails if any test-time
caption/nonsense text contains the ground-truth class name, or if the text of an image
changes when the labels are permuted (i.e. if the text depends on the label at all).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from langtail import io
from langtail.config import Ca4ltrConfig, CaptionsConfig
from langtail.data.manifest import ManifestBuild, make_manifest, read_manifest, write_manifest
from langtail.schemas import ANCHORS_COLUMNS
from langtail.corpus.ca4ltr_text import mentions_class
from langtail.train.ca4ltr import build_source

pytest.importorskip("transformers")

# none of these is in the tiny captioner's vocabulary (see blip2.TINY_WORDS)
NAMES = ["kettle", "lynx", "violin", "tulip", "anvil", "comet"]
TRAIN = [6, 5, 4, 3, 2, 2]
TEST = 3


def _manifest(folder: Path, name: str, shift: int) -> Path:
    labels = [c for c, n in enumerate(TRAIN) for _ in range(n)] + [c for c in range(len(NAMES)) for _ in range(TEST)]
    splits = ["train"] * sum(TRAIN) + ["test"] * (TEST * len(NAMES))
    arr = folder / "images_train.npy"
    if not arr.exists():
        np.save(arr, np.random.default_rng(0).integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8))
    labels = [(c + shift) % len(NAMES) for c in labels]  # shift > 0: same pixels, other labels
    build = ManifestBuild(images=[f"images_train.npy#{i}" for i in range(len(labels))], labels=labels,
                          splits=splits, class_names=NAMES)
    path = folder / f"{name}.parquet"
    write_manifest(path, make_manifest(build), {"dataset": "leak", "class_names": NAMES, "image_root": ""})
    return path


def _anchors(folder: Path) -> Path:
    rows = [(c, f"a photo of a {n}." if k == 0 else f"The {n} is seen here in an ordinary photograph, {k}.")
            for c, n in enumerate(NAMES) for k in range(3)]
    df = pd.DataFrame({"class_id": np.array([r[0] for r in rows], np.int32),
                       "sentence_id": np.arange(len(rows), dtype=np.int32), "sentence": [r[1] for r in rows],
                       "source": ["prompt"] * len(rows), "l_lin": np.zeros(len(rows), np.float32),
                       "rank": np.tile(np.arange(3, dtype=np.int32), len(NAMES)), "selected": True})
    io.check_columns(df, ANCHORS_COLUMNS, "anchors")
    io.write_parquet(folder / "anchors.parquet", df)
    return folder / "anchors.parquet"


def _leaks(texts: list[list[str]], labels, names) -> list[int]:
    return [i for i, (t, y) in enumerate(zip(texts, labels)) if any(mentions_class(s, names[y]) for s in t)]


def test_test_time_text_has_no_label(tmp_path):
    from test_captions import run_captions

    cap_cfg = CaptionsConfig(enabled=True, model="tiny-random", splits=["train", "test"], per_class=0,
                             max_new_tokens=6, batch_size=16, device="cpu", dtype="float32")
    anchors = _anchors(tmp_path)
    texts = {}
    for name, shift in (("manifest", 0), ("manifest_shifted", 2)):
        m = _manifest(tmp_path, name, shift)
        run_captions(m, cap_cfg, tmp_path / f"captions_{name}.parquet", tmp_path / f"shards_{name}")
        df, meta = read_manifest(m)
        test = df[df["split"] == "test"]
        rows, labels = test.index.to_numpy(), test["label"].to_numpy()
        for source in ("caption", "nonsense"):
            src = build_source(source, Ca4ltrConfig(nonsense_per_image=2), df, meta["class_names"], anchors,
                               tmp_path / f"captions_{name}.parquet")
            t = src.for_images(rows.tolist(), "test")
            assert len(t) == len(rows) and all(len(x) >= 1 for x in t)
            assert _leaks(t, labels, NAMES) == [], f"{source}: test-time text names the true class"
            texts[name, source] = t
    assert (tmp_path / "tiny_blip2" / "langtail_tiny.json").exists()  # built by the tiny-random hook
    caps = io.read_parquet_metadata(tmp_path / "captions_manifest.parquet")
    assert set(caps["splits"]) == {"train", "test"} and caps["n_images"] == sum(TRAIN) + TEST * len(NAMES)
    for source in ("caption", "nonsense"):  # labels permuted, pixels the same -> the same text
        assert texts["manifest", source] == texts["manifest_shifted", source]
    # the check itself catches a leaky source
    leaky = [t + [f"this is a {NAMES[y]}"] for t, y in zip(texts["manifest", "caption"], [0] * 18)]
    assert _leaks(leaky, [0] * 18, NAMES) == list(range(18))
