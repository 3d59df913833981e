"""Runtime floor: which device a stage runs on, how it is seeded, and the RNG state of a resume file.

Every stage and library module picks its device with :func:`resolve_device` and seeds
with :func:`seed_everything`; nothing else decides either.
"""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


#: ``LANGTAIL_OFFLINE=1``: an offline node (nothing is downloaded; langtail.offline checks the caches)
ENV_OFFLINE = "LANGTAIL_OFFLINE"


def env_offline() -> bool:
    """``LANGTAIL_OFFLINE=1`` in the environment (an offline node: nothing is downloaded)."""
    import os

    return os.environ.get(ENV_OFFLINE) == "1"


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda if available, else cpu; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} requested but CUDA is not available; set device: auto or cpu")
    return dev


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """All RNG states in a form the safe checkpoint loader accepts (tensors and plain values):

    ``python``: ``[version, [625 ints], gauss_next]`` (:func:`random.getstate`);
    ``numpy``: ``{"kind": "MT19937", "key": uint32 values as int64 tensor [624], "pos": int,
    "has_gauss": int, "cached_gaussian": float}`` (:func:`numpy.random.get_state`);
    ``torch``: uint8 tensor; ``cuda`` (if available): list of uint8 tensors.
    :func:`set_rng_state` restores them exactly.
    """
    version, internal, gauss_next = random.getstate()
    kind, key, pos, has_gauss, cached = np.random.get_state()
    st: dict[str, Any] = {
        "python": [int(version), [int(v) for v in internal], None if gauss_next is None else float(gauss_next)],
        "numpy": {"kind": str(kind), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict[str, Any]) -> None:
    """Restore :func:`rng_state` output (or the tuples/arrays of older resume files)."""
    py = st["python"]
    random.setstate((int(py[0]), tuple(int(v) for v in py[1]), py[2]))
    npst = st["numpy"]
    if isinstance(npst, dict):
        key = npst["key"].numpy() if torch.is_tensor(npst["key"]) else np.asarray(npst["key"])
        npst = (npst["kind"], key.astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    np.random.set_state(npst)
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])
