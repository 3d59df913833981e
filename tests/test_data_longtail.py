"""Long-tail profiles: exp (LDAM-DRW), Pareto, feasibility search."""
from __future__ import annotations

import numpy as np
import pytest

from langtail.data.longtail import (PARETO_ALPHA, exp_profile, largest_feasible_n_max, make_profile,
                                    pareto_profile, profile_summary, subsample_per_class)
from langtail.data.manifest import shot_groups


@pytest.mark.parametrize("n_max,C,IF,total", [
    (5000, 10, 100, 12_406), (5000, 10, 50, 13_996), (5000, 10, 10, 20_431),
    (500, 100, 100, 10_847), (500, 100, 50, 12_608), (500, 100, 10, 19_573),
])
def test_exp_profile_ldam_totals(n_max, C, IF, total):
    assert sum(exp_profile(n_max, C, IF)) == total


def test_exp_profile_cifar10_if100_and_groups():
    p = exp_profile(5000, 10, 100)
    assert p == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    g = shot_groups(p)
    assert (g.count("many"), g.count("medium"), g.count("few")) == (8, 2, 0)
    g = shot_groups(exp_profile(500, 100, 100), inclusive=False)  # the CIFAR-LT convention (LDAM-DRW)
    assert (g.count("many"), g.count("medium"), g.count("few")) == (35, 35, 30)
    g = shot_groups(exp_profile(500, 100, 100))  # the VL-LTR paper's: many >= 100, few <= 20
    assert (g.count("many"), g.count("medium"), g.count("few")) == (35, 34, 31)


def test_pareto_profile_shape_and_determinism():
    p = pareto_profile(1280, 1000, 256, seed=0)
    assert len(p) == 1000 and p[0] == 1280 and p[-1] == 5
    assert all(a >= b for a, b in zip(p, p[1:]))
    assert p == pareto_profile(1280, 1000, 256, seed=0)
    assert p != pareto_profile(1280, 1000, 256, seed=1)
    assert PARETO_ALPHA == 6.0
    # heavy head, long tail: most classes are far below n_max
    assert np.median(p) < 0.1 * 1280
    s = profile_summary(p)
    assert s["n_max"] == 1280 and s["n_min"] == 5 and s["imbalance_factor"] == 256.0
    assert s["num_train"] == sum(p)


def test_pareto_profile_documented_procedure():
    """The exact procedure in the docstring."""
    n_max, C, IF, seed = 500, 50, 20, 3
    x = np.sort(np.random.RandomState(seed).pareto(6.0, size=C))[::-1]
    u = (x - x[-1]) / (x[0] - x[-1])
    v = n_max / IF + u * (n_max - n_max / IF)
    assert pareto_profile(n_max, C, IF, seed=seed) == np.maximum(1, np.floor(v + 1e-9)).astype(int).tolist()


def test_pareto_profile_edge_cases():
    assert pareto_profile(7, 1, 10) == [7]
    assert min(pareto_profile(10, 20, 1000)) == 1  # clamped at one image
    assert pareto_profile(10, 5, 1) == [10] * 5
    with pytest.raises(ValueError):
        pareto_profile(10, 5, 0.5)
    with pytest.raises(ValueError):
        pareto_profile(10, 5, 10, alpha=0)


def test_make_profile_dispatch():
    assert make_profile("exp", 100, 5, 10) == exp_profile(100, 5, 10)
    assert make_profile("pareto", 100, 5, 10, seed=2) == pareto_profile(100, 5, 10, seed=2)
    with pytest.raises(ValueError, match="file"):
        make_profile("file", 100, 5, 10)


@pytest.mark.parametrize("profile", ["exp", "pareto"])
def test_largest_feasible_n_max(profile):
    avail = [40, 35, 30, 8, 20, 12]
    n = largest_feasible_n_max(avail, profile, 5.0)
    assert np.all(np.asarray(make_profile(profile, n, 6, 5.0)) <= avail)
    assert not np.all(np.asarray(make_profile(profile, n + 1, 6, 5.0)) <= avail)
    assert largest_feasible_n_max([500] * 10, profile, 10, cap=100) == 100
    with pytest.raises(ValueError):
        largest_feasible_n_max([5, 0], profile, 2)


def test_subsample_per_class_unchanged():
    labels = np.repeat(np.arange(3), 10)
    keep = subsample_per_class(labels, [10, 4, 1], seed=0)
    assert np.bincount(labels[keep]).tolist() == [10, 4, 1]
    np.random.seed(0)
    ref = []
    for c, n in enumerate([10, 4, 1]):
        idx = np.where(labels == c)[0]
        np.random.shuffle(idx)
        ref.extend(idx[:n])
    assert keep.tolist() == ref
    with pytest.raises(ValueError):
        subsample_per_class(labels, [11, 1, 1], 0)
