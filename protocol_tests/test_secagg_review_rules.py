"""Adversarial review of the protocol's rules (secagg.rules), the survivor policy, the state guards and
the cryptography-free modular backend.

Each test is an attack within the documented guarantees (README, "What is and is not emulated";
docs/protocol.md, "Survivor policy"): a curious or lying server, dropouts placed to hurt (cutting the
Harary ring at every round, exactly at the min_survivors and threshold boundaries), rounds called out of
order, and random dropout schedules run by both backends, which must agree on the survivor sets, the
abort (round, reason, rule) and the ledger, entry for entry. An attack the code stops is a passing test
asserting the abort or the correct sum; an attack outside the documented model (corrupt clients and
dropouts placed after seeing the SecAgg+ graph) is a passing test that pins the boundary: the attack
works, and the result's guarantee says that it is outside what was guaranteed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from secagg import rules
from secagg.cost import model_ledger, modular_run
from secagg.errors import InvalidInput, ProtocolAborted, StateError
from secagg.protocol import Session, SessionParams, run_secure_aggregation
from secagg.rounds import ROUNDS
from secagg.server import Server

M = 2**32


def _inputs(n: int, d: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**16, size=(n, d)).astype(np.uint64)


def _outcome(fn):  # noqa: ANN001, ANN202
    """``("ok", sets, ledger, sum)`` or ``("abort", round, reason, rule, ledger, sets)``."""
    try:
        r = fn()
    except ProtocolAborted as exc:
        return ("abort", exc.round, exc.reason, exc.rule, exc.ledger, {k: v for k, v in exc.sets.items()})
    if isinstance(r, tuple):  # modular_run: (sum, included, ledger)
        return ("ok", r[1], r[2], r[0])
    return ("ok", r.included, r.ledger, r.sum)


def _both(x: np.ndarray, **kw):  # noqa: ANN003, ANN202
    """The real protocol's and the modular backend's outcome for the same session."""
    real = _outcome(lambda: run_secure_aggregation(x, modulus=M, **kw))
    mod = _outcome(lambda: modular_run(x, dim=x.shape[1], modulus=M, **kw))
    return real, mod


def _assert_same(real, mod, x: np.ndarray) -> None:  # noqa: ANN001
    assert real[0] == mod[0], (real[:4], mod[:4])
    if real[0] == "ok":
        assert real[1] == mod[1] and real[2] == mod[2]
        assert np.array_equal(real[3], mod[3])
        assert np.array_equal(real[3], x[list(real[1])].sum(0) % M)  # correct sum over U3
    else:
        assert real[1:4] == mod[1:4]  # round, reason, rule
        assert real[4] == mod[4]  # ledger up to the abort
        # the sets known at the abort agree (the modular server reports the same U1..U5)
        assert real[5] == {k: v for k, v in mod[5].items() if k in real[5]}


# ------------------------------------------------------------------- survivor-bound boundaries
def test_exact_float_free_survivor_bound() -> None:
    """ceil((1 - delta) n) exactly: (1 - 0.3) * 10 = 7.000000000000001 in floats (ceil 8); the rule says 7."""
    assert rules.min_survivors_for(10, 2, sparse=True, delta=0.3, min_survivors=None) == 7
    assert rules.min_survivors_for(25, 2, sparse=True, delta=0.44, min_survivors=None) == 14  # float: 15
    assert rules.min_survivors_for(10, 2, sparse=True, delta=0.7, min_survivors=None) == 3  # float: 4
    assert rules.min_survivors_for(100, 6, sparse=True, delta=0.07, min_survivors=None) == 93
    assert rules.min_survivors_for(20, 2, sparse=True, delta=0.05, min_survivors=None) == 19
    assert rules.min_survivors_for(20, 2, sparse=True, delta=None, min_survivors=None) == 19  # default delta
    assert rules.min_survivors_for(20, 5, sparse=False, delta=None, min_survivors=None) == 5  # complete: t
    assert rules.min_survivors_for(20, 5, sparse=False, delta=0.9, min_survivors=None) == 5  # never below t
    for bad in (0, 21, True, 2.5):
        with pytest.raises(InvalidInput):
            rules.min_survivors_for(20, 2, sparse=True, delta=None, min_survivors=bad)


def _spread(params: SessionParams, count: int) -> list[int]:
    """``count`` clients spaced around the ring (never two within k/2: G[U3] stays connected)."""
    order = params.graph.ring_order()
    step = params.graph.k // 2 + 1
    assert count * step <= params.n
    return [order[i * step] for i in range(count)]


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_min_survivors_boundary_is_exact_in_both_backends(variant: str) -> None:
    """SecAgg+ n = 40, delta = 0.2: min_survivors = 32. 8 spread dropouts before masked-input complete
    with the correct sum; a 9th aborts on min-survivors. The modular backend agrees bit for bit."""
    n = 40
    x = _inputs(n)
    # active: 2t > k + 2 (secagg.rules.check_interleaving_threshold), so k = 6, t = 5, which the spread
    # dropouts (4 positions apart) leave with enough live holders
    kw = dict(graph="secagg+", neighbours=4 if variant != "active" else 6, seed=11, dropout_fraction=0.2,
              variant=variant, threshold=2 if variant != "active" else 5)
    params = SessionParams.create(n, 3, M, **kw)
    assert params.min_survivors == 32
    drops = _spread(params, 9)
    ok = {u: "masked-input" for u in drops[:8]}
    real, mod = _both(x, dropouts=ok, **kw)
    assert real[0] == "ok" and len(real[1]) == 32
    _assert_same(real, mod, x)
    over = {u: "masked-input" for u in drops}
    real, mod = _both(x, dropouts=over, **kw)
    assert real[:2] == ("abort", "masked-input") and real[3] == "min-survivors"
    _assert_same(real, mod, x)
    # dropping *after* masked-input does not lower |U3|: those inputs are in the sum
    late = {u: "masked-input:after" for u in drops}
    real, mod = _both(x, dropouts=late, **kw)
    _assert_same(real, mod, x)
    assert real[0] == "ok" and len(real[1]) == 40


def test_explicit_min_survivors_cannot_lower_the_secagg_plus_bound() -> None:
    """``min_survivors`` is documented as *raising* the bound (never below t); on SecAgg+ it must not
    lower ceil((1 - delta) n) either, or a caller's typo silently drops Bell et al.'s dropout bound."""
    p = SessionParams.create(100, 3, M, graph="secagg+", seed=3, min_survivors=10)
    assert p.min_survivors == 95
    assert SessionParams.create(100, 3, M, graph="secagg+", seed=3, min_survivors=97).min_survivors == 97
    # and a run with 6 spread dropouts (94 survivors) still aborts on min-survivors
    drops = {u: "share-keys" for u in _spread(p, 6)}
    with pytest.raises(ProtocolAborted) as info:
        model_ledger(100, 3, M, graph="secagg+", seed=3, min_survivors=10, dropouts=drops)
    assert info.value.rule == "min-survivors"


# --------------------------------------------------------------------- cutting the ring at every round
CUT_ROUNDS = ["share-keys", "share-keys:after", "masked-input", "masked-input:after", "unmasking",
              "unmasking:after", "consistency-check", "consistency-check:after"]


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
@pytest.mark.parametrize("when", CUT_ROUNDS)
def test_ring_cut_at_every_round_aborts_or_sums_correctly(variant: str, when: str) -> None:
    """n = 16, k = 4: two runs of k/2 = 2 consecutive ring positions cut the Harary ring. Whatever the
    round of the cut, the run aborts naming a rule or releases the correct sum over a *connected* U3 --
    never a sum over a disconnected survivor graph -- and both backends agree."""
    n = 16
    x = _inputs(n, seed=1)
    kw = dict(graph="secagg+", neighbours=4, seed=2, dropout_fraction=0.3, variant=variant,
              threshold=2 if variant != "active" else 4)  # active: 2t > k + 2
    params = SessionParams.create(n, 3, M, **kw)
    order = params.graph.ring_order()
    cut = [order[p] for p in (0, 1, 6, 7)]
    drops = {u: when for u in cut}
    real, mod = _both(x, dropouts=drops, **kw)
    _assert_same(real, mod, x)
    if real[0] == "ok":
        assert len(rules.survivor_components(params.graph, frozenset(real[1]))) == 1
        assert len(real[1]) >= params.min_survivors
    else:
        assert real[3] in ("threshold", "reconstructible", "min-survivors", "survivors-connected")
    before_masking = ROUNDS.index(when.split(":")[0]) < 2 or when == "masked-input"
    if before_masking:  # the cut clients are not in U3: the survivor graph splits
        # (active, t = 4: the cut's neighbours see fewer than t keys and abort too, so the survivor
        # count can fail first; either way before any share is asked for)
        assert real[0] == "abort" and real[3] in (
            ("survivors-connected",) if variant != "active" else ("survivors-connected", "min-survivors"))


def test_threshold_boundary_after_masked_input() -> None:
    """Complete graph n = 6, t = 4: clients in U3 that vanish after sending y_u leave their b_u with the
    other holders. 2 such dropouts leave 4 live holders = t: correct sum over all 6; a 3rd aborts
    (|U5| < t) with fewer than t shares of any secret; both backends agree."""
    x = _inputs(6, seed=4)
    kw = dict(threshold=4, seed=5)
    real, mod = _both(x, dropouts={0: "masked-input:after", 5: "masked-input:after"}, **kw)
    _assert_same(real, mod, x)
    assert real[0] == "ok" and real[1] == tuple(range(6))
    real, mod = _both(x, dropouts={0: "masked-input:after", 3: "masked-input:after", 5: "masked-input:after"}, **kw)
    _assert_same(real, mod, x)
    # the server cannot know that they vanished right after sending y_u: it asks, and finds 3 < t
    # shares of each b_u in unmasking -- fewer than t shares reveal nothing, and nothing is released
    assert real[:2] == ("abort", "unmasking") and real[3] == "threshold"
    assert real[2] == "|U5|: 3 < t = 4"
    assert sum(e.kind == "unmasking-response" for e in real[4]) == 3


def _harary16(variant: str = "honest-but-curious", t: int = 3, delta: float = 0.3):  # noqa: ANN202
    kw = dict(graph="secagg+", neighbours=4, threshold=t, seed=21, dropout_fraction=delta, variant=variant)
    return kw, SessionParams.create(16, 3, M, **kw).graph.ring_order()


def test_live_client_whose_holders_drop_before_masking_aborts_before_any_share() -> None:
    """n = 16, k = 4, t = 3: three of u's four neighbours drop at masked-input (after sharing keys), so
    b_u has 2 live holders (u and one neighbour) < t. The ring stays connected and |U3| = 13 >= 12, so
    only the reconstructibility rule stops it -- in masked-input, before a share is asked for."""
    kw, order = _harary16()
    x = _inputs(16, seed=22)
    u = order[8]
    drops = {order[p]: "masked-input" for p in (6, 7, 9)}
    real, mod = _both(x, dropouts=drops, **kw)
    _assert_same(real, mod, x)
    assert real[:2] == ("abort", "masked-input") and real[3] == "reconstructible"
    assert real[2] == f"self-mask seed of client {u} has 2 live holders < t = 3"
    assert not any(e.kind == "unmasking-request" for e in real[4])


def test_dropped_client_whose_key_holders_drop_aborts_before_any_share() -> None:
    """Three consecutive ring positions drop at masked-input: the middle one's mask key (needed to
    cancel its masks with the survivors two positions away) keeps 2 live holders < t = 3."""
    kw, order = _harary16()
    x = _inputs(16, seed=23)
    drops = {order[p]: "masked-input" for p in (7, 8, 9)}
    real, mod = _both(x, dropouts=drops, **kw)
    _assert_same(real, mod, x)
    assert real[:2] == ("abort", "masked-input") and real[3] == "reconstructible"
    assert real[2].startswith("mask key of dropped client ") and "has 2 live holders < t = 3" in real[2]
    assert not any(e.kind == "unmasking-request" for e in real[4])


def test_a_dropped_client_that_masked_with_no_survivor_needs_no_key() -> None:
    """Ring positions 5, 6, 8, 9 drop at share-keys and 7 at masked-input (t = 2): client 7 shared keys
    but none of its holders did, so it masked with no survivor; its key is neither needed nor asked for
    (nobody alive holds a share of it) and the run completes with the correct sum over the 11 others."""
    kw, order = _harary16(t=2, delta=0.35)
    x = _inputs(16, seed=24)
    drops = {order[p]: "share-keys" for p in (5, 6, 8, 9)} | {order[7]: "masked-input"}
    real, mod = _both(x, dropouts=drops, **kw)
    _assert_same(real, mod, x)
    assert real[0] == "ok" and set(real[1]) == set(range(16)) - set(drops)


def test_holders_that_vanish_in_unmasking_leave_too_few_shares() -> None:
    """Three of u's four neighbours vanish in unmasking (the server could not know): |U5| = 13 >= t but
    only 2 shares of b_u arrive: abort (reconstructible), never a reconstruction from fewer than t."""
    kw, order = _harary16()
    x = _inputs(16, seed=25)
    u = order[8]
    drops = {order[p]: "unmasking" for p in (6, 7, 9)}
    real, mod = _both(x, dropouts=drops, **kw)
    _assert_same(real, mod, x)
    assert real[:2] == ("abort", "unmasking") and real[3] == "reconstructible"
    assert real[2] == f"2 shares of b_{u} < t = 3"


# ------------------------------------------------------------------------- lying / out-of-order server
class _DeclaresBoundaryDead(Server):
    """Active lying server: drops the masked inputs of live clients that separate a small group from
    the rest (declares them dead), skips its own survivor check, and asks everyone to sign that U3."""

    victims: frozenset[int] = frozenset()

    def check_survivors(self, u3: frozenset[int]) -> None:
        return None

    def masked_input_collection(self, uploads):  # noqa: ANN001, ANN201
        return super().masked_input_collection((c, d) for c, d in uploads if c not in self.victims)


def test_active_server_declaring_live_clients_dead_to_isolate_a_group_gets_no_share() -> None:
    n = 16
    x = _inputs(n, seed=6)
    kw = dict(graph="secagg+", neighbours=4, threshold=4, seed=8, dropout_fraction=0.3, variant="active")
    params = SessionParams.create(n, 3, M, **kw)
    order = params.graph.ring_order()
    cls = type("S", (_DeclaresBoundaryDead,), {"victims": frozenset(order[p] for p in (0, 1, 4, 5))})
    sess = Session(x, modulus=M, server_class=cls, **kw)
    with pytest.raises(ProtocolAborted) as info:
        sess.run()
    assert all(not c.released for c in sess.clients.values())
    assert not any(e.kind == "unmasking-response" for e in info.value.ledger)
    rules_seen = {getattr(e, "rule", None) for e in info.value.client_errors.values()}
    assert "survivors-connected" in rules_seen


def test_server_rounds_out_of_order_replayed_or_skipped_are_state_errors() -> None:
    """Driving the server directly: each round once, in order; the consistency round only when active."""
    sess = Session(_inputs(5), modulus=M, seed=9)
    s, cl = sess.server, sess.clients
    ups = {u: c.advertise_keys() for u, c in cl.items()}
    with pytest.raises(StateError):
        s.masked_input_collection(iter(()))  # skipping share-keys
    kl = s.advertise_keys(iter(ups.items()))
    with pytest.raises(StateError):
        s.advertise_keys(iter(ups.items()))  # replaying round 0
    sk = {u: cl[u].share_keys(kl[u]) for u in kl}
    cts = s.share_keys(iter(sk.items()))
    mi = {u: cl[u].masked_input_collection(cts[u]) for u in cts}
    with pytest.raises(InvalidInput):
        s.consistency_check(iter(()))  # no such round in honest-but-curious
    with pytest.raises(StateError):
        s.unmasking(iter(()))  # before the masked inputs
    req = s.masked_input_collection(iter(mi.items()))
    with pytest.raises(StateError):
        s.masked_input_collection(iter(mi.items()))  # a second accumulation would double-count
    resp = {u: cl[u].unmasking(req[u]) for u in req}
    total = s.unmasking(iter(resp.items()))
    assert np.array_equal(total, _inputs(5).sum(0) % M)
    with pytest.raises(StateError):
        s.unmasking(iter(resp.items()))  # nothing more after the release
    with pytest.raises(StateError):
        cl[0].unmasking(req[0])  # a client answers one request only


# ------------------------------------------------------------------------- corrupt clients bridging a cut
# A live corrupt client in U3 keeps G[U3] connected while revealing its mask keys, so what privacy needs
# is G[U3 \ C] connected (and fewer than t corrupt holders of every client). The survivor policy cannot
# see C. On SecAgg+ both hold with probability 1 - 2^-40 over the session's random relabelling for C and
# the dropouts fixed independently of it (the finder's union bounds); the tests below show the guarantee
# inside that model, the exact boundary outside it, and the survivors' robustness that holds for any
# placement (rules.survivor_tolerance, reported in AggregationResult.guarantee).

def _honest_split(graph, u3: frozenset[int], corrupt: set[int]) -> bool:  # noqa: ANN001
    return len(rules.survivor_components(graph, frozenset(u3 - corrupt))) > 1


def _corrupt_holders(graph, corrupt: set[int]) -> int:  # noqa: ANN001
    return max(len(graph.closed_neighbourhood(u) & corrupt) for u in range(graph.n))


@pytest.mark.slow
@pytest.mark.parametrize(("n", "gamma", "delta", "draws"), [(40, 0.05, 0.1, 150), (100, 0.05, 0.05, 80),
                                                           (200, 0.05, 0.1, 25), (1000, 0.05, 0.05, 4)])
def test_inside_the_model_random_corrupt_set_and_dropouts_never_split_the_honest_survivors(n, gamma, delta, draws) -> None:
    """Bell et al.'s model: floor(gamma n) corrupt clients and floor(delta n) dropouts drawn at random,
    independently of the session's relabelling (their own RNG; the graph comes from the session seed), at
    the finder's (k, t) for the declared gamma, delta. Every draw is run by the protocol's rules (the
    modular backend, which the real protocol matches bit for bit) with the dropouts at random rounds:
    each completes (the finder bounds a failure by 2^-20 per session, so one abort in these draws would
    be a defect, not chance), and in every released U3 the honest survivors G[U3 \\ C] are connected and
    no client has t corrupt holders (each failure has probability < 2^-40 per draw)."""
    b, dn = rules.floor_fraction(n, gamma), rules.floor_fraction(n, delta)
    rng = np.random.default_rng(n)
    x = np.zeros((n, 1), dtype=np.uint64)
    for s in range(draws):
        kw = dict(graph="secagg+", seed=1000 + s, corrupt_fraction=gamma, dropout_fraction=delta)
        params = SessionParams.create(n, 1, M, **kw)
        perm = rng.permutation(n)
        corrupt = set(perm[:b].tolist())
        rounds = rng.choice(CUT_ROUNDS, size=dn)
        drops = {int(u): str(r) for u, r in zip(perm[b:b + dn], rounds)}
        total, included, _ = modular_run(x, dim=1, modulus=M, dropouts=drops, **kw)
        u3 = frozenset(included)
        assert len(u3) >= params.min_survivors
        assert not _honest_split(params.graph, u3, corrupt), (n, s)
        assert _corrupt_holders(params.graph, corrupt) < params.threshold, (n, s)


def test_inside_the_model_real_protocol_releases_the_sum_and_states_the_assumption() -> None:
    """The real protocol on one in-model draw at n = 200 (finder's k = 24, t = 11 for gamma = 0.05,
    delta = 0.1): correct sum, honest survivors connected, and the result's guarantee is the exact
    robustness of these survivors: 20 random dropouts rarely fall in two runs of k/2, so here they
    withstand any 10 = floor(gamma n) corrupt clients however chosen, and the text says which case
    applies (the assumption is named exactly when they do not)."""
    n = 200
    kw = dict(graph="secagg+", seed=77, corrupt_fraction=0.05, dropout_fraction=0.1)
    params = SessionParams.create(n, 2, M, **kw)
    rng = np.random.default_rng(78)
    perm = rng.permutation(n)
    corrupt = set(perm[:10].tolist())
    drops = {int(u): "masked-input" for u in perm[10:30]}
    x = _inputs(n, 2, seed=79)
    res = run_secure_aggregation(x, modulus=M, dropouts=drops, **kw)
    assert np.array_equal(res.sum, x[list(res.included)].sum(0) % M)
    u3 = frozenset(res.included)
    assert not _honest_split(params.graph, u3, corrupt)
    g = res.guarantee
    assert g.corrupt == 10 and g.tolerance == rules.survivor_tolerance(params.graph, u3)
    assert g.threshold == 11 and g.any_corrupt == min(g.tolerance, 10) and g.adaptive is (g.tolerance >= 10)
    assert g.adaptive  # this draw: the dropouts left every pair of runs with >= 11 survivors
    assert "holds for any 10 = floor(gamma n) corrupt clients, however chosen" in str(g)
    assert "fixed independently" not in str(g)


def _adaptive_cut(params, corrupt_per_run: int = 1):  # noqa: ANN001, ANN202
    """The adversary's placement once the public graph is known: two runs of k/2 consecutive ring
    positions half a ring apart, ``corrupt_per_run`` corrupt (live) clients in the middle of each, every
    other client of the runs dropped. G[U3] stays connected through the corrupt clients; G[U3 \\ C]
    splits into the two arcs."""
    order = params.graph.ring_order()
    h = params.graph.k // 2
    runs = [list(range(1, 1 + h)), list(range(params.n // 2 + 1, params.n // 2 + 1 + h))]
    corrupt: set[int] = set()
    for run in runs:
        mid = len(run) // 2
        corrupt |= {order[p] for p in run[mid - corrupt_per_run // 2: mid - corrupt_per_run // 2 + corrupt_per_run]}
    dropped = {order[p] for run in runs for p in run} - corrupt
    return corrupt, dropped


def test_adaptive_dropouts_around_corrupt_clients_are_outside_the_model_and_reported() -> None:
    """The boundary, with the real protocol: n = 40, k = 6, t = 3, gamma = 0.05 (2 corrupt), delta = 0.1.
    Four dropouts (= floor(delta n)) placed after seeing the graph around two live corrupt clients pass
    every check the server can make (G[U3] connected, |U3| = 36 >= min_survivors), the sum is correct, and
    the honest survivors *are* split: the server and the 2 corrupt clients learn each arc's partial sum.
    This is outside the documented model (corrupt set and dropouts independent of the relabelling), and
    the result says so: these survivors withstand only 1 adaptively chosen corrupt client, fewer than
    floor(gamma n) = 2, and the guarantee text names the assumption. The opt-in rule
    check_survivor_policy(tolerate=2) refuses this U3 before anything is released."""
    n = 40
    kw = dict(graph="secagg+", neighbours=6, threshold=3, seed=12, dropout_fraction=0.1, corrupt_fraction=0.05)
    params = SessionParams.create(n, 3, M, **kw)
    assert params.min_survivors == 36
    corrupt, dropped = _adaptive_cut(params)
    assert len(corrupt) == 2 and len(dropped) == 4
    x = _inputs(n, seed=13)
    res = run_secure_aggregation(x, modulus=M, dropouts={u: "masked-input" for u in dropped}, **kw)
    u3 = frozenset(res.included)
    assert np.array_equal(res.sum, x[list(u3)].sum(0) % M)
    assert len(rules.survivor_components(params.graph, u3)) == 1  # all the policy can check
    assert _honest_split(params.graph, u3, corrupt)  # the attack works outside the model
    g = res.guarantee
    assert (g.tolerance, g.any_corrupt, g.corrupt, g.adaptive) == (1, 1, 2, False)
    assert "assumes that they and the dropouts were fixed independently of the session's random graph" in str(g)
    with pytest.raises(ProtocolAborted) as info:
        rules.check_survivor_policy("masked-input", params.graph, u3, params.min_survivors, tolerate=2)
    assert info.value.rule == "survivors-robust"
    rules.check_survivor_policy("masked-input", params.graph, u3, params.min_survivors, tolerate=1)
    # the same session without the adaptive placement withstands any 2 corrupt clients
    full = run_secure_aggregation(x, modulus=M, **kw).guarantee
    assert full.tolerance == 5 and full.adaptive is True and "holds for any 2 = floor(gamma n)" in str(full)
    assert "Bell et al." in str(g) and "Bell et al." not in str(full)


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_adaptive_opt_in_aborts_the_adaptive_placement_in_both_backends(variant: str) -> None:
    """adaptive=True on the boundary scenario (n = 40, k = 6, floor(gamma n) = 2; t = 3 and, active, t = 5
    with 2t > k + 1 + 2): the adaptive placement now aborts in masked-input, rule survivors-robust, before
    any share is asked for, identically in the real protocol and the modular backend; the same session
    without adaptive=True completes (and the modular backend's memo does not confuse the two)."""
    n = 40
    t = 3 if variant == "honest-but-curious" else 5
    kw = dict(graph="secagg+", neighbours=6, threshold=t, seed=12, dropout_fraction=0.1, corrupt_fraction=0.05,
              variant=variant)
    params = SessionParams.create(n, 3, M, adaptive=True, **kw)
    assert params.tolerate == 2
    corrupt, dropped = _adaptive_cut(params)
    drops = {u: "masked-input" for u in dropped}
    x = _inputs(n, seed=13)
    plain, plain_mod = _both(x, dropouts=drops, **kw)
    assert plain[0] == plain_mod[0] == "ok"
    real, mod = _both(x, dropouts=drops, adaptive=True, **kw)
    _assert_same(real, mod, x)
    assert real[:2] == ("abort", "masked-input") and real[3] == "survivors-robust"
    assert not any(e.kind == "unmasking-request" for e in real[4])
    # dropouts spread over the ring pass, and the guarantee then holds for any placement
    ok = run_secure_aggregation(x, modulus=M, dropouts={u: "masked-input" for u in _spread(params, 4)},
                                adaptive=True, **kw)
    assert ok.guarantee.adaptive is True and ok.guarantee.tolerance >= 2


def test_adaptive_opt_in_clients_refuse_to_sign_for_a_lying_server() -> None:
    """Active variant, adaptive=True: a lying server that skips its own survivor check and declares the
    clients around two corrupt ones dead gets no signature and no share: every client applies the same
    rule (survivors-robust) to the U3 it is asked to sign."""
    n = 40
    kw = dict(graph="secagg+", neighbours=6, threshold=5, seed=12, dropout_fraction=0.1, corrupt_fraction=0.05,
              variant="active", adaptive=True)
    params = SessionParams.create(n, 3, M, **kw)
    _, dropped = _adaptive_cut(params)
    cls = type("S", (_DeclaresBoundaryDead,), {"victims": frozenset(dropped)})
    sess = Session(_inputs(n, seed=14), modulus=M, server_class=cls, **kw)
    with pytest.raises(ProtocolAborted) as info:
        sess.run()
    assert all(not c.released for c in sess.clients.values())
    assert not any(e.kind == "unmasking-response" for e in info.value.ledger)
    assert {getattr(e, "rule", None) for e in info.value.client_errors.values()} == {"survivors-robust"}


def test_adaptive_opt_in_refuses_parameters_no_check_can_certify() -> None:
    """Where t <= floor(gamma n) (the finder's parameters for n = 1000) corrupt clients chosen after the
    graph can be t holders of one client: adaptive=True is refused before anything runs, naming the
    bound. Explicit neighbours and threshold above floor(gamma n) are accepted; the complete graph needs
    nothing (tolerate stays 0); bad values are typed errors."""
    with pytest.raises(InvalidInput, match=r"adaptive=True needs t > 50"):
        SessionParams.create(1000, 1, M, graph="secagg+", adaptive=True)
    with pytest.raises(InvalidInput, match=r"2t > 9"):
        SessionParams.create(40, 1, M, graph="secagg+", neighbours=6, threshold=4, variant="active", adaptive=True)
    assert SessionParams.create(1000, 1, M, graph="secagg+", neighbours=120, threshold=61, adaptive=True).tolerate == 50
    assert SessionParams.create(10, 1, M, adaptive=True).tolerate == 0
    for bad in (1, "yes", None):
        with pytest.raises(InvalidInput):
            SessionParams.create(10, 1, M, adaptive=bad)
    with pytest.raises(InvalidInput):
        SessionParams.create(10, 1, M, protocol="plaintext", adaptive=True)


def test_adaptive_placement_at_the_finders_parameters_for_n_1000() -> None:
    """Not an artefact of a small hand-picked k: at the finder's own (k, t) = (30, 17) for n = 1000,
    gamma = delta = 0.05, two corrupt clients and k - 2 = 28 <= floor(delta n) = 50 dropouts placed on
    the graph pass the survivor policy and the reconstructibility checks, and split the honest survivors
    (modular backend: the protocol's own rules)."""
    n = 1000
    kw = dict(graph="secagg+", seed=5, corrupt_fraction=0.05, dropout_fraction=0.05)
    params = SessionParams.create(n, 1, M, **kw)
    assert (params.graph.k, params.threshold, params.min_survivors) == (30, 17, 950)
    # and no run-time check could certify an adaptive guarantee here: t = 17 <= floor(gamma n) = 50, so
    # corrupt clients chosen after the graph can be t holders of one client
    assert params.threshold <= rules.floor_fraction(n, 0.05)
    corrupt, dropped = _adaptive_cut(params)
    assert len(dropped) == 28
    _, included, _ = modular_run(np.zeros((n, 1), dtype=np.uint64), dim=1, modulus=M,
                                 dropouts={u: "masked-input" for u in dropped}, **kw)
    u3 = frozenset(included)
    assert len(u3) == n - 28 and _honest_split(params.graph, u3, corrupt)
    assert params.guarantee(u3).adaptive is False and params.guarantee(u3).any_corrupt == 1


@pytest.mark.parametrize(("n", "gamma", "delta"), [(40, 0.05, 0.1), (100, 0.05, 0.05), (159, 0.05, 0.05)])
def test_small_n_finder_parameters_withstand_any_placement(n: int, gamma: float, delta: float) -> None:
    """Where the finder's k exceeds floor(gamma n) + floor(delta n) and t > floor(gamma n) (n <= 159 at
    gamma = delta = 0.05), removing the at most floor(delta n) dropouts from the k-connected Harary graph
    leaves G[U3] (k - floor(delta n))-connected: the adversary's best placement (all the dropouts in two
    runs around corrupt clients) still leaves the honest survivors connected, and the result reports a
    guarantee for any placement."""
    params = SessionParams.create(n, 1, M, graph="secagg+", seed=3, corrupt_fraction=gamma, dropout_fraction=delta)
    b, dn, k = rules.floor_fraction(n, gamma), rules.floor_fraction(n, delta), params.graph.k
    assert k > b + dn and params.threshold > b
    order = params.graph.ring_order()
    h = k // 2
    # the most damaging placement: the dropouts fill as much of two opposite runs as they can
    runs = list(range(1, 1 + h)) + list(range(n // 2 + 1, n // 2 + 1 + h))
    dropped = {order[p] for p in runs[:dn]}
    u3 = frozenset(range(n)) - dropped
    g = params.guarantee(u3)
    assert g.tolerance >= k - dn - 1 >= b and g.adaptive is True
    corrupt = {order[p] for p in runs[dn:dn + b]}
    assert not _honest_split(params.graph, u3, corrupt)


def test_survivor_tolerance_is_exact_against_brute_force() -> None:
    """survivor_tolerance = (vertex connectivity of G[U3]) - 1, checked against an exhaustive search
    over removed sets with the generic breadth-first search (Graph.components), on random seeded
    Harary graphs (n <= 13, k in {2, 4, 6}) and survivor sets, and on the complete graph."""
    import itertools
    import random

    from secagg.drbg import Drbg
    from secagg.graph import Graph, complete_graph, harary_graph

    def brute(g, xs: frozenset[int]) -> int:  # noqa: ANN001
        if len(xs) <= 1:
            return 0
        for size in range(len(xs) - 1):
            for rem in itertools.combinations(sorted(xs), size):
                if len(Graph.components(g, xs - frozenset(rem))) > 1:
                    return max(size - 1, 0)
        return len(xs) - 1

    rnd = random.Random(7)
    seen = set()
    for trial in range(300):
        n = rnd.randint(4, 13)
        k = rnd.choice([k_ for k_ in (2, 4, 6) if k_ < n])
        g = harary_graph(n, k, Drbg(trial, b"tolerance"))
        keep = rnd.choice([0.5, 0.8, 1.0])
        xs = frozenset(u for u in range(n) if rnd.random() < keep)
        got = rules.survivor_tolerance(g, xs)
        assert got == brute(g, xs), (n, k, sorted(xs))
        seen.add(got)
    assert {0, 1, 2, 3} <= seen  # the search met disconnected, fragile and robust survivor sets
    assert rules.survivor_tolerance(complete_graph(6), frozenset(range(6))) == 5
    with pytest.raises(InvalidInput):
        rules.check_survivor_policy("masked-input", complete_graph(3), frozenset(range(3)), 2, tolerate=-1)


@pytest.mark.parametrize(("variant", "t", "bound"), [("honest-but-curious", 4, 3), ("active", 5, 2)])
def test_complete_graph_guarantee_counts_any_corrupt_clients(variant: str, t: int, bound: int) -> None:
    """Complete graph, n = 7: no graph assumption; any t - 1 corrupt clients (Bonawitz et al.'s
    honest-but-curious bound), and in the active variant any n_C with 2t > n + n_C (t = 5: 2), whatever
    the dropouts (two here)."""
    res = run_secure_aggregation(_inputs(7), modulus=M, threshold=t, variant=variant, seed=4,
                                 dropouts={1: "share-keys", 5: "masked-input"})
    g = res.guarantee
    assert g.tolerance == 4 and g.any_corrupt == bound and g.corrupt is None and g.adaptive is None
    assert str(g).endswith(f"; holds for any {bound} corrupt clients, however chosen, and any dropouts")


def test_docs_state_the_model_and_its_boundary() -> None:
    """docs/protocol.md states the assumption (corrupt set and dropouts independent of the relabelling)
    in the threat-model table and the Survivor policy section, and the limitation for adaptive placement."""
    from pathlib import Path

    text = " ".join(Path(__file__).resolve().parents[1].joinpath("docs", "protocol.md").read_text().split())
    policy = text[text.index("## Survivor policy"):text.index("## Wire format")]
    table = text[text.index("### What the server learns"):text.index("Assumptions behind every row")]
    for part in (policy, table):
        assert "fixed independently of the relabelling" in part
    assert "chosen after seeing the graph are outside it" in policy and "survivor_tolerance" in policy
    assert "k > floor(gamma n) + floor(delta n)" in policy and "never hold once `floor(gamma n) >= k`" in policy
    assert "`adaptive=True`" in policy and "`adaptive=True`" in table


# ------------------------------------------------------------------------- random schedules, both backends
_DROP = st.sampled_from(ROUNDS).flatmap(lambda r: st.sampled_from([r, r + ":after"]))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.data())
def test_random_schedules_real_and_modular_agree(data) -> None:  # noqa: ANN001
    """Random n, graph, variant, t, delta and dropout schedule: the real protocol and the modular backend
    give the same U-sets and sum, or the same abort (round, reason, rule), with equal ledgers."""
    variant = data.draw(st.sampled_from(["honest-but-curious", "active"]))
    sparse = data.draw(st.booleans())
    if sparse:
        n = data.draw(st.integers(7, 12))
        k = data.draw(st.sampled_from([2, 4]))
        h = k + 1
        kw: dict = dict(graph="secagg+", neighbours=k, dropout_fraction=data.draw(st.sampled_from([0.05, 0.2, 0.4])))
    else:
        n = data.draw(st.integers(2, 7))
        h = n
        kw = dict(graph="complete")
        if data.draw(st.booleans()):
            kw["dropout_fraction"] = data.draw(st.sampled_from([0.1, 0.3]))
    lo = h // 2 + 1 if variant == "active" else 2
    if variant == "active" and sparse:  # and 2t > k + 2 (secagg.rules.check_interleaving_threshold)
        lo = max(lo, k // 2 + 2)
    if lo > h:
        return
    kw["threshold"] = data.draw(st.integers(lo, h))
    kw["variant"] = variant
    kw["seed"] = data.draw(st.integers(0, 3))
    drops = data.draw(st.dictionaries(st.integers(0, n - 1), _DROP, max_size=n))
    x = _inputs(n, 2, seed=kw["seed"])
    real, mod = _both(x, dropouts=drops, **kw)
    _assert_same(real, mod, x)
    if real[0] == "ok":
        params = SessionParams.create(n, 2, M, **{k_: v for k_, v in kw.items()})
        assert len(real[1]) >= params.min_survivors
        assert len(rules.survivor_components(params.graph, frozenset(real[1]))) == 1


@pytest.mark.parametrize("backend", ["protocol", "modular"])
def test_adaptive_opt_in_through_secure_average_the_rfa_oracles_and_the_cli(backend: str, capsys) -> None:  # noqa: ANN001
    """adaptive=True reaches every entry point: secure_average (both backends) aborts the adaptive placement
    of the boundary scenario (rule survivors-robust) where the default completes; the rfa oracles pass it on;
    `secagg simulate --adaptive` builds its parameters with the tolerance and refuses where no survivor
    check can certify the guarantee (exit 2, nothing run)."""
    import torch

    import rfa
    from secagg import cli
    from secagg.average import secure_average

    n = 40
    kw = dict(graph="secagg+", neighbours=6, threshold=3, seed=12, dropout_fraction=0.1, corrupt_fraction=0.05)
    params = SessionParams.create(n, 3, M, adaptive=True, **kw)
    _, dropped = _adaptive_cut(params)
    drops = {u: "masked-input" for u in dropped}
    v = np.random.default_rng(3).normal(size=(n, 4))
    ok = secure_average(v, dropouts=drops, backend=backend, clip=4.0, **kw)
    assert len(ok.included) == n - len(dropped)
    with pytest.raises(ProtocolAborted) as info:
        secure_average(v, dropouts=drops, backend=backend, clip=4.0, adaptive=True, **kw)
    assert info.value.rule == "survivors-robust"
    oracle_cls = rfa.ModularOracle if backend == "modular" else rfa.SecAggOracle
    # the oracles pass it on: at m = 400 the finder's (k, t) cannot certify it, and the call says so
    big = torch.as_tensor(np.random.default_rng(4).normal(size=(400, 2)))
    with pytest.raises(InvalidInput, match="adaptive=True needs"):
        oracle_cls(seed=1, value_bound=4.0, graph="secagg+", adaptive=True)(big, torch.ones(400, dtype=torch.float64))
    oracle_cls(seed=1, value_bound=4.0, graph="secagg+")(big, torch.ones(400, dtype=torch.float64))
    if backend == "protocol":
        assert cli.main(["simulate", "-n", "100", "-d", "4", "--graph", "secagg+", "--adaptive", "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["ok"]
        assert cli.main(["simulate", "-n", "400", "-d", "4", "--graph", "secagg+", "--adaptive"]) == 2
        assert "adaptive=True needs" in capsys.readouterr().err
