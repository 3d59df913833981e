"""Stage ``finetune`` (rule ``finetune``, ``langtail finetune --head H``): visual encoder + recognition head (paper Sec. 3.3-3.4).

One run per head (``finetune/<head>/model.pt``):

- ``lgr``: CVLP visual encoder + LGR head over the cached anchor embeddings; loss Eq. 9,
  ``CE(P^I, y) + CE(P^T, y)``.
- ``fc``: the vision-only baseline: visual encoder from ``model.pretrained`` (CLIP weights,
  or random init for from-scratch backbones; no CVLP) + linear classifier, cross-entropy,
  ``baseline_epochs`` epochs.
- ``fc_cvlp`` / ``knn``: Table 4 #5 / #6 heads on the CVLP encoder.

``finetune.loss`` replaces cross-entropy in every head (both LGR branches: Eq. 9 with that
loss; :class:`langtail.losses.LongTailLoss`, priors from the manifest's train counts); under
``ldam`` the ``fc`` / ``fc_cvlp`` heads are cosine classifiers with scale ``ldam_scale``
(Cao et al.'s normalised layer; ``fc_cosine_scale`` in the checkpoint's ``extra``).

``finetune.init_from_pretrain: false`` starts the language-guided heads from
``model.pretrained`` instead of the CVLP weights (ablation "no CVLP", Table 4 #2).
Checkpoint: ``kind``, ``model_cfg``, ``state_dict`` (incl. the head's anchor buffers),
``extra`` = num_classes, tau, alpha, knn_k, history, seconds, skipped images; ``class_names``
and ``preprocess`` (``data.image_size``, ``data.normalize``) for ``langtail predict``.

``model.backbone_mode: frozen``: every head trains on the cached backbone features
(``--features``, :mod:`langtail.data.features`) with the backbone's weights fixed to those the
features came from; the checkpoint still holds that backbone, so it predicts on image files.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from langtail import distributed, io
from langtail.config import DatasetConfig, merge_keys, select_keys
from langtail.data.dataset import train_loader
from langtail.data.manifest import class_counts, read_manifest
from langtail.data.skipped import skipped_path, write_skipped
from langtail.losses import LOSS_OPTIONS, LongTailLoss, recognition_loss
from langtail.models.classifier import (IMAGE_KEYS, create_head, finetune_tau, fresh_image_encoder, lgr_lr_overrides,
                                         save_classifier, set_visual_mode)
from langtail.models.encoders import load_vl_checkpoint
from langtail.models.heads import Classifier
from langtail.models.image_cache import freeze_on, frozen_features
from langtail.models.text_cache import read_text_embeddings
from langtail.models.tuning import apply_backbone_mode, set_frozen_eval
from langtail.registry import TUNING_MODES
from langtail.runtime import seed_everything
from langtail.train.loop import finish, fit, param_groups

log = logging.getLogger(__name__)

#: config keys every head's run reads (its rule's params are built from them: :func:`config_keys`)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": IMAGE_KEYS + ("backbone_mode",),
    "finetune": ("batch_size", "lr", "weight_decay", "warmup_epochs", "sampler", "augment", "device", "amp",
                 "channels_last", "seed"),
}
#: the CVLP-encoder heads' keys: init, and how the visual encoder is held (authors' code: frozen, eval mode)
_CVLP = ("epochs", "init_from_pretrain", "freeze_visual", "visual_eval_mode")
#: keys only some heads read (``finetune.heads`` itself only selects jobs: adding a head trains only it)
HEAD_KEYS = {
    "lgr": {"finetune": _CVLP + ("tau", "tau_from_pretrain", "lgr_qk_bias", "lgr_init", "v_detach", "lgr_attention_lr")},
    "fc": {"finetune": ("baseline_epochs", "epochs")},  # always fine-tuned in train mode (paper Sec. 4.3)
    "fc_cvlp": {"finetune": _CVLP},
    "knn": {"finetune": _CVLP + ("tau", "tau_from_pretrain", "knn_k")},
}


#: ``finetune.loss`` and the keys each loss reads (only the chosen loss's keys are declared, so
#: e.g. ``la_tau`` does not rerun a ``ce`` run; every head reads the loss)
LOSS_KEYS = LOSS_OPTIONS


def loss_keys(cfg: DatasetConfig | None = None) -> dict[str, tuple[str, ...]]:
    """``{"finetune": ("loss", <the chosen loss's keys>)}`` (every loss's keys when ``cfg`` is None)."""
    losses = [cfg.finetune.loss] if cfg is not None else list(LOSS_KEYS)
    return {"finetune": ("loss",) + tuple(k for l_ in losses for k in LOSS_KEYS[l_])}


def config_keys(cfg: DatasetConfig | None = None, head: str | None = None) -> dict[str, tuple[str, ...]]:
    """The keys the run of ``head`` reads (all heads' keys when ``head`` is None)."""
    heads = [head] if head else list(HEAD_KEYS)
    mode = TUNING_MODES.get(cfg.model.backbone_mode).keys if cfg is not None else {"model": ("partial_blocks",)}
    return merge_keys(KEYS, loss_keys(cfg), mode, *(HEAD_KEYS[h] for h in heads))


def make_loss(cfg: DatasetConfig, counts, where: str) -> LongTailLoss:
    """The :class:`~langtail.losses.LongTailLoss` of ``finetune.loss`` for train ``counts [C]``."""
    fc = cfg.finetune
    kw = {k: getattr(fc, k) for k in LOSS_KEYS[fc.loss]}
    if fc.loss != "ce" and fc.sampler != "instance":
        log.warning("finetune.loss=%s takes its priors from the train counts, but finetune.sampler=%s already "
                    "re-balances the batches: the adjustment over-corrects (use sampler: instance)", fc.loss, fc.sampler)
    return LongTailLoss(fc.loss, counts, where=where, **kw)


def inputs(cfg: DatasetConfig, head: str) -> tuple[str, ...]:
    """The upstream artifacts (``text_emb``, ``pretrain``, ``features`` under ``backbone_mode:
    frozen``) the run of ``head`` reads besides the manifest."""
    needs: tuple[str, ...] = ("features",) if cfg.model.backbone_mode == "frozen" else ()
    if head in ("lgr", "knn"):
        needs += ("text_emb",)
    if head != "fc" and (cfg.finetune.init_from_pretrain
                         or (head in ("lgr", "knn") and cfg.finetune.tau_from_pretrain)):
        needs += ("pretrain",)
    return needs


def head_options(cfg: DatasetConfig, head: str, pretrain_path: Path | None) -> dict[str, Any]:
    """The options of :func:`~langtail.models.classifier.create_head` that ``head`` uses (stored
    in the checkpoint's ``extra``; the text-branch tau may come from the CVLP checkpoint)."""
    fc = cfg.finetune
    opts: dict[str, Any] = {}
    if head in ("lgr", "knn"):
        opts["tau"] = finetune_tau(fc, pretrain_path)
    if head == "lgr":
        opts.update(lgr_qk_bias=fc.lgr_qk_bias, lgr_init=fc.lgr_init, v_detach=fc.v_detach)
    if head == "knn":
        opts["knn_k"] = fc.knn_k
    if head in ("fc", "fc_cvlp") and fc.loss == "ldam":
        opts["fc_cosine_scale"] = fc.ldam_scale
    return opts


def run(cfg: DatasetConfig, head_kind: str, manifest_path: Path, out: Path, text_emb_path: Path | None = None,
        pretrain_path: Path | None = None, features_path: Path | None = None) -> None:
    """Train one head; ``text_emb_path`` is read by ``lgr``/``knn``, ``pretrain_path`` by the
    heads on the CVLP encoder, ``features_path`` under ``backbone_mode: frozen`` (:func:`inputs`)."""
    fc = cfg.finetune
    seed_everything(fc.seed)
    device = distributed.setup(fc.device)  # under torchrun: joins the process group
    df, meta = read_manifest(manifest_path)
    C = len(meta["class_names"])
    if head_kind == "fc" or not fc.init_from_pretrain:
        image = fresh_image_encoder(cfg.model)
    else:
        image = load_vl_checkpoint(pretrain_path, image_only=True)[0]
    features = frozen_features(cfg.model, features_path, f"finetune[{head_kind}]")
    if features is not None:
        freeze_on(image, features, cfg.model)
    elif cfg.model.backbone_mode != "full":  # e.g. partial: only the last model.partial_blocks train
        apply_backbone_mode(image, cfg.model)
    emb = mask = None
    if head_kind in ("lgr", "knn"):
        emb, mask = read_text_embeddings(text_emb_path)[:2]
        if emb.shape[0] != C:
            raise ValueError(f"{text_emb_path}: {emb.shape[0]} classes, manifest has {C}; rerun embed_text")
    options = head_options(cfg, head_kind, pretrain_path)
    head = create_head(head_kind, image.embed_dim, C, emb, mask, **options)
    clf = Classifier(image, head, head_kind).to(device)
    # the vision-only baseline (fc) is always fine-tuned in train mode (paper Sec. 4.3); the
    # freeze / eval-mode switches concern the CVLP encoder under the language-guided heads
    freeze, visual_eval = (False, False) if head_kind == "fc" else (fc.freeze_visual, fc.visual_eval_mode)
    set_visual_mode(clf, freeze, visual_eval)
    if fc.channels_last:
        clf.image.to(memory_format=torch.channels_last)
    epochs = fc.baseline_epochs if head_kind == "fc" and fc.baseline_epochs else fc.epochs
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    dc = cfg.data
    loader = train_loader(train_df, manifest_path, meta, dc, batch_size=fc.batch_size, sampler=fc.sampler,
                          seed=fc.seed, augment=fc.augment, device=device, features=features)
    opt = torch.optim.AdamW(param_groups(clf, fc.weight_decay, lgr_lr_overrides(clf, fc.lgr_attention_lr if head_kind == "lgr" else 0.0)), lr=fc.lr)
    loss_fn = make_loss(cfg, class_counts(df, C), str(manifest_path)).to(device)
    # LDAM puts its margin on the cosine of branches whose logits are cos / tau
    text_tau = options.get("tau")
    image_tau = 1.0 / options["fc_cosine_scale"] if options.get("fc_cosine_scale") else None

    def step(batch):
        x = batch["image"]
        set_visual_mode(clf, freeze, visual_eval)
        set_frozen_eval(clf.image)  # BatchNorms of frozen backbone blocks keep their statistics
        if fc.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out_ = clf(x)
        if "image" in out_:
            return recognition_loss(out_["image"], out_.get("text"), batch["label"], loss_fn, text_tau, image_tau)
        return recognition_loss(out_["text"], None, batch["label"], loss_fn, text_tau=None, image_tau=text_tau)

    resume = out.with_name(out.name + ".resume")
    fp = io.fingerprint({"head": head_kind, **select_keys(cfg, config_keys(cfg, head_kind))},
                        *(p for p in (manifest_path, text_emb_path, pretrain_path,
                                      features_path if features is not None else None) if p is not None))
    res = fit(clf, opt, loader, step, epochs=epochs, resume_path=resume, fingerprint=fp, device=device,
              amp=fc.amp, warmup_epochs=fc.warmup_epochs, desc=f"finetune[{head_kind}]",
              on_epoch=loss_fn.set_epoch)
    if not distributed.is_main():
        return
    save_classifier(out, clf.cpu(), cfg.model, {
        "num_classes": C, **options, "epochs": epochs, "loss": fc.loss,
        "history": res.history, "seconds": res.seconds, "skipped_images": res.skipped,
        "resumed_from_epoch": res.resumed_from, "init": "model.pretrained" if head_kind == "fc" or not fc.init_from_pretrain else "cvlp"},
        class_names=meta["class_names"], preprocess={"image_size": dc.image_size, "normalize": dc.normalize})
    write_skipped(skipped_path(out), res.skips, f"finetune/{head_kind}")
    finish(resume)
