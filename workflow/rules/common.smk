# Shared helpers: config validation (before any job runs) and per-stage params.
import dataclasses
import json

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
    return "/".join([RESULTS, "{dataset}", *parts])
