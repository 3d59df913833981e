"""Figures shared by the reports (matplotlib, Agg backend, atomic PNG writes)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from langtail import io


def plot_per_class(per: dict[str, pd.DataFrame], labels: dict[str, str], path: Path, title: str) -> None:
    """Grouped bars per class (sorted by training images, head -> tail) + training counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = next(iter(per.values())).sort_values(["train_count", "class_id"], ascending=[False, True], kind="stable")
    order = base["class_id"].to_numpy()
    fig, axes = plt.subplots(2, 1, figsize=(max(8, 0.4 * len(order)), 7), sharex=True,
                             gridspec_kw={"height_ratios": [3, 1.2]})
    x = np.arange(len(order))
    w = 0.85 / max(1, len(per))
    for i, (name, df) in enumerate(per.items()):
        acc = df.set_index("class_id").loc[order, "accuracy"].to_numpy()
        axes[0].bar(x + i * w - 0.425 + w / 2, acc, width=w, label=labels.get(name, name),
                    color="0.55" if name == "fc" else None)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].set_title(title)
    axes[0].legend(fontsize=8, loc="upper right")
    colors = {"many": "tab:blue", "medium": "tab:orange", "few": "tab:red"}
    axes[1].bar(x, base["train_count"].to_numpy(), color=[colors.get(g, "gray") for g in base["group"]])
    axes[1].set_yscale("log")
    axes[1].set_ylabel("train images")
    axes[1].set_xlabel("classes, sorted by training images (head -> tail); blue many, orange medium, red few")
    axes[1].set_xticks(x)
    axes[1].set_xticklabels(base["class_name"], rotation=90, fontsize=7)
    fig.tight_layout()
    with io.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
