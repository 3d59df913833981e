# Shared helpers: config validation (before any job runs) and per-stage params.
import dataclasses
import json
import os
import re
import shlex
import sys

from langtail.config import ZEROSHOT_MODELS, dataset_config, select_keys, split_variant, validate_config, variant_overrides
from langtail.launch import job_resources, slurm_site
from langtail.seeds import SEED_DIR_PATTERN, seed_dirs, with_seed
from langtail.corpus.ca4ltr_text import SOURCES as CA4LTR_SOURCES
from langtail.distributed import launch_prefix
from langtail.registry import HEADS, PLUGINS_ENV
# the package's workflow API (langtail.stages docstring), no stage internals
from langtail.stages import ablation_metrics_key, ablation_runs, stage_inputs as inputs_of, stage_keys, stage_owner
from langtail.sweeps import sweep_cells

# Fails here, naming the key, on an unknown key or a wrong type (schema:
# workflow/schemas/config.schema.yaml, generated from langtail.config).
validate_config(config)

# $LANGTAIL_PLUGINS (plugin parts, docs/extending.md) is read here, when the rules are parsed,
# and by every job: declared so that cluster executors pass it on ("" = none).
os.environ.setdefault(PLUGINS_ENV, "")


envvars:
    "PATH",
    PLUGINS_ENV,


# Rules call the `langtail` console script: find it next to the Python running Snakemake
# (a venv's bin/), also when that environment is not activated.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")

RESULTS = config.get("results_dir", "results")
# The --configfile files given on the command line (on top of config.yaml), for the reports'
# "Reproduce" lines: `langtail report ... --config-file F`.
CONFIG_FILE_OPTS = " ".join(
    f"--config-file {shlex.quote(os.path.relpath(f) if os.path.abspath(f).startswith(os.getcwd() + os.sep) else str(f))}"
    for f in workflow.overwrite_configfiles or [])
DATASETS = sorted(config["datasets"])


# a dataset wildcard is a configured dataset, optionally "+<variant>" (an ablation, see
# `variants` in langtail.config): results/demo+cutoff/... reuses results/demo/... for every
# stage the variant does not change.
wildcard_constraints:
    dataset="(" + "|".join(DATASETS) + r")(\+[A-Za-z0-9_]+)?",
    head="|".join(map(re.escape, HEADS.names())),  # the registered heads (langtail.registry.HEADS, plugins included)
    model="|".join(map(re.escape, HEADS.names() + list(ZEROSHOT_MODELS))),
    # a seed replicate of a training run (finetune.seeds): empty for finetune.seed (the plain
    # paths), a seed<k> level for the others: finetune/<head>/seed<k>/model.pt, eval/<model>/seed<k>/
    rep=SEED_DIR_PATTERN,


def cfg(ds):
    return dataset_config(config, ds)


def artifact(ds, stage, *parts):
    """Path of an artifact written by `stage` for dataset `ds`: results/<owner>/<parts>, where
    <owner> is the base dataset when the variant in `ds` changes neither `stage` nor anything
    upstream of it (so ablations reuse the base run's corpus, pre-training, ...)."""
    return os.path.join(RESULTS, stage_owner(config, ds, stage), *parts)


def up(stage, *parts):
    """Input function: :func:`artifact` for the rule's own dataset wildcard."""
    return lambda wildcards: artifact(wildcards.dataset, stage, *parts)


def base_path(*parts):
    """Param function: results/<base dataset>/<parts>, for content-keyed caches (raw Wikipedia
    pages, text features) that a dataset shares with its variants."""
    return lambda wildcards: os.path.join(RESULTS, split_variant(wildcards.dataset)[0], *parts)


def stage_params(stage, wildcard=None):
    """A rule's params: JSON of exactly the config keys ``stage`` declares it reads (for the
    rule's ``wildcard``, e.g. ``head``), so a change to one of them, and only to them, reruns it."""

    def f(wildcards):
        c = cfg(wildcards.dataset)
        if "rep" in wildcards.keys():  # a seed replicate: the same keys, finetune.seed / ca4ltr.seed = its seed
            c = with_seed(c, wildcards.rep)
        wc = {wildcard: wildcards[wildcard]} if wildcard else {}
        return json.dumps(select_keys(c, stage_keys(stage, c, **wc)), sort_keys=True)

    return f


def stage_inputs(stage, wildcard, **paths):
    """Input function: the upstream artifacts (of ``paths``: name -> (owner stage, *parts)) that
    ``langtail.stages.<stage>.inputs(cfg, <wildcard value>)`` says one run reads."""

    def f(wildcards):
        names = inputs_of(stage, cfg(wildcards.dataset), wildcards[wildcard])
        return {n: artifact(wildcards.dataset, *paths[n]) for n in names}

    return f


FEATURES = ("image_features", "image_features.safetensors")  # pooled (CVLP, AnSS, heads, evaluation)
TOKENS = ("image_features", "image_tokens.safetensors")  # the last feature map (CA4LTR)


def frozen_features(wildcards):
    """Input function: the cached image features under model.backbone_mode: frozen, else nothing."""
    if cfg(wildcards.dataset).model.backbone_mode != "frozen":
        return {}
    return {"features": artifact(wildcards.dataset, *FEATURES)}


def input_opts(*names):
    """``--name path`` for the optional inputs a run has (param function)."""
    return lambda wildcards, input: " ".join(f"--{n.replace('_', '-')} {input[n]}" for n in names if n in input.keys())


# ---- job resources: what each job needs comes from the dataset's `resources.<job>` config
# section (langtail.config.JobResources); the site's SLURM specifics (partition, account, qos,
# constraint, GPU model) from the top-level slurm_* keys, which the slurm profile sets
# (workflow/profiles/slurm/config.v8+.yaml, "SITE" block). On SLURM the executor plugin maps
# gpu -> --gpus (gpu_model -> --gpus=<model>:N), cpus_per_gpu -> --cpus-per-gpu,
# threads -> --cpus-per-task, mem_mb -> --mem, runtime -> -t.
SLURM_SITE = slurm_site(config)


def job_res(job, wildcards):
    return job_resources(cfg(wildcards.dataset), job)


def job_threads(job):
    """Threads of a job (= its cores on a cluster): resources.<job>.cpus."""
    return lambda wildcards: job_res(job, wildcards).cpus


def job_resources_of(job):
    """The rule's `resources:` (use as `resources: **job_resources_of("pretrain")`); None = not
    passed to sbatch."""

    def gpus(w):
        return job_res(job, w).gpus

    def partition(w):
        p = SLURM_SITE["slurm_gpu_partition"] if gpus(w) else ""
        return p or SLURM_SITE["slurm_partition"] or None

    return {
        "mem_mb": lambda w: job_res(job, w).mem_mb,
        "runtime": lambda w: job_res(job, w).runtime,
        "gpu": gpus,
        "cpus_per_gpu": lambda w: max(1, job_res(job, w).cpus // gpus(w)) if gpus(w) else None,
        "gpu_model": lambda w: (SLURM_SITE["slurm_gpu_model"] or None) if gpus(w) else None,
        "slurm_partition": partition,
        "slurm_account": lambda w: SLURM_SITE["slurm_account"] or None,
        "qos": lambda w: SLURM_SITE["slurm_qos"] or None,
        "constraint": lambda w: SLURM_SITE["slurm_constraint"] or None,
    }


def job_launch(job):
    """Param: the command prefix of a job's `langtail` call: the GPU / process counts the
    job asked for (checked inside the job by langtail.distributed.check_launch) and, for a
    multi-GPU training job, `torchrun --standalone --nproc-per-node N --no-python`."""
    return lambda wildcards: launch_prefix(job_res(job, wildcards), job)


def ds_path(*parts):
    """results/{dataset}/<parts...> (relative to the working directory)."""
    return os.path.join(RESULTS, "{dataset}", *parts)


# ---- input functions of the corpus, evaluate and report rules

def corpus_inputs(wildcards):
    c = cfg(wildcards.dataset)
    return {"captions": up("captions", "captions.parquet")(wildcards)} if "caption" in c.corpus.sources else {}


def eval_checkpoint(wildcards):
    if wildcards.model in ZEROSHOT_MODELS:
        if wildcards.rep:
            raise ValueError(f"{wildcards.model} is not trained: it has no seed replicate {wildcards.rep!r}")
        return up("pretrain", "pretrain", "model.pt")(wildcards)
    return up("finetune", "finetune", wildcards.model + wildcards.rep, "model.pt")(wildcards)


def eval_dir(ds, model, rep=""):
    """results/<owner>/eval/<model><rep> of dataset ``ds`` (a variant shares its base run's when unchanged)."""
    return artifact(ds, "evaluate", "eval", model + rep)


def seed_reps(wildcards):
    """The seed replicates of the training runs (langtail.seeds.seed_dirs: empty, then one seed<k> level per other seed)."""
    return seed_dirs(cfg(wildcards.dataset))


def report_models(wildcards):
    return list(cfg(wildcards.dataset).finetune.heads) + list(ZEROSHOT_MODELS)


def skip_labels(wildcards):
    """Stage labels of report_inputs' ``skipped`` files, in the same order."""
    return (["pretrain"] + [f"finetune/{h}" for h in cfg(wildcards.dataset).finetune.heads]
            + [f"evaluate/{m}" for m in report_models(wildcards)])


def curve_labels(wildcards):
    """Run labels of report_inputs' ``checkpoints`` (training curves), in the same order."""
    return ["pretrain"] + [f"finetune/{h}{r}" for r in seed_reps(wildcards)
                           for h in cfg(wildcards.dataset).finetune.heads]


def report_inputs(wildcards):
    c = cfg(wildcards.dataset)
    ds = wildcards.dataset
    d = {
        "metrics": [os.path.join(eval_dir(ds, m), "metrics.json") for m in report_models(wildcards)],
        "per_class": [os.path.join(eval_dir(ds, m), "per_class.parquet") for m in report_models(wildcards)],
        "corpus_stats": artifact(ds, "corpus", "corpus_stats.parquet"),
        "anchors": artifact(ds, "anchors", "anchors.parquet"),
        "manifest": artifact(ds, "longtail", "manifest.parquet"),
        "skipped": [artifact(ds, "pretrain", "pretrain", "skipped_images.parquet")]
        + [artifact(ds, "finetune", "finetune", h, "skipped_images.parquet") for h in c.finetune.heads]
        + [os.path.join(eval_dir(ds, m), "skipped_images.parquet") for m in report_models(wildcards)],
        # the training stages' checkpoints: their extra.history is the training-curves figure
        "checkpoints": [artifact(ds, "pretrain", "pretrain", "model.pt")]
        + [artifact(ds, "finetune", "finetune", h + r, "model.pt") for r in seed_reps(wildcards)
           for h in c.finetune.heads],
        # the other seeds' evaluations (finetune.seeds): mean +/- std per row and group
        "seed_metrics": [os.path.join(eval_dir(ds, h, r), "metrics.json")
                         for r in seed_reps(wildcards)[1:] for h in c.finetune.heads],
    }
    if "caption" in c.corpus.sources:
        d["captions"] = artifact(ds, "captions", "captions.parquet")
    return d


def ablation_inputs(wildcards):
    """``metrics_key -> metrics.json`` of every row of the dataset's ablation table."""
    ds = wildcards.dataset
    out = {}
    for v, m in ablation_runs(cfg(ds)):
        run = f"{ds}+{v}" if v else ds
        # trained models: one file per seed replicate (finetune.seeds); zero-shot: one
        for r in ([""] if m in ZEROSHOT_MODELS else seed_dirs(cfg(run))):
            out[ablation_metrics_key(v, m, r).replace(":", "__")] = os.path.join(eval_dir(run, m, r), "metrics.json")
    return out


# ---- grid sweeps (config `sweeps:`, langtail.sweeps; rule sweep_report)

def sweep_grid(wildcards):
    """cell -> {section.key: value} of sweep `wildcards.sweep` (grid order)."""
    return {c.name: c.values for c in sweep_cells(config, wildcards.sweep)}


def sweep_inputs(wildcards):
    """``<cell>__<head><rep>`` -> metrics.json of every cell, trained head and seed replicate."""
    ds = wildcards.dataset
    if split_variant(ds)[1] is not None:
        raise ValueError(f"sweeps: target results/<dataset>/sweeps/<name>.md of a configured dataset, not {ds!r}")
    out = {}
    for c in sweep_cells(config, wildcards.sweep):
        run = f"{ds}+{c.name}"
        for r in seed_dirs(cfg(run)):
            for h in cfg(run).finetune.heads:
                out[f"{c.name}__{h}{r}"] = os.path.join(eval_dir(run, h, r), "metrics.json")
    return out
