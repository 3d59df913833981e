"""Long-tail profiles: how many training images each class keeps.

``exp_profile`` is the LDAM-DRW ``imbalance_cifar.py`` construction:
``n_i = int(n_max * IF ** (-i / (C - 1)))`` for classes in natural label order.
``pareto_profile`` is our documented reconstruction of the ImageNet-LT / Places-LT
"Pareto, alpha = 6" sampling (see its docstring and ``docs/datasets.md``);
``make_profile`` dispatches on ``DataConfig.profile``; ``largest_feasible_n_max`` fits a
profile to the images a folder has; ``subsample_per_class`` picks the images (LDAM-DRW).
All profiles are ``list[int]`` of length C, non-increasing in label order.
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
    # the indices of class c, ascending (= np.where(labels == c)[0]), from one stable sort: O(N log N)
    # instead of one O(N) scan per class (O(C N))
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(len(counts) + 1), side="left")
    for c, n in enumerate(counts):
        idx = order[bounds[c]:bounds[c + 1]].copy()
        if n > len(idx):
            raise ValueError(f"class {c} has {len(idx)} images, profile asks for {n}")
        rs.shuffle(idx)
        keep.append(idx[:n])
    return np.concatenate(keep) if keep else np.zeros(0, dtype=np.int64)


# ----------------------------------------------------------------------------- Pareto profile

#: Pareto shape used for ImageNet-LT / Places-LT (Liu et al., "Large-Scale Long-Tailed
#: Recognition in an Open World", CVPR 2019: "a Pareto distribution with power alpha = 6").
PARETO_ALPHA = 6.0


def pareto_profile(n_max: int, num_classes: int, imbalance_factor: float,
                   alpha: float = PARETO_ALPHA, seed: int = 0) -> list[int]:
    """Pareto profile ``[C]`` (non-increasing): class 0 keeps ``n_max``, class C-1 ``n_max / IF``.

    The OLTR authors published the ImageNet-LT / Places-LT split files but not the code
    that drew them; this is our documented, deterministic reconstruction of "sample the
    class sizes from a Pareto distribution with alpha = 6":

    1. ``x = np.random.RandomState(seed).pareto(alpha, size=C)`` (Lomax / Pareto II samples),
       sorted in descending order;
    2. rescale linearly so the largest sample maps to ``n_max`` and the smallest to
       ``n_min = n_max / IF``: ``v_i = n_min + (x_i - x_min) / (x_max - x_min) * (n_max - n_min)``;
    3. ``n_i = max(1, floor(v_i))`` (a ``1e-9`` slack absorbs float error, so ``n_0 == n_max``).

    Classes are assigned in label order (class 0 is the largest), as for :func:`exp_profile`.
    With ``C = 1000, n_max = 1280, IF = 256`` this gives about 116 images per class on
    average, the same order as ImageNet-LT (115,846 / 1,000).
    """
    if num_classes < 2:
        return [int(n_max)]
    if imbalance_factor < 1:
        raise ValueError(f"imbalance_factor must be >= 1, got {imbalance_factor}")
    if alpha <= 0:
        raise ValueError(f"Pareto alpha must be > 0, got {alpha}")
    rs = np.random.RandomState(seed)
    x = np.sort(rs.pareto(alpha, size=num_classes))[::-1]
    lo, hi = float(x[-1]), float(x[0])
    u = (x - lo) / (hi - lo) if hi > lo else np.ones(num_classes)
    n_min = n_max / float(imbalance_factor)
    v = n_min + u * (n_max - n_min)
    counts = np.maximum(1, np.floor(v + 1e-9)).astype(np.int64)
    return [int(c) for c in counts]


def make_profile(profile: str, n_max: int, num_classes: int, imbalance_factor: float,
                 seed: int = 0) -> list[int]:
    """Per-class training counts ``[C]`` for a generated long tail (``exp`` or ``pareto``)."""
    if profile == "exp":
        return exp_profile(n_max, num_classes, imbalance_factor)
    if profile == "pareto":
        return pareto_profile(n_max, num_classes, imbalance_factor, seed=seed)
    raise ValueError(f"profile {profile!r} cannot be generated; expected 'exp' or 'pareto'")


def largest_feasible_n_max(available: list[int] | np.ndarray, profile: str,
                           imbalance_factor: float, seed: int = 0, cap: int = 0) -> int:
    """Largest ``n_max`` (<= ``cap`` if ``cap > 0``) whose profile fits ``available[c]`` for every c.

    Profiles are non-decreasing in ``n_max``, so a binary search finds it. Raises
    ``ValueError`` if not even ``n_max = 1`` fits (a class without images).
    """
    avail = np.asarray(available, dtype=np.int64)
    C = len(avail)
    if C == 0:
        raise ValueError("no classes")

    def fits(n: int) -> bool:
        return bool(np.all(np.asarray(make_profile(profile, n, C, imbalance_factor, seed)) <= avail))

    if avail.min() < 1:
        raise ValueError(f"class {int(np.argmin(avail))} has no images")
    hi = int(avail.max()) if cap <= 0 else min(int(cap), int(avail.max()))
    if not fits(1):  # pragma: no cover - a profile never exceeds n_max = 1
        raise ValueError("no n_max fits the available images")
    lo = 1
    while lo < hi:  # invariant: fits(lo)
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def check_profile(counts: list[int], n_max: int, imbalance_factor: float, where: str) -> None:
    """Raise ``ValueError`` if the profile leaves a class without images (``n_max < IF``)."""
    zero = [c for c, n in enumerate(counts) if n < 1]
    if zero:
        raise ValueError(f"{where}: the profile gives 0 training images to {len(zero)} class(es) "
                         f"(first: {zero[0]}); n_max = {n_max} with imbalance_factor {imbalance_factor:g} "
                         f"needs n_max >= {imbalance_factor:g} (raise max_train_per_class or lower the IF)")


def profile_summary(counts: list[int] | np.ndarray) -> dict:
    """``n_max``, ``n_min``, realised ``imbalance_factor`` (= n_max / n_min) and the total."""
    c = np.asarray(counts, dtype=np.int64)
    return {"n_max": int(c.max()), "n_min": int(c.min()),
            "imbalance_factor": float(c.max() / c.min()) if c.min() > 0 else float("inf"),
            "num_train": int(c.sum())}
