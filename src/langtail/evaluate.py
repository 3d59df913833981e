"""Stage ``evaluate``: top-1 accuracy overall / many / medium / few, and per class.

Models: a fine-tuned classifier (``finetune/<head>/model.pt``; LGR predictions use
``alpha * softmax(P^I) + (1 - alpha) * softmax(P^T)``, alpha = 0.5 ranks like the paper's
plain sum) or ``zeroshot``: the CVLP encoders alone, each image assigned to the class whose
text embedding (mean of its normalised anchor embeddings) is nearest in cosine.

Outputs in ``eval/<model>/``:

- ``metrics.json``: ``model``, ``split``, ``overall``, ``many``, ``medium``, ``few`` (top-1 in
  %, over test images of the classes in each group; ``null`` for an empty group),
  ``n_images``, ``n_classes`` per group, ``skipped_images``, and for LGR the branch
  accuracies ``image_branch`` / ``text_branch``; ``params_m`` (millions of parameters, anchor
  buffers excluded) and ``gflops`` (multiply-adds per image, ``torch.utils.flop_counter``).
- ``per_class.parquet``: ``class_id:int32``, ``class_name:string``, ``train_count:int32``,
  ``group:string``, ``n_test:int32``, ``correct:int32``, ``accuracy:float64`` (%).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from langtail.config import DatasetConfig
from langtail.data.dataset import build_transform, make_loader, store_for
from langtail.data.manifest import class_counts, class_groups, read_manifest
from langtail.data.skipped import SKIPPED_FILE, SkipLog, write_skipped
from langtail.inference import run_batches
from langtail.metrics import accuracy_table, write_eval
from langtail.models.classifier import load_classifier
from langtail.models.encoders import load_vl_checkpoint
from langtail.models.heads import combine_probs
from langtail.models.text_cache import read_text_embeddings
from langtail.train.loop import resolve_device

log = logging.getLogger(__name__)


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


def run_evaluate(cfg: DatasetConfig, model_name: str, manifest_path: Path, model_path: Path,
                 text_emb_path: Path, out_dir: Path) -> dict[str, Any]:
    device = resolve_device(cfg.evaluate.device)
    df, meta = read_manifest(manifest_path)
    names = meta["class_names"]
    C = len(names)
    split = cfg.evaluate.split
    test = df[df["split"] == split].reset_index(drop=True)
    if test.empty:
        raise ValueError(f"{manifest_path}: no images in split {split!r}")
    dc = cfg.data
    loader = make_loader(test, store_for(manifest_path, meta), build_transform(False, dc.image_size, dc.normalize),
                         cfg.evaluate.batch_size, train=False, num_workers=dc.num_workers)
    extra: dict[str, Any] = {}
    skips = SkipLog()
    if model_name == "zeroshot":
        image = load_vl_checkpoint(model_path, device, image_only=True)[0].eval()
        emb, mask, _ = read_text_embeddings(text_emb_path)
        proto = (F.normalize(emb, dim=-1) * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        proto = F.normalize(proto, dim=-1).to(device)
        scores, labels, _, skipped = run_batches(lambda x: F.normalize(image(x), dim=-1) @ proto.t(),
                                                 loader, device, desc="eval zeroshot", skips=skips)
        pred = scores.argmax(1).numpy()
        extra.update(model_cost(image, dc.image_size, device))
    else:
        clf, ck = load_classifier(model_path, device)
        alpha = float(ck["extra"].get("alpha", cfg.finetune.alpha))

        def fn(x):
            out = clf(x)
            cols = [combine_probs(out, alpha)]
            for k in ("image", "text"):
                if k in out and len(out) > 1:
                    cols.append(out[k].softmax(-1))
            return torch.stack(cols, 1)

        scores, labels, _, skipped = run_batches(fn, loader, device, desc=f"eval {model_name}", skips=skips)
        pred = scores[:, 0].argmax(1).numpy()
        if scores.shape[1] == 3:
            lab = labels.numpy()
            extra["image_branch"] = float(100.0 * (scores[:, 1].argmax(1).numpy() == lab).mean())
            extra["text_branch"] = float(100.0 * (scores[:, 2].argmax(1).numpy() == lab).mean())
        extra["alpha"] = alpha
        extra.update(model_cost(clf, dc.image_size, device))
    counts = class_counts(df, C)
    metrics, per = accuracy_table(pred, labels.numpy(), names, counts, class_groups(df, C))
    metrics.update({"model": model_name, "split": split, "skipped_images": skipped, **extra})
    write_eval(out_dir, metrics, per)
    write_skipped(Path(out_dir) / SKIPPED_FILE, skips, f"evaluate/{model_name}")
    return metrics
