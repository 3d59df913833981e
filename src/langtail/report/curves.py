"""Training curves: loss (and the CVLP temperature tau) per epoch of every training stage.

Rendering only: the stage passes the per-epoch histories it read from the checkpoints'
``extra.history`` (records ``{"epoch": int, "loss": float, "lr": float[, "tau": float]}``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from langtail import io

History = Sequence[Mapping[str, Any]]


def plot_training_curves(histories: Mapping[str, History], path: Path, title: str) -> bool:
    """One PNG: loss per epoch of every run (left), tau per epoch of the runs that record it
    (right; absent when none does). Returns whether a tau panel was drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    with_tau = {k: h for k, h in histories.items() if h and all("tau" in r for r in h)}
    fig, axes = plt.subplots(1, 2 if with_tau else 1, figsize=(11 if with_tau else 6.5, 3.8), squeeze=False)
    ax = axes[0][0]
    for label, h in histories.items():
        if h:
            ax.plot([r["epoch"] for r in h], [r["loss"] for r in h], marker="o", ms=3, label=label)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("training loss (epoch mean)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    if with_tau:
        ax = axes[0][1]
        for label, h in with_tau.items():
            ax.plot([r["epoch"] for r in h], [r["tau"] for r in h], marker="o", ms=3, label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("tau (end of epoch)")
        ax.set_title("CVLP temperature")
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
              "| run | epochs | first loss | last loss |", "|---|---|---|---|"]
    lines += [f"| {k} | {len(h)} | {h[0]['loss']:.4f} | {h[-1]['loss']:.4f} |" for k, h in present.items()]
    lines += [""]
    if missing:
        lines += [f"No history in: {', '.join(missing)}.", ""]
    return lines
