"""``langtail <command>``: argument parsing only; each stage command calls ``langtail.stages.<stage>.run``.

Every stage takes ``--params``: the JSON of the config keys it reads (the Snakemake rules pass
exactly these, built from the stage's declaration, so a change reruns exactly the affected
stages), or ``@file.json``. Keys left out take their defaults; a key the stage does not declare
cannot be read (``langtail.config.restrict``).

Errors end in one message naming the problem and exit non-zero (2 for a configuration error or
a refused checkpoint, 130 for Ctrl-C, 1 otherwise); ``--debug`` shows the traceback instead.
``--trust-checkpoint`` (before or after the command) lets every loader open old or foreign
checkpoints that need the unsafe pickle loader.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from langtail import io
from langtail.config import ConfigError, DatasetConfig, from_dict, restrict
from langtail.distributed import LaunchError, check_launch
from langtail.offline import OfflineMissing, check_offline

log = logging.getLogger("langtail")

TRUST_HELP = (f"allow checkpoints that need the unsafe pickle loader (old or foreign files; they can run code): "
              f"only for files you trust; same as {io.TRUST_ENV}=1")


def _config(a: argparse.Namespace, stage: str, **wildcards: Any) -> DatasetConfig:
    """The stage's config from ``--params``, restricted to the keys the stage declares."""
    from langtail.stages import stage_keys

    cfg = a.parsed_params if getattr(a, "parsed_params", None) is not None else _params(a.params)
    return restrict(cfg, stage_keys(stage, cfg, **wildcards), stage)


def _opt(v: str | None) -> Path | None:
    return Path(v) if v else None


def cmd_longtail(a):
    from langtail.stages import longtail

    longtail.run(_config(a, "longtail"), Path(a.out))


def cmd_corpus(a):
    from langtail.stages import corpus

    corpus.run(_config(a, "corpus"), Path(a.out), Path(a.stats), Path(a.cache_dir), _opt(a.captions))


def cmd_captions(a):
    from langtail.stages import captions

    captions.run(_config(a, "captions"), Path(a.manifest), Path(a.out), Path(a.shard_dir))


def cmd_image_features(a):
    from langtail.stages import image_features

    image_features.run(_config(a, "image_features", kind=a.kind), a.kind, Path(a.manifest), Path(a.out),
                       Path(a.cache_dir))


def cmd_pretrain(a):
    from langtail.stages import pretrain

    pretrain.run(_config(a, "pretrain"), Path(a.manifest), Path(a.corpus), Path(a.out), Path(a.cache_dir),
                 track_dir=_opt(a.track_dir), features_path=_opt(a.features))


def cmd_anchors(a):
    from langtail.stages import anchors

    anchors.run(_config(a, "anchors"), Path(a.manifest), Path(a.corpus), Path(a.pretrain), Path(a.out),
                Path(a.cache_dir), _opt(a.features))


def cmd_embed_text(a):
    from langtail.stages import embed_text

    embed_text.run(_config(a, "embed_text"), Path(a.manifest), Path(a.anchors), Path(a.corpus), Path(a.pretrain),
                   Path(a.out), Path(a.cache_dir))


def cmd_finetune(a):
    from langtail.stages import finetune

    finetune.run(_config(a, "finetune", head=a.head), a.head, Path(a.manifest), Path(a.out), _opt(a.text_emb),
                 _opt(a.pretrain), track_dir=_opt(a.track_dir), features_path=_opt(a.features),
                 cache_dir=_opt(a.cache_dir))


def cmd_evaluate(a):
    from langtail.stages import evaluate

    evaluate.run(_config(a, "evaluate"), a.model, Path(a.manifest), Path(a.checkpoint), Path(a.out_dir),
                 _opt(a.text_emb), _opt(a.cache_dir), _opt(a.features))


def _pairs(items: list[str], option: str) -> dict[str, Path]:
    """``["KEY=PATH", ...] -> {KEY: Path}`` (``--metrics``, ``--skipped``)."""
    out = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep:
            raise ConfigError(f"{option} {item!r}: expected KEY=PATH")
        out[key] = Path(path)
    return out


def cmd_report(a):
    from langtail.stages import report

    report.run(_config(a, "report"), a.dataset, Path(a.out), Path(a.manifest), [Path(d) for d in a.eval],
               Path(a.corpus_stats), Path(a.anchors), _pairs(a.skipped, "--skipped"), _opt(a.captions),
               a.config_file, _pairs(a.curves, "--curves"), _pairs(a.seed_metrics, "--seed-metrics"))


def cmd_ca4ltr_finetune(a):
    from langtail.stages import ca4ltr_finetune

    ca4ltr_finetune.run(_config(a, "ca4ltr_finetune", source=a.source), a.source, Path(a.manifest), Path(a.out),
                        _opt(a.cache_dir), _opt(a.anchors), _opt(a.captions), _opt(a.pretrain),
                        track_dir=_opt(a.track_dir), features_path=_opt(a.features))


def cmd_ca4ltr_evaluate(a):
    from langtail.stages import ca4ltr_evaluate

    ca4ltr_evaluate.run(_config(a, "ca4ltr_evaluate"), Path(a.manifest), Path(a.checkpoint), Path(a.out_dir),
                        _opt(a.cache_dir), _opt(a.anchors), _opt(a.captions), _opt(a.features))


def cmd_text_quality(a):
    from langtail.stages import text_quality

    text_quality.run(_config(a, "text_quality"), a.dataset, Path(a.out), Path(a.manifest),
                     [Path(d) for d in a.ca4ltr], Path(a.pure), _opt(a.lgr), a.config_file,
                     _pairs(a.curves, "--curves") if a.curves is not None else None,
                     _pairs(a.seed_metrics, "--seed-metrics"), _opt(a.lift))


def cmd_ablations(a):
    from langtail.stages import ablations

    ablations.run(_config(a, "ablations"), a.dataset, Path(a.out), _pairs(a.metrics, "--metrics"),
                  json.loads(a.variants))


def cmd_sweep_report(a):
    from langtail.stages import sweep_report

    sweep_report.run(_config(a, "sweep_report"), a.dataset, a.sweep, json.loads(a.grid), _pairs(a.metrics, "--metrics"),
                     Path(a.out))


def cmd_predict(a):
    from langtail.stages import predict

    if not a.images and not a.folder:
        raise ConfigError("langtail predict: give image paths (IMAGES...) and/or --folder DIR")
    predict.run(Path(a.model), Path(a.out), a.images, _opt(a.folder), a.top_k, a.batch_size, a.device, a.alpha,
                _opt(a.manifest), a.image_size, a.normalize, a.num_workers, a.posthoc_la_tau,
                _opt(a.eval_metrics))


def cmd_schema(a):
    from langtail.config import schema_yaml, write_schema

    if a.out:
        write_schema(a.out)
    else:
        sys.stdout.write(schema_yaml())


def cmd_validate(a):
    from langtail.config import dataset_config, load_yaml, validate_config

    raw = load_yaml(a.config)
    validate_config(raw)
    for ds in raw.get("datasets") or {}:  # cross-key rules and part names (plugins included)
        dataset_config(raw, ds)
    print(f"{a.config}: ok")


def _params(text: str) -> DatasetConfig:
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    from langtail.config import check_weights_overlap

    try:
        cfg = from_dict(json.loads(text or "{}"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"--params is not valid JSON: {e}") from e
    check_weights_overlap(cfg)
    return cfg


def cmd_prefetch(a):
    from langtail.stages import prefetch

    prefetch.run(Path(a.config), a.dataset, _opt(a.out))


def build_parser() -> argparse.ArgumentParser:
    """The ``langtail`` parser: one sub-command per stage, then ``predict``, ``schema``, ``prefetch``,
    ``validate-config``."""
    p = argparse.ArgumentParser(prog="langtail", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true", help="debug-level log lines")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p.add_argument(io.TRUST_FLAG, dest="trust_checkpoint", action="store_true", help=TRUST_HELP)
    sub = p.add_subparsers(dest="command", required=True)

    def stage(name, fn, required=(), optional=(), help=""):
        return _add_stage(sub, name, fn, required, optional, help)

    stage("longtail", cmd_longtail, ["out"], help="build the long-tailed manifest")
    stage("corpus", cmd_corpus, ["out", "stats", "cache-dir"], ["captions"], help="class-level text corpus")
    stage("captions", cmd_captions, ["manifest", "out", "shard-dir"], help="BLIP-2 image captions")
    s = stage("image-features", cmd_image_features, ["manifest", "out", "cache-dir"],
              help="frozen-backbone image features of every manifest row, cached (model.backbone_mode: frozen)")
    s.add_argument("--kind", choices=["pooled", "tokens"], default="pooled",
                   help="pooled: [N, F] (CVLP, AnSS, heads, evaluation); tokens: [N, L, F] (CA4LTR)")
    stage("pretrain", cmd_pretrain, ["manifest", "corpus", "out", "cache-dir"], ["track-dir", "features"], help="CVLP pre-training")
    stage("anchors", cmd_anchors, ["manifest", "corpus", "pretrain", "out", "cache-dir"], ["features"],
          help="anchor sentence selection (AnSS)")
    stage("embed-text", cmd_embed_text, ["manifest", "anchors", "corpus", "pretrain", "out", "cache-dir"],
          help="anchor text embeddings [C, M, D]")
    stage("finetune", cmd_finetune, ["head", "manifest", "out"], ["text-emb", "pretrain", "track-dir", "features", "cache-dir"],
          help="fine-tune one head")
    stage("evaluate", cmd_evaluate, ["model", "manifest", "checkpoint", "out-dir"], ["text-emb", "cache-dir", "features"],
          help="top-1 metrics of one model")
    _add_report_commands(stage)
    _add_predict(sub)
    _add_tool_commands(sub)
    return p


def _add_stage(sub: Any, name: str, fn: Callable, required: Sequence[str] = (), optional: Sequence[str] = (),
               help: str = "") -> argparse.ArgumentParser:
    """A stage's sub-command: ``--params``, the trust flag, ``--<opt>`` for each required and optional path."""
    s = sub.add_parser(name, help=help)
    s.add_argument(io.TRUST_FLAG, dest="trust_checkpoint", action="store_true", default=argparse.SUPPRESS,
                   help=TRUST_HELP)
    s.add_argument("--params", default="{}", help="JSON of the config keys the stage reads (or @file.json)")
    for opt in required:
        s.add_argument(f"--{opt}", required=True)
    for opt in optional:
        s.add_argument(f"--{opt}", default=None)
    s.set_defaults(fn=fn)
    return s


def _add_report_commands(stage: Callable[..., argparse.ArgumentParser]) -> None:
    """``report``, the CA4LTR runs, ``text-quality`` and ``ablations`` (``stage``: :func:`_add_stage` on the
    sub-parsers)."""
    reports = [stage("report", cmd_report, ["dataset", "out", "manifest", "corpus-stats", "anchors"], ["captions"],
                     help="markdown report + figures")]
    reports[0].add_argument("--eval", nargs="+", required=True, help="eval/<model> directories to show")
    reports[0].add_argument("--skipped", nargs="*", default=[],
                            help="STAGE=skipped_images.parquet of the training / evaluation stages shown")
    reports[0].add_argument("--curves", nargs="*", default=[],
                            help="RUN=model.pt of the training stages (pretrain, finetune/<head>): training curves")
    reports[0].add_argument("--seed-metrics", nargs="*", default=[],
                            help="MODEL/seed<k>=metrics.json of the other seeds (finetune.seeds): mean +/- std")
    stage("ca4ltr-finetune", cmd_ca4ltr_finetune, ["source", "manifest", "out"],
          ["cache-dir", "anchors", "captions", "pretrain", "track-dir", "features"], help="train one CA4LTR run")
    stage("ca4ltr-evaluate", cmd_ca4ltr_evaluate, ["manifest", "checkpoint", "out-dir"],
          ["cache-dir", "anchors", "captions", "features"], help="top-1 metrics of one CA4LTR run")
    s = stage("text-quality", cmd_text_quality, ["dataset", "out", "manifest", "pure"], ["lgr", "lift"],
              help="CA4LTR text-quality study")
    s.add_argument("--ca4ltr", nargs="+", required=True, help="eval/ca4ltr_<source> directories")
    s.add_argument("--curves", nargs="*", default=None,
                   help="RUN=model.pt of the training runs (ca4ltr/<source>, finetune/fc): training curves")
    s.add_argument("--seed-metrics", nargs="*", default=[],
                   help="fc/seed<k> or ca4ltr_<source>/seed<k>=metrics.json of the other seeds (finetune.seeds)")
    reports.append(s)
    for s in reports:
        s.add_argument("--config-file", action="append", default=[],
                       help="a --configfile snakemake was given (repeatable); named in the Reproduce line")
    s = stage("ablations", cmd_ablations, ["dataset", "out"], help="Table 4/10 ablation rows")
    s.add_argument("--metrics", nargs="+", required=True, help="KEY=metrics.json, KEY = model or variant:model")
    s.add_argument("--variants", default="{}", help="JSON {variant: overrides} of report.ablations")
    s = stage("sweep-report", cmd_sweep_report, ["dataset", "sweep", "grid", "out"], help="one grid sweep's table")
    s.add_argument("--metrics", nargs="+", required=True,
                   help="CELL:HEAD[/seed<k>]=metrics.json of every cell, head and seed")


def _add_predict(sub: Any) -> None:
    """``predict``: a command without a rule; reads no config."""
    s = sub.add_parser("predict", help="top-k classes of new images with a fine-tuned model (no rule; no config)",
                       description="Predict classes of image files with a fine-tuned checkpoint "
                                   "(results/<dataset>/finetune/<head>/model.pt): its cached anchor embeddings, "
                                   "class names and preprocessing; no text encoder, no corpus.")
    s.add_argument(io.TRUST_FLAG, dest="trust_checkpoint", action="store_true", default=argparse.SUPPRESS,
                   help=TRUST_HELP)
    s.add_argument("images", nargs="*", help="image files")
    s.add_argument("--model", required=True, help="fine-tuned checkpoint, e.g. results/demo/finetune/lgr/model.pt")
    s.add_argument("--folder", default=None, help="predict every image under DIR (recursive; symlinks out of DIR "
                                                  "are refused and listed)")
    s.add_argument("--out", required=True, help="predictions.parquet or predictions.csv")
    s.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    s.add_argument("--batch-size", type=int, default=64)
    s.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda:0, ...")
    s.add_argument("--alpha", type=float, default=None,
                   help="LGR: weight of the image branch, alpha*P_I + (1-alpha)*P_T (default: the alpha the "
                        "evaluate stage ranked this checkpoint with, see --eval-metrics; else 0.5)")
    s.add_argument("--posthoc-la-tau", type=float, default=None,
                   help="post-hoc logit adjustment, logits - tau*log(train priors) (default: as the evaluate "
                        "stage did, see --eval-metrics; else 0 = off)")
    s.add_argument("--eval-metrics", default=None,
                   help="metrics.json of the evaluation whose alpha / posthoc_la_tau to use (default: the "
                        "checkpoint's run, results/<dataset>/eval/<head>/metrics.json, if it evaluated it)")
    s.add_argument("--num-workers", type=int, default=0, help="image-decoding worker processes")
    s.add_argument("--manifest", default=None,
                   help="class names from this manifest (needed for checkpoints written before they were stored)")
    s.add_argument("--image-size", type=int, default=None,
                   help="input size (data.image_size; needed for checkpoints without stored preprocessing)")
    s.add_argument("--normalize", default=None,
                   help="normalisation (data.normalize; needed for checkpoints without stored preprocessing)")
    s.set_defaults(fn=cmd_predict)


def _add_tool_commands(sub: Any) -> None:
    """``schema``, ``prefetch`` and ``validate-config``."""
    s = sub.add_parser("schema", help="print (or write) the workflow config JSON schema")
    s.add_argument("--out", default="")
    s.set_defaults(fn=cmd_schema)
    s = sub.add_parser("prefetch", help="fill every cache a dataset's run downloads from (run where there is internet)")
    s.add_argument("--config", default="config.yaml", help="workflow config (add --configfile files' changes to it)")
    s.add_argument("--dataset", required=True, help="dataset key of the config")
    s.add_argument("--out", default="", help="record of what was fetched (default results/<dataset>/prefetch.json)")
    s.set_defaults(fn=cmd_prefetch)
    s = sub.add_parser("validate-config", help="validate a workflow config file")
    s.add_argument("config")
    s.set_defaults(fn=cmd_validate)

def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if args.trust_checkpoint:
        io.set_trust_checkpoints(True)  # every loader (io.torch_load), also in jobs this process starts
    try:
        check_launch()  # a workflow job got exactly the GPUs / processes its rule asked for
        if hasattr(args, "params"):  # parsed once; with LANGTAIL_OFFLINE=1: fail listing what the stage would download
            args.parsed_params = _params(args.params)
            check_offline(args.command, args.parsed_params, getattr(args, "cache_dir", None))
        args.fn(args)
    except KeyboardInterrupt:
        log.error("interrupted (Ctrl-C): finished artifacts are complete; a rerun resumes")
        return 130
    except Exception as e:  # one clear line per failure; --debug for the traceback
        if args.debug:
            raise
        expected = isinstance(e, (ConfigError, io.UnsafeCheckpointError, LaunchError, OfflineMissing))
        log.error("%s%s", "" if expected else f"{type(e).__name__}: ", e)
        if not expected:
            log.error("(rerun with `langtail --debug %s ...` for the traceback)", args.command)
        return 2 if expected else 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
