"""End-to-end properties of the protocol engine (secagg.protocol / client / server / transport).

* Exact sum over U3 for random n (2..30), t, d, M (powers of two, odd moduli, primes, 2^64), both
  variants, both graphs (complete; SecAgg+ Harary with random degree) and random dropout schedules
  over every round (before or after sending). An independent model of who survives predicts U1..U5
  and whether/where the protocol must abort; the engine must agree exactly.
* Aborts name the right round and release nothing.
* Pairwise masks cancel; a client without neighbours adds only its self mask.
* Masked inputs are uniform over Z_M (chi-square, stated false-alarm rates), and M - 1 occurs.
* Reproducibility from a seed; input validation; default thresholds; the ``secagg simulate`` CLI.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from secagg import prg, ring
from secagg.cli import main as secagg_main
from secagg.commands.simulate import format_report, random_inputs, simulate
from secagg.drbg import Drbg
from secagg.errors import InvalidInput, ProtocolAborted
from secagg.graph import Graph, find_secagg_plus_params
from secagg.messages import ROUNDS, MaskedInput
from secagg.protocol import Session, _setup_graph, default_threshold, rounds_for, run_secure_aggregation

VARIANTS = ("honest-but-curious", "active")


# ------------------------------------------------------------------------------------------------
# an independent model of the survivor sets
# ------------------------------------------------------------------------------------------------
def predict(n: int, t: int, graph: Graph, variant: str, schedule: dict[int, tuple[int, bool]],
            delta: float | None = None):
    """("abort", round) or ("ok", sets) from the dropout schedule alone (protocol.md + our checks).

    A client sends in round r iff it has no dropout, or drops at a later round, or drops at r after
    sending. Clients abort on their own when fewer than t of their neighbourhood (self included)
    appear in the key list (U1) or among the ciphertext senders (U2). The server aborts when a round
    has < t messages or some secret it must reconstruct has < t live holders, and (survivor policy)
    when U3 is smaller than ceil((1 - delta) n) on a SecAgg+ graph (delta = 0.05 by default) or the
    survivors' graph G[U3] is disconnected (checked here with a union-find, not the engine's BFS).
    """

    def sends(u: int, r: int) -> bool:
        d = schedule.get(u)
        return d is None or r < d[0] or (r == d[0] and d[1])

    closed = {u: set(graph.neighbours(u)) | {u} for u in range(n)}
    u1 = {u for u in range(n) if sends(u, 0)}
    if len(u1) < t:
        return "abort", "advertise-keys"
    u2 = {u for u in u1 if len(u1 & closed[u]) >= t and sends(u, 1)}
    if len(u2) < t:
        return "abort", "share-keys"
    u3 = {u for u in u2 if len(u2 & closed[u]) >= t and sends(u, 2)}
    if len(u3) < t:
        return "abort", "masked-input"
    if not graph.is_complete:
        dl = Fraction(repr(0.05 if delta is None else delta))
        if len(u3) < math.ceil((1 - dl) * n):
            return "abort", "masked-input"
    parent = {u: u for u in u3}

    def find(u: int) -> int:
        while parent[u] != u:
            u = parent[u]
        return u

    for u in u3:
        for v in closed[u] & u3:
            parent[find(u)] = find(v)
    if len({find(u) for u in u3}) > 1:
        return "abort", "masked-input"

    def reconstructible(alive: set[int]) -> bool:
        if any(len(closed[u] & alive) < t for u in u3):
            return False
        for v in u2 - u3:
            if (closed[v] - {v}) & u3 and len(closed[v] & alive) < t:
                return False
        return True

    if variant == "active":
        u4 = {u for u in u3 if sends(u, 3)}
        if len(u4) < t or not reconstructible(u4):
            return "abort", "consistency-check"
    else:
        if not reconstructible(u3):
            return "abort", "masked-input"
        u4 = u3
    u5 = {u for u in u4 if sends(u, 4)}
    if len(u5) < t or not reconstructible(u5):
        return "abort", "unmasking"
    return "ok", {"U1": u1, "U2": u2, "U3": u3, "U4": u4, "U5": u5}


def plain_sum(xs, ids, m: int) -> np.ndarray:  # noqa: ANN001
    acc = ring.zeros(xs[0].shape[0], m)
    for u in ids:
        ring.add_into(acc, xs[u], m)
    return acc


moduli = st.one_of(
    st.integers(1, 64).map(lambda b: 1 << b),
    st.sampled_from([3, 5, 7, 17, 251, 257, 65521, 2**31 - 1, 2**61 - 1, 2**64 - 59, 2**63 + 1]),
    st.integers(1, 2**40).map(lambda k: 2 * k + 1),
)
drop_specs = st.sampled_from([f"{r}{suffix}" for r in ROUNDS for suffix in ("", ":after")])


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 30))
    variant = draw(st.sampled_from(VARIANTS))
    sparse = n >= 5 and draw(st.booleans())
    k = draw(st.integers(1, (n - 2) // 2)).__mul__(2) if sparse else None
    holders = (k + 1) if sparse else n
    delta = draw(st.sampled_from([None, 0.3, 0.9])) if sparse else None  # the survivor bound's delta
    # active variant: 2t > holders, else the run is refused (secagg.rules.check_active_threshold); on
    # SecAgg+ also 2t > k + 2 (secagg.rules.check_interleaving_threshold)
    low = 2
    if variant == "active":
        low = max(holders // 2 + 1, k // 2 + 2 if sparse else 0)
    t = draw(st.integers(low, holders))  # t >= 2 always
    d = draw(st.integers(1, 50))
    m = draw(moduli)
    schedule = draw(st.dictionaries(st.integers(0, n - 1), drop_specs, max_size=n))
    seed = draw(st.integers(0, 2**32))
    return n, variant, k, t, d, m, schedule, seed, delta


@settings(max_examples=45)
@given(scenarios())
def test_exact_sum_over_u3_under_any_dropout_schedule(case) -> None:  # noqa: ANN001
    n, variant, k, t, d, m, schedule, seed, delta = case
    xs = random_inputs(n, d, m, seed)
    kwargs = dict(modulus=m, threshold=t, variant=variant, dropouts=schedule, seed=seed)
    if k is not None:
        kwargs.update(graph="secagg+", neighbours=k, dropout_fraction=delta)
    session = Session(xs, **kwargs)
    parsed = {u: (ROUNDS.index(s.split(":")[0]), s.endswith(":after")) for u, s in schedule.items()}
    expect = predict(n, t, session.graph, variant, parsed, delta)
    if expect[0] == "abort":
        with pytest.raises(ProtocolAborted) as info:
            session.run()
        assert info.value.round == expect[1]
        # nothing released: no client revealed a share unless the server got as far as unmasking
        if expect[1] != "unmasking":
            assert all(not c.released for c in session.clients.values())
            assert not any(e.kind == "unmasking-response" for e in info.value.ledger)
        assert session.server._acc is None
        return
    res = session.run()
    sets = expect[1]
    assert {k_: set(v) for k_, v in res.sets.items()} == sets
    assert res.included == tuple(sorted(sets["U3"]))
    assert res.sum.dtype == ring.dtype_for(m)
    assert np.array_equal(res.sum, plain_sum(xs, res.included, m))
    assert res.threshold == t and res.n == n and res.dim == d and res.modulus == m
    # an honest run never releases both share types for one client
    for c in session.clients.values():
        assert all(len(kinds) == 1 for kinds in c.released.values())
    assert set(res.timings) == set(ROUNDS)


@st.composite
def heavy_dropouts(draw):
    n = draw(st.integers(3, 12))
    variant = draw(st.sampled_from(VARIANTS))
    t = draw(st.integers(n // 2 + 1 if variant == "active" else max(2, n // 2), n))
    schedule = draw(st.dictionaries(st.integers(0, n - 1), drop_specs, min_size=1, max_size=n))
    sparse = n >= 6 and draw(st.booleans())
    t_sparse = max(2, min(t, 3)) if variant == "active" else min(t, 3)  # k = 2: 3 holders, active needs 2t > 3
    return n, variant, (2 if sparse else None), (t_sparse if sparse else t), schedule, draw(st.integers(0, 2**16))


@settings(max_examples=40)
@given(heavy_dropouts())
def test_heavy_dropouts_abort_exactly_when_predicted(case) -> None:  # noqa: ANN001
    """Dense schedules with large t: the engine aborts in exactly the predicted round, else sums exactly."""
    n, variant, k, t, schedule, seed = case
    m = 2**10
    xs = random_inputs(n, 3, m, seed)
    kw = dict(graph="secagg+", neighbours=k, dropout_fraction=0.9) if k else {}  # connectivity still checked
    session = Session(xs, modulus=m, threshold=t, variant=variant, dropouts=schedule, seed=seed, **kw)
    parsed = {u: (ROUNDS.index(s.split(":")[0]), s.endswith(":after")) for u, s in schedule.items()}
    expect = predict(n, t, session.graph, variant, parsed, 0.9 if k else None)
    if expect[0] == "abort":
        with pytest.raises(ProtocolAborted) as info:
            session.run()
        assert info.value.round == expect[1]
        assert session.server._acc is None
    else:
        res = session.run()
        assert {k_: set(v) for k_, v in res.sets.items()} == expect[1]
        assert np.array_equal(res.sum, plain_sum(xs, res.included, m))


@pytest.mark.parametrize("variant,n,t", [("honest-but-curious", 8, 3), ("active", 12, 7)])  # active: 2t > n
def test_dropped_after_masked_input_are_in_the_sum(variant: str, n: int, t: int) -> None:
    m = 2**16
    xs = random_inputs(n, 12, m, 5)
    later = "consistency-check" if variant == "active" else "unmasking"
    drops = {0: "masked-input", 1: "masked-input:after", 2: later, 3: "unmasking", 4: "share-keys:after"}
    res = run_secure_aggregation(xs, modulus=m, threshold=t, variant=variant, dropouts=drops, seed=1)
    assert res.included == (1, 2, 3) + tuple(range(5, n))
    assert set(res.sets["U2"]) == set(range(n)) and 0 not in res.sets["U3"] and 4 not in res.sets["U3"]
    assert set(res.sets["U5"]) == set(range(5, n))
    assert np.array_equal(res.sum, plain_sum(xs, res.included, m))


@pytest.mark.parametrize(
    "variant,drops,round_",
    [
        ("honest-but-curious", {0: "advertise-keys", 1: "advertise-keys", 2: "advertise-keys"}, "advertise-keys"),
        ("honest-but-curious", {0: "share-keys", 1: "advertise-keys:after", 2: "share-keys"}, "share-keys"),
        ("honest-but-curious", {0: "masked-input", 1: "masked-input", 2: "share-keys"}, "masked-input"),
        ("active", {0: "consistency-check", 1: "masked-input:after", 2: "consistency-check"}, "consistency-check"),
        ("honest-but-curious", {0: "unmasking", 1: "masked-input:after", 2: "consistency-check"}, "unmasking"),
        ("active", {0: "unmasking", 1: "consistency-check:after", 2: "unmasking"}, "unmasking"),
    ],
)
def test_abort_names_the_round_and_releases_nothing(variant: str, drops: dict, round_: str) -> None:
    xs = random_inputs(5, 6, 2**8, 0)
    session = Session(xs, modulus=2**8, threshold=3, variant=variant, dropouts=drops, seed=0)
    with pytest.raises(ProtocolAborted) as info:
        session.run()
    exc = info.value
    assert exc.round == round_ and exc.party is None
    assert session.server._acc is None
    if round_ != "unmasking":
        assert not any(e.kind == "unmasking-response" for e in exc.ledger)
        assert all(not c.released for c in session.clients.values())


# ------------------------------------------------------------------------------------------------
# masks
# ------------------------------------------------------------------------------------------------
def _capture_uploads(store: dict):  # noqa: ANN202
    def hook(rnd: str, direction: str, client: int, data: bytes) -> bytes:
        if rnd == "masked-input" and direction == "up":
            store[client] = data
        return data

    return hook


def _self_mask(session: Session, u: int, d: int, m: int) -> np.ndarray:
    """Recompute PRG(b_u) from client u's seed stream (test-only access to its secret)."""
    b = session.clients[u]._drbg.child(b"self-mask-seed").bytes(32)
    return prg.expand(b, session=session.session, purpose=prg.PURPOSE_SELF, dim=d, modulus=m)


@settings(max_examples=12)
@given(st.integers(2, 12), st.integers(1, 40), moduli, st.integers(0, 1000), st.booleans())
def test_pairwise_masks_cancel(n: int, d: int, m: int, seed: int, sparse: bool) -> None:
    """sum_u y_u = sum_u x_u + sum_u PRG(b_u): the pairwise masks p_uv + p_vu = 0 cancel."""
    xs = random_inputs(n, d, m, seed)
    ups: dict[int, bytes] = {}
    kw = dict(graph="secagg+", neighbours=2) if sparse and n >= 4 else {}
    session = Session(xs, modulus=m, threshold=2, seed=seed, interceptor=_capture_uploads(ups), **kw)
    session.run()
    total = ring.zeros(d, m)
    for u, data in ups.items():
        ring.add_into(total, MaskedInput.from_bytes(data).vector(m), m)
    expected = plain_sum(xs, range(n), m)
    for u in range(n):
        ring.add_into(expected, _self_mask(session, u, d, m), m)
    assert np.array_equal(total, expected)


@pytest.mark.parametrize("m", [2**32, 65521])
def test_client_without_neighbours_aborts_instead_of_sending_its_input_under_a_self_mask(m: int) -> None:
    """Client 1 never shares keys, so client 0's U2 view is {0}: its y_0 would be x_0 + PRG(b_0) with a
    self mask only, which the server strips in round 4, releasing x_0 in the clear. With t >= 2 (always)
    client 0 aborts before sending y_0, and t = 1 is refused up front."""
    xs = random_inputs(2, 30, m, 3)
    ups: dict[int, bytes] = {}
    with pytest.raises(InvalidInput, match="t = 1 < 2"):
        Session(xs, modulus=m, threshold=1, seed=3, dropouts={1: "share-keys"})
    session = Session(xs, modulus=m, threshold=2, seed=3, dropouts={1: "share-keys"}, interceptor=_capture_uploads(ups))
    with pytest.raises(ProtocolAborted) as info:
        session.run()
    assert info.value.round == "share-keys" and "|U2|" in info.value.reason
    assert 0 not in ups and not any(e.kind == "masked-input" for e in info.value.ledger)


@pytest.mark.parametrize("m", [2**4, 2**8, 17, 251])
def test_masked_input_is_uniform_chi_square(m: int) -> None:
    """Chi-square goodness of fit of one client's y_u (constant input M-1) over 2^15 coordinates.

    H0: y_u uniform over Z_M. The test rejects at p < 1e-6, so its false-alarm rate is 1e-6 per
    modulus (4e-6 for the four moduli); being seeded, it is deterministic. Also checks that every
    residue, M - 1 in particular, occurs (expected count >= 128 per residue, P[a residue never
    occurs] < M (1 - 1/M)^(2^15) < 1e-50).
    """
    d = 1 << 15
    xs = [np.full(d, m - 1, dtype=ring.dtype_for(m)) for _ in range(3)]
    ups: dict[int, bytes] = {}
    run_secure_aggregation(xs, modulus=m, threshold=2, seed=11, interceptor=_capture_uploads(ups))
    for u in (0, 2):
        y = MaskedInput.from_bytes(ups[u]).vector(m)
        counts = np.bincount(y.astype(np.int64), minlength=m)
        assert counts.shape[0] == m
        assert counts.min() > 0 and counts[m - 1] > 0
        p = stats.chisquare(counts).pvalue
        assert p > 1e-6, (m, u, p)


def test_masked_input_uniform_across_sessions() -> None:
    """Coordinate 0 of client 0's masked input over 600 seeded sessions (n=2, M=7, input 0).

    Chi-square with 6 degrees of freedom, rejection at p < 1e-6: false-alarm rate 1e-6. Every residue,
    including M - 1 = 6, must occur (P[a residue is missing] < 7 (6/7)^600 < 1e-38).
    """
    m = 7
    xs = [np.zeros(1, dtype=np.uint8), np.zeros(1, dtype=np.uint8)]
    vals = []
    for seed in range(600):
        ups: dict[int, bytes] = {}
        run_secure_aggregation(xs, modulus=m, threshold=2, seed=seed, interceptor=_capture_uploads(ups))
        vals.append(int(MaskedInput.from_bytes(ups[0]).vector(m)[0]))
    counts = np.bincount(vals, minlength=m)
    assert counts.min() > 0 and counts[m - 1] > 0
    assert stats.chisquare(counts).pvalue > 1e-6


# ------------------------------------------------------------------------------------------------
# reproducibility, thresholds, validation
# ------------------------------------------------------------------------------------------------
def _wire(seed, variant="honest-but-curious"):  # noqa: ANN001, ANN202
    msgs: list = []

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        msgs.append((rnd, direction, client, data))
        return data

    xs = random_inputs(6, 9, 2**20, 4)
    res = run_secure_aggregation(xs, modulus=2**20, seed=seed, variant=variant, dropouts={5: "masked-input"}, interceptor=hook)
    return res, msgs


@pytest.mark.parametrize("variant", VARIANTS)
def test_seeded_runs_are_reproducible(variant: str) -> None:
    a, wa = _wire(123, variant)
    b, wb = _wire(123, variant)
    c, wc = _wire(124, variant)
    assert wa == wb  # every byte on the wire
    assert a.session == b.session and a.ledger == b.ledger and np.array_equal(a.sum, b.sum) and a.sets == b.sets
    assert c.session != a.session
    assert np.array_equal(c.sum, a.sum)  # same inputs, same result
    masked = lambda w: [d for r, di, _, d in w if r == "masked-input" and di == "up"]  # noqa: E731
    assert all(x != y for x, y in zip(masked(wa), masked(wc)))
    # seed=None: fresh randomness, still correct
    n1, _ = _wire(None, variant)
    n2, _ = _wire(None, variant)
    assert n1.session != n2.session and np.array_equal(n1.sum, a.sum)


def test_default_thresholds_and_graph_selection() -> None:
    for n in (2, 3, 10, 31):
        g, t = _setup_graph(n, "complete", "honest-but-curious", None, None, 0.05, 0.05, Drbg(0))
        assert g.is_complete and t == n // 2 + 1
        g, t = _setup_graph(n, "complete", "active", None, None, 0.05, 0.05, Drbg(0))
        assert t == (2 * n) // 3 + 1 and t <= n
    # SecAgg+ parameter finder (vectors.md) and fallback to the complete graph for small n
    g, t = _setup_graph(1000, "secagg+", "honest-but-curious", None, None, 0.05, 0.05, Drbg(0))
    assert (g.k, t, g.is_complete) == (30, 17, False)
    g, t = _setup_graph(1000, "secagg+", "active", None, None, 0.05, 0.05, Drbg(0))
    assert (g.k, t) == (52, 37)
    g, t = _setup_graph(20, "secagg+", "active", None, None, 0.05, 0.05, Drbg(0))
    # the active setting: semi-malicious (fcp's k = 4, t = 3 here) with 2t > k + 2, which k = 4 cannot
    # meet within the correctness bound
    assert (g.k, t) == find_secagg_plus_params(20, 0.05, 0.05, "active") == (6, 5)
    assert find_secagg_plus_params(20, 0.05, 0.05, "semi-malicious") == (4, 3)
    # no sparse k for n = 5 at 30% corrupt / 30% dropout: complete graph with its default t
    assert find_secagg_plus_params(5, 0.3, 0.3) is None
    g, t = _setup_graph(5, "secagg+", "honest-but-curious", None, None, 0.3, 0.3, Drbg(0))
    assert g.is_complete and t == 3
    g, t = _setup_graph(20, "secagg+", "active", None, 6, 0.05, 0.05, Drbg(0))
    assert g.k == 6 and t == default_threshold(7, "active") == 5
    res = run_secure_aggregation(
        random_inputs(5, 3, 2**8, 0), modulus=2**8, graph="secagg+", corrupt_fraction=0.3, dropout_fraction=0.3, seed=0
    )
    assert res.graph.is_complete and res.threshold == 3 and res.graph_name == "secagg+"
    res = run_secure_aggregation(random_inputs(10, 3, 2**8, 0), modulus=2**8, graph="secagg+", seed=0)
    assert (res.graph.k, res.threshold) == find_secagg_plus_params(10) and not res.graph.is_complete


def test_secagg_plus_run_uses_the_graph() -> None:
    """On a Harary graph, a client's key list and share ciphertexts cover only its neighbours."""
    n, k = 16, 4
    xs = random_inputs(n, 10, 2**12, 9)
    res = run_secure_aggregation(xs, modulus=2**12, graph="secagg+", neighbours=k, seed=9, dropouts={3: "masked-input"},
                                 dropout_fraction=0.1)
    assert res.graph.k == k and not res.graph.is_complete
    from secagg.messages import key_list_size, share_keys_size

    for e in res.ledger:
        if e.kind == "key-list":
            assert e.nbytes == key_list_size(k + 1, False)
        if e.kind == "share-keys":
            assert e.nbytes == share_keys_size(k)
    assert np.array_equal(res.sum, plain_sum(xs, res.included, 2**12))


@pytest.mark.parametrize(
    "inputs,kwargs",
    [
        ([[1, 2]], {}),  # n < 2
        ([[1, 2], [1]], {}),  # unequal lengths
        ([[1, 2], [3, 256]], {}),  # element >= M
        ([[1, 2], [3, -1]], {}),  # negative
        ([[1.0, 2.0], [3.0, 4.0]], {}),  # floats
        ([[], []], {}),  # empty vectors
        ([[[1]], [[2]]], {}),  # not 1-D
        ("abc", {}),  # not a sequence of vectors
        ([[1], [2]], {"modulus": 1}),
        ([[1], [2]], {"modulus": 2**64 + 1}),
        ([[1], [2]], {"threshold": 0}),
        ([[1], [2]], {"threshold": 3}),
        ([[1], [2]], {"threshold": True}),
        ([[1], [2]], {"graph": "star"}),
        ([[1], [2]], {"variant": "malicious"}),
        ([[1], [2]], {"dropouts": {0: "round-7"}}),
        ([[1], [2]], {"dropouts": {5: "unmasking"}}),
        ([[1], [2]], {"dropouts": {0: "unmasking:later"}}),
        ([[1], [2]], {"dropouts": ["unmasking"]}),
        ([[1], [2]], {"neighbours": 2}),  # neighbours on the complete graph
        ([[1]] * 10, {"graph": "secagg+", "neighbours": 3}),  # odd degree
        ([[1]] * 10, {"graph": "secagg+", "neighbours": 4, "threshold": 6}),  # t > k + 1
        ([[1], [2]], {"seed": -1}),
    ],
)
def test_invalid_inputs_raise_before_running(inputs, kwargs) -> None:  # noqa: ANN001
    kw = {"modulus": 256, **kwargs}
    with pytest.raises(InvalidInput):
        run_secure_aggregation(inputs, **kw)


def test_accepts_2d_array_and_numpy_ints() -> None:
    xs = np.arange(12, dtype=np.int64).reshape(3, 4)
    res = run_secure_aggregation(xs, modulus=2**5, seed=0, threshold=np.int64(2))
    assert np.array_equal(res.sum, xs.sum(axis=0) % 32)


def test_rounds_for_variants() -> None:
    assert rounds_for("active") == ROUNDS
    assert "consistency-check" not in rounds_for("honest-but-curious")


# ------------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------------
def test_simulate_report_and_cli(capsys) -> None:  # noqa: ANN001
    rep = simulate(
        clients=6, dim=20, modulus_bits=16, variant="active", threshold=4, drops=["0:unmasking", "1:masked-input:after"], seed=2
    )
    assert rep["ok"] and rep["matches_plaintext"] and rep["aborted"] is None
    assert rep["sets"]["U3"] == [0, 1, 2, 3, 4, 5] and rep["sets"]["U5"] == [2, 3, 4, 5] and rep["bytes"]["total"] > 0
    assert "YES" in format_report(rep)
    assert secagg_main(["simulate", "--clients", "5", "--dim", "8", "--seed", "1", "--dropout-rate", "0.2"]) == 0
    out = capsys.readouterr().out
    assert "plaintext sum" in out and "bytes on the wire: upload" in out
    # an abort: exit code 1 and the reason printed
    code = secagg_main(["simulate", "--clients", "4", "--dim", "4", "--threshold", "4", "--drop", "2:share-keys"])
    assert code == 1
    assert "ABORTED in round 'share-keys'" in capsys.readouterr().out
    # bad parameters: exit code 2
    assert secagg_main(["simulate", "--clients", "4", "--drop", "9:unmasking"]) == 2
    assert secagg_main(["simulate", "--clients", "1"]) == 2
    assert secagg_main(["simulate", "--modulus-bits", "65"]) == 2
    assert secagg_main(["simulate", "--clients", "4", "--modulus", "65521", "--graph", "secagg+", "--dim", "5"]) == 0
