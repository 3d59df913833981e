"""Batched inference helpers shared by stages (no training)."""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

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
