"""The report's page-resolution table (langtail.report.corpus)."""
from __future__ import annotations

import pandas as pd

from langtail.report.corpus import resolution_table


def _stats(rows):
    cols = ["class_name", "page_title", "page_status", "resolved_by", "redirect_from", "disambiguation_page"]
    return pd.DataFrame(rows, columns=cols)


def test_table_lists_non_direct_resolutions_only():
    st = _stats([
        ["tench", "Tench", "ok", "direct", "", ""],
        ["crane", "Crane (bird)", "ok", "search", "", "Crane"],
        ["aeroplane", "Airplane", "ok", "redirect", "Aeroplane", ""],
        ["bush", "Bush", "disambiguation_unresolved", "search", "", "Bush"],
        ["zzz", "", "missing", "direct", "", ""],
        ["cat", "Cat", "ok", "override", "", ""],
    ])
    t = resolution_table(st)
    assert t.startswith("Page resolution: 1 of 6 classes found their page directly")
    assert "| crane | Crane (bird) | search | disambiguation page Crane |" in t
    assert "| aeroplane | Airplane | redirect | redirect from Aeroplane |" in t
    assert "| bush | Bush | search (disambiguation_unresolved) | disambiguation page Bush |" in t
    assert "| zzz | – | direct (missing) |  |" in t
    assert "| cat | Cat | override |  |" in t
    assert "| tench |" not in t and "corpus.overrides_file" in t


def test_table_is_cut_and_empty_without_wiki():
    st = _stats([[f"c{i}", f"C{i}", "ok", "search", "", "D"] for i in range(40)])
    t = resolution_table(st, max_rows=5)
    assert t.count("| search |") == 5 and "... and 35 more" in t
    assert resolution_table(_stats([["a", "", "", "", "", ""]])) == ""  # wiki not a source
    assert resolution_table(_stats([["a", "A", "ok", "", "", ""]])) == ""  # built-in pages (demo)
    mixed = resolution_table(_stats([["a", "A", "ok", "", "", ""], ["b", "B", "ok", "direct", "", ""]]))
    assert mixed.startswith("Page resolution: 1 of 2 classes") and "1 without a recorded resolution" in mixed
    assert resolution_table(pd.DataFrame({"class_name": ["a"]})) == ""  # corpus without the columns
