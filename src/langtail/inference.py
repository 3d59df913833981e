"""Batched inference helpers shared by stages (no training)."""
from __future__ import annotations

from typing import Callable

import torch
from tqdm.auto import tqdm

from langtail.data.skipped import SkipLog


@torch.no_grad()
def run_batches(fn: Callable[[torch.Tensor], torch.Tensor], loader, device: torch.device,
                desc: str = "infer", skips: SkipLog | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Apply ``fn`` to every image batch; returns ``(outputs [N, ...], labels [N], rows [N], skipped)``.

    ``rows`` index the manifest frame the loader was built from (skipped images are absent);
    ``skips`` (if given) records which images were skipped and why.
    """
    outs, labels, rows, skipped = [], [], [], 0
    for batch in tqdm(loader, desc=desc, leave=False, mininterval=2.0, disable=None):
        skipped += batch["skipped"]
        if skips is not None:
            skips.add_batch(batch)
        if "image" not in batch:
            continue
        outs.append(fn(batch["image"].to(device, non_blocking=True)).float().cpu())
        labels.append(batch["label"])
        rows.append(batch["row"])
    if not outs:
        raise ValueError(f"{desc}: no readable images")
    return torch.cat(outs), torch.cat(labels), torch.cat(rows), skipped
