"""CA4LTR ``nonsense_bank``: the class-level nonsense control of ``description``."""
from __future__ import annotations

import numpy as np
import pandas as pd

from langtail.config import Ca4ltrConfig
from langtail.corpus.ca4ltr_text import CLASS_LEVEL, class_words, description_bank, word_lengths
from langtail.train.ca4ltr import build_source

CLASSES = ["airplane", "tree frog", "ship"]


def _anchors(tmp_path):
    from langtail import io

    sents = ["An airplane has two wings and a tail.", "It flies.", "A tree frog sits on a green leaf at night.",
             "Frogs jump.", "A ship carries cargo across the open sea.", "It floats on water."]
    i32 = lambda v: np.asarray(v, np.int32)  # noqa: E731 - the anchors schema's dtypes
    df = pd.DataFrame({"class_id": i32([0, 0, 1, 1, 2, 2]), "sentence_id": i32(range(6)), "sentence": sents,
                       "source": ["descriptions"] * 6, "l_lin": np.zeros(6, np.float32), "rank": i32([0, 1] * 3),
                       "selected": [True] * 6})
    path = tmp_path / "anchors.parquet"
    io.write_parquet(path, df)
    return path, df


def test_nonsense_bank_matches_description_sizes_and_lengths(tmp_path):
    path, df = _anchors(tmp_path)
    cfg = Ca4ltrConfig(sources=["nonsense_bank"])
    src = build_source("nonsense_bank", cfg, pd.DataFrame(), CLASSES, anchors_path=path)
    desc, cls = description_bank(df, 3)
    assert "nonsense_bank" in CLASS_LEVEL and src.class_level
    assert len(src.bank) == len(desc) and src.bank_class == cls
    assert word_lengths(src.bank).tolist() == word_lengths(desc).tolist()  # same word count, sentence by sentence
    words = class_words(CLASSES)
    assert not any(w in words for s in src.bank for w in s.lower().rstrip(".").split())
    again = build_source("nonsense_bank", cfg, pd.DataFrame(), CLASSES, anchors_path=path)
    other = build_source("nonsense_bank", Ca4ltrConfig(nonsense_seed=1), pd.DataFrame(), CLASSES, anchors_path=path)
    assert again.bank == src.bank and other.bank != src.bank
