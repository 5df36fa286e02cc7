"""The protocol's rules (secagg.rules): survivor policy, t >= 2, state guards, one rule set for both backends.

Attacks first:

* Bell et al. (CCS 2020) assume at most delta n dropouts. Dropouts placed to cut the Harary ring split
  the survivors' mask graph G[U3] into components; a server that unmasks anyway holds, for each
  component C, the masked inputs y_u (u in C), the self-mask seeds b_u and the dropped neighbours' mask
  keys, and no mask links C to another live client: it computes sum_{u in C} x_u exactly. The tests run
  that curious server with the policy switched off (what the code did before) and show the partial sums
  leak, then show the real server aborts (rule named) before asking for any share.
* t = 1 at n = 2 with one dropout released one client's input in the clear: refused up front now.
"""

from __future__ import annotations

import numpy as np
import pytest

from secagg import keys, prg, ring, rules, shamir
from secagg.client import mask_sign, pairwise_seed
from secagg.cost import model_ledger, modular_run
from secagg.errors import InvalidInput, ProtocolAborted, StateError
from secagg.average import secure_average
from secagg.messages import MaskedInput, UnmaskingResponse
from secagg.modular import ModularClient, ModularServer, Token
from secagg.protocol import PROTOCOLS, Session, SessionParams, run_secure_aggregation
from secagg.rounds import ROUNDS, Round, Variant
from secagg.server import Server

M = 2**32


def _inputs(n: int, d: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 2**16, size=(n, d)).astype(np.uint64)


def _cut(params: SessionParams, runs: list[tuple[int, int]]) -> dict[int, str]:
    """Drop (at masked-input: keys shared, y_u never sent) the clients on ring positions [a, b)."""
    order = params.graph.ring_order()
    return {order[p % params.n]: "masked-input" for a, b in runs for p in range(a, b)}


class CuriousServer(Server):
    """An honest-but-curious server *without* the survivor policy (the code before it): it follows the
    protocol, then computes every component's partial sum from what it legitimately received."""

    def check_survivors(self, u3: frozenset[int]) -> None:  # the policy switched off
        return None

    def masked_input_collection(self, uploads):  # noqa: ANN001, ANN201
        self.seen_y: dict[int, np.ndarray] = {}

        def tap():  # noqa: ANN202
            for cid, data in uploads:
                self.seen_y[cid] = MaskedInput.from_bytes(data).vector(self.modulus)
                yield cid, data

        return super().masked_input_collection(tap())

    def unmasking(self, uploads):  # noqa: ANN001, ANN201
        got = list(uploads)
        total = super().unmasking(iter(got))
        t, m, d = self.threshold, self.modulus, self.dim
        b_sh: dict[int, dict[int, bytes]] = {}
        k_sh: dict[int, dict[int, bytes]] = {}
        for cid, data in got:
            r = UnmaskingResponse.from_bytes(data)
            for v, sh in r.b_shares:
                b_sh.setdefault(v, {})[cid] = sh
            for v, sh in r.key_shares:
                k_sh.setdefault(v, {})[cid] = sh
        u2, u3 = self.sets["U2"], self.sets["U3"]
        dropped_keys = {}
        for v in u2 - u3:
            if len(k_sh.get(v, {})) >= t:
                chosen = dict(sorted(k_sh[v].items())[:t])
                dropped_keys[v] = keys.AgreementKey.from_private_bytes(shamir.reconstruct(chosen, t, 32))
        self.partial_sums = {}
        for comp in rules.survivor_components(self.graph, u3):
            acc = ring.zeros(d, m)
            for u in comp:
                ring.add_into(acc, self.seen_y[u], m)
                b = shamir.reconstruct(dict(sorted(b_sh[u].items())[:t]), t, 32)
                ring.sub_into(acc, prg.expand(b, session=self.session, purpose=prg.PURPOSE_SELF, dim=d, modulus=m), m)
                for v in self.graph.neighbours(u):
                    if v in dropped_keys:
                        seed = pairwise_seed(dropped_keys[v], self.keys[u][1], session=self.session, u=v, v=u)
                        mask = prg.expand(seed, session=self.session, purpose=prg.PURPOSE_PAIRWISE, dim=d, modulus=m)
                        (ring.add_into if mask_sign(u, v) < 0 else ring.sub_into)(acc, mask, m)
            self.partial_sums[frozenset(comp)] = acc
        return total


@pytest.mark.parametrize("n,runs,delta", [
    (20, [(0, 2), (4, 6)], 0.25),     # n = 20, k = 4: a component of two clients between two cut runs
    (100, [(0, 6), (50, 56)], 0.15),  # n = 100, k = 12: the ring cut in two halves by 12 dropouts
])
def test_cut_ring_leaks_partial_sums_without_the_policy_and_aborts_with_it(n: int, runs, delta: float) -> None:
    x = _inputs(n)
    k = 4 if n == 20 else 12
    kw = dict(graph="secagg+", neighbours=k, threshold=2 if n == 20 else 6, seed=7, dropout_fraction=delta)
    params = SessionParams.create(n, x.shape[1], M, **kw)
    drops = _cut(params, runs)
    assert len(rules.survivor_components(params.graph, frozenset(range(n)) - set(drops))) == 2
    # before: the run completes, and the curious server holds each component's exact sum
    sess = Session(x, modulus=M, dropouts=drops, server_class=CuriousServer, **kw)
    res = sess.run()
    assert len(sess.server.partial_sums) == 2
    for comp, s in sess.server.partial_sums.items():
        assert len(comp) < len(res.included)
        assert np.array_equal(s, x[sorted(comp)].sum(0) % M)  # a partial sum, leaked exactly
    # now: the honest server aborts in masked-input, naming the rule, and nobody revealed a share
    honest = Session(x, modulus=M, dropouts=drops, **kw)
    with pytest.raises(ProtocolAborted) as info:
        honest.run()
    assert (info.value.round, info.value.rule) == ("masked-input", "survivors-connected")
    assert "component" in info.value.reason
    assert not any(e.kind == "unmasking-response" for e in info.value.ledger)
    assert all(not c.released for c in honest.clients.values())
    # the modular backend reproduces the abort bit for bit, with the same ledger up to it
    with pytest.raises(ProtocolAborted) as minfo:
        modular_run(x, dim=x.shape[1], modulus=M, dropouts=drops, **kw)
    assert (minfo.value.round, minfo.value.reason, minfo.value.rule) == (info.value.round, info.value.reason, info.value.rule)
    assert minfo.value.ledger == info.value.ledger


def test_finder_default_delta_refuses_more_than_delta_n_dropouts() -> None:
    """n = 100 with the finder's defaults (delta = 0.05): 12 dropouts before masked-input exceed the
    bound ceil(0.95 n) = 95 survivors: abort on min-survivors, in both backends; 5 dropouts are fine."""
    n = 100
    x = _inputs(n, 4)
    params = SessionParams.create(n, 4, M, graph="secagg+", seed=3)
    assert params.min_survivors == 95 and params.delta == 0.05 and not params.graph.is_complete
    drops = _cut(params, [(0, 6), (50, 56)])
    with pytest.raises(ProtocolAborted) as info:
        run_secure_aggregation(x, modulus=M, graph="secagg+", seed=3, dropouts=drops)
    assert info.value.rule == "min-survivors" and "95" in info.value.reason
    with pytest.raises(ProtocolAborted) as minfo:
        model_ledger(n, 4, M, graph="secagg+", seed=3, dropouts=drops)
    assert (minfo.value.round, minfo.value.reason) == (info.value.round, info.value.reason)
    few = dict(list(drops.items())[:5])
    res = run_secure_aggregation(x, modulus=M, graph="secagg+", seed=3, dropouts=few)
    assert len(res.included) == 95 and res.guarantee.min_survivors == 95 and res.guarantee.connected
    assert "designed for delta = 0.05, gamma = 0.05" in str(res.guarantee)
    assert np.array_equal(res.sum, x[list(res.included)].sum(0) % M)


def test_declared_dropout_rate_designs_the_graph_and_sets_the_bound() -> None:
    p = SessionParams.create(200, 3, M, graph="secagg+", dropout_fraction=0.2, seed=1)
    k, _ = __import__("secagg").find_secagg_plus_params(200, 0.05, 0.2)
    assert p.graph.k == k and p.min_survivors == 160 and p.delta == 0.2
    # complete graph: t unless delta or min_survivors is given
    assert SessionParams.create(10, 3, M).min_survivors == 6
    assert SessionParams.create(10, 3, M, dropout_fraction=0.1).min_survivors == 9
    assert SessionParams.create(10, 3, M, min_survivors=8).min_survivors == 8
    assert SessionParams.create(10, 3, M, threshold=7, min_survivors=3).min_survivors == 7  # never below t
    with pytest.raises(InvalidInput):
        SessionParams.create(10, 3, M, min_survivors=11)
    x = _inputs(10)
    with pytest.raises(ProtocolAborted) as info:
        run_secure_aggregation(x, modulus=M, seed=1, min_survivors=9, dropouts={0: "share-keys", 1: "masked-input"})
    assert info.value.rule == "min-survivors"


def test_simulate_cli_dropout_rate_is_the_graphs_delta() -> None:
    from secagg.commands.simulate import simulate

    rep = simulate(clients=40, dim=2, graph="secagg+", dropout_rate=0.2, seed=0)
    k, t = __import__("secagg").find_secagg_plus_params(40, 0.05, 0.2)
    assert (k, t) != __import__("secagg").find_secagg_plus_params(40)  # the declared rate changes the design
    assert (rep["neighbours"], rep["threshold"]) == (k, t)


# ------------------------------------------------------------------------------------------ t >= 2
def test_threshold_one_is_refused_everywhere() -> None:
    """n = 2, t = 1, one dropout: the released 'sum' would be one client's input in the clear."""
    x = _inputs(2)
    for call in (
        lambda: run_secure_aggregation(x, modulus=M, threshold=1, dropouts={1: "masked-input"}, seed=0),
        lambda: model_ledger(2, 6, M, threshold=1, dropouts={1: "masked-input"}),
        lambda: modular_run(x, dim=6, modulus=M, threshold=1, seed=0),
        lambda: secure_average(np.ones((2, 3)), threshold=1, seed=0),
        lambda: secure_average(np.ones((2, 3)), threshold=1, seed=0, backend="modular"),
    ):
        with pytest.raises(InvalidInput, match="t = 1 < 2"):
            call()
    # a client refuses t = 1 on its own, too (it does not rely on the session's check)
    from secagg.client import Client
    from secagg.drbg import Drbg
    from secagg.graph import complete_graph

    with pytest.raises(InvalidInput, match="t = 1 < 2"):
        Client(0, x[0].astype(np.uint32), modulus=M, threshold=1, graph=complete_graph(2), variant="honest-but-curious",
               session=b"\0" * 16, drbg=Drbg(0))
    # the default at n = 2 is t = 2: one dropout aborts instead of releasing x_0
    with pytest.raises(ProtocolAborted):
        run_secure_aggregation(x, modulus=M, dropouts={1: "masked-input"}, seed=0)
    assert rules.default_threshold(2, "honest-but-curious") == 2 and rules.default_threshold(2, "active") == 2


# ------------------------------------------------------------------------------------------ state guards
def _server(n: int = 4) -> Server:
    return Server(n=n, dim=3, modulus=M, threshold=3, graph=SessionParams.create(n, 3, M).graph,
                  variant="honest-but-curious", session=b"\0" * 16)


def test_server_state_guard() -> None:
    s = _server()
    with pytest.raises(StateError, match="expecting advertise_keys"):
        s.share_keys([])
    with pytest.raises(StateError, match="iterable"):
        s.advertise_keys(None)
    s2 = _server()
    with pytest.raises(ProtocolAborted):
        s2.advertise_keys([])  # nobody advertised: abort ...
    with pytest.raises(StateError, match="ended"):
        s2.advertise_keys([])  # ... and the round cannot be repeated
    with pytest.raises(StateError):
        s2.unmasking([])


def test_session_runs_once_and_clients_refuse_out_of_order_calls() -> None:
    sess = Session(_inputs(4), modulus=M, seed=1)
    sess.run()
    with pytest.raises(StateError, match="already run"):
        sess.run()
    fresh = Session(_inputs(4), modulus=M, seed=1)
    c = fresh.clients[0]
    assert c.expected_round is Round.ADVERTISE_KEYS
    with pytest.raises(StateError, match="expecting advertise_keys"):
        c.unmasking(b"")
    c.advertise_keys()
    assert c.expected_round is Round.SHARE_KEYS
    with pytest.raises(StateError):
        c.advertise_keys()


def test_modular_pair_has_the_same_guards() -> None:
    p = SessionParams.create(4, 3, M, derive_session=False)
    c, s = ModularClient(0, p), ModularServer(p)
    with pytest.raises(StateError):
        c.share_keys(Token("key-list", 0))
    with pytest.raises(StateError):
        s.masked_input_collection([])
    assert isinstance(c.advertise_keys(), Token) and c.expected_round is Round.SHARE_KEYS


# ------------------------------------------------------------------------------------------ enums, protocols
def test_round_and_variant_enums_are_the_names() -> None:
    assert tuple(Round) == ROUNDS and Round.MASKED_INPUT == "masked-input" and Round.UNMASKING.index == 4
    assert [r.method for r in Variant.HONEST_BUT_CURIOUS.rounds] == [
        "advertise_keys", "share_keys", "masked_input_collection", "unmasking"]
    assert Round.CONSISTENCY_CHECK.upload_kind == "consistency-signature" and Variant.ACTIVE.signed


@pytest.mark.parametrize("backend", ["protocol", "modular"])
def test_plaintext_protocol_is_the_baseline(backend: str) -> None:
    """Clients send their inputs in the clear (one masked-input-format message each); same sum over the
    senders, ledger equal between the real plaintext run and its cost model."""
    x = _inputs(6, 50)
    res = run_secure_aggregation(x, modulus=M, protocol="plaintext", seed=2, dropouts={1: "share-keys"})
    assert res.included == (0, 2, 3, 4, 5) and np.array_equal(res.sum, x[[0, 2, 3, 4, 5]].sum(0) % M)
    assert {e.kind for e in res.ledger} == {"masked-input"} and len(res.ledger) == 5
    assert res.ledger == model_ledger(6, 50, M, protocol="plaintext", dropouts={1: "share-keys"})
    sec = run_secure_aggregation(x, modulus=M, seed=2)
    assert sec.ledger.total() > 2 * res.ledger.total()
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 8))
    a = secure_average(v, seed=4, protocol="plaintext", backend=backend)
    b = secure_average(v, seed=4)
    assert np.array_equal(a.average, b.average)  # same encodings, same sum: same bits
    assert a.ledger.total() < b.ledger.total()
    assert set(PROTOCOLS) == {"bonawitz", "plaintext"}
    with pytest.raises(InvalidInput):
        run_secure_aggregation(x, modulus=M, protocol="lightsecagg")


def test_plaintext_through_the_simulate_cli(capsys) -> None:  # noqa: ANN001
    from secagg.cli import main

    assert main(["simulate", "-n", "5", "-d", "10", "--protocol", "plaintext", "--json"]) == 0
    import json

    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["matches_plaintext"]


def test_client_with_too_few_live_neighbours_aborts_itself_before_masking() -> None:
    """SecAgg+ (n = 20, k = 4, t = 3): three of client u's four neighbours drop at share-keys, so u's view
    of U2 is {u, one neighbour}: u aborts itself (rule: threshold, by party u) instead of sending y_u; the
    server then finds u's mask key (needed to cancel its mask with the surviving neighbour) unrecoverable."""
    n = 20
    kw = dict(graph="secagg+", neighbours=4, threshold=3, seed=5, dropout_fraction=0.4)
    params = SessionParams.create(n, 4, M, **kw)
    order = params.graph.ring_order()
    u = order[10]
    drops = {order[8]: "share-keys", order[9]: "share-keys", order[11]: "share-keys"}
    with pytest.raises(ProtocolAborted) as info:
        run_secure_aggregation(_inputs(n, 4), modulus=M, dropouts=drops, **kw)
    err = info.value.client_errors[u]
    assert isinstance(err, ProtocolAborted) and (err.round, err.party, err.rule) == ("masked-input", u, "threshold")
    assert info.value.reason.startswith(f"mask key of dropped client {u} ") and u not in info.value.sets["U3"]
    with pytest.raises(ProtocolAborted) as minfo:
        model_ledger(n, 4, M, dropouts=drops, **kw)
    assert minfo.value.reason == info.value.reason and minfo.value.ledger == info.value.ledger


def test_oracles_design_secagg_plus_for_their_dropout_rate_and_run_plaintext(monkeypatch) -> None:  # noqa: ANN001
    torch = pytest.importorskip("torch")
    import rfa
    import secagg.average as avg

    seen = []
    real = avg.secure_average

    def spy(*a, **kw):  # noqa: ANN002, ANN003, ANN202
        seen.append(kw)
        return real(*a, **kw)

    monkeypatch.setattr(avg, "secure_average", spy)
    pts = torch.from_numpy(np.random.default_rng(1).normal(size=(60, 5)))
    rfa.ModularOracle(seed=0, graph="secagg+", dropout_rate=0.2)(pts, torch.ones(60))
    assert seen[-1]["dropout_fraction"] == 0.2
    rfa.ModularOracle(seed=0, dropout_rate=0.2)(pts, torch.ones(60))
    assert "dropout_fraction" not in seen[-1]  # complete graph: the survivor bound stays t
    a = rfa.ModularOracle(seed=3, protocol="plaintext")(pts, torch.ones(60))
    b = rfa.ModularOracle(seed=3)(pts, torch.ones(60))
    assert torch.equal(a, b)


def test_session_params_from_args_and_one_drop_parser() -> None:
    import argparse

    from secagg.protocol import parse_drop_spec, parse_drop_specs

    ns = argparse.Namespace(threshold=None, graph="secagg+", variant="active", drop=["3:masked-input", "5:unmasking:after"],
                            seed=4, neighbours=None, corrupt_fraction=0.05, dropout_rate=0.2, protocol="bonawitz")
    p = SessionParams.from_args(ns, 200, 8, M)
    assert p.delta == 0.2 and p.min_survivors == 160 and p.variant is Variant.ACTIVE
    assert p.dropouts == {3: "masked-input", 5: "unmasking:after"}
    assert p == SessionParams.create(200, 8, M, graph="secagg+", variant="active", seed=4, dropout_fraction=0.2,
                                     dropouts={3: "masked-input", 5: "unmasking:after"})
    assert parse_drop_spec("7:share-keys:after") == (7, "share-keys:after")
    for bad in ("x:masked-input", "3", "3:lunch", "3:masked-input:later"):
        with pytest.raises(InvalidInput):
            parse_drop_spec(bad)
    with pytest.raises(InvalidInput):
        parse_drop_specs(["9:unmasking"], 5)
    with pytest.raises(Exception):  # frozen
        p.threshold = 1  # type: ignore[misc]


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 40), st.data())
def test_harary_components_from_the_ring_equal_a_breadth_first_search(n: int, data) -> None:  # noqa: ANN001
    """HararyGraph.components (gaps on the ring, O(m log m)) == Graph.components (BFS over neighbours)."""
    from secagg.drbg import Drbg
    from secagg.graph import Graph, harary_graph

    k = 2 * data.draw(st.integers(1, (n - 1) // 2))
    g = harary_graph(n, k, Drbg(data.draw(st.integers(0, 2**16))))
    nodes = frozenset(data.draw(st.sets(st.integers(0, n - 1))))
    fast = g.components(nodes)
    assert sorted(map(sorted, fast)) == sorted(map(sorted, Graph.components(g, nodes)))
    assert sum(map(len, fast)) == len(nodes)


def test_active_clients_refuse_to_sign_a_u3_that_breaks_the_survivor_policy() -> None:
    """Active variant: a lying server that skips its own survivor check (the cut ring of the first test)
    still gets nothing, because every client checks the U3 it is asked to sign and aborts."""
    n = 20
    x = _inputs(n)
    kw = dict(graph="secagg+", neighbours=4, threshold=4, seed=7, dropout_fraction=0.25, variant="active")
    params = SessionParams.create(n, x.shape[1], M, **kw)
    drops = _cut(params, [(0, 2), (4, 6)])

    class SkipsPolicy(Server):
        def check_survivors(self, u3: frozenset[int]) -> None:
            return None

    sess = Session(x, modulus=M, dropouts=drops, server_class=SkipsPolicy, **kw)
    with pytest.raises(ProtocolAborted) as info:
        sess.run()
    errs = info.value.client_errors
    assert errs and all(isinstance(e, ProtocolAborted) and e.rule == "survivors-connected" and e.round == "consistency-check"
                        for e in errs.values())
    assert set(errs) == set(range(n)) - set(drops)
    assert all(not c.released for c in sess.clients.values())
    assert not any(e.kind == "unmasking-response" for e in info.value.ledger)
