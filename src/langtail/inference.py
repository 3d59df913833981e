"""Batched inference helpers shared by stages (no training)."""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from langtail.data.skipped import SkipLog

log = logging.getLogger(__name__)


def inference_autocast(device: torch.device, amp: bool, desc: str = "infer") -> contextlib.AbstractContextManager:
    """fp16 autocast on CUDA when ``amp`` (the authors' evaluation); on any other device the
    request is logged and inference runs in float32 (CPU fp16 matmuls are slow or unsupported)."""
    if not amp:
        return contextlib.nullcontext()
    if device.type != "cuda":
        log.info("%s: evaluate.amp requested on %s: fp16 autocast needs CUDA, running in float32", desc, device)
        return contextlib.nullcontext()
    return torch.autocast("cuda", dtype=torch.float16)


@torch.no_grad()
def run_batches(fn: Callable[[torch.Tensor], torch.Tensor], loader, device: torch.device,
                desc: str = "infer", amp: bool = False, skips: SkipLog | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Apply ``fn`` to every image batch; returns ``(outputs [N, ...], labels [N], rows [N], skipped)``.

    ``rows`` index the manifest frame the loader was built from (skipped images are absent);
    ``skips`` (if given) records which images were skipped and why.
    ``amp``: run ``fn`` under :func:`inference_autocast` (outputs are returned as float32).
    """
    outs, labels, rows, skipped = [], [], [], 0
    ctx = inference_autocast(device, amp, desc)
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=2.0, disable=None):
        skipped += batch["skipped"]
        if skips is not None:
            skips.add_batch(batch)
        if "image" not in batch:
            continue
        with ctx:
            out = fn(batch["image"].to(device, non_blocking=True))
        outs.append(out.float().cpu())
        labels.append(batch["label"])
        rows.append(batch["row"])
    if not outs:
        raise ValueError(f"{desc}: no readable images")
    return torch.cat(outs), torch.cat(labels), torch.cat(rows), skipped


# ----------------------------------------------------------------------------- test-time ensembling

#: ``evaluate.tta`` -> forward passes per image (the cost: x that many evaluations)
TTA_VIEWS = {"none": 1, "flip": 2, "five_crop": 5, "ten_crop": 10}


def tta_load_size(mode: str, image_size: int, expand: int) -> int:
    """Side the evaluation transform resizes to: ``image_size + expand`` for the crop modes
    (LIFT: resize to 224 + 24, then crop 224), else ``image_size``."""
    if mode not in TTA_VIEWS:
        raise ValueError(f"evaluate.tta: unknown {mode!r}; known: {', '.join(TTA_VIEWS)}")
    return image_size + expand if mode in ("five_crop", "ten_crop") else image_size


def tta_views(x: torch.Tensor, mode: str, size: int) -> list[torch.Tensor]:
    """The views ``[B, 3, size, size]`` of a batch ``x [B, 3, S, S]`` (S = :func:`tta_load_size`):
    ``none`` x itself; ``flip`` x and its mirror; ``five_crop`` the 4 corner crops + the centre crop
    (torchvision ``FiveCrop`` order); ``ten_crop`` those and their mirrors (``TenCrop``)."""
    if mode in ("none", "flip"):
        if x.shape[-1] != size or x.shape[-2] != size:
            raise ValueError(f"tta {mode}: images are {tuple(x.shape[-2:])}, expected {size}")
        return [x] if mode == "none" else [x, x.flip(-1)]
    H, W = x.shape[-2:]
    if H < size or W < size:
        raise ValueError(f"tta {mode}: images {H}x{W} are smaller than the crop {size}")
    return _five_crops(x, size) + (_five_crops(x.flip(-1), size) if mode == "ten_crop" else [])


def _five_crops(x: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Top-left, top-right, bottom-left, bottom-right, centre ``size`` crops of ``x [..., H, W]``."""
    H, W = x.shape[-2:]
    top, left = int(round((H - size) / 2.0)), int(round((W - size) / 2.0))
    return [x[..., :size, :size], x[..., :size, W - size:], x[..., H - size:, :size], x[..., H - size:, W - size:],
            x[..., top:top + size, left:left + size]]


def with_tta(fn: Callable, mode: str, size: int) -> Callable:
    """``fn`` (images -> logits ``[B, C]`` or a dict of them, extra args passed through) averaged
    over the :func:`tta_views` of each batch (LIFT averages the logits of its crops)."""
    if mode == "none":
        return fn

    def avg(x: torch.Tensor, *args, **kwargs):
        outs = [fn(v.contiguous(), *args, **kwargs) for v in tta_views(x, mode, size)]
        if isinstance(outs[0], dict):
            return {k: torch.stack([o[k].float() for o in outs]).mean(0) for k in outs[0]}
        return torch.stack([o.float() for o in outs]).mean(0)

    return avg


def tta_info(cfg) -> dict[str, Any]:
    """What metrics.json records about the evaluation transform: ``tta``, ``forward_passes`` (per
    image: the cost), ``tta_expand`` (crop modes) and ``preprocess`` (image_size, normalize and the
    ``interpolation`` of the resize, at the size the images are loaded)."""
    from langtail.data.dataset import preprocess_info

    ec, dc = cfg.evaluate, cfg.data
    load = tta_load_size(ec.tta, dc.image_size, ec.tta_expand)
    out: dict[str, Any] = {"tta": ec.tta, "forward_passes": TTA_VIEWS[ec.tta],
                           "preprocess": {**preprocess_info(load, dc.normalize), "crop": dc.image_size}}
    if load != dc.image_size:
        out["tta_expand"] = int(ec.tta_expand)
    return out


def classifier_scores(clf: torch.nn.Module, alpha: float, priors: torch.Tensor | None = None, la_tau: float = 0.0,
                      logit_sum: bool = False) -> Callable[[torch.Tensor], torch.Tensor]:
    """The prediction rule of a fine-tuned classifier (evaluate and per-epoch validation):
    ``x [B, 3, H, W] -> scores [B, K, C]`` where ``scores[:, 0]`` = ``alpha * softmax(P^I) +
    (1 - alpha) * softmax(P^T)`` (:func:`langtail.models.heads.combine_probs`; one-branch heads:
    its softmax); two-branch heads add the image and text branches' softmax (and with
    ``logit_sum`` the raw ``P^I + P^T``, the authors' shot-group ranking). ``priors [C]`` with
    ``la_tau`` != 0: post-hoc logit adjustment of every branch first (Menon et al. 2021, Eq. 9)."""
    from langtail.losses import posthoc_adjust
    from langtail.models.heads import combine_probs

    def fn(x: torch.Tensor) -> torch.Tensor:
        out = clf(x)
        if priors is not None and la_tau:
            out = {k: posthoc_adjust(v.float(), priors, la_tau) for k, v in out.items()}
        cols = [combine_probs(out, alpha)]
        if len(out) > 1:
            cols += [out["image"].softmax(-1), out["text"].softmax(-1)]
            if logit_sum:
                cols.append(out["image"].float() + out["text"].float())
        return torch.stack([c.float() for c in cols], 1)

    return fn
