"""AnSS (paper Sec. 3.3): anchor sentence selection by L_lin, streamed over sentence chunks.

Scoring streams over sentence chunks: peak memory is ``O(chunk_size x |I'|)``, never the
full sentences x images matrix. The stage is :mod:`langtail.stages.anchors`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from langtail.losses import sentence_lin_scores


def image_batch(train_df: pd.DataFrame, per_class: int, seed: int) -> pd.DataFrame:
    """At most ``per_class`` training rows per class, a seeded random choice, sorted by label."""
    rng = np.random.default_rng(seed)
    keep = []
    for _, g in train_df.groupby("label", sort=True):
        idx = g.index.to_numpy()
        keep.append(np.sort(rng.permutation(idx)[:per_class]))
    return train_df.loc[np.concatenate(keep)]


def lin_scores_chunked(img: torch.Tensor, img_labels: torch.Tensor, txt: torch.Tensor,
                       txt_labels: torch.Tensor, tau: float, chunk: int) -> torch.Tensor:
    """``L_lin`` of every sentence, ``[S]``; images ``[K, D]``, sentences ``[S, D]`` (normalised)."""
    out = []
    for i in range(0, len(txt), chunk):
        sim = img @ txt[i:i + chunk].t()  # [K, chunk]
        out.append(sentence_lin_scores(sim, img_labels, txt_labels[i:i + chunk], tau))
    return torch.cat(out) if out else torch.zeros(0)


def select(corpus: pd.DataFrame, l_lin: np.ndarray, strategy: str, M: int) -> pd.DataFrame:
    """Rank sentences within each class and mark the M anchors."""
    df = pd.DataFrame({
        "class_id": corpus["class_id"].to_numpy().astype(np.int32),
        "sentence_id": corpus["sentence_id"].to_numpy().astype(np.int32),
        "sentence": corpus["sentence"].to_numpy(),
        "source": corpus["source"].to_numpy(),
        "l_lin": l_lin.astype(np.float32),
    })
    # rank by L_lin (stable: ties keep corpus order)
    order = np.lexsort((df["sentence_id"].to_numpy(), df["l_lin"].to_numpy(), df["class_id"].to_numpy()))
    rank = np.empty(len(df), dtype=np.int32)
    pos = np.empty(len(df), dtype=np.int32)  # position in corpus order within class
    for arr, key in ((rank, order), (pos, np.lexsort((df["sentence_id"].to_numpy(), df["class_id"].to_numpy())))):
        cls = df["class_id"].to_numpy()[key]
        first = np.r_[0, np.flatnonzero(np.diff(cls)) + 1]
        within = np.arange(len(key)) - np.repeat(first, np.diff(np.r_[first, len(key)]))
        arr[key] = within
    df["rank"] = rank
    df["selected"] = (rank if strategy == "anss" else pos) < M
    return df
