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
``extra`` = num_classes, tau, alpha, knn_k, history (per epoch: loss, lr and,
with a val split, val_overall / val_many / val_medium / val_few), ``selected`` (the epoch the
weights are from: ``finetune.select`` last | best_val), seconds, skipped images; ``class_names``
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
from langtail.data.dataset import eval_loader, train_loader
from langtail.data.manifest import class_counts, read_manifest
from langtail.data.skipped import skipped_path, write_skipped
from langtail.losses import loss_keys as _loss_keys
from langtail.losses import make_loss, recognition_loss
from langtail.models.classifier import (IMAGE_KEYS, create_head, fresh_image_encoder, save_classifier,
                                         set_visual_mode, weights_id)
from langtail.models.encoders import load_vl_checkpoint
from langtail.models.heads import Classifier
from langtail.models.image_cache import freeze_on, frozen_features
from langtail.models.tuning import apply_backbone_mode
from langtail.models.text_cache import read_text_embeddings
from langtail.registry import HEADS, TUNING_MODES, Part
from langtail.runtime import seed_everything
from langtail.inference import classifier_scores, run_batches
from langtail.train.loop import finish, fit, make_optimizer, param_groups
from langtail.train.tracking import TRACKING_KEYS, make_tracker, untracked
from langtail.train.validation import require_val, val_rows, validator

log = logging.getLogger(__name__)

#: config keys every head's run reads (its rule's params are built from them: :func:`config_keys`);
#: each head adds its own (:data:`langtail.registry.HEADS` ``keys``; ``finetune.heads`` itself
#: only selects jobs: adding a head trains only it)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": IMAGE_KEYS + ("backbone_mode",),
    "finetune": ("batch_size", "lr", "weight_decay", "warmup_epochs", "sampler", "augment", "device", "amp",
                 "channels_last", "seed", "optimizer", "momentum", "select"),
    "tracking": TRACKING_KEYS,
}


def loss_keys(cfg: DatasetConfig | None = None) -> dict[str, tuple[str, ...]]:
    """``{"finetune": ("loss", <the chosen loss's keys>)}`` (every loss's keys when ``cfg`` is None)."""
    return _loss_keys(cfg.finetune.loss if cfg is not None else None)


def config_keys(cfg: DatasetConfig | None = None, head: str | None = None) -> dict[str, tuple[str, ...]]:
    """The keys the run of ``head`` reads (all heads' keys when ``head`` is None). Under
    ``finetune.select: best_val`` a two-branch head (``info["two_branch"]``, LGR) also reads
    ``finetune.alpha`` (its validation ranks epochs with the prediction rule evaluate uses; under
    ``last``, alpha stays an evaluate-only key and the validation curve uses alpha = 0.5)."""
    parts = [HEADS.get(head)] if head else list(HEADS.parts())
    mode = TUNING_MODES.get(cfg.model.backbone_mode).keys if cfg is not None else {"model": ("partial_blocks",)}
    keys = merge_keys(KEYS, loss_keys(cfg), mode, *(p.keys for p in parts))
    if cfg is not None and cfg.finetune.select == "best_val" and any(p.info.get("two_branch") for p in parts):
        keys = merge_keys(keys, {"finetune": ("alpha",)})
    return keys


def inputs(cfg: DatasetConfig, head: str) -> tuple[str, ...]:
    """The upstream artifacts (``text_emb``, ``pretrain``) the run of ``head`` reads besides the
    manifest: what the head declares (:meth:`langtail.registry.Part.needs`); ``features`` (the
    cached image features) under ``model.backbone_mode: frozen``."""
    frozen = ("features",) if cfg.model.backbone_mode == "frozen" else ()
    return frozen + tuple(HEADS.get(head).needs(cfg))


def head_options(cfg: DatasetConfig, head: str, pretrain_path: Path | None) -> dict[str, Any]:
    """The options of :func:`~langtail.models.classifier.create_head` that ``head`` uses (its
    declared ``info["options"]``; stored in the checkpoint's ``extra``)."""
    fn = HEADS.get(head).info.get("options")
    return dict(fn(cfg, pretrain_path)) if fn is not None else {}


def _is_baseline(part: Part) -> bool:
    """A head on a fresh ``model.pretrained`` encoder, always fine-tuned in train mode (``fc``)."""
    return part.info.get("encoder", "cvlp") == "baseline"


def init_head(cfg: DatasetConfig, head_kind: str, head: torch.nn.Module, class_names: list[str],
              pretrain_path: Path | None, text_emb_path: Path | None, cache_dir: Path | None = None) -> str:
    """``finetune.head_init`` of an fc / fc_cvlp head (LIFT's semantic-aware initialisation); returns
    what the weights started from. The class embeddings come from the text tower aligned with the
    head's image tower: model.pretrained's CLIP for ``fc`` (and without CVLP init), the CVLP
    checkpoint's (MiniLM through its CVLP projection) for ``fc_cvlp``. ``cache_dir``: the text-feature
    cache (the class prompts pre-training or zero-shot evaluation encoded are reused)."""
    from langtail.models.classifier import create_vl_model, image_model_config
    from langtail.models.zeroshot import anchor_class_embeddings, prompt_class_embeddings

    part = HEADS.get(head_kind)
    if not part.info.get("text_init") or cfg.finetune.head_init == "random":
        return "random"
    fresh = _is_baseline(part) or not cfg.finetune.init_from_pretrain
    if fresh and cfg.model.text_encoder != "clip":
        raise ValueError(f"finetune.head_init={cfg.finetune.head_init} on head {head_kind!r}: its image tower comes "
                         f"from model.pretrained, which is aligned with no text tower for text_encoder "
                         f"{cfg.model.text_encoder!r}; use the fc_cvlp head (CVLP encoder) or a CLIP model")
    if cfg.finetune.head_init == "anchors":
        emb, mask = read_text_embeddings(text_emb_path)[:2]
        class_emb = anchor_class_embeddings(emb, mask)
    else:
        text = (create_vl_model(image_model_config(cfg.model)) if fresh else load_vl_checkpoint(pretrain_path)[0]).text
        class_emb = prompt_class_embeddings(text, class_names, cache_dir=cache_dir)
    head.init_from_text(class_emb)
    return cfg.finetune.head_init


def make_validator(cfg: DatasetConfig, head_kind: str, clf: Classifier, df, meta, manifest_path: Path,
                   device: torch.device, features=None):
    """``validate()`` on the manifest's val split with evaluate's prediction rule (None without
    a val split; ``finetune.select: best_val`` then raises)."""
    fc = cfg.finetune
    if not require_val(df, fc.select, "finetune.select", manifest_path):
        return None
    rows = val_rows(df)
    two_branch = bool(HEADS.get(head_kind).info.get("two_branch"))
    alpha = fc.alpha if fc.select == "best_val" and two_branch else 0.5
    score = classifier_scores(clf, alpha)

    def predict(loader):
        scores, labels, _, _ = run_batches(score, loader, device, desc=f"val {head_kind}", amp=fc.amp)
        return scores[:, 0].argmax(1).numpy(), labels.numpy()

    return validator(predict, eval_loader(rows, manifest_path, meta, cfg.data, fc.batch_size, features=features), df,
                     list(meta["class_names"]), clf, f"finetune[{head_kind}]")


def build(cfg: DatasetConfig, head_kind: str, C: int, text_emb_path: Path | None,
          pretrain_path: Path | None, features=None) -> tuple[Classifier, dict[str, Any]]:
    """The classifier of one run and its head options: the visual encoder the head declares
    (CVLP or ``model.pretrained``; under ``frozen`` with the cached features' backbone, frozen)
    + the head over the anchors it needs."""
    fc, part = cfg.finetune, HEADS.get(head_kind)
    if _is_baseline(part) or not fc.init_from_pretrain:
        image = fresh_image_encoder(cfg.model, project=fc.baseline_projection or not _is_baseline(part))
    else:
        image = apply_backbone_mode(load_vl_checkpoint(pretrain_path, image_only=True)[0], cfg.model)
    if features is not None:
        freeze_on(image, features, cfg.model)
    elif cfg.model.backbone_mode != "full":  # e.g. partial: only the last model.partial_blocks train
        apply_backbone_mode(image, cfg.model)
    emb = mask = None
    if "text_emb" in part.needs(cfg):
        emb, mask = read_text_embeddings(text_emb_path)[:2]
        if emb.shape[0] != C:
            raise ValueError(f"{text_emb_path}: {emb.shape[0]} classes, manifest has {C}; rerun embed_text")
    options = head_options(cfg, head_kind, pretrain_path)
    return Classifier(image, create_head(head_kind, image.embed_dim, C, emb, mask, **options), head_kind), options


def run(cfg: DatasetConfig, head_kind: str, manifest_path: Path, out: Path, text_emb_path: Path | None = None,
        pretrain_path: Path | None = None, track_dir: Path | None = None, features_path: Path | None = None,
        cache_dir: Path | None = None) -> None:
    """Train one head; ``text_emb_path`` / ``pretrain_path`` / ``features_path`` (backbone_mode
    frozen): the inputs the run needs (:func:`inputs`); ``track_dir``: the run's tracking folder
    (:mod:`langtail.train.tracking`; None = no tracking); ``cache_dir``: the text-feature cache
    (``finetune.head_init: text``)."""
    fc, part = cfg.finetune, HEADS.get(head_kind)
    seed_everything(fc.seed)
    device = distributed.setup(fc.device)  # under torchrun: joins the process group
    df, meta = read_manifest(manifest_path)
    C = len(meta["class_names"])
    features = frozen_features(cfg.model, features_path, f"finetune[{head_kind}]")
    clf, options = build(cfg, head_kind, C, text_emb_path, pretrain_path, features)
    head_init = init_head(cfg, head_kind, clf.head, meta["class_names"], pretrain_path, text_emb_path, cache_dir)
    clf = clf.to(device)
    # the vision-only baseline (fc) is always fine-tuned in train mode (paper Sec. 4.3); the
    # freeze / eval-mode switches concern the CVLP encoder under the other heads
    baseline = _is_baseline(part)
    freeze, visual_eval = (False, False) if baseline else (fc.freeze_visual, fc.visual_eval_mode)
    set_visual_mode(clf, freeze, visual_eval)
    if fc.channels_last:
        clf.image.to(memory_format=torch.channels_last)
    epochs = fc.baseline_epochs if baseline and fc.baseline_epochs else fc.epochs
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    dc = cfg.data
    loader = train_loader(train_df, manifest_path, meta, dc, batch_size=fc.batch_size, sampler=fc.sampler,
                          seed=fc.seed, augment=fc.augment, device=device, features=features)
    lr_fn = part.info.get("lr_overrides")
    opt = make_optimizer(fc.optimizer, param_groups(clf, fc.weight_decay, lr_fn(clf, cfg) if lr_fn else {}), fc.lr,
                         fc.momentum)
    loss_fn = make_loss(fc, class_counts(df, C), str(manifest_path), fc.sampler, "finetune.sampler").to(device)
    step = _step(clf, loss_fn, options, freeze, visual_eval, fc.channels_last)
    resume = out.with_name(out.name + ".resume")
    keys = untracked(select_keys(cfg, config_keys(cfg, head_kind)))
    fp = io.fingerprint({"head": head_kind, **keys},
                        *(p for p in (manifest_path, text_emb_path, pretrain_path,
                                      features_path if features is not None else None) if p is not None))
    res = fit(clf, opt, loader, step, epochs=epochs, resume_path=resume, fingerprint=fp, device=device,
              amp=fc.amp, warmup_epochs=fc.warmup_epochs, desc=f"finetune[{head_kind}]",
              on_epoch=loss_fn.set_epoch, select=fc.select,
              validate=make_validator(cfg, head_kind, clf, df, meta, manifest_path, device, features),
              tracker=make_tracker(cfg, track_dir, f"finetune/{head_kind}", keys))
    if not distributed.is_main():
        return
    save_classifier(out, clf.cpu(), cfg.model, {
        "num_classes": C, **options, "epochs": epochs, "loss": fc.loss, "head_init": head_init,
        "history": res.history, "seconds": res.seconds, "skipped_images": res.skipped,
        "resumed_from_epoch": res.resumed_from, "selected": res.selected,
        "init": "model.pretrained" if baseline or not fc.init_from_pretrain else "cvlp",
        "run_id": weights_id(clf.state_dict()), "class_counts": [int(n) for n in class_counts(df, C)]},
        class_names=meta["class_names"], preprocess={"image_size": dc.image_size, "normalize": dc.normalize})
    write_skipped(skipped_path(out), res.skips, f"finetune/{head_kind}")
    finish(resume)


def _step(clf: Classifier, loss_fn, options: dict[str, Any], freeze: bool, visual_eval: bool, channels_last: bool):
    """One training step's loss (Eq. 9 with ``finetune.loss``). LDAM puts its margin on the cosine
    of branches whose logits are ``cos / tau``: the text branch (option ``tau``) and a cosine
    classifier (option ``fc_cosine_scale``)."""
    text_tau = options.get("tau")
    image_tau = 1.0 / options["fc_cosine_scale"] if options.get("fc_cosine_scale") else None

    def step(batch):
        x = batch["image"]
        set_visual_mode(clf, freeze, visual_eval)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        out_ = clf(x)
        if "image" in out_:
            return recognition_loss(out_["image"], out_.get("text"), batch["label"], loss_fn, text_tau, image_tau)
        return recognition_loss(out_["text"], None, batch["label"], loss_fn, text_tau=None, image_tau=text_tau)

    return step
