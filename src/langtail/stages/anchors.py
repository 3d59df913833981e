"""Stage ``anchors`` (rule ``anchors``, ``langtail anchors``): anchor sentence selection (AnSS, paper Sec. 3.3) or "Cut Off".

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

``model.backbone_mode: frozen``: the images of I' come from the cached features
(``--features``); the CVLP checkpoint's backbone must be the one they were computed with.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from langtail import io
from langtail.config import DatasetConfig
from langtail.data.dataset import eval_loader
from langtail.data.manifest import read_manifest
from langtail.inference import run_batches
from langtail.anss import image_batch, lin_scores_chunked, select
from langtail.models.encoders import load_vl_checkpoint
from langtail.models.image_cache import frozen_features
from langtail.models.text_cache import encode_sentences
from langtail.schemas import ANCHORS_COLUMNS, CORPUS_COLUMNS
from langtail.runtime import resolve_device

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": ("backbone_mode",),
    "pretrain": ("device",),
    "anchors": ("strategy", "num_anchors", "images_per_class", "chunk_size", "seed"),
}


def run(cfg: DatasetConfig, manifest_path: Path, corpus_path: Path, pretrain_path: Path, out: Path,
                cache_dir: Path, features_path: Path | None = None) -> None:
    """``features_path``: the cached image features (read under ``model.backbone_mode: frozen``)."""
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
    features = frozen_features(cfg.model, features_path, "anchors")
    if features is not None:
        features.check_backbone(model.image, str(pretrain_path))
    loader = eval_loader(batch_df, manifest_path, meta, dc, 256, features)
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
