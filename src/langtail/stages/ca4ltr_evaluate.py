"""Stage ``ca4ltr_evaluate`` (rule ``ca4ltr_evaluate``, ``langtail ca4ltr-evaluate``).

Evaluates one CA4LTR run (``results/<dataset>/eval/ca4ltr_<source>/``): the same
``metrics.json`` and ``per_class.parquet`` as :mod:`langtail.stages.evaluate` (built with
:func:`langtail.metrics.accuracy_table`), plus ``source``, ``text_tokens`` (text tokens per
image) and, for per-image sources, ``text_mentions_class_pct``: % of evaluated images whose
text contains their own class name (an audit: 0 for nonsense by construction; captions of a
real BLIP-2 may name the object they see, which is information from the pixels, not from
the label). The text settings come from the checkpoint. Under ``model.backbone_mode: frozen``
the images are the cached tokens (``--features``, ``image_tokens.safetensors``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from langtail.config import DatasetConfig
from langtail.corpus.ca4ltr_text import CLASS_LEVEL, mentions_class
from langtail.data.dataset import eval_loader
from langtail.inference import tta_info, tta_load_size, with_tta
from langtail.data.manifest import class_counts, class_groups, read_manifest
from langtail.losses import class_priors
from langtail.models.ca4ltr import load_ca4ltr
from langtail.models.image_cache import frozen_features
from langtail.runtime import resolve_device
from langtail.train.ca4ltr import TextInputs, build_source, predict, text_encoder
from langtail.train.validation import checkpoint_selection

#: config keys this stage reads (its rule's params are built from them)
KEYS = {
    "data": ("image_size", "normalize", "num_workers"),
    "model": ("text_model_path", "text_encoder", "backbone_mode"),
    "evaluate": ("batch_size", "split", "device", "posthoc_la_tau", "tta", "tta_expand"),
}


def inputs(cfg: DatasetConfig, source: str) -> tuple[str, ...]:
    """Upstream artifacts besides the manifest and the checkpoint (per-image sources' text; the
    cached image tokens under backbone_mode: frozen)."""
    needs = ("features",) if cfg.model.backbone_mode == "frozen" else ()
    return needs + {"nonsense": ("anchors",), "caption": ("captions",)}.get(source, ())


def run(cfg: DatasetConfig, manifest_path: Path, checkpoint: Path, out_dir: Path,
                        cache_dir: Path | None = None, anchors_path: Path | None = None,
                        captions_path: Path | None = None, features_path: Path | None = None) -> dict[str, Any]:
    """Evaluate one CA4LTR checkpoint; writes ``metrics.json`` + ``per_class.parquet`` like ``evaluate``."""
    from langtail.config import Ca4ltrConfig
    from langtail.metrics import accuracy_table, write_eval

    device = resolve_device(cfg.evaluate.device)
    model, ck = load_ca4ltr(checkpoint, device)
    source = ck["source"]
    ca = Ca4ltrConfig(**ck["ca4ltr_cfg"])  # the text settings the model was trained with
    df, meta = read_manifest(manifest_path)
    names = list(meta["class_names"])
    C = len(names)
    split = cfg.evaluate.split
    test = df[df["split"] == split]
    if test.empty:
        raise ValueError(f"{manifest_path}: no images in split {split!r}")
    test_index = test.index.to_numpy()
    test = test.reset_index(drop=True)
    src = None
    if source in CLASS_LEVEL:  # the class bank's features are stored in the checkpoint
        texts = TextInputs(bank=model.text_bank.cpu())
    else:
        src = build_source(source, ca, df, names, anchors_path, captions_path)
        texts = TextInputs.build(src, text_encoder(cfg), cache_dir, test_index, split)
    dc, ec = cfg.data, cfg.evaluate
    features = frozen_features(cfg.model, features_path, f"ca4ltr-evaluate[{source}]")
    if features is not None:
        if ec.tta != "none":
            raise ValueError(f"evaluate.tta={ec.tta}: test-time views need images, but model.backbone_mode is "
                             "frozen (cached features); set evaluate.tta: none")
        features.check_backbone(model.image, str(checkpoint))
    loader = eval_loader(test, manifest_path, meta, dc, ec.batch_size,
                         tta_load_size(ec.tta, dc.image_size, ec.tta_expand), features=features)
    la_tau = float(cfg.evaluate.posthoc_la_tau)  # post-hoc logit adjustment: logits - tau * log pi
    shift = -la_tau * class_priors(class_counts(df, C), str(manifest_path)).log() if la_tau else None
    pred, labels, rows, skipped = predict(model, texts, loader, device, desc=f"eval ca4ltr_{source}",
                                          logit_shift=shift, forward=with_tta(model, ec.tta, dc.image_size))
    metrics, per = accuracy_table(pred, labels, names, class_counts(df, C), class_groups(df, C))
    model_name = f"ca4ltr_{source}"
    metrics.update({"model": model_name, "method": "ca4ltr", "source": source, "split": split,
                    "skipped_images": skipped, "text_tokens": texts.tokens_per_image,
                    "epochs": ck["extra"].get("epochs"), "init": ck["extra"].get("init"),
                    "image_weights": ck["extra"].get("image_weights"), "posthoc_la_tau": la_tau,
                    "train_loss": ck["extra"].get("loss", "ce"), **tta_info(cfg), "selected": checkpoint_selection(ck["extra"]),
                    **{k: ck["extra"][k] for k in ("backbone_mode", "params_trained", "params_total") if k in ck["extra"]}})
    if src is not None:
        hits = [any(mentions_class(s, names[labels[i]]) for s in texts.texts[r]) for i, r in enumerate(rows)]
        metrics["text_mentions_class_pct"] = float(100.0 * np.mean(hits)) if hits else 0.0
        if source == "nonsense" and any(hits):
            raise AssertionError("nonsense text contains a class name: the generator's stop list is broken")
        metrics["example_text"] = texts.texts[int(rows[0])][:1] if len(rows) else []
    for k in ("caption_model", "tiny_random_captioner"):
        if src is not None and k in src.info:
            metrics[k] = src.info[k]
    write_eval(out_dir, metrics, per)
    return metrics
