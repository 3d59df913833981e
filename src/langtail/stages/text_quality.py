"""Stage ``text_quality`` (rule ``text_quality``, ``langtail text-quality``): the CA4LTR text-quality study.

``results/<dataset>/text_quality.md``: "text source -> top-1 overall / many / medium / few" for
every CA4LTR run next to the vision-only "Pure" baseline (the ``fc`` finetune run: same image
backbone and initialisation, linear classifier) and VL-LTR's LGR (when evaluated), plus the
figure ``figures/text_quality_per_class.png``: per-class accuracy of Pure and each CA4LTR source,
classes sorted by training images (head -> tail). Reads only the ``eval/<model>`` directories
its rule passes (``metrics.json`` + ``per_class.parquet``), the manifest, and the training
checkpoints of the CA4LTR runs and of Pure (``extra.history``: the training-curves figure
``figures/ca4ltr_training_curves.png``).
:func:`langtail.report.ca4ltr.read_study_table` parses the table back.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Mapping, Sequence

from langtail import io
from langtail.config import DatasetConfig
from langtail.data.manifest import read_manifest
from langtail.report.ca4ltr import FIGURE, audit_section, study_notes, study_rows, study_setting, study_table
from langtail.report.curves import curves_section
from langtail.report.seeds import seeds_section
from langtail.report.plots import plot_per_class
from langtail.report.tables import reproduce_line
from langtail.schemas import PER_CLASS_COLUMNS

log = logging.getLogger(__name__)

#: the training-curves figure, relative to text_quality.md (a declared output of the rule)
CURVES = "figures/ca4ltr_training_curves.png"

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "model": ("image_encoder", "pretrained"),
    "pretrain": ("epochs",),
    "anchors": ("num_anchors",),
    "finetune": ("epochs", "baseline_epochs", "sampler"),
    "ca4ltr": ("sources", "init", "width", "heads", "depth", "ffn_mult", "bidirectional", "dropout", "epochs",
               "batch_size", "lr", "weight_decay", "sampler", "label_templates", "description_per_class",
               "nonsense_per_image", "nonsense_seed"),
    "evaluate": ("split",),
}


def run(cfg: DatasetConfig, dataset: str, out: Path, manifest: Path, ca4ltr_dirs: Sequence[Path], pure_dir: Path,
        lgr_dir: Path | None = None, config_files: Sequence[str] = (),
        checkpoints: Mapping[str, Path] | None = None, seed_metrics: Mapping[str, Path] | None = None,
        lift_dir: Path | None = None) -> None:
    """Write ``text_quality.md`` and its figures. ``ca4ltr_dirs``: the ``eval/ca4ltr_<source>``
    directories; ``pure_dir`` / ``lgr_dir``: ``eval/fc`` and ``eval/lgr`` (variants share them);
    ``checkpoints``: run label -> ``model.pt`` of the training runs (``ca4ltr/<source>``, the
    Pure ``finetune/fc``) whose ``extra.history`` gives ``figures/ca4ltr_training_curves.png``;
    ``seed_metrics``: ``fc/seed<k>`` / ``ca4ltr_<source>/seed<k>`` -> ``metrics.json`` of the other
    seeds of ``finetune.seeds`` (mean ± std section); ``lift_dir``: the ``lift`` recipe's
    ``eval/fc_cvlp`` (``results/<dataset>+lift/``, when ``report.ablations`` has ``lift``): a LIFT row."""
    out, pure_dir = Path(out), Path(pure_dir)
    dirs = {Path(d).name.removeprefix("ca4ltr_"): Path(d) for d in ca4ltr_dirs}
    missing = [s for s in cfg.ca4ltr.sources if s not in dirs]
    if missing:
        raise ValueError(f"text_quality: no evaluation given for the CA4LTR source(s) {missing}")
    runs = {s: io.read_json(dirs[s] / "metrics.json") for s in cfg.ca4ltr.sources}
    df, meta = read_manifest(manifest)
    pure = io.read_json(pure_dir / "metrics.json")
    lgr = io.read_json(Path(lgr_dir) / "metrics.json") if lgr_dir else None
    lift = io.read_json(Path(lift_dir) / "metrics.json") if lift_dir else None
    lines = [f"# CA4LTR text-quality study: {dataset}", "",
             "How much does the *content* of the text matter when image tokens attend to text tokens? "
             "Same image backbone and training recipe for every CA4LTR row; only the text source changes.", ""]
    lines += study_setting(cfg, dataset, df, meta, runs)
    lines += study_notes(cfg, runs)
    lines += ["## Top-1 accuracy (%)", "", study_table(study_rows(runs, cfg, pure, lgr, lift)), ""]
    lines += audit_section(runs)
    if seed_metrics:
        reps: dict[str, list[dict]] = {"fc": [pure], **{f"ca4ltr_{s}": [runs[s]] for s in runs}}
        for key, path in seed_metrics.items():
            model = key.rpartition("/")[0]
            if model not in reps:
                raise ValueError(f"text_quality: seed metrics {key!r}: expected fc/seed<k> or ca4ltr_<source>/seed<k>")
            reps[model].append(io.read_json(path))
        labels = {"fc": "Pure (vision-only)", **{f"ca4ltr_{s}": f"CA4LTR + {s}" for s in runs}}
        lines += seeds_section({labels[m]: r for m, r in reps.items()})
    per = {"fc": io.read_parquet(pure_dir / "per_class.parquet", PER_CLASS_COLUMNS)}
    per.update({f"ca4ltr_{s}": io.read_parquet(dirs[s] / "per_class.parquet", PER_CLASS_COLUMNS) for s in runs})
    labels = {"fc": "Pure (vision-only)", **{f"ca4ltr_{s}": f"CA4LTR + {s}" for s in runs}}
    plot_per_class(per, labels, out.parent / FIGURE, f"{dataset}: per-class top-1, Pure vs CA4LTR text sources")
    lines += ["## Per-class accuracy, head -> tail", "", f"![per-class accuracy]({FIGURE})", ""]
    if checkpoints is not None:
        hist = {k: list((io.torch_load(p).get("extra") or {}).get("history") or []) for k, p in checkpoints.items()}
        lines += curves_section(hist, out.parent / Path(CURVES).parent, str(Path(CURVES).parent), Path(CURVES).stem)
    lines += ["## Reproduce", "", reproduce_line(str(out), dataset, config_files,
                                                 ", section `ca4ltr`; see `docs/ca4ltr.md`"), ""]
    io.write_text(out, "\n".join(lines))
    log.info("text-quality study written to %s", out)
