# Shared helpers: config validation (before any job runs) and per-stage params.
import dataclasses
import json
import os

from langtail.config import HEAD_NAMES, dataset_config, validate_config

# Fails here, naming the key, on an unknown key or a wrong type (schema:
# workflow/schemas/config.schema.yaml, generated from langtail.config).
validate_config(config)

RESULTS = config.get("results_dir", "results")
DATASETS = sorted(config["datasets"])


wildcard_constraints:
    dataset="|".join(DATASETS),
    head="|".join(HEAD_NAMES),
    model="|".join(HEAD_NAMES + ("zeroshot",)),


def cfg(ds):
    return dataset_config(config, ds)


def params_json(*sections, data_keys=None):
    """JSON of some config sections for a rule's params: a change reruns that rule."""

    def f(wildcards):
        c = cfg(wildcards.dataset)
        out = {s: dataclasses.asdict(getattr(c, s)) for s in sections}
        if data_keys is not None:
            out["data"] = {k: out.get("data", dataclasses.asdict(c.data))[k] for k in data_keys}
        return json.dumps(out, sort_keys=True)

    return f


def gpu_count(section):
    """1 GPU for a stage whose device is `cuda...` (the SLURM plugin maps `gpu` to --gpus)."""

    def f(wildcards):
        return int(getattr(cfg(wildcards.dataset), section).device.startswith("cuda"))

    return f


def ds_path(*parts):
    """results/{dataset}/<parts...> (relative to the working directory)."""
    return os.path.join(RESULTS, "{dataset}", *parts)


# ---- input functions of the corpus, evaluate and report rules

def corpus_inputs(wildcards):
    c = cfg(wildcards.dataset)
    return {"captions": ds_path("captions.parquet")} if "caption" in c.corpus.sources else {}


def eval_checkpoint(wildcards):
    if wildcards.model == "zeroshot":
        return ds_path("pretrain", "model.pt")
    return ds_path("finetune", wildcards.model, "model.pt")


def report_inputs(wildcards):
    c = cfg(wildcards.dataset)
    models = list(c.finetune.heads) + ["zeroshot"]
    return {
        "metrics": [ds_path("eval", m, "metrics.json") for m in models],
        "corpus_stats": ds_path("corpus_stats.parquet"),
        "anchors": ds_path("anchors.parquet"),
        "captions": ds_path("captions.parquet"),
        "manifest": ds_path("manifest.parquet"),
    }

