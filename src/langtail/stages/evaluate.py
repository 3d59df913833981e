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
  (millions of parameters, anchor buffers excluded) and ``gflops`` (multiply-adds per image,
  ``torch.utils.flop_counter``); ``image_features`` (``cached`` under ``model.backbone_mode:
  frozen``: scored on the cached backbone features, after checking the checkpoint's backbone
  is the one they came from; else ``images``).
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
from langtail.inference import run_batches
from langtail.losses import class_priors, posthoc_adjust
from langtail.metrics import accuracy_table, write_eval
from langtail.models.classifier import load_classifier
from langtail.models.heads import combine_probs
from langtail.models.image_cache import frozen_features
from langtail.models.zeroshot import load_zeroshot, zeroshot_scores
from langtail.runtime import resolve_device

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": ("backbone_mode",),
    "finetune": ("alpha",),  # inference: alpha * P_I + (1 - alpha) * P_T
    "evaluate": ("batch_size", "split", "device", "amp", "group_ranking", "recipe", "posthoc_la_tau"),
}


def inputs(cfg: DatasetConfig, model: str) -> tuple[str, ...]:
    """Upstream artifacts besides the manifest and the checkpoint: ``zeroshot_anchors`` reads the
    anchor embeddings (a fine-tuned head carries its own in the checkpoint; ``zeroshot`` embeds
    the class-name prompts with the checkpoint's own text encoder)."""
    needs = ("features",) if cfg.model.backbone_mode == "frozen" else ()
    return needs + (("text_emb",) if model == "zeroshot_anchors" else ())


def model_cost(model: torch.nn.Module, image_size: int, device: torch.device) -> dict[str, float]:
    """Parameters (millions) and GFLOPs (multiply-adds, per image) of a model in eval mode."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(1, 3, image_size, image_size, device=device)
    with torch.no_grad():
        model(x)  # warm-up: LGR keys are computed once and cached at inference
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    return {"params_m": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops": fc.get_total_flops() / 2 / 1e9}


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
    dc = cfg.data
    features = frozen_features(cfg.model, features_path, f"evaluate[{model_name}]")
    loader = eval_loader(test, manifest_path, meta, dc, cfg.evaluate.batch_size, features)
    ec = cfg.evaluate
    extra: dict[str, Any] = {"recipe": ec.recipe, "amp": bool(ec.amp and device.type == "cuda"),
                             "image_features": "cached" if features is not None else "images"}
    group_pred = None
    skips = SkipLog()
    if model_name in ZEROSHOT_MODELS:
        image, proto, extra["class_text"] = load_zeroshot(model_name, model_path, text_emb_path, names, device, cache_dir)
        if features is not None:
            features.check_backbone(image, str(model_path))
        scores, labels, _, skipped = run_batches(zeroshot_scores(image, proto), loader, device,
                                                 desc=f"eval {model_name}", amp=ec.amp, skips=skips)
        pred = scores.argmax(1).numpy()
        extra.update(model_cost(image, dc.image_size, device))
    else:
        clf, ck = load_classifier(model_path, device)
        if features is not None:
            features.check_backbone(clf.image, str(model_path))
        alpha = float(cfg.finetune.alpha)
        la_tau = float(ec.posthoc_la_tau)
        priors = class_priors(class_counts(df, C), str(manifest_path)).to(device) if la_tau else None

        def fn(x):
            out = clf(x)
            if priors is not None:  # post-hoc logit adjustment (Menon et al. 2021, Eq. 9), every branch
                out = {k: posthoc_adjust(v.float(), priors, la_tau) for k, v in out.items()}
            cols = [combine_probs(out, alpha)]
            if len(out) > 1:  # image branch, text branch (+ raw logit sum: authors' shot-group ranking)
                cols += [out["image"].softmax(-1), out["text"].softmax(-1)]
                if ec.group_ranking == "logit_sum":
                    cols.append(out["image"].float() + out["text"].float())
            return torch.stack([c.float() for c in cols], 1)

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
        extra["group_ranking"] = ec.group_ranking if group_pred is not None else "combined"
        extra.update(model_cost(clf, dc.image_size, device))
    counts = class_counts(df, C)
    metrics, per = accuracy_table(pred, labels.numpy(), names, counts, class_groups(df, C), group_pred)
    metrics.update({"model": model_name, "split": split, "skipped_images": skipped, **extra})
    write_eval(out_dir, metrics, per)
    write_skipped(Path(out_dir) / SKIPPED_FILE, skips, f"evaluate/{model_name}")
    return metrics
