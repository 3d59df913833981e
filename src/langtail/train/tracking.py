"""Live experiment tracking of the training stages: TensorBoard event files (default), and
optionally Weights & Biases and MLflow in their offline modes (config section ``tracking``).

One :class:`Tracker` per training run writes into that run's tracking folder (a declared
output of its rule, e.g. ``results/<dataset>/finetune/<head>/tb/``): every epoch record of
:func:`langtail.train.loop.fit` becomes scalars at ``step = epoch`` (1-based), flushed at
the end of each epoch so ``tensorboard --logdir results/`` shows a run while it trains.

Tags: ``train/loss``, ``train/lr``, ``train/images_per_s`` (not replayed after a resume: it is
not in the history), ``train/tau`` (CVLP and the
other per-epoch stats), ``val/overall``, ``val/many``, ``val/medium``, ``val/few`` (when the
run validates). Only rank 0 writes (:func:`langtail.distributed.is_main`); a resumed run
first rewrites the finished epochs from the resume file's history, so the folder always
holds exactly one value per tag and epoch.

Backends: ``tracking.tensorboard`` (``tensorboard`` package, a langtail dependency; when it
cannot be imported the run logs one warning and trains without it), ``tracking.wandb``
(``wandb.init(mode="offline", dir=<folder>)``: ``<folder>/wandb/``, upload later with
``wandb sync``), ``tracking.mlflow`` (file store ``<folder>/mlruns`` unless
``tracking.mlflow_uri``). A backend switched on whose package is not installed fails before
training, naming the key and the fix.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from langtail.config import ConfigError

log = logging.getLogger(__name__)

#: history keys that are not scalars to track
_NOT_SCALARS = ("epoch",)


def scalar_tags(rec: Mapping[str, Any]) -> dict[str, float]:
    """``{tag: value}`` of one epoch record: ``val_<g>`` -> ``val/<g>``, every other number -> ``train/<key>``
    (``None`` / non-finite values, e.g. an empty shot group, are left out)."""
    out = {}
    for k, v in rec.items():
        if k in _NOT_SCALARS or not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
            continue
        out[f"val/{k[4:]}" if k.startswith("val_") else f"train/{k}"] = float(v)
    return out


class Tracker:
    """Writes the per-epoch records of one run to the configured backends (rank 0 only).

    ``cfg``: the :class:`langtail.config.TrackingConfig`; ``log_dir``: the run's tracking folder
    (created, also when every backend is off, since the rule declares it); ``run_name``: e.g.
    ``finetune/lgr`` (W&B / MLflow run name)."""

    def __init__(self, cfg: Any, log_dir: Path, run_name: str, params: Mapping[str, Any] | None = None):
        from langtail import distributed

        self.log_dir, self.run_name = Path(log_dir), run_name
        self._tb = self._wandb = self._mlflow = None
        if not distributed.is_main():
            return
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if cfg.wandb:
            self._wandb = _wandb_run(self.log_dir, run_name, cfg.wandb_project, params)
        if cfg.mlflow:
            self._mlflow = _mlflow_run(self.log_dir, run_name, cfg.mlflow_uri, params)
        if cfg.tensorboard:
            self._tb = _tensorboard_writer(self.log_dir)

    def replay(self, history: Iterable[Mapping[str, Any]]) -> None:
        """Rewrite the finished epochs of a resumed run (TensorBoard: old event files are replaced)."""
        history = list(history)
        if self._tb is not None and history:
            self._tb.close()
            for f in self.log_dir.glob("events.out.tfevents.*"):
                f.unlink()
            self._tb = _tensorboard_writer(self.log_dir)
        for rec in history:
            self.log_epoch(rec)

    def log_epoch(self, rec: Mapping[str, Any]) -> None:
        """One epoch record at ``step = rec["epoch"]``; flushed at once."""
        step = int(rec["epoch"])
        tags = scalar_tags(rec)
        if self._tb is not None:
            for tag, v in tags.items():
                self._tb.add_scalar(tag, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({**tags, "epoch": step}, step=step)
        if self._mlflow is not None:
            self._mlflow.log_metrics({t.replace("/", "."): v for t, v in tags.items()}, step=step)

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        if self._mlflow is not None:
            self._mlflow.end_run()
        self._tb = self._wandb = self._mlflow = None


def _missing(key: str, package: str) -> ConfigError:
    return ConfigError(f"{key}: true, but the {package!r} package is not installed: `pip install {package}` "
                       f"in langtail's environment, or set {key}: false")


def _tensorboard_writer(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:  # the default backend: warn, do not fail the run
        log.warning("tracking.tensorboard: no TensorBoard event files in %s (%s); `pip install tensorboard`, "
                    "or set tracking.tensorboard: false to silence this", log_dir, e)
        return None
    return SummaryWriter(log_dir=str(log_dir), flush_secs=30)


def _wandb_run(log_dir: Path, name: str, project: str, params: Mapping[str, Any] | None):
    try:
        import wandb
    except ImportError:
        raise _missing("tracking.wandb", "wandb") from None
    return wandb.init(mode="offline", dir=str(log_dir), project=project, name=name, config=dict(params or {}),
                      reinit=True)


def _mlflow_run(log_dir: Path, name: str, uri: str, params: Mapping[str, Any] | None):
    try:
        import mlflow
    except ImportError:
        raise _missing("tracking.mlflow", "mlflow") from None
    mlflow.set_tracking_uri(uri or (log_dir / "mlruns").resolve().as_uri())
    mlflow.set_experiment("langtail")
    mlflow.start_run(run_name=name)
    flat = {f"{s}.{k}": v for s, sec in (params or {}).items() for k, v in (sec.items() if isinstance(sec, Mapping) else [])}
    if flat:
        mlflow.log_params({k: str(v)[:250] for k, v in flat.items()})
    return mlflow


#: the ``tracking`` keys every training stage declares (left out of its resume fingerprint:
#: switching a backend on does not restart a half-finished run)
TRACKING_KEYS: tuple[str, ...] = ("tensorboard", "wandb", "wandb_project", "mlflow", "mlflow_uri")


def untracked(keys: Mapping[str, Any]) -> dict[str, Any]:
    """A stage's selected keys without the ``tracking`` section (for fingerprints and run params)."""
    return {s: v for s, v in keys.items() if s != "tracking"}


def make_tracker(cfg: Any, log_dir: Path | None, run_name: str, params: Mapping[str, Any] | None = None
                 ) -> Tracker | None:
    """A :class:`Tracker` for ``cfg.tracking`` in ``log_dir`` (None: no folder given, no tracking)."""
    if log_dir is None:
        return None
    return Tracker(cfg.tracking, Path(log_dir), run_name, params)
