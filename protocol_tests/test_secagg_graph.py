"""Complete and SecAgg+ Harary graphs, and the (k, t) parameter finder (secagg.graph)."""

from __future__ import annotations

import math
from collections import deque
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.drbg import Drbg
from secagg.errors import InvalidInput
from secagg.graph import (
    _lower_quantile,
    _ring_survives,
    _upper_tail_quantile,
    complete_graph,
    find_secagg_plus_params,
    harary_graph,
)

VECTORS_MD_ROWS = [
    (1000, 0.05, 0.05, "semi-honest", 30, 17),
    (1000, 0.05, 0.05, "semi-malicious", 52, 37),
    (1000, 0.05, 0.33, "semi-honest", 72, 24),
    (1000, 0.45, 0.45, "semi-honest", 822, 417),
    (1000, 0.30, 0.30, "semi-malicious", 872, 584),
    (1000, 0.00, 0.33, "semi-honest", 38, 2),
]


@pytest.mark.parametrize(("n", "gamma", "delta", "adversary", "k", "t"), VECTORS_MD_ROWS)
def test_vectors_md_rows(n, gamma, delta, adversary, k, t):
    assert find_secagg_plus_params(n, gamma, delta, adversary) == (k, t)


def test_degree_grows_logarithmically():
    assert find_secagg_plus_params(100) == (12, 6)
    assert find_secagg_plus_params(1000)[0] == 30
    ks = [find_secagg_plus_params(n)[0] for n in (100, 1000, 10_000, 100_000)]
    assert ks == sorted(ks) and ks[-1] - ks[1] <= 8  # "about 2 more per factor of 10"


def test_none_when_no_sparse_graph():
    assert find_secagg_plus_params(3) is None  # no even k < n - 1
    assert find_secagg_plus_params(2) is None
    assert find_secagg_plus_params(40, 0.45, 0.45, "semi-malicious") is None  # t2 <= t1 for every k
    assert find_secagg_plus_params(1000, 0.6, 0.3, "semi-malicious") is None


@pytest.mark.parametrize(
    "kwargs",
    [dict(n=0), dict(n=100, corrupt_fraction=1.0), dict(n=100, dropout_fraction=-0.1),
     dict(n=100, adversary="malicious"), dict(n=100, corrupt_fraction=float("nan")), dict(n=10.5)],
)
def test_finder_rejects_bad_arguments(kwargs):
    with pytest.raises(InvalidInput):
        find_secagg_plus_params(**kwargs)


def _pmf(n: int, marked: int, k: int) -> list[Fraction]:
    total = math.comb(n, k)
    return [Fraction(math.comb(marked, j) * math.comb(n - marked, k - j), total) for j in range(k + 1)]


@settings(max_examples=150)
@given(st.integers(2, 120), st.data())
def test_hypergeometric_quantiles_match_brute_force(n, data):
    """The exact streaming quantiles equal a direct evaluation with Fractions (definitions in graph.py)."""
    k = data.draw(st.integers(0, n))
    marked = data.draw(st.integers(0, n))
    q = Fraction(1, data.draw(st.sampled_from([2, 10, 1000, 2**20, 2**41 * 100])))
    pmf = _pmf(n, marked, k)
    t1 = min(x for x in range(-1, k + 1) if sum(pmf[x + 1 :]) < q)
    t2 = min(x for x in range(k + 1) if sum(pmf[: x + 1]) >= q)
    assert max(t1, max(0, k - (n - marked))) == _upper_tail_quantile(n, marked, k, q.numerator, q.denominator)
    assert t2 == _lower_quantile(n, marked, k, q.numerator, q.denominator)


def _exact_search(n, gamma, delta, malicious):
    """The procedure of protocol.md with exact arithmetic only (no floating-point pre-filter)."""
    corrupt, dropped = math.floor(gamma * n + 1e-12), math.floor(delta * n + 1e-12)
    surviving = n - dropped
    for k in range(2, n - 1, 2):
        if not _ring_survives(n, k, corrupt + dropped):
            continue
        t1 = _upper_tail_quantile(n, corrupt, k, 1, 2**41 * n)
        t2 = _lower_quantile(n, surviving, k, 1, 2**20 * n)
        if malicious:
            t1 = math.ceil(Fraction(4 * t1 + 4 * k - 5, 8))
        if t2 > t1:
            return k, max(t1 + 1, 2)
    return None


@pytest.mark.parametrize(
    ("n", "gamma", "delta", "adversary"),
    [(1000, 0.45, 0.45, "semi-honest"), (1000, 0.3, 0.3, "semi-malicious"), (400, 0.2, 0.3, "semi-honest"),
     (1500, 0.35, 0.4, "semi-honest"), (300, 0.25, 0.25, "semi-malicious"), (120, 0.4, 0.4, "semi-honest"),
     (2000, 0.1, 0.6, "semi-honest"), (60, 0.45, 0.45, "semi-malicious")],
)
def test_float_prefilter_never_changes_the_answer(n, gamma, delta, adversary):
    """The finder skips clearly-failing k with floating-point bounds; the result must equal the
    all-exact search (these cases reach k > 64 where the pre-filter is active)."""
    assert find_secagg_plus_params(n, gamma, delta, adversary) == _exact_search(
        n, gamma, delta, adversary == "semi-malicious")


@settings(max_examples=40)
@given(st.integers(3, 60), st.data(), st.integers(0, 2**32))
def test_harary_graph_structure(n, data, seed):
    k = data.draw(st.integers(1, (n - 1) // 2).map(lambda h: 2 * h))
    g = harary_graph(n, k, Drbg(seed))
    assert (g.n, g.k, g.is_complete) == (n, k, False)
    for u in range(n):
        nb = g.neighbours(u)
        assert len(nb) == k and u not in nb and list(nb) == sorted(set(nb))  # k-regular, simple
        for v in nb:
            assert u in g.neighbours(v) and g.is_neighbour(u, v)  # symmetric
    assert len(g.edges()) == n * k // 2
    assert not g.is_neighbour(0, 0)
    # the underlying ring: consecutive positions are adjacent
    order = g.ring_order()
    assert sorted(order) == list(range(n))
    assert all(g.is_neighbour(order[p], order[(p + 1) % n]) for p in range(n))
    assert harary_graph(n, k, Drbg(seed)) == g


def test_relabelling_differs_across_seeds():
    graphs = [harary_graph(50, 6, Drbg(s)) for s in range(5)]
    assert len({g.neighbours(0) for g in graphs}) == 5
    assert len({g.ring_order() for g in graphs}) == 5


def test_complete_graph():
    g = complete_graph(5)
    assert (g.n, g.k, g.is_complete) == (5, 4, True)
    assert g.neighbours(2) == (0, 1, 3, 4) and g.is_neighbour(0, 4)
    assert len(g.edges()) == 10
    with pytest.raises(InvalidInput):
        g.neighbours(5)
    with pytest.raises(AttributeError):
        g.k = 3  # type: ignore[misc]


@pytest.mark.parametrize(("n", "k"), [(10, 3), (10, 10), (10, 0), (2, 2), (10, 12)])
def test_harary_rejects_bad_degree(n, k):
    with pytest.raises(InvalidInput):
        harary_graph(n, k, Drbg(0))


def _connected(g, nodes: set[int]) -> bool:
    if not nodes:
        return True
    start = next(iter(nodes))
    seen = {start}
    todo = deque([start])
    while todo:
        u = todo.popleft()
        for v in g.neighbours(u):
            if v in nodes and v not in seen:
                seen.add(v)
                todo.append(v)
    return len(seen) == len(nodes)


@pytest.mark.parametrize(("n", "gamma", "delta", "trials"), [(100, 0.05, 0.05, 300), (300, 0.05, 0.05, 150),
                                                             (200, 0.10, 0.20, 200)])
def test_monte_carlo_guarantees(n, gamma, delta, trials):
    """Random relabelled Harary graphs with floor(gamma n) corrupt and floor(delta n) dropped nodes
    (disjoint, chosen at random): no node has >= t corrupt neighbours, every node keeps >= t surviving
    neighbours, and the honest survivors stay connected. The finder guarantees each failure has
    probability < 2^-20 per session, so over a few hundred seeded trials any observed failure (chance
    < 1e-3 under the guarantee) is a real defect."""
    k, t = find_secagg_plus_params(n, gamma, delta)
    rng = np.random.default_rng(12345)
    n_corrupt, n_drop = math.floor(gamma * n + 1e-9), math.floor(delta * n + 1e-9)
    for trial in range(trials):
        g = harary_graph(n, k, Drbg(trial, b"monte-carlo"))
        perm = rng.permutation(n)
        corrupt = set(perm[:n_corrupt].tolist())
        dropped = set(perm[n_corrupt : n_corrupt + n_drop].tolist())
        for u in range(n):
            nb = g.neighbours(u)
            assert sum(v in corrupt for v in nb) < t
            assert sum(v not in dropped for v in nb) >= t
        assert _connected(g, set(range(n)) - corrupt - dropped)
