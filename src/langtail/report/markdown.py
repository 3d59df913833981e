"""Stage ``report``: ``results/<dataset>/report.md`` plus PNG figures in ``figures/``.

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

import numpy as np
import pandas as pd

from langtail import io
from langtail.config import DatasetConfig
from langtail.data.manifest import read_manifest
from langtail.report.plots import plot_per_class
from langtail.report.skipped import skipped_files, skipped_images_section
from langtail.report.tables import ACCURACY_KEYS, fmt_accuracies, md_table, reproduce_line, snakemake_command
from langtail.schemas import ANCHORS_COLUMNS, PER_CLASS_COLUMNS

log = logging.getLogger(__name__)

MODEL_LABELS = {
    "fc": "Baseline (vision-only, FC)",
    "lgr": "VL-LTR (CVLP + AnSS + LGR)",
    "fc_cvlp": "CVLP + FC head",
    "knn": "CVLP + KNN head",
    "zeroshot": "Text-only zero-shot (nearest class text embedding)",
}


def _plot_gain(per: dict[str, pd.DataFrame], path: Path, method: str, baseline: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = per[baseline].set_index("class_id")
    m = per[method].set_index("class_id")
    order = b.sort_values("train_count", ascending=False, kind="stable").index
    gain = (m.loc[order, "accuracy"] - b.loc[order, "accuracy"]).to_numpy()
    fig, ax = plt.subplots(figsize=(max(8, 0.3 * len(order)), 3.5))
    ax.bar(np.arange(len(order)), gain, color=np.where(gain >= 0, "tab:green", "tab:red"))
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("classes, sorted by training images (head -> tail)")
    ax.set_ylabel("accuracy gain (points)")
    ax.set_title(f"{MODEL_LABELS.get(method, method)} minus {MODEL_LABELS.get(baseline, baseline)}")
    fig.tight_layout()
    with io.atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_report(cfg: DatasetConfig, dataset: str, results_dir: Path, out: Path,
               config_files: Sequence[str] = ()) -> None:
    """``config_files``: snakemake's extra ``--configfile`` files (named in the Reproduce line)."""
    results_dir = Path(results_dir)
    df, meta = read_manifest(results_dir / "manifest.parquet")
    models = list(cfg.finetune.heads) + ["zeroshot"]
    metrics = {m: io.read_json(results_dir / "eval" / m / "metrics.json") for m in models}
    per = {m: io.read_parquet(results_dir / "eval" / m / "per_class.parquet", PER_CLASS_COLUMNS) for m in models}
    fig_dir = results_dir / "figures"
    lines: list[str] = [f"# {cfg.report.title or 'langtail report: ' + dataset}", ""]

    # --- setting
    mc = cfg.model
    scratch = not mc.pretrained
    tr = df[df["split"] == "train"]
    counts = tr.groupby("label").size()
    lines += ["## Setting", "",
              f"- Dataset `{meta.get('dataset', dataset)}`: {len(meta['class_names'])} classes, "
              f"{len(tr)} training images ({counts.max()} .. {counts.min()} per class, imbalance "
              f"{counts.max() / counts.min():.0f}), {int((df['split'] == cfg.evaluate.split).sum())} "
              f"{cfg.evaluate.split} images.",
              f"- Shot groups (many > {cfg.data.many_threshold}, few < {cfg.data.few_threshold} training images): "
              + ", ".join(f"{g} {metrics[models[0]].get('n_classes_' + g, 0)} classes" for g in ("many", "medium", "few")) + ".",
              f"- Image encoder `{mc.image_encoder}` ({'trained from scratch' if scratch else 'initialised from ' + mc.pretrained}), "
              f"text encoder `{mc.text_encoder}`{' (frozen backbone + learned projection)' if not mc.train_text_encoder else ''}, "
              f"D = {mc.embed_dim}.",
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

    # --- accuracy
    rows = []
    for m in models:
        r = metrics[m]
        rows.append([MODEL_LABELS.get(m, m), *fmt_accuracies(r)])
    lines += ["## Top-1 accuracy (%)", "", md_table(rows, ["model", *ACCURACY_KEYS]), ""]
    cost = [[MODEL_LABELS.get(m, m), f"{metrics[m]['params_m']:.2f}", f"{metrics[m]['gflops']:.3f}"]
            for m in models if "params_m" in metrics[m]]
    if cost:
        lines += ["Model size (paper Table 5): parameters and GFLOPs per image at inference "
                  f"({cfg.data.image_size} px; the LGR head reads cached anchor embeddings).", "",
                  md_table(cost, ["model", "params (M)", "GFLOPs"]), ""]
    if "lgr" in metrics and "image_branch" in metrics["lgr"]:
        lines += [f"LGR branches alone: image (MLP) {metrics['lgr']['image_branch']:.1f}, "
                  f"text (anchors) {metrics['lgr']['text_branch']:.1f}.", ""]
    lines += skipped_images_section(skipped_files(results_dir, list(cfg.finetune.heads), models))

    fig_dir.mkdir(parents=True, exist_ok=True)
    plot_per_class(per, MODEL_LABELS, fig_dir / "per_class_accuracy.png", f"{dataset}: per-class top-1 accuracy")
    lines += ["![per-class accuracy](figures/per_class_accuracy.png)", ""]
    if "lgr" in per and "fc" in per:
        _plot_gain(per, fig_dir / "gain_lgr_vs_fc.png", "lgr", "fc")
        lines += ["![gain per class](figures/gain_lgr_vs_fc.png)", ""]

    # --- corpus
    stats = io.read_parquet(results_dir / "corpus_stats.parquet")
    smeta = io.read_parquet_metadata(results_dir / "corpus_stats.parquet")
    lines += ["## Corpus", "", f"Sources: {', '.join(cfg.corpus.sources)}.", ""]
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

    # --- captions (read only when the corpus uses them; otherwise the config tells the status)
    cap_path = results_dir / "captions.parquet"
    if "caption" in cfg.corpus.sources and cap_path.exists():
        cmeta = io.read_parquet_metadata(cap_path)
        cap = pd.read_parquet(cap_path)
        lines += ["## Captions", "", f"BLIP-2 captions in the corpus: {len(cap)} images, model "
                  f"`{cmeta.get('model', cfg.captions.model)}`"
                  + (" (a tiny randomly initialised BLIP-2: meaningless text, pipeline smoke test)"
                     if cfg.captions.model == "tiny-random" else "") + ".", ""]
    elif not cfg.captions.enabled:
        lines += ["## Captions", "", "BLIP-2 caption stage: **switched off** (`captions.enabled: false`).", ""]
    else:
        lines += ["## Captions", "", f"BLIP-2 caption stage: enabled (`{cfg.captions.model}`"
                  + (", a tiny randomly initialised BLIP-2: meaningless text" if cfg.captions.model == "tiny-random" else "")
                  + "), not part of this corpus (sources: " + ", ".join(cfg.corpus.sources)
                  + "); the captions feed the CA4LTR `caption` text source.", ""]

    # --- anchors
    anchors = io.read_parquet(results_dir / "anchors.parquet", ANCHORS_COLUMNS)
    ameta = io.read_parquet_metadata(results_dir / "anchors.parquet")
    lines += ["## Anchor sentences", "",
              f"Strategy `{ameta.get('strategy')}`, M = {ameta.get('num_anchors')}, scored against "
              f"{ameta.get('n_images')} images (<= {ameta.get('images_per_class')} per class), tau = {ameta.get('tau', 0):.4f}. "
              f"{len(ameta.get('short_classes', {}))} classes have fewer than M sentences (masked padding).", ""]
    sel_src = anchors[anchors["selected"]].groupby("source").size().to_dict()
    all_src = anchors.groupby("source").size().to_dict()
    lines += ["Selected anchors by source: " + ", ".join(f"{s} {sel_src.get(s, 0)}/{n}" for s, n in all_src.items()) + ".", ""]
    k = cfg.report.top_sentences
    show = sorted(anchors["class_id"].unique())
    groups = df.drop_duplicates("label").set_index("label")["group"]
    pick = [c for g in ("many", "medium", "few") for c in [x for x in show if groups.get(x) == g][:1]]
    for c in pick:
        a = anchors[anchors["class_id"] == c].sort_values("rank")
        lines += [f"**{meta['class_names'][c]}** ({groups.get(c)}-shot): lowest L_lin (kept) / highest L_lin (dropped first)", ""]
        rows = [["kept", f"{r.l_lin:.3f}", r.source, r.sentence.replace('|', '/')] for r in a.head(k).itertuples()]
        rows += [["worst", f"{r.l_lin:.3f}", r.source, r.sentence] for r in a.tail(k).itertuples()]
        lines += [md_table(rows, ["", "L_lin", "source", "sentence"]), ""]

    # --- CA4LTR: its own target (declared inputs there; this report does not read its results)
    if cfg.ca4ltr.sources:
        lines += ["## CA4LTR text-quality study", "",
                  f"Cross-modal attention with text sources {', '.join(cfg.ca4ltr.sources)} against the vision-only "
                  f"baseline and VL-LTR: `{snakemake_command(f'{results_dir}/text_quality.md', config_files)}` writes "
                  "[text_quality.md](text_quality.md).", ""]

    lines += ["## Reproduce", "", reproduce_line(f"{results_dir}/report.md", dataset, config_files), ""]
    io.write_text(out, "\n".join(lines))
    log.info("report written to %s", out)


def _num(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.1f}"
    return str(v)
