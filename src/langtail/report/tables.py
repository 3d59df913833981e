"""Markdown table helpers shared by every report (``report.md``, ``ablations.md``, ``text_quality.md``)."""
from __future__ import annotations

import math
import shlex
from typing import Any, Sequence


def fmt_pct(v: Any) -> str:
    """An accuracy in % with one decimal; ``None`` / NaN -> "–"."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def md_table(rows: list[list[Any]], header: list[str]) -> str:
    """A GitHub markdown table; a "|" inside a cell becomes "/" so the table keeps its columns."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


def reproduce_line(target: str, dataset: str, config_files: Sequence[str] = (), extra: str = "") -> str:
    """The markdown "Reproduce" sentence: the snakemake command that rebuilds ``target``.

    ``config_files``: the ``--configfile`` files snakemake was given on top of ``config.yaml``.
    """
    opts = "".join(f" --configfile {shlex.quote(f)}" for f in config_files)
    cmd = f"snakemake --cores 2{opts} -- {target}" if opts else f"snakemake --cores 2 {target}"
    configs = " + ".join(f"`{f}`" for f in ("config.yaml", *config_files))
    return f"`{cmd}` (config: {configs}, dataset `{dataset}`{extra})."
