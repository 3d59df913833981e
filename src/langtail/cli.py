"""``langtail <stage>``: argument parsing only; each subcommand calls one stage function.

Every stage takes ``--params``: the JSON of the config sections it uses (the Snakemake
rules pass exactly these, so a parameter change reruns exactly the affected stages), or
``@file.json``. Missing sections/keys take their defaults (``langtail.config``).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from langtail.config import ConfigError, DatasetConfig, from_dict
from langtail.distributed import LaunchError, check_launch
from langtail.offline import OfflineMissing


def _params(text: str) -> DatasetConfig:
    if text.startswith("@"):
        text = Path(text[1:]).read_text(encoding="utf-8")
    try:
        return from_dict(json.loads(text or "{}"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"--params is not valid JSON: {e}") from e


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")


def cmd_longtail(a):
    from langtail.data.build import run_longtail

    run_longtail(_params(a.params).data, Path(a.out))


def cmd_corpus(a):
    from langtail.corpus.stage import run_corpus
    from langtail.data.registry import get_dataset

    cfg = _params(a.params)
    builder = get_dataset(cfg.data.name)
    pages = builder.pages(cfg.data) if hasattr(builder, "pages") else None
    cache = Path(cfg.corpus.cache_dir) if cfg.corpus.cache_dir else Path(a.cache_dir)
    run_corpus(builder.class_names(cfg.data), cfg.corpus, Path(a.out), Path(a.stats), cache,
               builtin_pages=pages, captions_path=Path(a.captions) if a.captions else None)


def cmd_captions(a):
    from langtail.captions.stage import run_captions

    run_captions(Path(a.manifest), _params(a.params).captions, Path(a.out), Path(a.shard_dir))


def cmd_pretrain(a):
    from langtail.train.pretrain import run_pretrain

    run_pretrain(_params(a.params), Path(a.manifest), Path(a.corpus), Path(a.out), Path(a.cache_dir))


def cmd_anchors(a):
    from langtail.anchors import run_anchors

    run_anchors(_params(a.params), Path(a.manifest), Path(a.corpus), Path(a.pretrain), Path(a.out), Path(a.cache_dir))


def cmd_embed_text(a):
    from langtail.data.manifest import read_manifest
    from langtail.embed import run_embed_text

    _, meta = read_manifest(a.manifest)
    run_embed_text(_params(a.params), Path(a.anchors), Path(a.corpus), Path(a.pretrain), Path(a.out),
                   Path(a.cache_dir), len(meta["class_names"]))


def cmd_finetune(a):
    from langtail.train.finetune import run_finetune

    run_finetune(_params(a.params), a.head, Path(a.manifest), Path(a.text_emb), Path(a.pretrain), Path(a.out))


def cmd_evaluate(a):
    from langtail.evaluate import run_evaluate

    run_evaluate(_params(a.params), a.model, Path(a.manifest), Path(a.checkpoint), Path(a.text_emb), Path(a.out_dir))


def cmd_report(a):
    from langtail.report.markdown import run_report

    run_report(_params(a.params), a.dataset, Path(a.results_dir), Path(a.out), a.config_file)


def cmd_ca4ltr_train(a):
    from langtail.train.ca4ltr import run_ca4ltr_train

    run_ca4ltr_train(_params(a.params), a.source, Path(a.manifest), Path(a.out), _opt_path(a.cache_dir),
                     _opt_path(a.anchors), _opt_path(a.captions), _opt_path(a.pretrain))


def cmd_ca4ltr_evaluate(a):
    from langtail.train.ca4ltr import run_ca4ltr_evaluate

    run_ca4ltr_evaluate(_params(a.params), Path(a.manifest), Path(a.checkpoint), Path(a.out_dir),
                        _opt_path(a.cache_dir), _opt_path(a.anchors), _opt_path(a.captions))


def cmd_ca4ltr_report(a):
    from langtail.report.ca4ltr import run_text_quality_report

    run_text_quality_report(_params(a.params), a.dataset, Path(a.results_dir), Path(a.out), _opt_path(a.manifest),
                            _opt_path(a.pure_dir), _opt_path(a.lgr_dir), a.config_file)


def _opt_path(v):
    return Path(v) if v else None


def cmd_ablations(a):
    from langtail.report.ablations import run_ablations

    out = Path(a.out)  # results/<dataset>/ablations.md: the results root is two levels up
    run_ablations(_params(a.params), a.dataset, out.parent.parent, out, json.loads(a.variants))


def cmd_schema(a):
    import yaml

    from langtail.config import workflow_schema

    text = yaml.safe_dump(workflow_schema(), sort_keys=False, width=100)
    if a.out:
        from langtail.io import write_text

        write_text(a.out, text)
    else:
        sys.stdout.write(text)


def cmd_validate(a):
    from langtail.config import load_yaml, validate_config

    validate_config(load_yaml(a.config))
    print(f"{a.config}: ok")


def _offline_check(a) -> None:
    """With LANGTAIL_OFFLINE=1: fail before the stage if it would download anything
    (langtail.offline), else keep the Hugging Face libraries offline."""
    from langtail.offline import ENV_OFFLINE, require_local

    if os.environ.get(ENV_OFFLINE) != "1" or not hasattr(a, "params"):
        return
    cfg = _params(a.params)
    names = cache = None
    if a.command == "corpus":
        from langtail.data.registry import get_dataset

        builder = get_dataset(cfg.data.name)
        if not hasattr(builder, "pages"):  # built-in pages (demo) need no download
            names = list(builder.class_names(cfg.data))
            cache = cfg.corpus.cache_dir or a.cache_dir
    require_local(cfg, a.command, cache, names)


def cmd_prefetch(a):
    from langtail.config import dataset_config, load_yaml, split_variant, validate_config
    from langtail.offline import prefetch

    raw = load_yaml(a.config)
    validate_config(raw)
    cfg = dataset_config(raw, a.dataset)
    results = Path(raw.get("results_dir", "results"))
    wiki = Path(cfg.corpus.cache_dir) if cfg.corpus.cache_dir else results / split_variant(a.dataset)[0] / "wiki_cache"
    out = Path(a.out) if a.out else results / a.dataset / "prefetch.json"
    rec = prefetch(cfg, a.dataset, wiki, out)
    for it in rec["items"]:
        print(f"{it['status']:8s} {it['name']}: {it['location']}")
    print(f"record: {out}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="langtail", description=__doc__.splitlines()[0])
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    def stage(name, fn, *paths, help=""):
        s = sub.add_parser(name, help=help)
        s.add_argument("--params", default="{}", help="JSON of the config sections (or @file.json)")
        for path in paths:
            s.add_argument(f"--{path}", required=not path.startswith("captions"), default=None)
        s.set_defaults(fn=fn)
        return s

    stage("longtail", cmd_longtail, "out", help="build the long-tailed manifest")
    stage("corpus", cmd_corpus, "out", "stats", "cache-dir", "captions", help="class-level text corpus")
    stage("captions", cmd_captions, "manifest", "out", "shard-dir", help="BLIP-2 image captions")
    stage("pretrain", cmd_pretrain, "manifest", "corpus", "out", "cache-dir", help="CVLP pre-training")
    stage("anchors", cmd_anchors, "manifest", "corpus", "pretrain", "out", "cache-dir", help="anchor sentence selection")
    stage("embed-text", cmd_embed_text, "manifest", "anchors", "corpus", "pretrain", "out", "cache-dir",
          help="anchor text embeddings [C, M, D]")
    stage("finetune", cmd_finetune, "head", "manifest", "text-emb", "pretrain", "out", help="fine-tune a head")
    stage("evaluate", cmd_evaluate, "model", "manifest", "checkpoint", "text-emb", "out-dir", help="top-1 metrics")
    reports = [stage("report", cmd_report, "dataset", "results-dir", "out", help="markdown report + figures")]
    s = stage("ca4ltr-train", cmd_ca4ltr_train, "source", "manifest", "out", "captions", help="train one CA4LTR run")
    for opt in ("cache-dir", "anchors", "pretrain"):  # optional: only some sources / inits need them
        s.add_argument(f"--{opt}", default=None)
    s = stage("ca4ltr-evaluate", cmd_ca4ltr_evaluate, "manifest", "checkpoint", "out-dir", "captions",
              help="top-1 metrics of a CA4LTR run")
    for opt in ("cache-dir", "anchors"):
        s.add_argument(f"--{opt}", default=None)
    s = stage("ca4ltr-report", cmd_ca4ltr_report, "dataset", "results-dir", "out", help="CA4LTR text-quality study")
    for opt in ("manifest", "pure-dir", "lgr-dir"):  # default: under --results-dir
        s.add_argument(f"--{opt}", default=None)
    reports.append(s)
    for s in reports:
        s.add_argument("--config-file", action="append", default=[],
                       help="a --configfile snakemake was given (repeatable); named in the Reproduce line")
    s = stage("ablations", cmd_ablations, "dataset", "out", help="Table 4/10 ablation rows")
    s.add_argument("--variants", default="{}", help="JSON {variant: overrides} of report.ablations")
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
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        check_launch()  # a workflow job got exactly the GPUs / processes its rule asked for
        _offline_check(args)
        args.fn(args)
    except (ConfigError, LaunchError, OfflineMissing) as e:
        logging.getLogger("langtail").error("%s", e)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
