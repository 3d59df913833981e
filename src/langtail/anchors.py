"""Stage ``anchors``: anchor sentence selection (AnSS, paper Sec. 3.3) or "Cut Off".

AnSS builds a special image batch I' of at most ``images_per_class`` (50) training images
per class (a seeded random choice), embeds it with the CVLP visual encoder, and scores
every corpus sentence by its ``L_lin`` against I' (:func:`langtail.losses.sentence_lin_scores`,
softmax over all images of I', averaged over the images of the sentence's class) with the
learned temperature. The ``num_anchors`` (M) sentences of lowest ``L_lin`` per class are
kept. "Cut Off" (ablation, Table 4 #7) keeps the first M sentences in corpus order.

Scoring streams over sentence chunks: peak memory is ``O(chunk_size x |I'|)``, never the
full sentences x images matrix.

Output ``anchors.parquet`` (one row per corpus sentence): ``class_id:int32``,
``sentence_id:int32`` (corpus row), ``sentence:string``, ``source:string``,
``l_lin:float32``, ``rank:int32`` (0 = best by L_lin within the class),
``selected:bool``. Metadata: strategy, num_anchors, images_per_class, n_images, tau,
``short_classes`` {class name: number of sentences} for classes with fewer than M
sentences (their remaining slots are masked padding in the embedding file).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from langtail import io
from langtail.config import DatasetConfig
from langtail.data.dataset import build_transform, make_loader, store_for
from langtail.data.manifest import read_manifest
from langtail.inference import run_batches
from langtail.losses import sentence_lin_scores
from langtail.models.encoders import load_vl_checkpoint
from langtail.models.text_cache import encode_sentences
from langtail.schemas import ANCHORS_COLUMNS, CORPUS_COLUMNS
from langtail.train.loop import resolve_device

log = logging.getLogger(__name__)


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


def run_anchors(cfg: DatasetConfig, manifest_path: Path, corpus_path: Path, pretrain_path: Path, out: Path,
                cache_dir: Path) -> None:
    ac = cfg.anchors
    device = resolve_device(cfg.pretrain.device)
    df, meta = read_manifest(manifest_path)
    corpus = io.read_parquet(corpus_path, CORPUS_COLUMNS)
    model, _, _ = load_vl_checkpoint(pretrain_path, device)
    model.eval()
    tau = float(model.tau.detach())
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    batch_df = image_batch(train_df, ac.images_per_class, ac.seed).reset_index(drop=True)
    dc = cfg.data
    loader = make_loader(batch_df, store_for(manifest_path, meta), build_transform(False, dc.image_size, dc.normalize),
                         256, train=False, num_workers=dc.num_workers)
    img, img_labels, _, skipped = run_batches(model.image, loader, device, desc="anchors: images")
    txt = encode_sentences(model.text, corpus["sentence"].tolist(), cache_dir)
    missing = sorted(set(corpus["class_id"].unique()) - set(img_labels.unique().tolist()))
    if missing:
        raise ValueError(f"AnSS: no readable training image for classes {missing[:10]}")
    l_lin = lin_scores_chunked(F.normalize(img, dim=-1), img_labels, F.normalize(txt, dim=-1),
                               torch.as_tensor(corpus["class_id"].to_numpy().copy(), dtype=torch.long), tau, ac.chunk_size)
    res = select(corpus, l_lin.numpy(), ac.strategy, ac.num_anchors)
    n_per = res.groupby("class_id").size()
    names = meta["class_names"]
    short = {names[c]: int(n) for c, n in n_per.items() if n < ac.num_anchors}
    if short:
        log.info("%d classes have fewer than M=%d sentences (padded with a mask)", len(short), ac.num_anchors)
    io.check_columns(res, ANCHORS_COLUMNS, "anchors")
    io.write_parquet(out, res, metadata={
        "strategy": ac.strategy, "num_anchors": ac.num_anchors, "images_per_class": ac.images_per_class,
        "n_images": int(len(img_labels)), "skipped_images": skipped, "tau": tau, "short_classes": short})
    log.info("anchors: scored %d sentences against %d images", len(res), len(img_labels))
