"""Report section: unreadable images skipped by training / evaluation stages.

Input: ``{stage label: path of its skipped_images.parquet}`` (schema:
:mod:`langtail.data.skipped`). A missing file is listed as "not recorded" (never dropped
silently); with no skip anywhere the section is one line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

from langtail.data.skipped import read_skipped
from langtail.report.tables import md_table


def skipped_images_section(files: Mapping[str, str | Path], examples: int = 3) -> list[str]:
    """Markdown lines: per stage, distinct images skipped, skip events and a few examples."""
    rows, absent, total = [], [], 0
    for stage, path in files.items():
        p = Path(path)
        if not p.exists():
            absent.append(stage)
            continue
        df = read_skipped(p)
        total += len(df)
        if len(df):
            ex = "; ".join(f"`{r.image}` ({r.reason})" for r in df.head(examples).itertuples())
            rows.append([stage, str(len(df)), str(int(df["times"].sum())), ex])
    lines = ["## Unreadable images", ""]
    if rows:
        lines += [f"{total} unreadable image(s) were skipped (full lists: `skipped_images.parquet` in each "
                  "stage's folder).", "", md_table(rows, ["stage", "images", "skips", "examples"]), ""]
    else:
        lines += [f"No unreadable image was skipped ({len(files) - len(absent)} stage(s) recorded).", ""]
    if absent:
        lines += [f"Not recorded (no `skipped_images.parquet`; rerun these stages): {', '.join(absent)}.", ""]
    return lines
