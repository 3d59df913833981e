"""Stage ``evaluate`` (rule ``evaluate``, ``langtail evaluate --model M``): top-1 accuracy overall / many / medium / few, and per class.

Models: a fine-tuned classifier (``finetune/<head>/model.pt``; LGR predictions use
``alpha * softmax(P^I) + (1 - alpha) * softmax(P^T)``, alpha = 0.5 ranks like the paper's
plain sum), or the CVLP encoders alone (``langtail.models.zeroshot``): ``zeroshot`` (standard
CLIP zero-shot: class text = mean of the 80 prompt embeddings; reads ``pretrain/model.pt``
and the manifest's class names) and ``zeroshot_anchors`` (class text = mean of the selected
anchor embeddings of ``text_embeddings.safetensors``).

Outputs in ``eval/<model>/``:

- ``metrics.json``: ``model``, ``split``, ``overall``, ``many``, ``medium``, ``few`` (top-1 in
  %, over test images of the classes in each group; ``null`` for an empty group),
  ``n_images``, ``n_classes`` per group, ``skipped_images``, and for LGR the branch
  accuracies ``image_branch`` / ``text_branch``, ``alpha`` and ``group_ranking``; for zero-shot
  ``class_text``; for a fine-tuned classifier ``posthoc_la_tau`` (``evaluate.posthoc_la_tau``:
  logits ``- tau * log pi`` of every branch before the softmax, 0 = off) and ``train_loss``
  (the checkpoint's ``finetune.loss``); ``recipe`` (``evaluate.recipe``), ``amp`` (fp16 autocast used); ``params_m``
  (millions of parameters, anchor buffers excluded) and ``gflops`` (multiply-adds per image and
  view, ``torch.utils.flop_counter``); ``tta`` (``evaluate.tta``), ``forward_passes`` (views per
  image: the cost of test-time ensembling is ``forward_passes x gflops``), ``tta_expand`` (crop
  modes) and ``preprocess`` (``image_size`` loaded, ``crop``, ``normalize``, ``interpolation``
  of the resize); for a fine-tuned classifier also :data:`TRAINING_FACTS` (``backbone_mode``,
  ``params_trained`` / ``params_total`` of the image tower, ``params_head``, ``head_init``) and
  ``train_seconds`` (the fine-tuning run's wall time); ``selected`` (the epoch the checkpoint holds:
  ``rule`` = ``finetune.select`` last | best_val, ``epoch`` 1-based, ``val_overall`` when the run validated).
  ``checkpoint_id`` (the checkpoint's ``run_id``: ``langtail predict`` ranks with this evaluation's
  ``alpha`` / ``posthoc_la_tau``); ``image_features`` (``cached`` under ``model.backbone_mode: frozen``: scored on the cached
  backbone features, after checking the checkpoint's backbone is the one they came from; else ``images``).
- ``per_class.parquet``: ``class_id:int32``, ``class_name:string``, ``train_count:int32``,
  ``group:string``, ``n_test:int32``, ``correct:int32``, ``accuracy:float64`` (%).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from langtail.config import ZEROSHOT_MODELS, DatasetConfig
from langtail.data.dataset import eval_loader
from langtail.data.manifest import class_counts, class_groups, read_manifest
from langtail.data.skipped import SKIPPED_FILE, SkipLog, write_skipped
from langtail.inference import classifier_scores, run_batches, tta_info, tta_load_size, with_tta
from langtail.losses import class_priors
from langtail.metrics import accuracy_table, write_eval
from langtail.models.classifier import read_classifier
from langtail.models.image_cache import forward_gflops, frozen_features
from langtail.train.validation import checkpoint_selection
from langtail.models.zeroshot import load_zeroshot, zeroshot_scores
from langtail.runtime import resolve_device

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": ("backbone_mode",),
    "finetune": ("alpha",),  # inference: alpha * P_I + (1 - alpha) * P_T
    "evaluate": ("batch_size", "split", "device", "amp", "group_ranking", "recipe", "posthoc_la_tau", "tta",
                 "tta_expand"),
}


#: facts of a classifier checkpoint's ``extra`` copied to metrics.json (how the backbone trained)
TRAINING_FACTS = ("backbone_mode", "params_trained", "params_total", "params_head", "head_init", "epochs")


def inputs(cfg: DatasetConfig, model: str) -> tuple[str, ...]:
    """Upstream artifacts besides the manifest and the checkpoint: ``zeroshot_anchors`` reads the
    anchor embeddings (a fine-tuned head carries its own in the checkpoint; ``zeroshot`` embeds
    the class-name prompts with the checkpoint's own text encoder)."""
    needs = ("features",) if cfg.model.backbone_mode == "frozen" else ()
    return needs + (("text_emb",) if model == "zeroshot_anchors" else ())


def model_cost(model: torch.nn.Module, image_size: int, device: torch.device, features=None) -> dict[str, float]:
    """Parameters (millions, the frozen backbone's included) and GFLOPs (multiply-adds, per image)
    of a model in eval mode. On cached ``features`` the model runs on one cached feature and the
    backbone's cost comes from the file (``backbone_gflops``): the backbone is not built."""
    from langtail.models.tuning import trainable_counts

    backbone = features.meta.get("backbone_gflops") if features is not None else None
    if backbone is not None:
        x = torch.zeros(1, *features.data.shape[1:], device=device)
    else:
        x = torch.zeros(1, 3, image_size, image_size, device=device)
    gflops = forward_gflops(model, x) + float(backbone or 0.0)
    return {"params_m": trainable_counts(model)[1] / 1e6, "gflops": gflops}


def run(cfg: DatasetConfig, model_name: str, manifest_path: Path, model_path: Path, out_dir: Path,
        text_emb_path: Path | None = None, cache_dir: Path | None = None,
        features_path: Path | None = None) -> dict[str, Any]:
    """``cache_dir``: the text-feature cache (``zeroshot`` reuses the prompt features encoded in
    pre-training instead of running the text encoder over C x 80 prompts again);
    ``features_path``: the cached image features (``model.backbone_mode: frozen``)."""
    device = resolve_device(cfg.evaluate.device)
    df, meta = read_manifest(manifest_path)
    names = meta["class_names"]
    C = len(names)
    split = cfg.evaluate.split
    test = df[df["split"] == split].reset_index(drop=True)
    if test.empty:
        raise ValueError(f"{manifest_path}: no images in split {split!r}")
    dc, ec = cfg.data, cfg.evaluate
    features = frozen_features(cfg.model, features_path, f"evaluate[{model_name}]")
    if features is not None and ec.tta != "none":
        raise ValueError(f"evaluate.tta={ec.tta}: test-time views need images, but model.backbone_mode is frozen "
                         "(cached features); set evaluate.tta: none")
    loader = eval_loader(test, manifest_path, meta, dc, ec.batch_size, tta_load_size(ec.tta, dc.image_size, ec.tta_expand),
                         features=features)
    extra: dict[str, Any] = {"recipe": ec.recipe, "amp": bool(ec.amp and device.type == "cuda"), **tta_info(cfg),
                             "image_features": "cached" if features is not None else "images"}
    group_pred = None
    skips = SkipLog()
    if model_name in ZEROSHOT_MODELS:
        image, proto, extra["class_text"] = load_zeroshot(model_name, model_path, text_emb_path, names, device, cache_dir)
        if features is not None:
            features.check_backbone(image, str(model_path))
        scores, labels, _, skipped = run_batches(with_tta(zeroshot_scores(image, proto), ec.tta, dc.image_size),
                                                 loader, device,
                                                 desc=f"eval {model_name}", amp=ec.amp, skips=skips)
        pred = scores.argmax(1).numpy()
        extra.update(model_cost(image, dc.image_size, device, features))
    else:
        pred, labels, skipped, group_pred = _classifier_predictions(cfg, df, C, manifest_path, model_path, model_name,
                                                                    loader, device, skips, extra, features)
    counts = class_counts(df, C)
    metrics, per = accuracy_table(pred, labels.numpy(), names, counts, class_groups(df, C), group_pred)
    metrics.update({"model": model_name, "split": split, "skipped_images": skipped, **extra})
    write_eval(out_dir, metrics, per)
    write_skipped(Path(out_dir) / SKIPPED_FILE, skips, f"evaluate/{model_name}")
    return metrics


def _classifier_predictions(cfg: DatasetConfig, df, C: int, manifest_path: Path, model_path: Path, model_name: str,
                            loader, device: torch.device, skips: SkipLog, extra: dict[str, Any], features=None):
    """A fine-tuned classifier's predictions ``[N]``, labels ``[N]``, skipped count and the
    shot-group ranking predictions (or None); adds branch accuracies, alpha, post-hoc tau,
    train loss and model cost to ``extra``."""
    ec, dc = cfg.evaluate, cfg.data
    group_pred = None
    clf, ck = read_classifier(model_path, device)
    if features is not None:  # cached features stand in for images only with the backbone they came from
        features.check_backbone(clf.image, str(model_path))
    alpha = float(cfg.finetune.alpha)
    la_tau = float(ec.posthoc_la_tau)
    priors = class_priors(class_counts(df, C), str(manifest_path)).to(device) if la_tau else None
    fn = classifier_scores(with_tta(clf, ec.tta, dc.image_size), alpha, priors, la_tau,
                           logit_sum=ec.group_ranking == "logit_sum")
    scores, labels, _, skipped = run_batches(fn, loader, device, desc=f"eval {model_name}", amp=ec.amp,
                                             skips=skips)
    pred = scores[:, 0].argmax(1).numpy()
    if scores.shape[1] >= 3:
        lab = labels.numpy()
        extra["image_branch"] = float(100.0 * (scores[:, 1].argmax(1).numpy() == lab).mean())
        extra["text_branch"] = float(100.0 * (scores[:, 2].argmax(1).numpy() == lab).mean())
        if scores.shape[1] == 4:
            group_pred = scores[:, 3].argmax(1).numpy()
    extra["alpha"] = alpha
    extra["posthoc_la_tau"] = la_tau
    extra["train_loss"] = ck["extra"].get("loss", "ce")
    extra["selected"] = checkpoint_selection(ck["extra"])
    extra["checkpoint_id"] = ck["extra"].get("run_id", "")  # `langtail predict` takes alpha / tau from here
    extra.update({k: ck["extra"][k] for k in TRAINING_FACTS if k in ck["extra"]})
    if "seconds" in ck["extra"]:
        extra["train_seconds"] = float(ck["extra"]["seconds"])  # wall time of the fine-tuning run
    extra["group_ranking"] = ec.group_ranking if group_pred is not None else "combined"
    extra.update(model_cost(clf, dc.image_size, device, features))
    return pred, labels, skipped, group_pred
