"""BLIP-2 image captioning with HF transformers (``Blip2Processor`` + ``Blip2ForConditionalGeneration``).

:class:`Blip2Captioner` turns a batch of ``uint8 [H, W, 3]`` images into one caption each,
by greedy decoding (``do_sample=False, num_beams=1``) so that captions are deterministic.
The captioner only ever sees pixels and the configured prompt: nothing derived from a
label can reach the caption (the CA4LTR method uses captions at test time).

Loading (:func:`load_blip2`) works without network from a local directory (written with
``save_pretrained``) or from a pre-filled HF cache: the cache is tried first with
``local_files_only=True``; the Hub is contacted only if the model is not cached *and*
the Hub endpoint is reachable. Otherwise :class:`CaptionModelUnavailable` says what is
missing and how to fix it.

:func:`save_tiny_blip2` writes a tiny randomly initialised BLIP-2 (vision tower, Q-Former,
OPT decoder and tokenizer all built offline) for tests, benchmarks and smoke runs.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import numpy as np

log = logging.getLogger(__name__)

#: decoding settings used for every caption (part of the resume fingerprint)
GENERATION_DEFAULTS: dict[str, Any] = {"do_sample": False, "num_beams": 1}


class CaptionModelUnavailable(RuntimeError):
    """The BLIP-2 model cannot be loaded (no network and not cached, or a bad local path)."""


# ----------------------------------------------------------------------------- device / dtype


def resolve_dtype(name: str, device: "torch.device") -> "torch.dtype":  # noqa: F821
    """``auto`` = bfloat16 on a GPU that supports it, else float16 on GPU; float32 on CPU."""
    import torch

    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        dtype = getattr(torch, name)
    except AttributeError:
        raise ValueError(f"captions.dtype={name!r}: expected auto, float32, float16 or bfloat16") from None
    if device.type == "cpu" and dtype == torch.float16:
        log.warning("captions.dtype=float16 on CPU is slow and may be unsupported; prefer float32")
    return dtype


# ----------------------------------------------------------------------------- loading


def _offline_env() -> bool:
    truthy = {"1", "true", "yes", "on"}
    return any(os.environ.get(k, "").strip().lower() in truthy for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Cheap check that the HF Hub endpoint accepts TCP connections.

    Avoids the transformers/huggingface_hub retry loop (minutes) on machines without
    network. With a proxy configured the check is skipped (assumed reachable).
    """
    if _offline_env():
        return False
    if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return True
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except Exception:  # pragma: no cover - very old huggingface_hub
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    u = urlparse(endpoint)
    host, port = u.hostname or "huggingface.co", u.port or (443 if u.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


_HUB_ID = re.compile(r"^[A-Za-z0-9_][\w.-]*(/[\w.-]+)?$")


def _looks_like_path(name: str) -> bool:
    """Not of the form ``name`` or ``namespace/name`` (a Hub repo id): a file-system path."""
    return not _HUB_ID.match(name)


def unavailable_message(model: str, reason: str) -> str:
    return (
        f"cannot load the BLIP-2 captioning model {model!r}: {reason}.\n"
        "Fix one of:\n"
        f"  * pre-download it on a machine with internet: `huggingface-cli download {model}` "
        "(or `hf download ...`), then copy the HF cache (~/.cache/huggingface/hub, or $HF_HOME) "
        "to this machine;\n"
        "  * set `captions.model` to a local directory holding the model and processor "
        "(written with `save_pretrained`, e.g. the folder `huggingface-cli download "
        f"{model} --local-dir <dir>` creates);\n"
        "  * or disable the stage with `captions.enabled: false`."
    )


def _from_pretrained(name: str, dtype: Any, local_files_only: bool):
    from transformers import Blip2ForConditionalGeneration, Blip2Processor

    processor = Blip2Processor.from_pretrained(name, local_files_only=local_files_only)
    model = Blip2ForConditionalGeneration.from_pretrained(name, dtype=dtype, local_files_only=local_files_only)
    return processor, model


def load_blip2(model: str, device: "torch.device", dtype: "torch.dtype"):  # noqa: F821
    """Return ``(processor, model)``, the model in eval mode on ``device`` with ``dtype``.

    Raises :class:`CaptionModelUnavailable` if the model is neither a local directory
    nor in the HF cache and the Hub cannot be reached.
    """
    local = Path(os.path.expanduser(model))
    if local.is_dir():
        try:
            processor, net = _from_pretrained(str(local), dtype, local_files_only=True)
        except (OSError, ValueError) as e:
            raise CaptionModelUnavailable(
                f"captions.model={model!r} is a directory but does not hold a BLIP-2 model and "
                f"processor saved with save_pretrained ({type(e).__name__}: {e})") from e
    elif _looks_like_path(model):
        raise CaptionModelUnavailable(unavailable_message(model, f"the local path {str(local)!r} does not exist"))
    else:
        try:
            processor, net = _from_pretrained(model, dtype, local_files_only=True)
            log.info("captions: loaded %s from the local HF cache", model)
        except (OSError, ValueError) as cache_err:
            if not _hub_reachable():
                why = ("HF offline mode is set (HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE)" if _offline_env()
                       else "there is no network connection to the Hugging Face Hub")
                raise CaptionModelUnavailable(unavailable_message(
                    model, f"it is not in the local HF cache and {why}")) from cache_err
            try:
                processor, net = _from_pretrained(model, dtype, local_files_only=False)
            except (OSError, ValueError) as e:
                raise CaptionModelUnavailable(unavailable_message(
                    model, f"it is not in the local HF cache and downloading failed ({type(e).__name__}: {e})")) from e
    _fix_image_tokens(processor, net)
    return processor, net.to(device).eval()


def _fix_image_tokens(processor: Any, net: Any) -> None:
    """Make processor and model agree on the ``<image>`` placeholder tokens.

    Checkpoints saved before transformers 4.47 lack ``num_query_tokens`` (processor) and
    ``image_token_index`` (model); fill them in as the current checkpoints do.
    """
    if getattr(processor, "num_query_tokens", None) is None:
        processor.num_query_tokens = net.config.num_query_tokens
    if net.config.image_token_index is None:
        tok = processor.tokenizer
        image_token = str(getattr(processor, "image_token", "<image>"))
        idx = tok.convert_tokens_to_ids(image_token)
        if idx >= net.get_input_embeddings().num_embeddings:
            net.resize_token_embeddings(len(tok))
        net.config.image_token_index = idx


# ----------------------------------------------------------------------------- captioner


@dataclass
class Blip2Captioner:
    """Batched BLIP-2 captioning: ``caption(images) -> list[str]``.

    ``prompt`` = "" gives unconditional captions; otherwise the generated continuation
    of the prompt (without the prompt itself) is returned.
    """

    model: str
    prompt: str = ""
    max_new_tokens: int = 30
    device: str = "auto"
    dtype: str = "auto"

    def __post_init__(self) -> None:
        from langtail.runtime import resolve_device

        self.torch_device = resolve_device(self.device)
        self.torch_dtype = resolve_dtype(self.dtype, self.torch_device)
        self.processor, self.net = load_blip2(self.model, self.torch_device, self.torch_dtype)

    @classmethod
    def from_config(cls, cfg: Any) -> "Blip2Captioner":
        return cls(model=cfg.model, prompt=cfg.prompt, max_new_tokens=cfg.max_new_tokens,
                   device=cfg.device, dtype=cfg.dtype)

    def preprocess(self, images: Sequence[np.ndarray]) -> dict[str, Any]:
        """CPU part: images (uint8 HxWx3) -> processor tensors (can run in a worker thread)."""
        return self.processor(images=list(images), text=[self.prompt] * len(images), return_tensors="pt")

    def generate(self, enc: dict[str, Any]) -> list[str]:
        """Device part: processor tensors -> captions."""
        import torch

        input_ids = enc["input_ids"].to(self.torch_device)
        inputs = {
            "input_ids": input_ids,
            "attention_mask": enc["attention_mask"].to(self.torch_device),
            "pixel_values": enc["pixel_values"].to(self.torch_device, self.torch_dtype),
        }
        with torch.inference_mode():
            out = self.net.generate(**inputs, max_new_tokens=self.max_new_tokens, **GENERATION_DEFAULTS)
        # decoder-only LMs return prompt + continuation; keep the continuation only
        if out.shape[1] >= input_ids.shape[1] and torch.equal(out[:, : input_ids.shape[1]], input_ids):
            out = out[:, input_ids.shape[1]:]
        texts = self.processor.batch_decode(out, skip_special_tokens=True)
        return [" ".join(t.split()) for t in texts]

    def caption(self, images: Sequence[np.ndarray]) -> list[str]:
        if len(images) == 0:
            return []
        return self.generate(self.preprocess(images))


# ----------------------------------------------------------------------------- fingerprint helpers


def model_identity(model: str) -> dict[str, Any]:
    """What identifies the weights: the id/path, plus for a local dir a hash of its config
    and the sizes of its files (so replacing the weights invalidates finished shards)."""
    p = Path(os.path.expanduser(model))
    ident: dict[str, Any] = {"model": model}
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(p.iterdir()):
            if f.is_file():
                h.update(f"{f.name}:{f.stat().st_size}\n".encode())
        cfg = p / "config.json"
        if cfg.exists():
            h.update(cfg.read_bytes())
        ident["local_files"] = h.hexdigest()[:16]
    return ident


# ----------------------------------------------------------------------------- tiny model


TINY_WORDS = ("a an the photo picture image of small large little big red green blue black white "
              "brown yellow cat dog bird car truck ship plane horse frog deer on in with and is "
              "there sitting standing flying grass water road sky field tree close up view").split()


def save_tiny_blip2(path: str | os.PathLike, image_size: int = 224, num_query_tokens: int = 4,
                    hidden: int = 32, seed: int = 0) -> Path:
    """Write a tiny randomly initialised BLIP-2 (model + processor) to ``path``.

    Built entirely offline: a WordLevel tokenizer over :data:`TINY_WORDS` (OPT-style,
    ``</s>`` as BOS/EOS), a ``BlipImageProcessor``, and a 2-layer ViT / Q-Former / OPT.
    The EOS embedding is zeroed so that random weights produce non-empty captions.
    Loadable with ``Blip2Processor/Blip2ForConditionalGeneration.from_pretrained(path)``.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import (Blip2Config, Blip2ForConditionalGeneration, Blip2Processor,
                              BlipImageProcessor, PreTrainedTokenizerFast)

    path = Path(path)
    vocab = {t: i for i, t in enumerate(["<pad>", "</s>", "<unk>", *TINY_WORDS])}
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.post_processor = processors.TemplateProcessing(
        single="</s> $A", pair="</s> $A $B", special_tokens=[("</s>", 1)])
    tk.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="</s>", eos_token="</s>",
                                        pad_token="<pad>", unk_token="<unk>")
    image_processor = BlipImageProcessor(size={"height": image_size, "width": image_size})
    processor = Blip2Processor(image_processor=image_processor, tokenizer=tokenizer,
                               num_query_tokens=num_query_tokens)
    V = len(processor.tokenizer)  # includes the <image> token the processor adds
    image_token_index = processor.tokenizer.convert_tokens_to_ids("<image>")
    patch = 32 if image_size % 32 == 0 else 16 if image_size % 16 == 0 else image_size
    config = Blip2Config(
        vision_config=dict(hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                           num_attention_heads=2, image_size=image_size, patch_size=patch,
                           initializer_range=0.02),
        qformer_config=dict(vocab_size=V, hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=2 * hidden, encoder_hidden_size=hidden,
                            cross_attention_frequency=1, max_position_embeddings=64),
        text_config=dict(model_type="opt", vocab_size=V, hidden_size=hidden, num_hidden_layers=2,
                         ffn_dim=2 * hidden, num_attention_heads=2, word_embed_proj_dim=hidden,
                         max_position_embeddings=128, bos_token_id=1, eos_token_id=1, pad_token_id=0),
        num_query_tokens=num_query_tokens,
        image_token_index=image_token_index,
    )
    torch.manual_seed(seed)
    net = Blip2ForConditionalGeneration(config).eval()
    with torch.no_grad():
        net.get_input_embeddings().weight[1].zero_()  # EOS logit 0: random weights rarely stop at once
        out_emb = net.get_output_embeddings()
        if out_emb is not None and out_emb.weight.data_ptr() != net.get_input_embeddings().weight.data_ptr():
            out_emb.weight[1].zero_()
    path.mkdir(parents=True, exist_ok=True)
    net.save_pretrained(path)
    processor.save_pretrained(path)
    (path / "langtail_tiny.json").write_text(json.dumps({"tiny": True, "seed": seed}) + "\n")
    return path


TINY_RANDOM = "tiny-random"  #: captions.model value that builds a tiny random BLIP-2


def resolve_caption_model(model: str, dataset_dir: str | Path) -> str:
    """``captions.model: tiny-random`` -> the tiny random BLIP-2 built (once) in
    ``<dataset_dir>/tiny_blip2``; any other model is returned unchanged."""
    if model != TINY_RANDOM:
        return model
    path = Path(dataset_dir) / "tiny_blip2"
    if not (path / "langtail_tiny.json").exists():
        log.warning("captions.model=tiny-random: building a tiny RANDOM BLIP-2 in %s (meaningless captions; "
                    "smoke tests only)", path)
        save_tiny_blip2(path, image_size=32)
    return str(path)


def is_tiny_caption_model(model: str) -> bool:
    """``tiny-random`` or a folder written by ``save_tiny_blip2``."""
    return model == TINY_RANDOM or (bool(model) and (Path(model) / "langtail_tiny.json").exists())
