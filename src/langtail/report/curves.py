"""Training curves: loss (and the CVLP temperature tau) per epoch of every training stage.

Rendering only: the stage passes the per-epoch histories it read from the checkpoints'
``extra.history`` (records ``{"epoch": int, "loss": float, "lr": float[, "tau": float]
[, "val_overall": float, "val_many" ...]}``): loss, tau and, for runs that validated, the
validation accuracy per epoch side by side.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from langtail import io

History = Sequence[Mapping[str, Any]]


def plot_training_curves(histories: Mapping[str, History], path: Path, title: str) -> bool:
    """One PNG: loss per epoch of every run (left), the validation accuracy of the runs that
    validated (middle; absent when none did), tau per epoch of the runs that record it (right;
    absent when none does). Returns whether a tau panel was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with_tau = {k: h for k, h in histories.items() if h and all("tau" in r for r in h)}
    with_val = {k: h for k, h in histories.items() if h and any(r.get("val_overall") is not None for r in h)}
    panels = [("loss", "training loss (epoch mean)", title, histories)]
    if with_val:
        panels.append(("val_overall", "val accuracy, overall (%)", "validation", with_val))
    if with_tau:
        panels.append(("tau", "tau (end of epoch)", "CVLP temperature", with_tau))
    fig, axes = plt.subplots(1, len(panels), figsize=(1.0 + 5.2 * len(panels), 3.8), squeeze=False)
    for ax, (key, ylabel, ptitle, runs) in zip(axes[0], panels):
        for label, h in runs.items():
            pts = [(r["epoch"], r[key]) for r in h if r.get(key) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.set_title(ptitle)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with io.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return bool(with_tau)


def curves_section(histories: Mapping[str, History], fig_dir: Path, rel: str, name: str = "training_curves",
                   heading: str = "## Training curves") -> list[str]:
    """Markdown for :func:`plot_training_curves` (``<fig_dir>/<name>.png``, linked as ``<rel>/<name>.png``)
    with the last epoch's loss of every run; runs without a recorded history are named."""
    present = {k: h for k, h in histories.items() if h}
    missing = sorted(k for k, h in histories.items() if not h)
    lines = [heading, ""]
    fig_dir.mkdir(parents=True, exist_ok=True)
    tau = plot_training_curves(present, fig_dir / f"{name}.png", "loss per epoch")  # (empty axes when none)
    if not present:
        return lines + ["No training history recorded in the checkpoints.", ""]
    lines += [f"![training curves]({rel}/{name}.png)", "",
              "Loss = the epoch's mean training loss of each stage (its own objective: CVLP Eq. 8, "
              "finetune Eq. 9 with `finetune.loss`, CA4LTR's classification loss); "
              + ("right: the learned CVLP temperature tau at the end of each epoch." if tau else
                 "no run shown records a per-epoch tau (only CVLP does; its checkpoints from before the "
                 "tau history lack it)."), "",
              "| run | epochs | first loss | last loss | best val overall (epoch) |", "|---|---|---|---|---|"]
    lines += [f"| {k} | {len(h)} | {h[0]['loss']:.4f} | {h[-1]['loss']:.4f} | {_best_val(h)} |"
              for k, h in present.items()]
    lines += [""]
    if missing:
        lines += [f"No history in: {', '.join(missing)}.", ""]
    return lines


def _best_val(h: History) -> str:
    vals = [(r["val_overall"], -r["epoch"]) for r in h if r.get("val_overall") is not None]
    if not vals:
        return "no val split"
    v, e = max(vals)
    return f"{v:.2f} ({-e})"


def selection_lines(selected: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Markdown: which epoch each evaluated model's checkpoint holds (``metrics.json`` ``selected``:
    ``finetune.select`` / ``ca4ltr.select`` = last | best_val, 1-based epoch, its val accuracy)."""
    if not selected:
        return []
    lines = ["Checkpoints evaluated (`finetune.select`: last = the last epoch, best_val = the epoch of the best "
             "overall accuracy on the val split; the test split is never read in training):", ""]
    for model, s in selected.items():
        val = f", val overall {s['val_overall']:.2f}" if s.get("val_overall") is not None else ""
        lines.append(f"- {model}: {s.get('rule', 'last')}, epoch {s.get('epoch', '?')}{val}")
    return lines + [""]
