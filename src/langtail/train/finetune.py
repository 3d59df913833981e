"""Stage ``finetune``: visual encoder + recognition head (paper Sec. 3.3-3.4).

One run per head (``finetune/<head>/model.pt``):

- ``lgr``: CVLP visual encoder + LGR head over the cached anchor embeddings; loss Eq. 9,
  ``CE(P^I, y) + CE(P^T, y)``.
- ``fc``: the vision-only baseline: visual encoder from ``model.pretrained`` (CLIP weights,
  or random init for from-scratch backbones; no CVLP) + linear classifier, cross-entropy,
  ``baseline_epochs`` epochs.
- ``fc_cvlp`` / ``knn``: Table 4 #5 / #6 heads on the CVLP encoder.

``finetune.init_from_pretrain: false`` starts the language-guided heads from
``model.pretrained`` instead of the CVLP weights (ablation "no CVLP", Table 4 #2).
Checkpoint: ``kind``, ``model_cfg``, ``state_dict`` (incl. the head's anchor buffers),
``extra`` = num_classes, tau, alpha, knn_k, history, seconds, skipped images.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch

from langtail import distributed, io
from langtail.config import DatasetConfig
from langtail.data.dataset import train_loader
from langtail.data.manifest import read_manifest
from langtail.losses import recognition_loss
from langtail.models.classifier import create_head, fresh_image_encoder, save_classifier
from langtail.models.encoders import load_vl_checkpoint
from langtail.models.heads import Classifier
from langtail.models.text_cache import read_text_embeddings
from langtail.train.loop import finish, fit, param_groups, seed_everything

log = logging.getLogger(__name__)


def run_finetune(cfg: DatasetConfig, head_kind: str, manifest_path: Path, text_emb_path: Path,
                 pretrain_path: Path, out: Path) -> None:
    fc = cfg.finetune
    seed_everything(fc.seed)
    device = distributed.setup(fc.device)  # under torchrun: joins the process group
    df, meta = read_manifest(manifest_path)
    C = len(meta["class_names"])
    if head_kind == "fc" or not fc.init_from_pretrain:
        image = fresh_image_encoder(cfg.model)
    else:
        image = load_vl_checkpoint(pretrain_path, image_only=True)[0]
    emb = mask = None
    if head_kind in ("lgr", "knn"):
        emb, mask = read_text_embeddings(text_emb_path)[:2]
        if emb.shape[0] != C:
            raise ValueError(f"{text_emb_path}: {emb.shape[0]} classes, manifest has {C}; rerun embed_text")
    head = create_head(head_kind, image.embed_dim, C, emb, mask, fc.tau, fc.knn_k)
    clf = Classifier(image, head, head_kind).to(device)
    if fc.freeze_visual:
        for p in clf.image.parameters():
            p.requires_grad_(False)
    if fc.channels_last:
        clf.image.to(memory_format=torch.channels_last)
    epochs = fc.baseline_epochs if head_kind == "fc" and fc.baseline_epochs else fc.epochs
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    dc = cfg.data
    loader = train_loader(train_df, manifest_path, meta, dc, batch_size=fc.batch_size, sampler=fc.sampler,
                          seed=fc.seed, augment=fc.augment, device=device)
    opt = torch.optim.AdamW(param_groups(clf, fc.weight_decay), lr=fc.lr)

    def step(batch):
        x = batch["image"]
        if fc.freeze_visual:
            clf.image.eval()
        if fc.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out_ = clf(x)
        if "image" in out_:
            return recognition_loss(out_["image"], out_.get("text"), batch["label"])
        return recognition_loss(out_["text"], None, batch["label"])

    resume = out.with_name(out.name + ".resume")
    fp = io.fingerprint({"head": head_kind, "model": dataclasses.asdict(cfg.model), "finetune": dataclasses.asdict(fc),
                         "data": dataclasses.asdict(dc)}, manifest_path, text_emb_path, pretrain_path)
    res = fit(clf, opt, loader, step, epochs=epochs, resume_path=resume, fingerprint=fp, device=device,
              amp=fc.amp, warmup_epochs=fc.warmup_epochs, desc=f"finetune[{head_kind}]")
    if not distributed.is_main():
        return
    save_classifier(out, clf.cpu(), cfg.model, {
        "num_classes": C, "tau": fc.tau, "alpha": fc.alpha, "knn_k": fc.knn_k, "epochs": epochs,
        "history": res.history, "seconds": res.seconds, "skipped_images": res.skipped,
        "resumed_from_epoch": res.resumed_from, "init": "model.pretrained" if head_kind == "fc" or not fc.init_from_pretrain else "cvlp"})
    finish(resume)
