"""Reports at 1,000 classes stay readable (issue #11): binned curves with shot-group shading, top-k tables."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from langtail.data.synthetic_lt import imagenet_lt_counts
from langtail.report.markdown import figures_section
from langtail.report.plots import BAR_MAX_CLASSES, bin_sorted, plot_per_class


def per_class_frames(C: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """Synthetic per-class frames of an fc and an lgr model (ImageNet-LT-shaped counts)."""
    rng = np.random.default_rng(seed)
    counts = np.asarray(imagenet_lt_counts(C))
    group = np.where(counts >= 100, "many", np.where(counts <= 20, "few", "medium"))
    base = pd.DataFrame({"class_id": np.arange(C), "class_name": [f"class {c}" for c in range(C)],
                         "train_count": counts, "group": group})
    fc = base.assign(accuracy=np.clip(20 + 60 * np.log(counts) / np.log(1280) + rng.normal(0, 8, C), 0, 100))
    lgr = base.assign(accuracy=np.clip(fc["accuracy"] + rng.normal(3, 10, C), 0, 100))
    return {"lgr": lgr, "fc": fc}


def table_rows(lines: list[str], caption: str) -> int:
    """Number of body rows of the markdown table that follows ``caption``."""
    lines = "\n".join(lines).splitlines()
    i = next(n for n, ln in enumerate(lines) if ln.startswith(caption))
    j = i + 2  # blank line, then the table header
    assert lines[j].startswith("| class |")
    rows = 0
    for ln in lines[j + 2:]:
        if not ln.startswith("|"):
            break
        rows += 1
    return rows


@pytest.mark.parametrize("C,k", [(1000, 10), (1000, 5), (12, 10)])
def test_figures_section_at_scale_writes_figures_and_top_k_tables(tmp_path, C, k):
    per = per_class_frames(C)
    lines = figures_section(per, tmp_path / "fig", "fig", "synthetic", top_classes=k)
    for name in ("per_class_accuracy.png", "gain_lgr_vs_fc.png"):
        with Image.open(tmp_path / "fig" / name) as im:
            w, h = im.size
        # readable at any C: the large-C figures keep a fixed width (a bar per class would be 0.4 in each)
        assert w <= 1300 if C > BAR_MAX_CLASSES else w >= 800
    assert table_rows(lines, "Classes that gain most") == min(k, C)
    assert table_rows(lines, "Classes that lose most") == min(k, C)
    text = "\n".join(lines)
    gain = per["lgr"]["accuracy"] - per["fc"]["accuracy"]
    best = per["fc"]["class_name"][int(np.argmax(gain.to_numpy()))]
    worst = per["fc"]["class_name"][int(np.argmin(gain.to_numpy()))]
    first_best = re.search(r"Classes that gain most.*?\n\n\|.*?\n\|.*?\n\| (.*?) \|", text, re.S).group(1)
    first_worst = re.search(r"Classes that lose most.*?\n\n\|.*?\n\|.*?\n\| (.*?) \|", text, re.S).group(1)
    assert (first_best, first_worst) == (best, worst)
    assert f"{int((gain > 0).sum())} of {C} classes gain" in text


def test_per_class_plot_at_1000_classes_for_the_text_quality_study(tmp_path):
    per = per_class_frames(1000)
    per = {"fc": per["fc"], "ca4ltr_label": per["lgr"], "ca4ltr_caption": per["lgr"].assign(accuracy=50.0)}
    plot_per_class(per, {}, tmp_path / "tq.png", "study")
    with Image.open(tmp_path / "tq.png") as im:
        assert im.size[0] <= 1300


def test_bin_sorted_means_consecutive_classes():
    cx, m = bin_sorted(np.arange(10, dtype=float), n_bins=5)
    assert m.tolist() == [0.5, 2.5, 4.5, 6.5, 8.5] and cx.tolist() == m.tolist()
    cx, m = bin_sorted(np.array([1.0, np.nan, 3.0]), n_bins=1)
    assert m.tolist() == [2.0]
    assert len(bin_sorted(np.arange(3.0), n_bins=40)[1]) == 3
