"""Command-only stage ``predict`` (``langtail predict``; no workflow rule): class predictions for new images.

Reads a fine-tuned checkpoint (``results/<dataset>/finetune/<head>/model.pt``) and images
(paths, or every image under ``--folder`` without following symlinks out of it), writes the
predictions table of :mod:`langtail.predict` (``.parquet`` or ``.csv``; schema in
``docs/artifacts.md``, section "predict"). Inference uses only the checkpoint:
its anchor embeddings, class names and preprocessing; no text encoder, no corpus, no config.

Unreadable files (and symlinks out of the folder) are skipped, logged with their reason,
counted in the metadata (``n_unreadable``) and listed in the table (``rank`` 0).
It reads no config keys (``KEYS`` is empty): every setting is a command-line option.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from langtail.predict import load_classifier, scan_folder, write_predictions

log = logging.getLogger(__name__)

#: config keys this stage reads: none (options only; it is not a workflow rule)
KEYS: dict[str, tuple[str, ...]] = {}


def run(model_path: Path, out: Path, images: Sequence[str] = (), folder: Path | None = None, top_k: int = 5,
        batch_size: int = 64, device: str = "auto", alpha: float | None = None, manifest: Path | None = None,
        image_size: int | None = None, normalize: str | None = None, num_workers: int = 0,
        posthoc_la_tau: float | None = None, eval_metrics: Path | None = None) -> dict[str, Any]:
    """Predict ``images`` (and/or every image under ``folder``) with ``model_path``; write ``out``.

    Returns the metadata written with the table (counts, alpha, top_k, device, ...).
    """
    paths = [str(p) for p in images]
    errors: dict[int, str] = {}
    if folder is not None:
        found, refused = scan_folder(folder)
        errors = {len(paths) + i: why for i, why in refused.items()}
        paths += found
        log.info("%s: %d image file(s)%s", folder, len(found) - len(refused),
                 f", {len(refused)} symlink(s) out of the folder refused" if refused else "")
    if not paths:
        raise ValueError("nothing to predict: give image paths or --folder DIR with images in it"
                         + (f" ({folder} has no image files)" if folder is not None else ""))
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pred = load_classifier(model_path, device, alpha=alpha, manifest=manifest, image_size=image_size,
                           normalize=normalize, posthoc_la_tau=posthoc_la_tau,
                           eval_metrics=eval_metrics)
    df = pred.predict(paths, top_k=top_k, batch_size=batch_size, num_workers=num_workers, errors=errors)
    bad = df[df["rank"] == 0]
    meta = {"model": str(model_path), "kind": pred.kind, "alpha": pred.alpha, "posthoc_la_tau": pred.posthoc_la_tau, "top_k": int(min(top_k, len(pred.class_names))),
            "num_classes": len(pred.class_names), "image_size": pred.image_size, "normalize": pred.normalize,
            "device": str(pred.device), "n_inputs": len(paths), "n_predicted": len(paths) - len(bad),
            "n_unreadable": len(bad), "folder": str(folder) if folder is not None else None}
    write_predictions(out, df, meta)
    log.info("%s: %d image(s) predicted, %d unreadable (rank 0 rows, reason in 'error')", out, meta["n_predicted"],
             meta["n_unreadable"])
    return meta
