"""Stage ``pretrain`` (rule ``pretrain``, ``langtail pretrain``): class-wise visual-linguistic pre-training (CVLP, paper Sec. 3.2).

Each iteration samples N images (square-root sampling by default) and, for every image,
a *fresh* sentence of its class drawn uniformly from the corpus; the loss is Eq. 8,
``lambda * L_ccl + (1 - lambda) * L_dis`` with Eq. 2 (multi-positive class-wise
contrastive loss, learnable tau initialised to 0.07) and Eq. 3 (logit distillation from a
frozen CLIP teacher; or feature distillation, Table 9). Without a teacher only L_ccl is
used. AdamW (no weight decay on norms, biases and tau), cosine schedule.

Output ``pretrain/model.pt`` (see :func:`langtail.models.encoders.save_vl_checkpoint`):
``model_cfg``, ``state_dict``, image/text identities and ``extra`` = training history (per
epoch: ``epoch``, ``loss``, ``lr``, ``tau`` at the epoch's end), seconds, skipped images. ``pretrain.enabled: false`` writes the initial weights
(ablation "no CVLP").

``model.backbone_mode: frozen``: the batches are the cached backbone features
(``--features``, :mod:`langtail.data.features`); the checkpoint's backbone is the frozen one
those features came from, so only the projections and tau train.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from langtail import distributed, io
from langtail.config import DatasetConfig, select_keys
from langtail.data.dataset import train_loader
from langtail.data.manifest import read_manifest
from langtail.losses import (class_contrastive_loss, cosine_matrix, feature_distillation_loss,
                             logit_distillation_loss, pretrain_loss)
from langtail.models.encoders import create_teacher, create_vl_model, save_vl_checkpoint
from langtail.models.image_cache import freeze_on, frozen_features
from langtail.data.skipped import SkipLog, skipped_path, write_skipped
from langtail.models.text_cache import base_features
from langtail.schemas import CORPUS_COLUMNS
from langtail.runtime import seed_everything
from langtail.train.loop import finish, fit, param_groups

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": ("method", "image_encoder", "text_encoder", "pretrained", "text_model_path", "embed_dim",
              "train_text_encoder", "teacher", "teacher_pretrained", "backbone_mode", "partial_blocks", "frozen_views"),
    "pretrain": ("enabled", "epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "lambda_ccl", "distill",
                 "ccl_reduction", "distill_mode", "eval_mode", "tau_init", "sampler", "augment", "device", "amp",
                 "channels_last", "seed"),
}


def class_sentence_index(corpus: pd.DataFrame, num_classes: int, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Corpus rows are sorted by class: ``(start [C], count [C])`` of each class's sentences.

    Raises ``ValueError`` naming the classes without any sentence.
    """
    cid = corpus["class_id"].to_numpy()
    if len(cid) and np.any(np.diff(cid) < 0):
        raise ValueError("corpus.parquet rows must be sorted by class_id")
    count = np.bincount(cid, minlength=num_classes)[:num_classes]
    empty = [class_names[c] for c in np.flatnonzero(count == 0)]
    if empty:
        raise ValueError(f"{len(empty)} class(es) have no sentence in the corpus: {empty[:10]}; "
                         "enable the prompt source (corpus.sources) or add descriptions")
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return start, count


def run(cfg: DatasetConfig, manifest_path: Path, corpus_path: Path, out: Path, cache_dir: Path,
        features_path: Path | None = None) -> None:
    """``features_path``: the cached image features (read under ``model.backbone_mode: frozen``)."""
    pc = cfg.pretrain
    seed_everything(pc.seed)
    df, meta = read_manifest(manifest_path)
    names = meta["class_names"]
    C = len(names)
    corpus = io.read_parquet(corpus_path, CORPUS_COLUMNS)
    start, count = class_sentence_index(corpus, C, names)
    device = distributed.setup(pc.device)  # under torchrun: joins the process group
    model = create_vl_model(cfg.model, pc.tau_init)
    features = frozen_features(cfg.model, features_path, "pretrain")
    if features is not None:
        freeze_on(model.image, features, cfg.model)
    resume = out.with_name(out.name + ".resume")
    extra: dict = {"enabled": pc.enabled}
    if not pc.enabled or pc.epochs == 0:
        log.info("pretrain disabled: writing the initial weights (%s)", cfg.model.pretrained or "random init")
        save_vl_checkpoint(out, model, cfg.model, extra)
        write_skipped(skipped_path(out), SkipLog(), "pretrain")
        return

    sentences = corpus["sentence"].tolist()
    text_frozen = getattr(model.text, "frozen", False)
    with distributed.main_first():  # rank 0 fills the text-feature cache, the others read it
        feats = base_features(model.text, sentences, cache_dir).to(device) if text_frozen else None
    teacher = create_teacher(cfg.model)
    teacher_text = None
    if teacher is not None:
        import open_clip

        teacher = teacher.to(device)
        tok = open_clip.get_tokenizer(cfg.model.teacher)
        with torch.no_grad():
            teacher_text = torch.cat([teacher.encode_text(tok(sentences[i:i + 256]).to(device)).float()
                                      for i in range(0, len(sentences), 256)])
    if teacher is not None and features is not None and pc.distill != "none" and pc.lambda_ccl < 1:
        raise ValueError("pretrain: CLIP distillation needs the images, backbone_mode frozen feeds cached features; "
                         "set pretrain.distill: none (or lambda_ccl: 1) or model.backbone_mode: full")
    if teacher is None and pc.distill != "none" and pc.lambda_ccl < 1:
        raise ValueError(f"pretrain.distill={pc.distill!r} needs a teacher: set model.teacher "
                         "(an open_clip name) or pretrain.distill: none")

    model.to(device)
    if pc.channels_last:
        model.image.to(memory_format=torch.channels_last)
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    dc = cfg.data
    loader = train_loader(train_df, manifest_path, meta, dc, batch_size=pc.batch_size, sampler=pc.sampler,
                          seed=pc.seed, augment=pc.augment, device=device, features=features)
    opt = torch.optim.AdamW(param_groups(model, pc.weight_decay), lr=pc.lr, betas=(0.9, 0.999))
    start_t = torch.as_tensor(start, device=device)
    count_t = torch.as_tensor(count, device=device)

    def step(batch):
        x, y = batch["image"], batch["label"]
        if pc.eval_mode:
            model.eval()
        if pc.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        # a fresh sentence of each image's class (global torch RNG: restored on resume); drawn for
        # the global batch on every rank, each rank using its slice: ranks draw different sentences
        r = distributed.rank_slice(torch.rand(len(y) * distributed.world_size())).to(device)
        sid = start_t[y] + (r * count_t[y]).long().clamp(max=count_t[y] - 1)
        img = model.image(x)
        if text_frozen:
            txt = model.text.project(feats[sid])
        else:
            txt = model.text([sentences[i] for i in sid.tolist()])
        # the global batch: embeddings of every rank, with gradient (positives/negatives of all ranks)
        img, txt, y = distributed.gather(img), distributed.gather(txt), distributed.gather(y)
        sim = cosine_matrix(img, txt)
        l_ccl = class_contrastive_loss(sim, y, y, model.tau, pc.ccl_reduction)
        l_dis = None
        if teacher is not None and pc.distill != "none":
            with torch.no_grad():
                t_img = distributed.gather(teacher.encode_image(x).float())
            t_txt = distributed.gather(teacher_text[sid])
            if pc.distill == "logits":
                l_dis = logit_distillation_loss(sim, cosine_matrix(t_img, t_txt), model.tau, pc.distill_mode)
            else:
                l_dis = feature_distillation_loss(img, txt, t_img, t_txt)
        return pretrain_loss(l_ccl, l_dis, pc.lambda_ccl)

    def clamp_tau():
        with torch.no_grad():
            model.logit_scale.clamp_(0, float(np.log(100.0)))

    fp = io.fingerprint(select_keys(cfg, KEYS), manifest_path, corpus_path,
                        *([features_path] if features is not None else []))
    res = fit(model, opt, loader, step, epochs=pc.epochs, resume_path=resume, fingerprint=fp, device=device,
              amp=pc.amp, warmup_epochs=pc.warmup_epochs, desc="pretrain", after_step=clamp_tau,
              epoch_stats=lambda: {"tau": float(model.tau.detach())})
    extra.update({"history": res.history, "seconds": res.seconds, "skipped_images": res.skipped,
                  "resumed_from_epoch": res.resumed_from, "tau": float(model.tau.detach()), "device": str(device)})
    if distributed.is_main():
        save_vl_checkpoint(out, model.cpu(), cfg.model, extra)
        write_skipped(skipped_path(out), res.skips, "pretrain")
        finish(resume)
    log.info("pretrain done in %.1fs, final tau %.4f", res.seconds, float(model.tau.detach()))
