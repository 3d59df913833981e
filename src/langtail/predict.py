"""Inference with a fine-tuned classifier on new images: :func:`load_classifier` -> :class:`Predictor`.

Everything inference needs travels with ``finetune/<head>/model.pt``: the visual encoder and
head weights, the cached anchor-sentence embeddings ``[C, M, D]`` (head buffers; no text
encoder and no corpus are loaded), the class names and the preprocessing (``image_size``,
``normalize``: the evaluation transform of :func:`langtail.data.dataset.build_transform`).
Checkpoints written before the class names / preprocessing were stored raise
:class:`MissingCheckpointInfo` naming what to pass (``manifest=`` / ``--manifest``,
``image_size=`` + ``normalize=`` / ``--image-size`` + ``--normalize``).

Predictions are a long table (:data:`PREDICTION_COLUMNS`), ``top_k`` rows per readable image
(``rank`` 1..k, best first) and one row per unreadable image (``rank`` 0, ``class_id`` -1,
empty ``class_name``, null ``probability``, the reason in ``error``): nothing is dropped
silently. Schema: ``docs/artifacts.md#predictions``.

    >>> clf = load_classifier("results/demo/finetune/lgr/model.pt")       # doctest: +SKIP
    >>> clf.predict(["a.png", "b.jpg"], top_k=3)                           # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from langtail import io
from langtail.data.dataset import MEAN_STD, build_transform
from langtail.data.folder import list_images
from langtail.data.manifest import read_manifest
from langtail.data.skipped import Skip
from langtail.models.classifier import classifier_from_checkpoint
from langtail.losses import class_priors, posthoc_adjust
from langtail.models.heads import combine_probs
from langtail.registry import HEADS
from langtail.runtime import resolve_device
from langtail.schemas import PREDICTION_COLUMNS, PREDICTION_SCHEMA

log = logging.getLogger(__name__)

#: the paper's default weight of the image branch in ``alpha * P^I + (1 - alpha) * P^T``
DEFAULT_ALPHA = 0.5
#: output suffixes :func:`write_predictions` knows
FORMATS = (".parquet", ".csv")


class MissingCheckpointInfo(ValueError):
    """A checkpoint lacks the class names or preprocessing (written by an older langtail)."""


def _as_rgb(img: Any, where: str) -> np.ndarray:
    """A PIL image or array (``uint8 [H, W]``, ``[H, W, 3|4]``, or float in [0, 1]) -> ``uint8 [H, W, 3]``."""
    if hasattr(img, "convert") and hasattr(img, "size"):  # PIL image
        return np.array(img.convert("RGB"))
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise ValueError(f"{where}: expected an image array [H, W], [H, W, 3] or [H, W, 4]; got shape {a.shape}")
    a = a[..., :3]
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
            raise ValueError(f"{where}: float image values must lie in [0, 1] (or pass uint8 0-255)")
        return np.ascontiguousarray(np.round(a * 255).astype(np.uint8))
    raise ValueError(f"{where}: image arrays must be uint8 (0-255) or float in [0, 1]; got {a.dtype}")


def _name(img: Any, i: int) -> str:
    return os.fspath(img) if isinstance(img, (str, os.PathLike)) else f"<input {i}>"


class _Images(Dataset):
    """Inputs (paths, PIL images, arrays) as ``(image [3, S, S], -1, index)``; an unreadable
    file becomes a :class:`~langtail.data.skipped.Skip` (listed by :func:`_collate`)."""

    def __init__(self, images: Sequence[Any], transform, errors: dict[int, str] | None = None):
        self.images = list(images)
        self.transform = transform
        self.errors = errors or {}

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = self.images[i]
        if i in self.errors:
            return Skip(i, _name(img, i), "", self.errors[i])
        if isinstance(img, (str, os.PathLike)):
            from PIL import Image

            try:
                with Image.open(img) as im:
                    arr = np.array(im.convert("RGB"))
            except (OSError, ValueError, SyntaxError) as e:  # missing, not an image, truncated
                log.warning("skipping unreadable image %s: %s", img, e)
                return Skip(i, os.fspath(img), "", f"{type(e).__name__}: {e}")
        else:
            arr = _as_rgb(img, f"input {i}")
        return self.transform(arr), -1, i


@dataclass
class Predictor:
    """A fine-tuned classifier ready for inference (build it with :func:`load_classifier`).

    ``model`` maps ``[B, 3, S, S]`` to the head's logits dict; ``class_names`` has ``C``
    entries; ``alpha`` weighs the image branch of an LGR head
    (``alpha * softmax(P^I) + (1 - alpha) * softmax(P^T)``; ignored by single-branch heads);
    ``posthoc_la_tau`` > 0 subtracts ``tau * log(priors [C])`` from every branch's logits first
    (the evaluate stage's post-hoc logit adjustment).
    """

    model: torch.nn.Module
    class_names: list[str]
    image_size: int
    normalize: str
    kind: str
    device: torch.device
    alpha: float = DEFAULT_ALPHA
    path: str = ""
    info: dict[str, Any] = field(default_factory=dict)
    posthoc_la_tau: float = 0.0
    priors: torch.Tensor | None = None

    @property
    def transform(self):
        return build_transform(False, self.image_size, self.normalize)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``[B, C]`` of a preprocessed batch ``x [B, 3, S, S]``."""
        out = self.model(x.to(self.device))
        if self.posthoc_la_tau:
            out = {k: posthoc_adjust(v.float(), self.priors.to(self.device), self.posthoc_la_tau) for k, v in out.items()}
        return combine_probs(out, self.alpha).float()

    def predict(self, images: Sequence[Any], top_k: int = 5, batch_size: int = 64, num_workers: int = 0,
                progress: bool | None = None, errors: dict[int, str] | None = None) -> pd.DataFrame:
        """Top-``top_k`` classes of every image (paths, PIL images or ``uint8 [H, W, 3]`` arrays).

        Returns the long table of :data:`PREDICTION_COLUMNS` (``top_k`` rows per readable image,
        one ``rank`` 0 row with the reason in ``error`` per unreadable file), in input order.
        ``errors`` ``{input index: reason}`` marks inputs known to be unusable beforehand (a
        folder scan's refused symlinks): they are reported like unreadable files.
        ``progress``: tqdm bar (None: only on a terminal).
        """
        if isinstance(images, (str, os.PathLike)) or hasattr(images, "convert") or (
                isinstance(images, np.ndarray) and images.ndim <= 3 and images.dtype != object
                and (images.ndim < 3 or images.shape[-1] in (3, 4))):
            images = [images]  # one image, not a sequence of them
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1; got {top_k}")
        k = min(int(top_k), len(self.class_names))
        ds = _Images(images, self.transform, errors)
        loader = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=_collate, pin_memory=self.device.type == "cuda")
        rows: list[pd.DataFrame] = []
        failed: list[tuple[int, str, str]] = []
        names = np.asarray(self.class_names, dtype=object)
        bar = tqdm(total=len(ds), desc=f"predict[{self.kind}]", unit="img", disable=None if progress is None else not progress)
        for batch in loader:
            failed += batch["failed"]
            if "image" in batch:
                p = self.probabilities(batch["image"].to(self.device, non_blocking=True))
                top = p.topk(k, dim=1)
                ids = top.indices.cpu().numpy()
                idx = batch["row"].numpy()
                n = len(idx)
                rows.append(pd.DataFrame({
                    "input": np.repeat(idx, k), "image": np.repeat([_name(ds.images[i], i) for i in idx], k),
                    "rank": np.tile(np.arange(1, k + 1), n), "class_id": ids.reshape(-1),
                    "class_name": names[ids.reshape(-1)], "probability": top.values.double().cpu().numpy().reshape(-1),
                    "error": [""] * (n * k)}))
            bar.update(len(batch["failed"]) + (len(batch["row"]) if "row" in batch else 0))
        bar.close()
        if failed:
            rows.append(pd.DataFrame({"input": [f[0] for f in failed], "image": [f[1] for f in failed],
                                      "rank": 0, "class_id": -1, "class_name": "", "probability": np.nan,
                                      "error": [f[2] for f in failed]}))
            log.warning("predict: %d of %d image(s) unreadable, listed with rank 0 and the reason in 'error': %s",
                        len(failed), len(ds), "; ".join(f"{f[1]} ({f[2]})" for f in failed[:20])
                        + (f"; ... and {len(failed) - 20} more" if len(failed) > 20 else ""))
        df = pd.concat(rows, ignore_index=True) if rows else _empty()
        df = df.sort_values(["input", "rank"], kind="stable").reset_index(drop=True)
        return df.astype({"input": "int32", "rank": "int32", "class_id": "int32", "probability": "float64"})


def _collate(batch: list) -> dict[str, Any]:
    """Stack the readable items of a batch; list the :class:`Skip` ones as ``(input, image, reason)``."""
    good = [b for b in batch if not isinstance(b, Skip)]
    out: dict[str, Any] = {"failed": [(s.row, s.image, s.reason) for s in batch if isinstance(s, Skip)]}
    if good:
        out["image"] = torch.stack([b[0] for b in good])
        out["row"] = torch.tensor([b[2] for b in good], dtype=torch.long)
    return out


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype=object if t == "string" else t) for c, t in PREDICTION_COLUMNS.items()})


def load_classifier(path: str | os.PathLike, device: str | torch.device = "auto", *, alpha: float | None = None,
                    manifest: str | os.PathLike | None = None, class_names: Sequence[str] | None = None,
                    image_size: int | None = None, normalize: str | None = None,
                    posthoc_la_tau: float | None = None, eval_metrics: str | os.PathLike | None = None
                    ) -> Predictor:
    """A :class:`Predictor` for a fine-tuned checkpoint (``results/<dataset>/finetune/<head>/model.pt``).

    Loaded with the safe loader (:func:`langtail.io.torch_load`). Class names and
    preprocessing come from the checkpoint; ``manifest`` / ``class_names`` and
    ``image_size`` / ``normalize`` supply them for older checkpoints (or override them).
    ``alpha`` / ``posthoc_la_tau``: None = those the evaluate stage ranked this checkpoint with
    (:func:`evaluation_of`: ``eval_metrics``, else the run's own ``eval/<head>/metrics.json``;
    none found: alpha 0.5, no adjustment, logged); the post-hoc priors are the checkpoint's
    ``class_counts``.
    ``device``: ``auto`` (CUDA when present), ``cpu``, ``cuda:0``...
    """
    dev = resolve_device(device) if isinstance(device, str) else torch.device(device)
    ck = io.torch_load(path)
    if not isinstance(ck, dict) or not {"kind", "state_dict", "extra", "model_cfg"} <= set(ck):
        raise ValueError(f"{path}: not a fine-tuned classifier checkpoint (expected finetune/<head>/model.pt "
                         "written by `langtail finetune`)")
    if ck["kind"] not in HEADS:
        raise ValueError(f"{path}: a {ck['kind']!r} checkpoint; langtail predict takes the fine-tuned heads "
                         f"({', '.join(HEADS.names())}: finetune/<head>/model.pt); a head from a plugin needs "
                         "the plugin loaded: set $LANGTAIL_PLUGINS (docs/extending.md)")
    alpha, la_tau, priors = _inference_settings(ck, path, alpha, posthoc_la_tau, eval_metrics)
    clf = classifier_from_checkpoint(ck, path, dev)
    n_classes = int(ck["extra"]["num_classes"])
    names = _class_names(path, ck, manifest, class_names, n_classes)
    pre = dict(ck.get("preprocess") or {})
    if image_size is not None:
        pre["image_size"] = int(image_size)
    if normalize is not None:
        pre["normalize"] = normalize
    missing = [k for k in ("image_size", "normalize") if k not in pre]
    if missing:
        raise MissingCheckpointInfo(
            f"{path}: the checkpoint does not store its preprocessing ({', '.join(missing)}; written by an older "
            "langtail): pass --image-size and --normalize (Python: image_size=, normalize=) with the "
            "data.image_size / data.normalize it was trained with, or rerun the finetune stage")
    if pre["normalize"] not in MEAN_STD:
        raise ValueError(f"normalize {pre['normalize']!r} unknown; known: {', '.join(MEAN_STD)}")
    log.info("%s: %s classifier, %d classes, %d px, %s normalisation, alpha %.3g, post-hoc tau %.3g, on %s", path,
             ck["kind"], n_classes, pre["image_size"], pre["normalize"], alpha, la_tau, dev)
    return Predictor(clf, names, int(pre["image_size"]), str(pre["normalize"]), ck["kind"], dev, float(alpha),
                     os.fspath(path), {"epochs": ck["extra"].get("epochs"), "init": ck["extra"].get("init")},
                     la_tau, priors)


def _inference_settings(ck: dict[str, Any], path, alpha: float | None, la_tau: float | None,
                        eval_metrics: str | os.PathLike | None = None) -> tuple[float, float, torch.Tensor | None]:
    """``(alpha, posthoc_la_tau, priors [C] or None)``: the arguments, else those the evaluate
    stage ranked this checkpoint with (:func:`evaluation_of`), else 0.5 and 0 (logged)."""
    found, where = evaluation_of(path, ck, eval_metrics), ""
    if found is not None:
        where = f"the evaluation {found[1]}"
    elif alpha is None or la_tau is None:
        log.warning("%s: no evaluation of this checkpoint found (eval/<head>/metrics.json of its run): "
                    "alpha %s, post-hoc tau %s", path, DEFAULT_ALPHA if alpha is None else alpha,
                    0.0 if la_tau is None else la_tau)
    stored = found[0] if found is not None else {}
    alpha = float(stored.get("alpha", DEFAULT_ALPHA) if alpha is None else alpha)
    la_tau = float(stored.get("posthoc_la_tau", 0.0) if la_tau is None else la_tau)
    if where:
        log.info("%s: alpha %.3g, post-hoc tau %.3g as in %s", path, alpha, la_tau, where)
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1]; got {alpha}")
    if not la_tau:
        return alpha, 0.0, None
    if "class_counts" not in ck["extra"]:
        raise MissingCheckpointInfo(f"{path}: post-hoc logit adjustment needs the train class counts, which this "
                                    "checkpoint does not store (older langtail): use --posthoc-la-tau 0 or rerun "
                                    "the finetune stage")
    return alpha, la_tau, class_priors(ck["extra"]["class_counts"], str(path))


def evaluation_of(path, ck: dict[str, Any], eval_metrics: str | os.PathLike | None = None
                  ) -> tuple[dict[str, Any], Path] | None:
    """``(metrics, its path)`` of the evaluate stage's run on checkpoint ``path``: ``eval_metrics``
    if given, else the run's own ``eval/<head>[/seed<k>]/metrics.json`` beside
    ``finetune/<head>[/seed<k>]/model.pt``; only if its ``checkpoint_id`` is the checkpoint's
    ``run_id`` (else None: another checkpoint's evaluation, or none yet). An evaluation, not
    the checkpoint, owns ``alpha`` / ``posthoc_la_tau``: changing them re-runs only the
    evaluate stage, and a variant may evaluate one checkpoint with other values."""
    import json

    explicit = eval_metrics is not None
    if not explicit:
        parts = Path(path).resolve().parts
        if "finetune" not in parts:
            return None
        i = len(parts) - 1 - parts[::-1].index("finetune")
        eval_metrics = Path(*parts[:i], "eval", *parts[i + 1:-1], "metrics.json")
    p = Path(eval_metrics)
    if not p.is_file():
        if explicit:
            raise FileNotFoundError(f"{p}: no such evaluation metrics file")
        return None
    metrics = json.loads(p.read_text())
    run_id = ck["extra"].get("run_id")
    if not run_id or metrics.get("checkpoint_id") != run_id:
        log.warning("%s: not an evaluation of %s (checkpoint_id differs); ignored", p, path)
        return None
    return metrics, p


def _class_names(path, ck: dict[str, Any], manifest, class_names, n: int) -> list[str]:
    if class_names is not None:
        names, src = [str(c) for c in class_names], "class_names"
    elif manifest is not None:
        names, src = [str(c) for c in read_manifest(manifest)[1]["class_names"]], str(manifest)
    elif ck.get("class_names") is not None:
        names, src = [str(c) for c in ck["class_names"]], str(path)
    else:
        raise MissingCheckpointInfo(
            f"{path}: the checkpoint does not store its class names (written by an older langtail): pass "
            "--manifest results/<dataset>/manifest.parquet (Python: manifest=...) or rerun the finetune stage")
    if len(names) != n:
        raise ValueError(f"{src}: {len(names)} class names, the checkpoint {path} has {n} classes")
    stored = ck.get("class_names")
    if stored is not None and src != str(path) and list(stored) != names:
        log.warning("%s: class names differ from the ones stored in %s; using %s", src, path, src)
    return names


def scan_folder(folder: str | os.PathLike) -> tuple[list[str], dict[int, str]]:
    """Image files under ``folder`` (recursive, sorted) and ``{index: reason}`` for the entries
    that are refused: a symlink (file or folder) resolving outside ``folder`` is neither
    followed nor opened, but listed so it is reported with the unreadable files.

    Paths are returned as ``folder/<relative path>``.
    """
    from langtail.data.paths import BadLine

    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"--folder {folder}: not a directory")
    bad: list[BadLine] = []
    rels = list_images(folder, folder, allow_symlinks_outside=False, bad=bad)
    refused = [(str(Path(b.file) / b.text), b.reason) for b in bad]
    paths = [str(folder / r) for r in rels] + [p for p, _ in refused]
    errors = {len(rels) + j: why for j, (_, why) in enumerate(refused)}
    return paths, errors


def write_predictions(path: str | os.PathLike, df: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write a predictions table atomically: ``.parquet`` (``meta`` in the file's ``langtail``
    metadata) or ``.csv`` (``meta`` as JSON in ``<path>.meta.json``)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--out {path}: unknown format {suffix or '(no suffix)'}; use .parquet or .csv")
    io.check_columns(df, PREDICTION_COLUMNS, where="predictions")
    if suffix == ".parquet":
        io.write_parquet(path, df, metadata=meta, schema=PREDICTION_SCHEMA)
        return
    with io.atomic_path(path, ".csv") as tmp:
        df.to_csv(tmp, index=False)
    io.write_json(meta_path(path), meta)


def meta_path(path: str | os.PathLike) -> Path:
    """Where the metadata of a CSV predictions file lives: ``<path>.meta.json``."""
    return Path(f"{os.fspath(path)}.meta.json")


def read_predictions(path: str | os.PathLike) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a predictions file written by :func:`write_predictions` (columns checked) and its metadata."""
    path = Path(path)
    if path.suffix.lower() == ".parquet":
        return io.read_parquet(path, PREDICTION_COLUMNS), io.read_parquet_metadata(path)
    df = pd.read_csv(path, dtype={"image": str, "class_name": str, "error": str}, keep_default_na=False,
                     na_values={"probability": [""]})
    df = df.astype({"input": "int32", "rank": "int32", "class_id": "int32", "probability": "float64"})
    io.check_columns(df, PREDICTION_COLUMNS, where=str(path))
    mp = meta_path(path)
    return df, (io.read_json(mp) if mp.exists() else {})


__all__ = ["DEFAULT_ALPHA", "PREDICTION_COLUMNS", "MissingCheckpointInfo", "Predictor", "load_classifier",
           "read_predictions", "scan_folder", "write_predictions"]
