"""Figures shared by the reports (matplotlib, Agg backend, atomic PNG writes).

Per-class figures read per-class frames with at least ``class_id``, ``class_name``,
``train_count``, ``group`` and ``accuracy`` (``per_class.parquet``). Classes are ordered by
training images (head -> tail). Up to :data:`BAR_MAX_CLASSES` classes they are drawn as one
bar per class with its name; above that (ImageNet-LT: 1,000 classes) a bar per class is
unreadable, so they become curves over the sorted classes: per-class values as faint points,
their mean over bins of consecutive classes (:func:`bin_sorted`) as a line, with the many /
medium / few ranges shaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from langtail import io
from langtail.registry import HEADS

#: above this many classes, per-class bars become binned curves over the sorted classes
BAR_MAX_CLASSES = 60
#: number of bins of consecutive sorted classes in the binned curves
N_BINS = 40
GROUP_COLORS = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}


def head_to_tail(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` sorted by training images, descending (ties: class id)."""
    return df.sort_values(["train_count", "class_id"], ascending=[False, True], kind="stable")


def bin_sorted(values: np.ndarray, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(centres [B], means [B])``: ``values`` ``[C]`` (already in display order) averaged over
    ``B = min(n_bins, C)`` bins of consecutive positions of near-equal size (NaN ignored)."""
    values = np.asarray(values, dtype=np.float64)
    C = len(values)
    if C == 0:
        return np.zeros(0), np.zeros(0)
    edges = np.linspace(0, C, min(n_bins, C) + 1).round().astype(int)
    edges = np.unique(edges)
    sums = np.add.reduceat(np.nan_to_num(values), edges[:-1])
    cnt = np.add.reduceat((~np.isnan(values)).astype(np.float64), edges[:-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    return (edges[:-1] + edges[1:] - 1) / 2.0, means


def shade_groups(ax, groups: np.ndarray, label: bool = True) -> None:
    """Shade the x ranges of the many / medium / few classes (``groups`` in display order)."""
    groups = np.asarray(groups)
    for g, colour in GROUP_COLORS.items():
        idx = np.flatnonzero(groups == g)
        if len(idx):
            ax.axvspan(idx.min() - 0.5, idx.max() + 0.5, color=colour, alpha=0.08, lw=0,
                       label=f"{g} ({len(idx)})" if label else None)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    with io.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def is_baseline(name: str) -> bool:
    """A vision-only baseline run (a head declaring ``info["encoder"] == "baseline"``): drawn in grey."""
    return name in HEADS and HEADS.get(name).info.get("encoder") == "baseline"


def plot_per_class(per: dict[str, pd.DataFrame], labels: dict[str, str], path: Path, title: str) -> None:
    """Per-class accuracy of each model (sorted by training images, head -> tail) + training counts.

    ``per``: model -> per-class frame (same classes). Bars per class up to
    :data:`BAR_MAX_CLASSES` classes, binned curves with many / medium / few shading above.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = head_to_tail(next(iter(per.values())))
    order = base["class_id"].to_numpy()
    C = len(order)
    x = np.arange(C)
    large = C > BAR_MAX_CLASSES
    fig, axes = plt.subplots(2, 1, figsize=(11, 6) if large else (max(8, 0.4 * C), 7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.2]})
    if large:
        shade_groups(axes[0], base["group"].to_numpy())
        for name, df in per.items():
            acc = df.set_index("class_id").loc[order, "accuracy"].to_numpy()
            colour = "0.35" if is_baseline(name) else None
            pts = axes[0].plot(x, acc, ".", ms=2, alpha=0.25, color=colour)[0]
            cx, m = bin_sorted(acc)
            axes[0].plot(cx, m, "-", lw=1.8, color=pts.get_color(),
                         label=f"{labels.get(name, name)} (mean of {C // len(cx)} classes)")
        axes[1].plot(x, base["train_count"].to_numpy(), color="0.2", lw=1.2)
        shade_groups(axes[1], base["group"].to_numpy(), label=False)
        axes[1].set_xlabel(f"{C} classes, sorted by training images (head -> tail); shaded: many / medium / few")
        axes[1].set_xlim(-0.5, C - 0.5)
    else:
        w = 0.85 / max(1, len(per))
        for i, (name, df) in enumerate(per.items()):
            acc = df.set_index("class_id").loc[order, "accuracy"].to_numpy()
            axes[0].bar(x + i * w - 0.425 + w / 2, acc, width=w, label=labels.get(name, name),
                        color="0.55" if is_baseline(name) else None)
        axes[1].bar(x, base["train_count"].to_numpy(), color=[GROUP_COLORS.get(g, "gray") for g in base["group"]])
        axes[1].set_xlabel("classes, sorted by training images (head -> tail); blue many, orange medium, red few")
        axes[1].set_xticks(x)
        axes[1].set_xticklabels(base["class_name"], rotation=90, fontsize=7)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].set_title(title)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("train images")
    fig.tight_layout()
    _save(fig, path)


def plot_gain(gain: pd.DataFrame, path: Path, title: str) -> None:
    """Accuracy gain per class (``gain``: per-class frame with a ``gain`` column, points), classes
    sorted head -> tail: a bar per class up to :data:`BAR_MAX_CLASSES`, else per-class points +
    binned mean bars with many / medium / few shading."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = head_to_tail(gain)
    v = g["gain"].to_numpy(dtype=np.float64)
    C = len(v)
    large = C > BAR_MAX_CLASSES
    fig, ax = plt.subplots(figsize=(11, 3.8) if large else (max(8, 0.3 * C), 3.5))
    if large:
        shade_groups(ax, g["group"].to_numpy())
        ax.plot(np.arange(C), v, ".", ms=2, color="0.4", alpha=0.3, label="one class")
        cx, m = bin_sorted(v)
        width = C / len(cx) * 0.9
        ax.bar(cx, m, width=width, color=np.where(m >= 0, "tab:green", "tab:red"), alpha=0.85,
               label=f"mean over {C // len(cx)} classes")
        ax.set_xlim(-0.5, C - 0.5)
        ax.legend(fontsize=8, loc="upper right", ncol=2)
        ax.set_xlabel(f"{C} classes, sorted by training images (head -> tail); shaded: many / medium / few")
    else:
        ax.bar(np.arange(C), v, color=np.where(v >= 0, "tab:green", "tab:red"))
        ax.set_xlabel("classes, sorted by training images (head -> tail)")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_ylabel("accuracy gain (points)")
    ax.set_title(title)
    fig.tight_layout()
    _save(fig, path)
