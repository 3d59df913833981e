"""Corpus sections of the report: how each class's Wikipedia page was found."""
from __future__ import annotations

import pandas as pd

from langtail.report.tables import md_table

#: rows shown before the table is cut (the full list is in corpus_stats.parquet)
MAX_ROWS = 30


def _how(row: pd.Series) -> str:
    by = row["resolved_by"]
    if by == "search" and row["disambiguation_page"]:
        return f"disambiguation page {row['disambiguation_page']}"
    if row["redirect_from"]:
        return f"redirect from {row['redirect_from']}"
    return ""


def resolution_table(stats: pd.DataFrame, max_rows: int = MAX_ROWS) -> str:
    """Markdown: classes whose page was not found directly, and how to pin a page.

    ``stats`` is ``corpus_stats.parquet`` (columns ``class_name``, ``page_title``,
    ``page_status``, ``resolved_by``, ``redirect_from``, ``disambiguation_page``).
    Rows: every class with ``resolved_by`` other than ``direct`` / ``""`` or a page
    status other than ``ok`` (missing pages, unresolved disambiguations), in class
    order; at most ``max_rows``, then a line with the number left out. Returns ``""``
    when the file has no resolution columns (older corpus) or no class has a recorded
    resolution (``wiki`` not a source, or only built-in pages as in the demo).
    """
    cols = ("page_status", "resolved_by", "redirect_from", "disambiguation_page")
    if not set(cols) <= set(stats.columns) or not (stats["resolved_by"] != "").any():
        return ""
    used = stats[stats["page_status"] != ""]
    odd = used[~used["resolved_by"].isin(["direct", ""]) | (used["page_status"] != "ok")]
    n_direct = int(((used["resolved_by"] == "direct") & (used["page_status"] == "ok")).sum())
    n_unknown = int(((used["resolved_by"] == "") & (used["page_status"] == "ok")).sum())
    lines = [f"Page resolution: {n_direct} of {len(used)} classes found their page directly "
             f"(by their name, up to MediaWiki's first-letter normalisation)"
             + (f"; {n_unknown} without a recorded resolution (built-in pages or an older cache)."
                if n_unknown else ".")]
    if len(odd):
        rows = []
        for _, r in odd.head(max_rows).iterrows():
            page = r["page_title"] or "–"
            how = r["resolved_by"] or "–"
            if r["page_status"] != "ok":
                how = f"{how} ({r['page_status']})" if r["resolved_by"] else r["page_status"]
            rows.append([r["class_name"], page, how, _how(r)])
        lines += ["", md_table(rows, ["class", "page", "resolved by", "from"])]
        if len(odd) > max_rows:
            lines.append(f"\n... and {len(odd) - max_rows} more (columns `resolved_by`, `page_status` of "
                         "corpus_stats.parquet).")
        lines += ["", "A wrong page? Map the class to the right title in `corpus.overrides_file` (TSV "
                  "`class name<TAB>Page title`, or `-` for no page), delete the class's file in the page "
                  "cache and rebuild (docs/corpus.md, *Overrides*)."]
    return "\n".join(lines)
