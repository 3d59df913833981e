"""Stage ``pretrain`` (rule ``pretrain``, ``langtail pretrain``): class-wise visual-linguistic pre-training (CVLP, paper Sec. 3.2).

Each iteration samples N images (square-root sampling by default) and, for every image,
a *fresh* sentence of its class drawn uniformly from the corpus; the loss is Eq. 8,
``lambda * L_ccl + (1 - lambda) * L_dis`` with Eq. 2 (multi-positive class-wise
contrastive loss, learnable tau initialised to 0.07) and Eq. 3 (logit distillation from a
frozen CLIP teacher; or feature distillation, Table 9). Without a teacher only L_ccl is
used. AdamW (no weight decay on norms, biases and tau), cosine schedule.

Output ``pretrain/model.pt`` (see :func:`langtail.models.encoders.save_vl_checkpoint`):
``model_cfg``, ``state_dict``, image/text identities and ``extra`` = training history (per
epoch: ``epoch``, ``loss``, ``lr``, ``tau`` at the epoch's end), seconds, skipped images. ``pretrain.enabled: false`` writes the initial weights
(ablation "no CVLP").

``model.backbone_mode: frozen``: the batches are the cached backbone features
(``--features``, :mod:`langtail.data.features`); the checkpoint's backbone is the frozen one
those features came from, so only the projections and tau train.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from langtail import distributed, io
from langtail.config import DatasetConfig, select_keys
from langtail.data.dataset import train_loader
from langtail.data.manifest import read_manifest
from langtail.losses import (class_contrastive_loss, cosine_matrix, feature_distillation_loss,
                             logit_distillation_loss, pretrain_loss)
from langtail.models.encoders import create_teacher, create_vl_model, save_vl_checkpoint
from langtail.models.image_cache import freeze_on, frozen_features
from langtail.data.skipped import SkipLog, skipped_path, write_skipped
from langtail.models.text_cache import base_features
from langtail.schemas import CORPUS_COLUMNS
from langtail.runtime import seed_everything
from langtail.train.loop import finish, fit, param_groups
from langtail.train.tracking import TRACKING_KEYS, make_tracker, untracked

log = logging.getLogger(__name__)

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": ("method", "image_encoder", "text_encoder", "pretrained", "text_model_path", "embed_dim",
              "train_text_encoder", "teacher", "teacher_pretrained", "backbone_mode", "partial_blocks", "lora_rank",
              "lora_alpha", "lora_targets", "adapter_dim", "frozen_views"),
    "pretrain": ("enabled", "epochs", "batch_size", "lr", "weight_decay", "warmup_epochs", "lambda_ccl", "distill",
                 "ccl_reduction", "distill_mode", "eval_mode", "tau_init", "sampler", "augment", "device", "amp",
                 "channels_last", "seed"),
    "tracking": TRACKING_KEYS,
}


def class_sentence_index(corpus: pd.DataFrame, num_classes: int, class_names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Corpus rows are sorted by class: ``(start [C], count [C])`` of each class's sentences.

    Raises ``ValueError`` naming the classes without any sentence.
    """
    cid = corpus["class_id"].to_numpy()
    if len(cid) and np.any(np.diff(cid) < 0):
        raise ValueError("corpus.parquet rows must be sorted by class_id")
    count = np.bincount(cid, minlength=num_classes)[:num_classes]
    empty = [class_names[c] for c in np.flatnonzero(count == 0)]
    if empty:
        raise ValueError(f"{len(empty)} class(es) have no sentence in the corpus: {empty[:10]}; "
                         "enable the prompt source (corpus.sources) or add descriptions")
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    return start, count


def teacher_text_features(teacher, mc, sentences: list[str], cache_dir: Path | None,
                          device: torch.device) -> torch.Tensor:
    """``[S, E]`` CLIP-teacher embeddings of the corpus sentences, cached in ``cache_dir``
    (keyed by the teacher, its weights and the sentence list): a multi-GPU run encodes the
    corpus once (rank 0, under :func:`langtail.distributed.main_first`), not once per rank."""
    import open_clip

    from langtail import io
    from langtail.models.text_cache import _key

    ident = {"teacher": mc.teacher, "pretrained": str(mc.teacher_pretrained)}
    path = Path(cache_dir) / f"teacher_text_{_key(ident, sentences)}.safetensors" if cache_dir else None
    if path is not None and path.exists():
        return io.load_safetensors(path)[0]["features"].to(device)
    tok = open_clip.get_tokenizer(mc.teacher)
    with torch.no_grad():
        feats = torch.cat([teacher.encode_text(tok(sentences[i:i + 256]).to(device)).float()
                           for i in range(0, len(sentences), 256)])
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        io.save_safetensors(path, {"features": feats.cpu().contiguous()}, {"identity": str(ident)})
    return feats


def _teacher(cfg: DatasetConfig, frozen: bool, sentences: list[str], cache_dir: Path | None,
             device: torch.device) -> tuple[torch.nn.Module | None, torch.Tensor | None]:
    """The frozen CLIP teacher (``model.teacher``) and its ``[S, E]`` sentence embeddings (cached,
    encoded once by rank 0), or ``(None, None)``; refuses distillation it cannot do."""
    pc = cfg.pretrain
    distill = pc.distill != "none" and pc.lambda_ccl < 1
    teacher = create_teacher(cfg.model)
    if teacher is None:
        if distill:
            raise ValueError(f"pretrain.distill={pc.distill!r} needs a teacher: set model.teacher "
                             "(an open_clip name) or pretrain.distill: none")
        return None, None
    if frozen and distill:
        raise ValueError("pretrain: CLIP distillation needs the images, backbone_mode frozen feeds cached features; "
                         "set pretrain.distill: none (or lambda_ccl: 1) or model.backbone_mode: full")
    teacher = teacher.to(device)
    with distributed.main_first():  # rank 0 encodes the corpus once and caches it, the others read
        return teacher, teacher_text_features(teacher, cfg.model, sentences, cache_dir, device)


def _cvlp_step(model, pc, sentences: list[str], feats: torch.Tensor | None, index: tuple, teach: tuple,
               device: torch.device):
    """The CVLP training step (Eq. 8): a fresh sentence of each image's class, the class-wise
    contrastive loss over the global batch and, with a teacher, the distillation term.
    ``feats [S, F]``: cached frozen text-backbone features (None: the text tower runs);
    ``index``: per-class ``(start [C], count [C])`` into the sentences; ``teach``: ``(teacher, [S, E])``."""
    start_t, count_t = (torch.as_tensor(v, device=device) for v in index)
    teacher, teacher_text = teach

    def step(batch):
        x, y = batch["image"], batch["label"]
        if pc.eval_mode:
            model.eval()
        if pc.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        # a fresh sentence of each image's class (global torch RNG: restored on resume); drawn for
        # the global batch on every rank, each rank using its slice: ranks draw different sentences
        r = distributed.rank_slice(torch.rand(len(y) * distributed.world_size())).to(device)
        sid = start_t[y] + (r * count_t[y]).long().clamp(max=count_t[y] - 1)
        img = model.image(x)
        txt = model.text.project(feats[sid]) if feats is not None else model.text([sentences[i] for i in sid.tolist()])
        # the global batch: embeddings of every rank, with gradient (positives/negatives of all ranks)
        img, txt, y = distributed.gather(img), distributed.gather(txt), distributed.gather(y)
        sim = cosine_matrix(img, txt)
        l_ccl = class_contrastive_loss(sim, y, y, model.tau, pc.ccl_reduction)
        l_dis = None
        if teacher is not None and pc.distill != "none":
            with torch.no_grad():
                t_img = distributed.gather(teacher.encode_image(x).float())
            t_txt = distributed.gather(teacher_text[sid])
            if pc.distill == "logits":
                l_dis = logit_distillation_loss(sim, cosine_matrix(t_img, t_txt), model.tau, pc.distill_mode)
            else:
                l_dis = feature_distillation_loss(img, txt, t_img, t_txt)
        return pretrain_loss(l_ccl, l_dis, pc.lambda_ccl)

    return step


def run(cfg: DatasetConfig, manifest_path: Path, corpus_path: Path, out: Path, cache_dir: Path,
        track_dir: Path | None = None, features_path: Path | None = None) -> None:
    """Pre-train; ``track_dir``: the run's tracking folder (:mod:`langtail.train.tracking`, always
    created when given; None = no tracking); ``features_path``: the cached image features (read
    under ``model.backbone_mode: frozen``)."""
    pc = cfg.pretrain
    seed_everything(pc.seed)
    df, meta = read_manifest(manifest_path)
    names = meta["class_names"]
    C = len(names)
    corpus = io.read_parquet(corpus_path, CORPUS_COLUMNS)
    start, count = class_sentence_index(corpus, C, names)
    device = distributed.setup(pc.device)  # under torchrun: joins the process group
    model = create_vl_model(cfg.model, pc.tau_init)
    features = frozen_features(cfg.model, features_path, "pretrain")
    if features is not None:
        freeze_on(model.image, features, cfg.model)
    resume = out.with_name(out.name + ".resume")
    extra: dict = {"enabled": pc.enabled}
    if not pc.enabled or pc.epochs == 0:
        log.info("pretrain disabled: writing the initial weights (%s)", cfg.model.pretrained or "random init")
        save_vl_checkpoint(out, model, cfg.model, extra)
        write_skipped(skipped_path(out), SkipLog(), "pretrain")
        if track_dir is not None:
            Path(track_dir).mkdir(parents=True, exist_ok=True)
        return

    sentences = corpus["sentence"].tolist()
    text_frozen = getattr(model.text, "frozen", False)
    with distributed.main_first():  # rank 0 fills the text-feature cache, the others read it
        feats = base_features(model.text, sentences, cache_dir).to(device) if text_frozen else None
    teacher, teacher_text = _teacher(cfg, features is not None, sentences, cache_dir, device)
    model.to(device)
    if pc.channels_last:
        model.image.to(memory_format=torch.channels_last)
    train_df = df[df["split"] == "train"].reset_index(drop=True)
    loader = train_loader(train_df, manifest_path, meta, cfg.data, batch_size=pc.batch_size, sampler=pc.sampler,
                          seed=pc.seed, augment=pc.augment, device=device, features=features)
    opt = torch.optim.AdamW(param_groups(model, pc.weight_decay), lr=pc.lr, betas=(0.9, 0.999))
    step = _cvlp_step(model, pc, sentences, feats, (start, count), (teacher, teacher_text), device)

    def clamp_tau():
        with torch.no_grad():
            model.logit_scale.clamp_(0, float(np.log(100.0)))

    keys = untracked(select_keys(cfg, KEYS))
    fp = io.fingerprint(keys, manifest_path, corpus_path, *([features_path] if features is not None else []))
    res = fit(model, opt, loader, step, epochs=pc.epochs, resume_path=resume, fingerprint=fp, device=device,
              amp=pc.amp, warmup_epochs=pc.warmup_epochs, desc="pretrain", after_step=clamp_tau,
              epoch_stats=lambda: {"tau": float(model.tau.detach())},
              tracker=make_tracker(cfg, track_dir, "pretrain", keys))
    extra.update({"history": res.history, "seconds": res.seconds, "skipped_images": res.skipped,
                  "resumed_from_epoch": res.resumed_from, "tau": float(model.tau.detach()), "device": str(device)})
    if distributed.is_main():
        save_vl_checkpoint(out, model.cpu(), cfg.model, extra)
        write_skipped(skipped_path(out), res.skips, "pretrain")
        finish(resume)
    log.info("pretrain done in %.1fs, final tau %.4f", res.seconds, float(model.tau.detach()))
