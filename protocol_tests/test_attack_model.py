"""The model of protocol_tests.attack_search: it finds the two known attacks on active SecAgg+ where
the thresholds allow them, and nothing where the protocol now requires 2t > k + 2.

The model (pure Python, :func:`protocol_tests.attack_search.evaluate`) mirrors every client check of
secagg.client; the real protocol is held to the same attacks in test_active_splus_window.py. The
exhaustive SAT search over all servers of the model is a command (``python -m
protocol_tests.attack_search``, needs python-sat), not part of the suite.
"""

from __future__ import annotations

import random

import pytest

from protocol_tests import attack_search as model


def _island_layout(n: int, k: int) -> tuple[dict[int, str], dict[int, int | None]]:
    """Periods of 4h + 2 ring positions: h + 1 helpers (signers), then an island of h non-signers,
    h + 1 signers and h non-signers."""
    h = k // 2
    period = 4 * h + 2
    assert n % period == 0
    role, island = {}, {}
    for p in range(n):
        q, o = divmod(p, period)
        if o <= h:
            role[p], island[p] = "H", None
        elif o <= 2 * h:
            role[p], island[p] = "L", q
        elif o <= 3 * h + 1:
            role[p], island[p] = "S", q
        else:
            role[p], island[p] = "R", q
    return role, island


def _island_attack(n: int, k: int, t: int):  # noqa: ANN202
    role, island = _island_layout(n, k)
    routing = {p: {q for q in model.nbrs(n, k, p) if role[p] in "HS" or island[q] == island[p]} for p in range(n)}
    everyone = frozenset(range(n))
    out = model.evaluate(n, k, t, "full", n, routing, everyone, [everyone], {p: 0 for p in range(n)})
    islands = [frozenset(p for p in range(n) if island[p] == q) for q in range(n // (4 * (k // 2) + 2))]
    return out, islands, role


@pytest.mark.parametrize("n, k", [(20, 4), (28, 6), (36, 8), (30, 4)])
def test_the_island_split_unmasks_every_island_at_t_k_over_2_plus_1(n: int, k: int) -> None:
    (signers, revealers, b_known, s_known, comps), islands, role = _island_attack(n, k, k // 2 + 1)
    assert sorted(map(sorted, comps)) == sorted(map(sorted, islands)) and len(comps) >= 2
    assert all(len(c) == 3 * (k // 2) + 1 for c in comps)
    assert s_known == set() and b_known == set(range(n))  # only b shares: no client's two share types
    assert signers == revealers == {p for p in range(n) if role[p] in "HS"}


@pytest.mark.parametrize("n, k", [(20, 4), (28, 6), (36, 8)])
def test_the_island_split_gets_nothing_at_t_k_over_2_plus_2(n: int, k: int) -> None:
    (_, _, _, _, comps), _, _ = _island_attack(n, k, k // 2 + 2)
    assert comps == []


def test_the_parity_split_unmasks_both_classes_at_t_k_over_2_plus_1_and_nothing_above() -> None:
    n, k = 16, 4
    routing = {p: {q for q in model.nbrs(n, k, p) if q % 2 == p % 2} for p in range(n)}
    u3s = [frozenset(range(0, n, 2)), frozenset(range(1, n, 2))]
    root = {p: p % 2 for p in range(n)}
    comps = model.evaluate(n, k, 3, "window", n, routing, frozenset(range(n)), u3s, root)[4]
    assert sorted(map(sorted, comps)) == [list(range(0, n, 2)), list(range(1, n, 2))]
    assert model.evaluate(n, k, 4, "window", n, routing, frozenset(range(n)), u3s, root)[4] == []
    # the full view's survivor count alone stops it unless min_survivors <= n / 2
    assert model.evaluate(n, k, 3, "full", 12, routing, frozenset(range(n)), u3s, root)[4] == []
    assert len(model.evaluate(n, k, 3, "full", n // 2, routing, frozenset(range(n)), u3s, root)[4]) == 2


def test_an_honest_server_releases_exactly_the_sum_of_all() -> None:
    for view, (n, k, t) in (("full", (24, 4, 4)), ("window", (24, 4, 4)), ("full", (28, 6, 5))):
        routing = {p: set(model.nbrs(n, k, p)) for p in range(n)}
        everyone = frozenset(range(n))
        signers, revealers, b_known, s_known, comps = model.evaluate(
            n, k, t, view, n, routing, everyone, [everyone], {p: 0 for p in range(n)})
        assert signers == revealers == set(everyone) and comps == [everyone] and s_known == set()


def _random_server(rng: random.Random, n: int, k: int, t: int, roots: int):  # noqa: ANN202
    """A random lying server around an honest run: a few dropouts, arcs of the ring with their own U3,
    random non-signers whose round-1 routing is cut to one side or a random subset, random one-sided
    edges."""
    h = k // 2
    dead = set(rng.sample(range(n), rng.randrange(3)))
    alive = set(range(n)) - dead
    cuts = sorted(rng.sample(range(n), roots))
    root: dict[int, int | None] = {}
    u3s = []
    for j in range(roots):
        a, b = cuts[j], cuts[(j + 1) % roots] + (n if j == roots - 1 else 0)
        hidden = {rng.randrange(n) for _ in range(rng.randrange(3))}
        u3s.append(frozenset(range(n)) - dead - hidden)
        for p in range(a, b):
            root[p % n] = j
    p_ns, p_cut, p_edge = rng.choice([0.0, 0.1, 0.25, 0.4]), rng.random(), rng.choice([0.0, 0.0, 0.05])
    routing = {}
    for p in range(n):
        nb = model.nbrs(n, k, p)
        if rng.random() < p_ns:
            root[p] = None
            side = rng.choice([-1, 1, 0, 2]) if rng.random() < p_cut else 2
            keep = [q for q in nb if side == 2 or (side == 0 and rng.random() < 0.5)
                    or (side != 0 and ((q - p) % n <= h) == (side == 1))]
        else:
            keep = [q for q in nb if rng.random() >= p_edge]
        while len(keep) + 1 < t:
            keep.append(rng.choice([q for q in nb if q not in keep]))
        routing[p] = set(keep)
    return routing, alive, u3s, root


@pytest.mark.parametrize("view, k, t", [("window", 4, 4), ("full", 4, 4), ("window", 6, 5), ("full", 6, 5)])
def test_seeded_random_lying_servers_get_at_most_one_partial_sum_at_accepted_thresholds(view: str, k: int, t: int) -> None:
    n = 24 if k == 4 else 28
    ms = (3 * n) // 4 if view == "full" else n
    rng, counts = random.Random(2024), [0, 0]  # runs with one sum, with two or more
    for _ in range(300):
        routing, alive, u3s, root = _random_server(rng, n, k, t, rng.choice([1, 2, 3]))
        comps = model.evaluate(n, k, t, view, ms, routing, alive, u3s, root)[4]
        if comps:
            counts[min(len(comps), 2) - 1] += 1
    assert counts[1] == 0  # never two partial sums
    assert counts[0] > 10  # the family does unmask one sum often: the check is not vacuous
