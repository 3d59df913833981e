"""Markdown table helpers shared by every report (``report.md``, ``ablations.md``, ``text_quality.md``)."""
from __future__ import annotations

import math
import shlex
from typing import Any, Sequence


#: the accuracy keys of every metrics.json, in table order
ACCURACY_KEYS = ("overall", "many", "medium", "few")


def fmt_pct(v: Any) -> str:
    """An accuracy in % with one decimal; ``None`` / NaN -> "–"."""
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.1f}"


def fmt_accuracies(metrics: dict[str, Any]) -> list[str]:
    """The ``ACCURACY_KEYS`` cells of one metrics dict, formatted by :func:`fmt_pct`."""
    return [fmt_pct(metrics[k]) for k in ACCURACY_KEYS]


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


def shot_group_rule(data_cfg: Any) -> str:
    """``"many >= 100, few <= 20"`` (inclusive) or ``"many > 100, few < 20"`` for a ``DataConfig``."""
    ge, le = (">=", "<=") if data_cfg.shot_bounds == "inclusive" else (">", "<")
    return f"many {ge} {data_cfg.many_threshold}, few {le} {data_cfg.few_threshold}"
