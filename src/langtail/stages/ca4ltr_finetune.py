"""Stage ``ca4ltr_finetune`` (rule ``ca4ltr_finetune``, ``langtail ca4ltr-finetune --source S``).

One CA4LTR run per text source: ``results/<dataset>/ca4ltr/<source>/model.pt``. The image
backbone starts like the Pure baseline (``ca4ltr.init: model`` = ``model.pretrained``, i.e.
from scratch for ``demo_cnn``/``resnet32``; ``cvlp`` = the CVLP visual encoder); the text comes
from :mod:`langtail.corpus.ca4ltr_text`; cross-entropy, AdamW + cosine schedule through the
shared resumable :func:`langtail.train.loop.fit` (``model.pt.resume`` after every epoch).

:func:`config_keys` is the part of the config one run reads (the rule passes exactly this, so
changing e.g. ``label_templates`` reruns only the ``label`` run); :func:`inputs` the upstream
artifacts it reads.

``model.backbone_mode: frozen``: trains on the cached last feature map
(``image_tokens.safetensors``, ``--features``) with the backbone fixed to the weights it came from.
"""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from langtail import distributed, io
from langtail.config import DatasetConfig, merge_keys, select_keys
from langtail.corpus.ca4ltr_text import SOURCES
from langtail.data.dataset import eval_loader, train_loader
from langtail.data.manifest import class_counts, read_manifest
from langtail.losses import loss_keys, make_loss
from langtail.models.ca4ltr import build_ca4ltr, save_ca4ltr
from langtail.models.classifier import IMAGE_KEYS
from langtail.models.image_cache import freeze_on, frozen_features
from langtail.runtime import seed_everything
from langtail.train.ca4ltr import TextInputs, build_source, predict, text_encoder
from langtail.train.loop import finish, fit, param_groups
from langtail.train.tracking import TRACKING_KEYS, make_tracker, untracked
from langtail.train.validation import require_val, val_rows, validator

log = logging.getLogger(__name__)

#: config keys every run reads (``ca4ltr.sources`` only selects jobs)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": IMAGE_KEYS + ("text_model_path", "backbone_mode"),
    "ca4ltr": ("init", "width", "heads", "depth", "ffn_mult", "bidirectional", "dropout", "epochs", "batch_size", "lr",
               "weight_decay", "warmup_epochs", "sampler", "augment", "device", "amp", "seed", "select"),
    "tracking": TRACKING_KEYS,
}
#: ca4ltr keys that matter only to one source
SOURCE_KEYS = {"label": ("label_templates",), "description": ("description_per_class",),
               "caption": (), "nonsense": ("nonsense_per_image", "nonsense_seed"),
               "nonsense_bank": ("description_per_class", "nonsense_seed")}


def config_keys(cfg: DatasetConfig | None = None, source: str | None = None) -> dict[str, tuple[str, ...]]:
    """The keys the run of ``source`` reads (every source's keys when ``source`` is None)."""
    if source is not None and source not in SOURCES:
        raise ValueError(f"unknown CA4LTR text source {source!r}; known: {', '.join(SOURCES)}")
    # the loss: CA4LTR shares ``finetune.loss`` and its keys with the finetune stage (the study's
    # Pure baseline is the ``fc`` finetune run, so Pure and every CA4LTR run train with one loss)
    loss = loss_keys(cfg.finetune.loss if cfg is not None else None)
    return merge_keys(KEYS, loss, *({"ca4ltr": SOURCE_KEYS[s]} for s in ([source] if source else SOURCES)))


def inputs(cfg: DatasetConfig, source: str) -> tuple[str, ...]:
    """Upstream artifacts of one run besides the manifest: ``anchors`` (description, and
    nonsense: word counts of the description text), ``captions``, ``pretrain`` (init: cvlp),
    ``features`` (the cached image tokens, backbone_mode: frozen)."""
    d: tuple[str, ...] = ("features",) if cfg.model.backbone_mode == "frozen" else ()
    if source in ("description", "nonsense", "nonsense_bank"):
        d += ("anchors",)
    if source == "caption":  # needs captions.splits: [train, test], captions.per_class: 0
        d += ("captions",)
    if cfg.ca4ltr.init == "cvlp":
        d += ("pretrain",)
    return d


def make_validator(cfg: DatasetConfig, src, model, df, meta, manifest_path: Path, cache_dir: Path | None,
                   device: torch.device, features=None):
    """``validate()`` on the manifest's val split (None without one; ``ca4ltr.select: best_val``
    then raises). Per-image sources need the val images' text (captions: ``captions.splits``
    with val); without it the run trains without validation (logged), or fails under best_val."""
    ca = cfg.ca4ltr
    if not require_val(df, ca.select, "ca4ltr.select", manifest_path):
        return None
    rows = val_rows(df)
    try:
        texts = TextInputs.build(src, text_encoder(cfg), cache_dir, rows.index.to_numpy(), "val")
    except ValueError as e:
        if ca.select == "best_val":
            raise ValueError(f"ca4ltr.select: best_val: no text for the val images ({e})") from None
        log.warning("ca4ltr[%s]: no validation (%s)", src.source, e)
        return None

    def predict_val(loader):
        pred, labels, _, _ = predict(model, texts, loader, device, desc=f"val ca4ltr_{src.source}")
        return pred, labels

    return validator(predict_val, eval_loader(rows, manifest_path, meta, cfg.data, ca.batch_size, features=features), df,
                     list(meta["class_names"]), model, f"ca4ltr[{src.source}]")


def _image_tower(cfg: DatasetConfig, pretrain_path: Path | None, features, features_path: Path | None):
    """The image tower of a run: ``model.pretrained`` (as Pure) or the CVLP encoder (``ca4ltr.init``),
    its backbone mode applied; under ``frozen`` the cached tokens' backbone, frozen."""
    from langtail.models.classifier import fresh_image_encoder
    from langtail.models.encoders import load_vl_checkpoint
    from langtail.models.tuning import apply_backbone_mode

    if cfg.ca4ltr.init == "cvlp":
        if pretrain_path is None:
            raise ValueError("ca4ltr.init: cvlp needs the CVLP checkpoint (--pretrain)")
        image = apply_backbone_mode(load_vl_checkpoint(pretrain_path, image_only=True)[0], cfg.model)
    else:
        image = fresh_image_encoder(cfg.model)
    if features is not None:
        if features.kind != "tokens":
            raise ValueError(f"{features_path}: CA4LTR needs the cached image tokens (image-features --kind tokens)")
        freeze_on(image, features, cfg.model)
    return image


def run(cfg: DatasetConfig, source: str, manifest_path: Path, out: Path, cache_dir: Path | None = None,
                     anchors_path: Path | None = None, captions_path: Path | None = None,
                     pretrain_path: Path | None = None, track_dir: Path | None = None,
                     features_path: Path | None = None) -> None:
    """Train one CA4LTR run; ``track_dir``: its tracking folder (:mod:`langtail.train.tracking`;
    None = no tracking). With a val split, every epoch ends with its val accuracy (``ca4ltr.select``).
    ``features_path``: the cached image tokens (read under ``model.backbone_mode: frozen``)."""
    keys = config_keys(cfg, source)
    ca = cfg.ca4ltr
    seed_everything(ca.seed)
    device = distributed.setup(ca.device)  # under torchrun: joins the process group
    df, meta = read_manifest(manifest_path)
    names = list(meta["class_names"])
    C = len(names)
    train_df = df[df["split"] == "train"]
    train_index = train_df.index.to_numpy()  # manifest rows (= captions.image_index)
    train_df = train_df.reset_index(drop=True)

    src = build_source(source, ca, df, names, anchors_path, captions_path)
    with distributed.main_first():  # rank 0 fills the text-feature cache, the others read it
        texts = TextInputs.build(src, text_encoder(cfg), cache_dir, train_index, "train")
    text_dim = int(texts.bank.shape[1] if texts.bank is not None else texts.feats.shape[-1])
    seed_everything(ca.seed)  # again: loading MiniLM on a cache miss draws from the RNG

    features = frozen_features(cfg.model, features_path, f"ca4ltr[{source}]")
    image = _image_tower(cfg, pretrain_path, features, features_path)
    model = build_ca4ltr(image, C, ca, text_dim, texts.bank).to(device)

    dc = cfg.data
    loader = train_loader(train_df, manifest_path, meta, dc, batch_size=ca.batch_size, sampler=ca.sampler,
                          seed=ca.seed, augment=ca.augment, device=device, features=features)
    opt = torch.optim.AdamW(param_groups(model, ca.weight_decay), lr=ca.lr)
    loss_fn = make_loss(cfg.finetune, class_counts(df, C), str(manifest_path), ca.sampler, "ca4ltr.sampler").to(device)

    def step(batch):
        t, m = texts.batch(batch["row"], device)
        return loss_fn(model(batch["image"], t, m), batch["label"])

    inputs = [p for p in (manifest_path, anchors_path, captions_path) if p is not None]
    if ca.init == "cvlp":
        inputs.append(pretrain_path)
    if features is not None:
        inputs.append(features_path)
    params = untracked(select_keys(cfg, keys))
    fp = io.fingerprint({"source": source, **params}, *inputs)
    resume = out.with_name(out.name + ".resume")
    res = fit(model, opt, loader, step, epochs=ca.epochs, resume_path=resume, fingerprint=fp, device=device,
              amp=ca.amp, warmup_epochs=ca.warmup_epochs, desc=f"ca4ltr[{source}]", on_epoch=loss_fn.set_epoch,
              select=ca.select, validate=make_validator(cfg, src, model, df, meta, manifest_path, cache_dir, device, features),
              tracker=make_tracker(cfg, track_dir, f"ca4ltr/{source}", params))
    if not distributed.is_main():
        return
    save_ca4ltr(out, model.cpu(), source, cfg.model, select_keys(cfg, keys)["ca4ltr"], {
        "epochs": ca.epochs, "loss": cfg.finetune.loss, "history": res.history, "seconds": res.seconds, "skipped_images": res.skipped,
        "resumed_from_epoch": res.resumed_from, "selected": res.selected, "init": "cvlp" if ca.init == "cvlp" else "model.pretrained",
        "image_weights": cfg.model.pretrained or "scratch", "text_tokens": texts.tokens_per_image,
        "n_params": sum(p.numel() for p in model.parameters()), **src.info})
    finish(resume)
    log.info("ca4ltr[%s]: %d epochs in %.1f s -> %s", source, ca.epochs, res.seconds, out)
