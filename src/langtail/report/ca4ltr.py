"""CA4LTR text-quality study rendering (stage: :mod:`langtail.stages.text_quality`).

Table "text source -> top-1 overall / many / medium / few" for every CA4LTR run
(``eval/ca4ltr_<source>/metrics.json``) next to the vision-only "Pure" baseline (the
``fc`` finetune run: same image backbone and initialisation, linear classifier) and
VL-LTR's LGR (when those runs exist). Figure ``figures/text_quality_per_class.png``:
per-class accuracy of Pure and each CA4LTR source, classes sorted by training images
(head -> tail), with the training counts below.

:func:`read_study_table` parses the table back (tests; downstream scripts).
The main ``report.md`` only points at ``text_quality.md`` (it does not read CA4LTR results).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from langtail.metrics import fmt_accuracies, fmt_pct
from langtail.report.tables import md_table, shot_group_rule
from langtail.config import DatasetConfig

log = logging.getLogger(__name__)

SOURCE_TEXT = {
    "label": "label (class-name prompts of all classes)",
    "description": "description (AnSS anchor sentences of all classes)",
    "caption": "caption (BLIP-2 caption of the image)",
    "nonsense": "nonsense (fluent meaningless sentences)",
    "nonsense_bank": "nonsense bank (class-level: one nonsense sentence per description sentence)",
}
TINY_NOTE = "tiny random BLIP-2: meaningless captions"
STUDY_HEADER = ["model", "text source", "text tokens / image", "epochs", "overall", "many", "medium", "few",
                "Δ overall vs Pure"]
FIGURE = "figures/text_quality_per_class.png"


def _source_text(source: str, m: dict[str, Any]) -> str:
    t = SOURCE_TEXT.get(source, source)
    if source == "caption" and m.get("tiny_random_captioner"):
        t += f" **[{TINY_NOTE}]**"
    return t


def study_rows(runs: dict[str, dict[str, Any]], cfg: DatasetConfig, pure: dict[str, Any] | None,
               lgr: dict[str, Any] | None, lift: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One dict per table row: Pure (``pure``: the ``fc`` metrics), VL-LTR (``lgr``) and LIFT
    (``lift``: the ``lift`` recipe's ``fc_cvlp`` metrics) if given, then each CA4LTR source
    (``runs``: source -> metrics)."""
    rows: list[dict[str, Any]] = []
    if pure is not None:
        rows.append({"key": "fc", "model": "Pure (vision-only, FC)", "text": "none", "tokens": 0,
                     "epochs": cfg.finetune.baseline_epochs or cfg.finetune.epochs,
                     **{g: pure.get(g) for g in ("overall", "many", "medium", "few")}})
    if lgr is not None:
        rows.append({"key": "lgr", "model": "VL-LTR (CVLP + AnSS + LGR)",
                     "text": f"anchors (M = {cfg.anchors.num_anchors}) via LGR", "tokens": cfg.anchors.num_anchors,
                     "epochs": cfg.finetune.epochs, **{g: lgr.get(g) for g in ("overall", "many", "medium", "few")}})
    if lift is not None:
        rows.append({"key": "lift", "model": f"LIFT ({lift.get('backbone_mode', '?')}, text-init cosine head)",
                     "text": f"class prompts ({lift.get('head_init', 'text')}) as classifier init", "tokens": 0,
                     "epochs": lift.get("epochs", "–"), **{g: lift.get(g) for g in ("overall", "many", "medium", "few")}})
    for s, m in runs.items():
        rows.append({"key": f"ca4ltr_{s}", "model": f"CA4LTR + {s}", "text": _source_text(s, m),
                     "tokens": m.get("text_tokens"), "epochs": m.get("epochs"),
                     **{g: m.get(g) for g in ("overall", "many", "medium", "few")}})
    for r in rows:
        r["delta"] = (r["overall"] - pure["overall"]) if pure is not None and r["key"] != "fc" else None
    return rows


def study_table(rows: list[dict[str, Any]]) -> str:
    body = [[r["model"], r["text"], r["tokens"], r["epochs"], *fmt_accuracies(r),
             "–" if r["delta"] is None else f"{r['delta']:+.1f}"] for r in rows]
    return md_table(body, STUDY_HEADER)


def read_study_table(path: str | Path) -> pd.DataFrame:
    """The accuracy table of ``text_quality.md`` as a frame (numbers as float, "–" as NaN)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    head = "| " + " | ".join(STUDY_HEADER) + " |"
    try:
        i = lines.index(head)
    except ValueError:
        raise ValueError(f"{path}: no study table (header {head!r})") from None
    recs = []
    for ln in lines[i + 2:]:
        if not ln.startswith("|"):
            break
        recs.append([c.strip() for c in ln.strip().strip("|").split("|")])
    df = pd.DataFrame(recs, columns=STUDY_HEADER)
    for c in ("overall", "many", "medium", "few", "Δ overall vs Pure"):
        df[c] = pd.to_numeric(df[c].str.replace("–", "", regex=False).str.replace("+", "", regex=False),
                              errors="coerce")
    return df


def study_setting(cfg: DatasetConfig, dataset: str, df: pd.DataFrame, meta: dict[str, Any],
                  runs: dict[str, dict[str, Any]]) -> list[str]:
    """The "Setting" section: dataset, backbone, fusion, text of each source."""
    tr = df[df["split"] == "train"]
    counts = tr.groupby("label").size()
    mc, ca = cfg.model, cfg.ca4ltr
    groups = {g: int(next(iter(runs.values())).get(f"n_classes_{g}", 0)) for g in ("many", "medium", "few")}
    init = ("the CVLP visual encoder" if ca.init == "cvlp"
            else ("random weights (trained from scratch)" if not mc.pretrained else f"`{mc.pretrained}`"))
    return ["## Setting", "",
            f"- Dataset `{meta.get('dataset', dataset)}`: {len(meta['class_names'])} classes, {len(tr)} training "
            f"images ({counts.max()} .. {counts.min()} per class), {int((df['split'] == cfg.evaluate.split).sum())} "
            f"{cfg.evaluate.split} images; many {groups['many']} / medium {groups['medium']} / few {groups['few']} "
            f"classes ({shot_group_rule(meta)} training images).",
            f"- Image backbone `{mc.image_encoder}`, initialised from {init}; the **Pure** row is the `fc` "
            f"finetune run (same backbone from `model.pretrained`, linear classifier, "
            f"{cfg.finetune.baseline_epochs or cfg.finetune.epochs} epochs, {cfg.finetune.sampler} sampling).",
            f"- CA4LTR: width d = {ca.width}, {ca.heads} heads, {ca.depth} cross-modal block(s), FFN x{ca.ffn_mult}, "
            f"{'bidirectional (text also attends to image)' if ca.bidirectional else 'image attends to text only'}, "
            f"dropout {ca.dropout}; {ca.epochs} epochs, batch {ca.batch_size}, lr {ca.lr:g}, wd {ca.weight_decay:g}, "
            f"{ca.sampler} sampling; classifier on [pooled fused image tokens ; pooled image feature].",
            "- Text: one token per sentence, frozen MiniLM (all-MiniLM-L6-v2) sentence features -> linear to d. "
            f"label: {ca.label_templates} prompt(s) per class; description: "
            f"{ca.description_per_class or 'all'} selected anchor(s) per class; nonsense: {ca.nonsense_per_image} "
            f"sentence(s) per image (seed {ca.nonsense_seed}), word counts drawn from the description text.",
            ""]


def study_notes(cfg: DatasetConfig, runs: dict[str, dict[str, Any]]) -> list[str]:
    """Warnings a reader needs: random weights, unequal budgets, short schedules, a tiny captioner."""
    mc, ca = cfg.model, cfg.ca4ltr
    notes = []
    if not mc.pretrained and ca.init != "cvlp":
        notes.append("no pretrained image weights: the backbone starts from random weights and is trained on this "
                     "dataset only (the paper combines *pre-trained* image and text models); numbers are not "
                     "comparable with the paper's.")
    if ca.init == "cvlp":
        notes.append(f"CA4LTR rows start from the CVLP visual encoder (`ca4ltr.init: cvlp`, {cfg.pretrain.epochs} "
                     "CVLP epochs on this dataset's images and class text), Pure from `model.pretrained`: the "
                     "comparison favours CA4LTR; VL-LTR starts from the same CVLP encoder.")
    if "caption" in runs and runs["caption"].get("tiny_random_captioner"):
        notes.append(f"the caption row uses the **{TINY_NOTE}** (`captions.model: tiny-random`, a smoke-test "
                     "model with random weights): it measures the pipeline, not the value of real captions.")
    pure_epochs = cfg.finetune.baseline_epochs or cfg.finetune.epochs
    if ca.epochs != pure_epochs:
        notes.append(f"CA4LTR rows trained {ca.epochs} epochs, the Pure baseline {pure_epochs} "
                     f"(`finetune` section): the comparison {'favours Pure' if ca.epochs < pure_epochs else 'favours CA4LTR'} "
                     "in training budget.")
    if ca.epochs < 20:
        notes.append(f"short schedule ({ca.epochs} epochs): the backbones are far from converged, and "
                     "differences of a few points are within run-to-run noise.")
    return [line for n in notes for line in (f"> **Note:** {n}", "")]


def audit_section(runs: dict[str, dict[str, Any]]) -> list[str]:
    """Per-image sources: how often the test-time text names the image's class."""
    audit = [[s, fmt_pct(m.get("text_mentions_class_pct")), (m.get("example_text") or [""])[0][:120]]
             for s, m in runs.items() if "text_mentions_class_pct" in m]
    if not audit:
        return []
    return ["## Test-time text audit", "",
            "Per-image sources: % of test images whose own text contains their class name (nonsense: 0 by "
            "construction; a real captioner may name what it sees, which comes from the pixels, not the label).",
            "", md_table(audit, ["source", "text names the class (%)", "example test-time text"]), ""]
