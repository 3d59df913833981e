"""Stages ``ca4ltr-train`` / ``ca4ltr-evaluate``: one CA4LTR run per text source.

Training (``results/<dataset>/ca4ltr/<source>/model.pt``): image backbone initialised like
the Pure baseline (``ca4ltr.init: model`` = ``model.pretrained``, i.e. from scratch for
``demo_cnn``/``resnet32``; ``cvlp`` = the CVLP visual encoder), text from
:mod:`langtail.text_sources`, cross-entropy, AdamW + cosine schedule through the shared
resumable :func:`langtail.train.loop.fit` (``model.pt.resume`` after every epoch).

Evaluation (``results/<dataset>/eval/ca4ltr_<source>/``): the same ``metrics.json`` and
``per_class.parquet`` as :mod:`langtail.evaluate` (built with ``langtail.metrics.accuracy_table``), plus
``source``, ``text_tokens`` (text tokens per image) and, for per-image sources,
``text_mentions_class_pct``: % of evaluated images whose text contains their own class name
(an audit: 0 for nonsense by construction; captions of a real BLIP-2 may name the object
they see, which is information from the pixels, not from the label).

:func:`run_params` is the part of the config one run depends on (the Snakemake rule passes
exactly this, so changing e.g. ``label_templates`` reruns only the ``label`` run).
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from langtail import distributed, io
from langtail.config import DatasetConfig
from langtail.data.dataset import build_transform, make_loader, store_for, train_loader
from langtail.data.manifest import class_counts, class_groups, read_manifest
from langtail.models.ca4ltr import CA4LTR, build_ca4ltr, load_ca4ltr, save_ca4ltr
from langtail.text_sources import (CLASS_LEVEL, SOURCES, LazyMiniLM, TextSource, build_source, mentions_class,
                                   per_image_features, sentence_features)
from langtail.train.loop import finish, fit, param_groups, resolve_device, seed_everything

log = logging.getLogger(__name__)

#: ca4ltr keys that matter only to one source
SOURCE_KEYS = {"label": ("label_templates",), "description": ("description_per_class",),
               "caption": (), "nonsense": ("nonsense_per_image", "nonsense_seed")}


def run_params(cfg: DatasetConfig, source: str, stage: str = "train") -> dict[str, Any]:
    """Config one step depends on. ``train``: ``data``, ``model`` and ``ca4ltr`` without
    ``sources`` and without the other sources' keys; ``evaluate``: ``data`` and ``evaluate``
    (the text settings come from the checkpoint, which changes when they do)."""
    if source not in SOURCES:
        raise ValueError(f"unknown CA4LTR text source {source!r}; known: {', '.join(SOURCES)}")
    if stage == "evaluate":
        return {"data": dataclasses.asdict(cfg.data), "evaluate": dataclasses.asdict(cfg.evaluate)}
    if stage != "train":
        raise ValueError(f"stage must be train or evaluate, got {stage!r}")
    ca = dataclasses.asdict(cfg.ca4ltr)
    ca.pop("sources")
    for s, keys in SOURCE_KEYS.items():
        if s != source:
            for k in keys:
                ca.pop(k, None)
    return {"data": dataclasses.asdict(cfg.data), "model": dataclasses.asdict(cfg.model), "ca4ltr": ca}


def rule_inputs(cfg: DatasetConfig, source: str, train: bool = True) -> dict[str, tuple[str, ...]]:
    """Upstream artifacts of one run, ``name -> (stage, *path parts)`` (the Snakemake rules
    resolve them with ``artifact``); the names are the CLI options."""
    d: dict[str, tuple[str, ...]] = {"manifest": ("longtail", "manifest.parquet")}
    if source in ("description", "nonsense"):  # nonsense: word counts of the description text
        d["anchors"] = ("anchors", "anchors.parquet")
    if source == "caption":  # needs captions.splits: [train, test], captions.per_class: 0
        d["captions"] = ("captions", "captions.parquet")
    if train and cfg.ca4ltr.init == "cvlp":
        d["pretrain"] = ("pretrain", "pretrain", "model.pt")
    return d


def cli_options(inputs) -> str:
    """``--anchors ... --captions ... --pretrain ...`` for the inputs a run has."""
    return " ".join(f"--{k} {inputs[k]}" for k in ("anchors", "captions", "pretrain") if k in inputs.keys())


class TextInputs:
    """Text features for the model: a class bank, or per-manifest-row features gathered by loader row."""

    def __init__(self, bank: torch.Tensor | None = None, texts: list[list[str]] | None = None,
                 feats: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        self.bank, self.texts, self.feats, self.mask = bank, texts or [], feats, mask

    @classmethod
    def build(cls, src: TextSource, encoder: LazyMiniLM, cache_dir: Path | None,
              image_index: np.ndarray | None = None, split: str = "") -> "TextInputs":
        if src.class_level:
            return cls(bank=sentence_features(encoder, src.bank, cache_dir))
        texts = src.for_images(image_index.tolist(), split)
        feats, mask = per_image_features(encoder, texts, cache_dir)
        return cls(texts=texts, feats=feats, mask=mask)

    @property
    def tokens_per_image(self) -> int:
        return int(self.bank.shape[0]) if self.bank is not None else int(self.mask.shape[1])

    def batch(self, rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Per-image ``(text [B, K, F], mask [B, K])`` for loader rows; ``(None, None)`` for a class bank."""
        if self.bank is not None:
            return None, None
        r = rows.cpu()
        return self.feats[r].to(device, non_blocking=True), self.mask[r].to(device, non_blocking=True)


def _encoder(cfg: DatasetConfig) -> LazyMiniLM:
    if cfg.model.text_encoder != "minilm":
        log.info("CA4LTR always embeds text with the frozen MiniLM (model.text_encoder=%s is used by VL-LTR only)",
                 cfg.model.text_encoder)
    return LazyMiniLM(cfg.model.text_model_path)


def run_ca4ltr_train(cfg: DatasetConfig, source: str, manifest_path: Path, out: Path, cache_dir: Path | None = None,
                     anchors_path: Path | None = None, captions_path: Path | None = None,
                     pretrain_path: Path | None = None) -> None:
    from langtail.models.classifier import fresh_image_encoder
    from langtail.models.encoders import load_vl_checkpoint

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
        texts = TextInputs.build(src, _encoder(cfg), cache_dir, train_index, "train")
    text_dim = int(texts.bank.shape[1] if texts.bank is not None else texts.feats.shape[-1])
    seed_everything(ca.seed)  # again: loading MiniLM on a cache miss draws from the RNG

    if ca.init == "cvlp":
        if pretrain_path is None:
            raise ValueError("ca4ltr.init: cvlp needs the CVLP checkpoint (--pretrain)")
        image = load_vl_checkpoint(pretrain_path, image_only=True)[0]
    else:
        image = fresh_image_encoder(cfg.model)
    model = build_ca4ltr(image, C, ca, text_dim, texts.bank).to(device)

    dc = cfg.data
    loader = train_loader(train_df, manifest_path, meta, dc, batch_size=ca.batch_size, sampler=ca.sampler,
                          seed=ca.seed, augment=ca.augment, device=device)
    opt = torch.optim.AdamW(param_groups(model, ca.weight_decay), lr=ca.lr)

    def step(batch):
        t, m = texts.batch(batch["row"], device)
        return F.cross_entropy(model(batch["image"], t, m), batch["label"])

    inputs = [p for p in (manifest_path, anchors_path, captions_path) if p is not None]
    if ca.init == "cvlp":
        inputs.append(pretrain_path)
    fp = io.fingerprint({"source": source, **run_params(cfg, source)}, *inputs)
    resume = out.with_name(out.name + ".resume")
    res = fit(model, opt, loader, step, epochs=ca.epochs, resume_path=resume, fingerprint=fp, device=device,
              amp=ca.amp, warmup_epochs=ca.warmup_epochs, desc=f"ca4ltr[{source}]")
    if not distributed.is_main():
        return
    save_ca4ltr(out, model.cpu(), source, cfg.model, ca, {
        "epochs": ca.epochs, "history": res.history, "seconds": res.seconds, "skipped_images": res.skipped,
        "resumed_from_epoch": res.resumed_from, "init": "cvlp" if ca.init == "cvlp" else "model.pretrained",
        "image_weights": cfg.model.pretrained or "scratch", "text_tokens": texts.tokens_per_image,
        "n_params": sum(p.numel() for p in model.parameters()), **src.info})
    finish(resume)
    log.info("ca4ltr[%s]: %d epochs in %.1f s -> %s", source, ca.epochs, res.seconds, out)


@torch.no_grad()
def predict(model: CA4LTR, texts: TextInputs, loader, device: torch.device, desc: str = "eval"):
    """``(pred [N], labels [N], rows [N], skipped)`` over a loader."""
    from tqdm.auto import tqdm

    model.eval()
    preds, labels, rows, skipped = [], [], [], 0
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=2.0, disable=None):
        skipped += batch["skipped"]
        if "image" not in batch:
            continue
        t, m = texts.batch(batch["row"], device)
        preds.append(model(batch["image"].to(device), t, m).argmax(1).cpu())
        labels.append(batch["label"])
        rows.append(batch["row"])
    if not preds:
        raise ValueError(f"{desc}: no readable images")
    return torch.cat(preds).numpy(), torch.cat(labels).numpy(), torch.cat(rows).numpy(), skipped


def run_ca4ltr_evaluate(cfg: DatasetConfig, manifest_path: Path, checkpoint: Path, out_dir: Path,
                        cache_dir: Path | None = None, anchors_path: Path | None = None,
                        captions_path: Path | None = None) -> dict[str, Any]:
    """Evaluate one CA4LTR checkpoint; writes ``metrics.json`` + ``per_class.parquet`` like ``evaluate``."""
    from langtail.config import Ca4ltrConfig
    from langtail.metrics import accuracy_table, write_eval

    device = resolve_device(cfg.evaluate.device)
    model, ck = load_ca4ltr(checkpoint, device)
    source = ck["source"]
    ca = Ca4ltrConfig(**ck["ca4ltr_cfg"])  # the text settings the model was trained with
    df, meta = read_manifest(manifest_path)
    names = list(meta["class_names"])
    C = len(names)
    split = cfg.evaluate.split
    test = df[df["split"] == split]
    if test.empty:
        raise ValueError(f"{manifest_path}: no images in split {split!r}")
    test_index = test.index.to_numpy()
    test = test.reset_index(drop=True)
    src = None
    if source in CLASS_LEVEL:  # the class bank's features are stored in the checkpoint
        texts = TextInputs(bank=model.text_bank.cpu())
    else:
        src = build_source(source, ca, df, names, anchors_path, captions_path)
        texts = TextInputs.build(src, _encoder(cfg), cache_dir, test_index, split)
    dc = cfg.data
    loader = make_loader(test, store_for(manifest_path, meta), build_transform(False, dc.image_size, dc.normalize),
                         cfg.evaluate.batch_size, train=False, num_workers=dc.num_workers)
    pred, labels, rows, skipped = predict(model, texts, loader, device, desc=f"eval ca4ltr_{source}")
    metrics, per = accuracy_table(pred, labels, names, class_counts(df, C), class_groups(df, C))
    model_name = f"ca4ltr_{source}"
    metrics.update({"model": model_name, "method": "ca4ltr", "source": source, "split": split,
                    "skipped_images": skipped, "text_tokens": texts.tokens_per_image,
                    "epochs": ck["extra"].get("epochs"), "init": ck["extra"].get("init"),
                    "image_weights": ck["extra"].get("image_weights")})
    if src is not None:
        hits = [any(mentions_class(s, names[labels[i]]) for s in texts.texts[r]) for i, r in enumerate(rows)]
        metrics["text_mentions_class_pct"] = float(100.0 * np.mean(hits)) if hits else 0.0
        if source == "nonsense" and any(hits):
            raise AssertionError("nonsense text contains a class name: the generator's stop list is broken")
        metrics["example_text"] = texts.texts[int(rows[0])][:1] if len(rows) else []
    for k in ("caption_model", "tiny_random_captioner"):
        if src is not None and k in src.info:
            metrics[k] = src.info[k]
    write_eval(out_dir, metrics, per)
    return metrics
