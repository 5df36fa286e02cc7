"""Active SecAgg+ with ``consistency_view="window"``: U3 in O(k + log n) bytes per client.

The server commits to U3 with a Merkle tree over its ring bitmap (secagg.survivor_tree); each client
receives only the leaves of its two-hop window N2[w] with their authentication paths, checks the local
survivor rules (no k/2 consecutive ring positions without a survivor, |U3 ∩ N2[w]| >= t) and signs the
root. The attacks: a server that shows two arcs different roots (the split-view attack adapted to
neighbourhoods), forges, mixes or truncates proofs, skips its own survivor check and hands out a U3
that splits the ring, or replays a tree bound to another session. Each must end in an abort of the
clients it targets, with no client's two share types released and no partial sum computable.

Geometry: n = 24, k = 4 (N(v) ∪ {v} = 5 positions, N2[w] = 9 < n, k/2 = 2), t = 4, the smallest
threshold the window view accepts (2t > k + 2: secagg.rules.check_interleaving_threshold);
dropout_fraction = 0.25 so min_survivors = 18.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import ring, rules, survivor_tree
from secagg.commands.simulate import random_inputs
from secagg.cost import modular_run, our_model
from secagg.drbg import Drbg
from secagg.errors import InconsistentView, InvalidInput, MalformedMessage, ProtocolAborted, ProtocolViolation
from secagg.graph import harary_graph
from secagg.messages import (
    HEADER_SIZE,
    ConsistencyProof,
    ConsistencyRequest,
    UnmaskingRequest,
    consistency_proof_size,
    consistency_request_size,
)
from secagg.protocol import Session, SessionParams, run_secure_aggregation
from secagg.server import Server
from secagg.survivor_tree import LEAF_BITS, SurvivorTree, root_from_proof, tree_shape, window_leaves

from protocol_tests.test_active_splus_consistency import ArcSplit  # the split-view server of the full view

M = 2**16
N, K, D = 24, 4, 3
OPTS = dict(graph="secagg+", neighbours=K, threshold=4, variant="active", dropout_fraction=0.25,
            consistency_view="window")


def _session(server_class=None, *, n: int = N, seed: int = 5, **kw) -> Session:  # noqa: ANN001
    return Session(random_inputs(n, D, M, seed), modulus=M, seed=seed, server_class=server_class, **{**OPTS, **kw})


def _run(session: Session):  # noqa: ANN202
    try:
        return session.run(), None
    except ProtocolAborted as exc:
        return None, exc


def _both_types_released(session: Session) -> list[int]:
    """Clients whose b and s_sk were both revealed by some holders (the split view succeeded)."""
    got: dict[int, set[str]] = {}
    for c in session.clients.values():
        for v, kinds in c.released.items():
            got.setdefault(v, set()).update(kinds)
    return sorted(v for v, kinds in got.items() if kinds == {"b", "s_sk"})


def _expected(xs, included) -> np.ndarray:  # noqa: ANN001
    total = ring.zeros(D, M)
    for u in included:
        ring.add_into(total, xs[u], M)
    return total


# ------------------------------------------------------------------------------------------------
# the tree: shapes, coverage, round trips
# ------------------------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(5, 2000), st.integers(1, 200), st.integers(0, 2**16), st.data())
def test_window_leaves_cover_the_two_hop_window_with_a_fixed_count(n: int, half: int, seed: int, data) -> None:  # noqa: ANN001
    k = 2 * min(half, (n - 1) // 2)
    g = harary_graph(n, k, Drbg(seed))
    m, depth, c = tree_shape(n, k)
    assert m == -(-n // LEAF_BITS) and 2 ** depth >= m > 2 ** (depth - 1) if m > 1 else depth == 0
    for w in data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=5)):
        leaves = window_leaves(g, w)
        assert len(leaves) == c == len(set(leaves))
        needed = {p // LEAF_BITS for p in survivor_tree.window_positions(g, w)}
        assert needed <= set(leaves)
        assert {g.ring_order()[p] for p in survivor_tree.window_positions(g, w)} == g.two_hop_neighbourhood(w)


@settings(max_examples=40, deadline=None)
@given(st.integers(5, 1500), st.integers(1, 40), st.integers(0, 2**16), st.data())
def test_every_window_proof_leads_to_the_root_and_reads_u3_on_the_window(n: int, half: int, seed: int, data) -> None:  # noqa: ANN001
    k = 2 * min(half, (n - 1) // 2)
    g = harary_graph(n, k, Drbg(seed))
    u3 = frozenset(data.draw(st.sets(st.integers(0, n - 1), min_size=1)))
    session = bytes(range(16))
    tree = SurvivorTree(g, session, u3)
    for w in data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=4)):
        idx = window_leaves(g, w)
        leaves, paths = tree.proof(idx)
        assert root_from_proof(session, n, idx, leaves, paths) == tree.root
        assert survivor_tree.survivors_in_window(g, w, leaves) == u3 & g.two_hop_neighbourhood(w)
    # another U3, another session: another root
    other = u3 ^ {min(u3)} if len(u3) > 1 else u3 | {(min(u3) + 1) % n}
    assert SurvivorTree(g, session, other).root != tree.root
    assert SurvivorTree(g, bytes(16), u3).root != tree.root


def test_a_tampered_proof_is_refused_and_never_leads_to_the_root() -> None:
    g = harary_graph(1000, 8, Drbg(1))
    s = bytes(16)
    tree = SurvivorTree(g, s, range(0, 1000, 2))
    idx = window_leaves(g, 17)
    leaves, paths = tree.proof(idx)
    assert len(idx) >= 2 and tree.depth == 2
    flipped = (bytes([leaves[0][0] ^ 1]) + leaves[0][1:],) + leaves[1:]
    with pytest.raises(ProtocolViolation, match="another root"):  # the other leaves still lead to the root
        root_from_proof(s, 1000, idx, flipped, paths)
    alone = root_from_proof(s, 1000, idx[:1], flipped[:1], paths[:1])
    assert alone != tree.root  # a lone forged leaf gives a root nobody honest signs
    with pytest.raises(ProtocolViolation, match="sibling hashes"):
        root_from_proof(s, 1000, idx, leaves, (paths[0][:-1],) + paths[1:])
    with pytest.raises(ProtocolViolation):  # leaves in the wrong order (another root, or padding bits)
        root_from_proof(s, 1000, idx[::-1], leaves, paths)
    last = tree_shape(1000, 8)[0] - 1  # 1000 = 3 * 256 + 232: bits 232.. of the last leaf are padding
    lp = tree.proof((last,))
    bad = lp[0][0][:-1] + bytes([0x80])
    with pytest.raises(ProtocolViolation, match="past the last"):
        root_from_proof(s, 1000, (last,), (bad,), lp[1])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5000), st.integers(1, 30), st.data())
def test_consistency_proof_round_trips_with_its_documented_size(n: int, half: int, data) -> None:  # noqa: ANN001
    k = 2 * min(half, max(1, (n - 1) // 2))
    _, depth, c = tree_shape(n, k)
    leaves = tuple(data.draw(st.binary(min_size=32, max_size=32)) for _ in range(c))
    paths = tuple(tuple(bytes([i, j]) * 16 for j in range(depth)) for i in range(c))
    msg = ConsistencyProof("masked-input", bytes(16), 3, n, leaves, paths)
    raw = msg.to_bytes()
    assert len(raw) == consistency_proof_size(n, k) == HEADER_SIZE + 7 + 32 * c * (1 + depth)
    assert ConsistencyProof.from_bytes(raw) == msg
    for broken in (raw[:-1], raw + b"\0", raw[:HEADER_SIZE + 4] + b"\0\0" + raw[HEADER_SIZE + 6:]):
        with pytest.raises(MalformedMessage):
            ConsistencyProof.from_bytes(broken)
    with pytest.raises(InvalidInput):
        ConsistencyProof("masked-input", bytes(16), 3, n, leaves, paths[:-1] if c > 1 else ())


# ------------------------------------------------------------------------------------------------
# honest runs: sum, ledger, cost model, sizes
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("drops", [(), ((0, "masked-input"), (8, "share-keys"), (16, "consistency-check")),
                                   ((5, "unmasking"),)])
def test_honest_window_run_is_correct_and_its_ledger_matches_both_models(drops) -> None:  # noqa: ANN001
    order = SessionParams.create(N, D, M, seed=5, **OPTS).graph.ring_order()
    dropouts = {order[p]: r for p, r in drops} or None  # ring positions far apart: t holders stay live
    xs = random_inputs(N, D, M, 5)
    proofs: dict[int, ConsistencyProof] = {}

    def tap(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if direction == "down" and rnd == "masked-input":
            proofs[client] = ConsistencyProof.from_bytes(data)
        return data

    res = run_secure_aggregation(xs, modulus=M, seed=5, interceptor=tap, dropouts=dropouts, **OPTS)
    assert np.array_equal(res.sum, _expected(xs, res.included))
    size = consistency_proof_size(N, K)
    assert {len(p.to_bytes()) for p in proofs.values()} == {size}
    total, included, ledger = modular_run(np.stack(xs), dim=D, modulus=M, seed=5, dropouts=dropouts, **OPTS)
    assert ledger == res.ledger and tuple(included) == tuple(res.included)
    assert np.array_equal(total, res.sum)
    if dropouts is None:
        model = our_model(N, D, M, k=K, variant="active", consistency_view="window")
        assert model.total_up + model.total_down == res.ledger.total()
        kinds = res.ledger.by_kind()
        assert kinds["consistency-proof"] == N * size and "consistency-request" not in kinds


def test_window_view_download_is_o_k_plus_log_n_where_the_bitmap_is_theta_n() -> None:
    d, m = 1000, 2**32
    rows = []
    for n in (10**4, 10**5, 10**6):
        full = our_model(n, d, m, k=52, variant="active").download_per_client
        win = our_model(n, d, m, k=52, variant="active", consistency_view="window").download_per_client
        hbc = our_model(n, d, m, k=52).download_per_client
        proof = consistency_proof_size(n, 52)
        bitmap = consistency_request_size(0, n)
        assert win - proof == full - bitmap  # everything else is the same message
        rows.append((n, full, win, hbc, proof))
    # the proof grows by one hash per leaf and tree level: 32 c bytes per doubling of n
    _, _, c = tree_shape(10**6, 52)
    assert rows[2][4] - rows[1][4] == 32 * c * (tree_shape(10**6, 52)[1] - tree_shape(10**5, 52)[1])
    # the window view stays flat (a few hundred bytes more per tenfold n), the bitmap grows with n
    assert rows[2][2] - rows[0][2] < 1000 < rows[2][1] - rows[0][1]
    assert rows[2][1] > 6 * rows[2][2]


# ------------------------------------------------------------------------------------------------
# parameters
# ------------------------------------------------------------------------------------------------
def test_window_view_is_refused_where_it_does_not_apply() -> None:
    xs = random_inputs(N, D, M, 5)
    for bad in (dict(variant="honest-but-curious"), dict(graph="complete", neighbours=None),
                dict(consistency_view="merkle"), dict(consistency_view=None)):
        with pytest.raises(InvalidInput):
            run_secure_aggregation(xs, modulus=M, seed=5, **{**OPTS, **bad})
    with pytest.raises(InvalidInput, match="plaintext"):
        SessionParams.create(8, 2, M, protocol="plaintext", consistency_view="window", seed=1)
    with pytest.raises(InvalidInput):
        our_model(N, D, M, k=K, consistency_view="window")  # honest-but-curious
    p = SessionParams.create(N, D, M, seed=5, **OPTS)
    assert p.window_view and p.consistency_view == "window"


# ------------------------------------------------------------------------------------------------
# the gap rule
# ------------------------------------------------------------------------------------------------
def _run_of(graph, start: int, length: int) -> list[int]:  # noqa: ANN001
    order = graph.ring_order()
    return [order[(start + j) % graph.n] for j in range(length)]


def test_a_gap_of_k_over_2_aborts_a_window_session_before_any_request_in_both_backends() -> None:
    g = SessionParams.create(N, D, M, seed=5, **OPTS).graph
    drops = {u: "masked-input" for u in _run_of(g, 6, K // 2)}  # one gap: G[U3] stays connected
    xs = random_inputs(N, D, M, 5)
    with pytest.raises(ProtocolAborted) as exc:
        run_secure_aggregation(xs, modulus=M, seed=5, dropouts=drops, **OPTS)
    assert exc.value.rule == "survivors-gap" and exc.value.round == "masked-input"
    assert "consistency-proof" not in exc.value.ledger.by_kind()  # nothing was sent for signing
    with pytest.raises(ProtocolAborted) as exc2:
        modular_run(np.stack(xs), dim=D, modulus=M, seed=5, dropouts=drops, **OPTS)
    assert exc2.value.rule == "survivors-gap" and exc2.value.ledger == exc.value.ledger
    # the full view gets further, and stops for want of live holders next to the gap (t = k/2 + 2 > k/2 + 1)
    with pytest.raises(ProtocolAborted) as exc3:
        run_secure_aggregation(xs, modulus=M, seed=5, dropouts=drops, **{**OPTS, "consistency_view": "full"})
    assert exc3.value.round == "consistency-check" and exc3.value.rule == "reconstructible"
    # one position fewer is allowed
    drops = {u: "masked-input" for u in _run_of(g, 6, K // 2 - 1)}
    res = run_secure_aggregation(xs, modulus=M, seed=5, dropouts=drops, **OPTS)
    assert np.array_equal(res.sum, _expected(xs, res.included))


def test_longest_gap_matches_a_brute_force_count() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(3, 60))
        k = 2 * int(rng.integers(1, max(2, (n - 1) // 2)))
        g = harary_graph(n, min(k, n - 1 - (n - 1) % 2) or 2, Drbg(int(rng.integers(1 << 30))))
        members = frozenset(int(u) for u in np.flatnonzero(rng.random(n) < rng.random()))
        bits = [g.ring_order()[p] in members for p in range(n)]
        brute = 0
        for s in range(n):
            run = 0
            while run < n and not bits[(s + run) % n]:
                run += 1
            brute = max(brute, run)
        assert rules.longest_gap(g, members) == brute


# ------------------------------------------------------------------------------------------------
# lying servers
# ------------------------------------------------------------------------------------------------
def _pos(graph) -> dict[int, int]:  # noqa: ANN001
    return {u: p for p, u in enumerate(graph.ring_order())}


class TwoRoots(ArcSplit):
    """The split-view attack on the window view (ArcSplit of the full view's tests, with roots): the arc
    of the ring ending at the live victim is shown a tree with U3 = everyone, the rest a tree without
    the victim. Each client receives a genuine proof of its own tree and only the (genuine) signatures
    of its own arc; requests follow each client's U3."""

    VICTIM = 0

    def _tree(self, side: int) -> SurvivorTree:
        u3 = self.sets["U3"] if side == 0 else self.sets["U3"] - {self.VICTIM}
        return SurvivorTree(self.graph, self.session, u3)

    def consistency_request_for(self, u: int) -> ConsistencyProof:
        leaves, paths = self._tree(self._side(u)).proof(window_leaves(self.graph, u))
        return ConsistencyProof("masked-input", self.session, u, self.n, leaves, paths)


def test_two_roots_for_two_arcs_never_release_both_shares_of_the_victim() -> None:
    s = _session(TwoRoots)
    out, err = _run(s)
    assert out is None and err is not None
    assert _both_types_released(s) == []
    holders = s.params.graph.closed_neighbourhood(TwoRoots.VICTIM)
    # the victim's holders on both arcs saw too few signers over their root for it
    refused = [u for u in holders if s.clients[u].aborted is not None]
    assert refused and all(isinstance(s.clients[u].aborted, (ProtocolAborted, InconsistentView)) for u in refused)


class ForwardsOtherRoot(TwoRoots):
    """As TwoRoots, but forwards every two-hop signature: the other arc's are over the other root."""

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        return Server.unmasking_request_for(self, u, round)


def test_a_signature_over_the_other_root_is_an_inconsistent_view() -> None:
    s = _session(ForwardsOtherRoot)
    out, err = _run(s)
    assert out is None
    assert _both_types_released(s) == []
    kinds = {type(c.aborted) for c in s.clients.values() if c.aborted is not None}
    assert InconsistentView in kinds


class ForgedLeaf(Server):
    """Tells client TARGET that its neighbour LIVE dropped by flipping LIVE's bit in one leaf, keeping
    the genuine paths (so that leaf no longer leads to the root the other leaves lead to) or, with
    ``ALONE``, sending a proof whose every leaf is from a forged tree (a root nobody else signs)."""

    TARGET, ALONE = 5, False

    def consistency_request_for(self, u: int):  # noqa: ANN201
        msg = super().consistency_request_for(u)
        if u != self.TARGET:
            return msg
        live = self.graph.neighbours(u)[0]
        if self.ALONE:
            leaves, paths = SurvivorTree(self.graph, self.session, self.sets["U3"] - {live}).proof(
                window_leaves(self.graph, u))
            return dataclasses.replace(msg, leaves=leaves, paths=paths)
        p = self.graph.position(live)
        idx = window_leaves(self.graph, u)
        i = idx.index(p // LEAF_BITS)
        q = p % LEAF_BITS
        leaf = bytearray(msg.leaves[i])
        leaf[q >> 3] ^= 1 << (q & 7)
        return dataclasses.replace(msg, leaves=msg.leaves[:i] + (bytes(leaf),) + msg.leaves[i + 1:])


@pytest.mark.parametrize("alone", [False, True])
def test_a_forged_window_makes_its_client_refuse(alone: bool) -> None:
    cls = type("Forged", (ForgedLeaf,), {"ALONE": alone})
    n = 600  # three leaves: a window spans two of them or more, so a lone flipped leaf can be caught
    s = _session(cls, n=n, seed=2, neighbours=8, threshold=None, dropout_fraction=0.05)
    out, err = _run(s)
    target = s.clients[ForgedLeaf.TARGET]
    if not alone and len(window_leaves(s.params.graph, ForgedLeaf.TARGET)) > 1:
        assert isinstance(target.aborted, ProtocolViolation) and "root" in str(target.aborted)
    else:  # it signed a forged root: every signature it is forwarded is over another one
        assert isinstance(target.aborted, InconsistentView)
    assert not target.released
    assert _both_types_released(s) == []
    if out is not None:  # the others may finish without the target: then the sum is right
        assert np.array_equal(out.sum, _expected(random_inputs(n, D, M, 2), out.included))


class SkipsPolicy(Server):
    """Skips its own survivor checks and lets two runs of k/2 dropouts split G[U3] into two arcs."""

    def check_survivors(self, u3):  # noqa: ANN001, ANN201
        return None


def test_a_server_that_skips_its_check_gets_nothing_near_a_split() -> None:
    params = SessionParams.create(N, D, M, seed=5, **OPTS)
    g = params.graph
    gap_a, gap_b = _run_of(g, 0, K // 2), _run_of(g, N // 2, K // 2)
    drops = {u: "masked-input" for u in gap_a + gap_b}
    u3 = frozenset(range(N)) - set(drops)
    assert len(rules.survivor_components(g, u3)) == 2  # the split is real
    s = _session(SkipsPolicy, dropouts=drops)
    out, err = _run(s)
    assert out is None and err is not None
    # every survivor next to a gap, and every holder of its shares, refused the U3
    order = g.ring_order()
    ends = {order[(g.position(gap[0]) - 1) % N] for gap in (gap_a, gap_b)}
    ends |= {order[(g.position(gap[-1]) + 1) % N] for gap in (gap_a, gap_b)}
    for e in ends:
        for h in g.closed_neighbourhood(e) & u3:
            c = s.clients[h]
            assert isinstance(c.aborted, ProtocolAborted) and c.aborted.rule == "survivors-gap"
            assert not c.released


class OtherSession(Server):
    """Sends proofs of a tree bound to another session id (the same U3)."""

    def consistency_request_for(self, u: int):  # noqa: ANN201
        msg = super().consistency_request_for(u)
        leaves, paths = SurvivorTree(self.graph, bytes(16), self.sets["U3"]).proof(window_leaves(self.graph, u))
        return dataclasses.replace(msg, leaves=leaves, paths=paths)


def test_a_tree_of_another_session_is_never_signed_as_this_one() -> None:
    s = _session(OtherSession, n=600, seed=2, neighbours=8, threshold=None, dropout_fraction=0.05)
    out, err = _run(s)
    assert out is None
    # every client hashes under this session: the other session's sibling hashes lead its leaves to
    # different roots (refused), or, where one leaf lands on a root, to one nobody else signed
    assert all(isinstance(c.aborted, (ProtocolViolation, InconsistentView)) for c in s.clients.values())
    assert any(isinstance(c.aborted, ProtocolViolation) for c in s.clients.values())
    assert _both_types_released(s) == [] and all(not c.released for c in s.clients.values())


class BitmapInstead(Server):
    def consistency_request_for(self, u: int) -> ConsistencyRequest:
        return ConsistencyRequest("masked-input", self.session, u, tuple(sorted(self.sets["U3"])), self.n)


def test_a_window_client_refuses_the_full_bitmap_form() -> None:
    s = _session(BitmapInstead)
    with pytest.raises(ProtocolAborted):
        s.run()
    assert all(isinstance(c.aborted, MalformedMessage) for c in s.clients.values())
    assert all(not c.released for c in s.clients.values())


def test_secure_average_and_the_rfa_oracles_pass_the_window_view_on() -> None:
    from secagg.average import secure_average
    from rfa.oracle import ModularOracle, SecAggOracle

    x = np.random.default_rng(3).normal(size=(N, 4))
    kw = dict(seed=9, graph="secagg+", variant="active", neighbours=K, threshold=4, dropout_fraction=0.25)
    got = {}
    for backend in ("protocol", "modular"):
        res = secure_average(x, seed=9, backend=backend, **{k: v for k, v in kw.items() if k != "seed"},
                             consistency_view="window")
        assert res.ledger.by_kind().get("consistency-proof") == N * consistency_proof_size(N, K)
        got[backend] = np.asarray(res.average)
    assert np.array_equal(got["protocol"], got["modular"])
    full = secure_average(x, **kw)
    assert "consistency-proof" not in full.ledger.by_kind()
    import torch

    xt, wt = torch.tensor(x), torch.ones(N, dtype=torch.float64)
    opts = dict(seed=11, graph="secagg+", variant="active", neighbours=K, threshold=4, dropout_fraction=0.25)
    calls = {}
    for cls in (SecAggOracle, ModularOracle):
        for view in ("full", "window"):
            calls[cls.__name__, view] = cls(**opts, consistency_view=view).average(xt, wt, weight_bound=1.0, value_bound=4.0)
    extra = N * (consistency_proof_size(N, K) - consistency_request_size(0, N))
    for name in ("SecAggOracle", "ModularOracle"):
        assert calls[name, "window"].bytes_down - calls[name, "full"].bytes_down == extra != 0
    assert torch.equal(calls["SecAggOracle", "window"].output, calls["ModularOracle", "window"].output)


# ------------------------------------------------------------------------------------------------
# interleaved classes: why the window view needs 2t > k + 2
# ------------------------------------------------------------------------------------------------
class ParityRouting(Server):
    """The interleaved split: in round 1 each client is routed only the ciphertexts of its own class
    (ring position parity), so no mask crosses classes; each class is shown a U3 equal to itself and
    forwarded its own signatures; the server's own checks are skipped. With t = k/2 + 1 every client's
    checks pass (each has exactly k/2 + 1 members of its class in N(v) ∪ {v}), and the server unmasks
    each class's partial sum."""

    def _cls(self, u: int) -> int:
        return self.graph.position(u) % 2

    def _view(self, u: int) -> frozenset[int]:
        return frozenset(v for v in self.sets["U3"] if self._cls(v) == self._cls(u))

    def check_survivors(self, u3):  # noqa: ANN001, ANN201
        return None

    def _check_reconstructible(self, round, alive):  # noqa: ANN001, ANN201
        return None

    def ciphertexts_for(self, v: int):  # noqa: ANN201
        msg = super().ciphertexts_for(v)
        return dataclasses.replace(msg, ciphertexts=tuple((u, c) for u, c in msg.ciphertexts if self._cls(u) == self._cls(v)))

    def consistency_request_for(self, u: int):  # noqa: ANN201
        if not self.params.window_view:
            return dataclasses.replace(super().consistency_request_for(u), survivors=tuple(sorted(self._view(u))))
        leaves, paths = SurvivorTree(self.graph, self.session, self._view(u)).proof(window_leaves(self.graph, u))
        return ConsistencyProof("masked-input", self.session, u, self.n, leaves, paths)

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        sigs = tuple((v, s) for v, s in msg.signatures if self._cls(v) == self._cls(u))
        v2 = {w for w in self._routed[u] if self._cls(w) == self._cls(u)} | {u}  # what u was routed
        mine = self._view(u)
        return dataclasses.replace(msg, survivors=tuple(sorted(v2 & mine)), dropped=tuple(sorted(v2 - mine)),
                                   signatures=sigs)


def _recovered_sums(params: SessionParams, server_class: type, groups: list[list[int]],
                    seed: int) -> tuple[Session, list[bool]]:
    """Run ``server_class`` on ``params``; for each group, whether the server recovered the group's exact
    partial sum from what it legitimately received (the masked inputs and the revealed b shares)."""
    from secagg import prg, shamir
    from secagg.messages import MaskedInput, UnmaskingResponse

    ys, shares = {}, {}

    def tap(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if direction == "up" and rnd == "masked-input":
            ys[client] = MaskedInput.from_bytes(data).vector(M)
        if direction == "up" and rnd == "unmasking":
            for v, sh in UnmaskingResponse.from_bytes(data).b_shares:
                shares.setdefault(v, {})[client] = sh
        return data

    xs = random_inputs(params.n, D, M, seed)
    s = Session(xs, params=params, server_class=server_class, interceptor=tap)
    _run(s)
    got = []
    for members in groups:
        if not all(u in ys and len(shares.get(u, {})) >= params.threshold for u in members):
            got.append(False)
            continue
        acc = ring.zeros(D, M)
        for u in members:
            ring.add_into(acc, ys[u], M)
        prg.add_masks(acc, [(shamir.reconstruct(shares[u], params.threshold), prg.PURPOSE_SELF, -1) for u in members],
                      session=params.session, modulus=M)
        got.append(bool(np.array_equal(acc, _expected(xs, members))))
    return s, got


def _class_sums(params: SessionParams) -> tuple[Session, dict[int, bool]]:
    """ParityRouting on ``params``: for each parity class, whether its partial sum was recovered."""
    classes = [[u for u in range(params.n) if params.graph.position(u) % 2 == c] for c in (0, 1)]
    s, got = _recovered_sums(params, ParityRouting, classes, seed=7)
    return s, dict(enumerate(got))


def test_active_secagg_plus_refuses_t_at_most_k_over_2_plus_1_in_both_views() -> None:
    for view in ("window", "full"):
        for delta in (0.05, 0.25, 0.5):
            with pytest.raises(InvalidInput, match="2t > k \\+ 2"):
                SessionParams.create(N, D, M, seed=5, **{**OPTS, "threshold": K // 2 + 1, "consistency_view": view,
                                                        "dropout_fraction": delta})
        assert SessionParams.create(N, D, M, seed=5, **{**OPTS, "consistency_view": view}).threshold == K // 2 + 2
    # the finder's choice for the active variant meets it (the semi-malicious one of Bell et al. and fcp,
    # t = 3 at k = 4 for n = 24, does not)
    from secagg.graph import find_secagg_plus_params

    assert find_secagg_plus_params(24, 0.05, 0.05, "semi-malicious") == (4, 3)
    for n in (20, 24, 30, 100, 1000):
        k, t = find_secagg_plus_params(n, 0.05, 0.05, "active")
        assert 2 * t > k + 2
        p = SessionParams.create(n, D, M, graph="secagg+", variant="active", seed=1)
        assert (p.graph.k, p.threshold) == (k, t)


def test_the_interleaved_split_unmasks_both_classes_exactly_where_the_rule_refuses() -> None:
    """What the rule prevents: the same lying server, on parameters built past the check, recovers
    each parity class's exact partial sum with every client finishing; at t = k/2 + 2 it gets nothing."""
    ok = SessionParams.create(N, D, M, seed=5, **OPTS)
    weak = dataclasses.replace(ok, threshold=K // 2 + 1)
    s, got = _class_sums(weak)
    assert got == {0: True, 1: True} and all(c.aborted is None for c in s.clients.values())
    assert _both_types_released(s) == []  # only b shares: the split-view rule alone does not see it
    s, got = _class_sums(ok)
    assert got == {0: False, 1: False}
    assert all(not c.released for c in s.clients.values())  # each peer has only 3 < t signers of its class
    assert all(isinstance(c.aborted, ProtocolAborted) for c in s.clients.values())


class IslandRouting(Server):
    """The island split of the full view: one honest U3 (everyone) for every client, only round-1 routing
    lies. The ring is cut into periods of h + 1 helpers, then an island of h non-signers, h + 1 signers
    and h non-signers (h = k/2). Non-signers are routed only their own island's ciphertexts (they abort
    on the stray rule; nothing needs their signature), signers everything. At t = k/2 + 1 each
    non-signer's b is revealed by exactly t signers and the helpers' masks with an island are
    one-sided, so each island's masks cancel within it."""

    def _role(self, u: int) -> tuple[str, int | None]:
        h = self.graph.k // 2
        q, o = divmod(self.graph.position(u), 4 * h + 2)
        if o <= h:
            return "helper", None
        return ("signer" if 2 * h < o <= 3 * h + 1 else "edge"), q

    def _check_reconstructible(self, round, alive):  # noqa: ANN001, ANN201
        return None

    def ciphertexts_for(self, v: int):  # noqa: ANN201
        msg = super().ciphertexts_for(v)
        role, island = self._role(v)
        if role != "edge":
            return msg
        return dataclasses.replace(msg, ciphertexts=tuple((u, c) for u, c in msg.ciphertexts if self._role(u)[1] == island))

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        return msg if self._role(u)[0] != "edge" else dataclasses.replace(msg, signatures=())


def _island_sums(params: SessionParams) -> tuple[Session, list[bool]]:
    """IslandRouting on ``params``: for each island, whether its partial sum was recovered."""
    h, order, n = params.graph.k // 2, params.graph.ring_order(), params.n
    islands = [[order[p] for p in range(q * (4 * h + 2) + h + 1, (q + 1) * (4 * h + 2))]
               for q in range(n // (4 * h + 2))]
    return _recovered_sums(params, IslandRouting, islands, seed=11)


@pytest.mark.parametrize("delta", [0.05, 0.25])
def test_the_island_split_unmasks_every_island_exactly_where_the_rule_refuses(delta: float) -> None:
    """The full view with one honest U3: past the check (t = k/2 + 1) the server recovers both islands'
    sums of 7 inputs at n = 20; at t = k/2 + 2 it gets nothing."""
    n = 20
    ok = SessionParams.create(n, D, M, seed=3, **{**OPTS, "consistency_view": "full", "dropout_fraction": delta})
    assert ok.threshold == K // 2 + 2 and ok.min_survivors > n // 2
    s, got = _island_sums(dataclasses.replace(ok, threshold=K // 2 + 1))
    assert got == [True, True]
    assert _both_types_released(s) == []  # only b shares
    s, got = _island_sums(ok)
    assert got == [False, False]
