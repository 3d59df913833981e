"""Long-tail profiles: how many training images each class keeps.

``exp_profile`` is the LDAM-DRW ``imbalance_cifar.py`` construction:
``n_i = int(n_max * IF ** (-i / (C - 1)))`` for classes in natural label order.
"""
from __future__ import annotations

import numpy as np


def exp_profile(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """Exponential profile ``[C]``: class 0 keeps ``n_max``, class C-1 keeps ``n_max / IF``.

    Matches LDAM-DRW exactly: ``int(n_max * (1/IF) ** (i / (C - 1)))`` (floor for positive values).
    """
    if num_classes < 2:
        return [int(n_max)]
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1, got {imbalance_factor}")
    inv = 1.0 / imbalance_factor
    return [int(n_max * inv ** (i / (num_classes - 1.0))) for i in range(num_classes)]


def subsample_per_class(labels: np.ndarray, counts: list[int], seed: int) -> np.ndarray:
    """Indices keeping ``counts[c]`` images of class ``c``, chosen by the LDAM-DRW procedure.

    Procedure (``imbalance_cifar.py``): ``np.random.seed(seed)``; for each class in label
    order, ``idx = np.where(labels == c)[0]; np.random.shuffle(idx); keep idx[:n_c]``.
    A private ``RandomState`` with the same seed reproduces the global-seed stream exactly.
    """
    labels = np.asarray(labels)
    rs = np.random.RandomState(seed)
    keep = []
    for c, n in enumerate(counts):
        idx = np.where(labels == c)[0]
        if n > len(idx):
            raise ValueError(f"class {c} has {len(idx)} images, profile asks for {n}")
        rs.shuffle(idx)
        keep.append(idx[:n])
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)
