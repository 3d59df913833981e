"""Markdown table helpers shared by every report (``report.md``, ``ablations.md``, ``text_quality.md``)."""
from __future__ import annotations

import shlex
from typing import Any, Mapping, Sequence



def md_table(rows: list[list[Any]], header: list[str]) -> str:
    """A GitHub markdown table; a "|" inside a cell becomes "/" so the table keeps its columns."""
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "/") for c in r) + " |" for r in rows]
    return "\n".join(out)


def snakemake_command(target: str, config_files: Sequence[str] = ()) -> str:
    """The snakemake command that builds ``target`` with the ``--configfile`` files snakemake was
    given on top of ``config.yaml``."""
    opts = "".join(f" --configfile {shlex.quote(f)}" for f in config_files)
    return f"snakemake --cores 2{opts} -- {target}" if opts else f"snakemake --cores 2 {target}"


def reproduce_line(target: str, dataset: str, config_files: Sequence[str] = (), extra: str = "") -> str:
    """The markdown "Reproduce" sentence: :func:`snakemake_command` and the config files it reads."""
    configs = " + ".join(f"`{f}`" for f in ("config.yaml", *config_files))
    return f"`{snakemake_command(target, config_files)}` (config: {configs}, dataset `{dataset}`{extra})."


def shot_group_rule(manifest_meta: Mapping[str, Any]) -> str:
    """``"many >= 100, few <= 20"`` (inclusive) or ``"many > 100, few < 20"``: the shot groups a
    manifest was built with (its metadata: ``shot_bounds``, ``many_threshold``, ``few_threshold``)."""
    ge, le = (">=", "<=") if manifest_meta.get("shot_bounds") == "inclusive" else (">", "<")
    return f"many {ge} {manifest_meta.get('many_threshold')}, few {le} {manifest_meta.get('few_threshold')}"
