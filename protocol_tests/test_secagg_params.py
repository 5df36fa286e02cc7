"""One parameter object for every party: SessionParams built once and passed to the server, the clients,
the transports and the command line tools (``secagg simulate`` / ``secagg trace`` build it with
``SessionParams.from_args``)."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from secagg import cli, ring
from secagg.client import Client
from secagg.commands.simulate import simulate
from secagg.commands.trace import trace
from secagg.drbg import Drbg
from secagg.errors import InvalidInput
from secagg.graph import complete_graph
from secagg.protocol import Session, SessionParams, run_secure_aggregation
from secagg.server import Server

M = 2**32


def test_server_keyword_form_builds_the_same_params_as_for_graph() -> None:
    g = complete_graph(6)
    srv = Server(n=6, dim=4, modulus=M, threshold=4, graph=g, variant="active", session=b"s" * 16, min_survivors=5)
    want = SessionParams.for_graph(6, 4, M, g, 4, variant="active", session=b"s" * 16, min_survivors=5)
    assert srv.params == want
    assert (srv.n, srv.dim, srv.threshold, srv.min_survivors, srv.active) == (6, 4, 4, 5, True)


@pytest.mark.parametrize("bad", [
    dict(extra=1),  # an unknown name is an error, listing the accepted ones
    dict(dim=None),  # a missing required name
])
def test_server_keyword_form_refuses_unknown_or_missing_names(bad: dict) -> None:
    kw = dict(n=4, dim=3, modulus=M, threshold=3, graph=complete_graph(4), variant="honest-but-curious", session=b"")
    kw.update(bad)
    kw = {k: v for k, v in kw.items() if v is not None}
    with pytest.raises(InvalidInput, match="accepted|missing"):
        Server(**kw)


def test_party_refuses_params_and_keywords_together() -> None:
    p = SessionParams.create(4, 3, M, seed=1)
    with pytest.raises(InvalidInput, match="either params or keywords"):
        Server(p, n=4)
    with pytest.raises(InvalidInput, match="either params or keywords"):
        Client(0, ring.zeros(3, M), p, drbg=Drbg(1, b"t"), threshold=3)


def test_client_refuses_an_input_of_another_dimension() -> None:
    p = SessionParams.create(4, 3, M, seed=1)
    with pytest.raises(InvalidInput, match="dimension is 3"):
        Client(0, ring.zeros(5, M), p, drbg=Drbg(1, b"t"))


def test_for_graph_applies_the_session_rules() -> None:
    with pytest.raises(InvalidInput):  # t = 1 is never allowed
        SessionParams.for_graph(4, 3, M, complete_graph(4), 1)
    with pytest.raises(InvalidInput):  # active: 2t > n
        SessionParams.for_graph(6, 3, M, complete_graph(6), 3, variant="active")
    with pytest.raises(InvalidInput, match="nodes"):
        SessionParams.for_graph(5, 3, M, complete_graph(4), 3)


def test_params_pickle_without_the_seed_drbg() -> None:
    """Worker processes and Ray actors receive the parties with their params; the seed's DRBG (an AES
    context, used only before the clients exist) is left behind."""
    p = SessionParams.create(60, 5, M, graph="secagg+", seed=3, dropouts={2: "share-keys:after"}, dropout_fraction=0.1)
    q = pickle.loads(pickle.dumps(p))
    assert q == p and q.root is None and p.root is not None
    assert dict(q.schedule) == {2: (1, True)} and q.graph.k == p.graph.k and q.min_survivors == p.min_survivors
    with pytest.raises(TypeError):
        q.schedule[5] = (0, False)  # type: ignore[index]  # still read only


def test_a_session_built_from_params_equals_one_built_from_options() -> None:
    x = np.random.default_rng(0).integers(0, 2**16, size=(9, 4)).astype(np.uint64)
    kw = dict(threshold=5, variant="active", dropouts={1: "consistency-check", 4: "share-keys"}, seed=7)
    a = run_secure_aggregation(x, modulus=M, **kw)
    b = Session(x, params=SessionParams.create(9, 4, M, **kw)).run()
    assert np.array_equal(a.sum, b.sum) and a.sets == b.sets and a.ledger == b.ledger


def _strip(rep: dict) -> dict:
    rep = dict(rep)
    rep.pop("timings", None)
    return rep


@pytest.mark.parametrize("argv, kw", [
    (["--clients", "30", "--dim", "6", "--graph", "secagg+", "--dropout-rate", "0.1", "--drop", "3:masked-input", "--seed", "4"],
     dict(clients=30, dim=6, graph="secagg+", dropout_rate=0.1, drops=["3:masked-input"], seed=4)),
    (["--clients", "6", "--dim", "3", "--variant", "active", "--drop", "2:consistency-check:after", "--modulus-bits", "20"],
     dict(clients=6, dim=3, variant="active", drops=["2:consistency-check:after"], modulus_bits=20)),
    (["--clients", "5", "--dim", "2", "--drop", "0:share-keys", "--drop", "1:share-keys", "--drop", "2:masked-input"],
     dict(clients=5, dim=2, drops=["0:share-keys", "1:share-keys", "2:masked-input"])),
])
def test_simulate_command_builds_its_params_once_from_args(argv, kw, capsys, monkeypatch) -> None:  # noqa: ANN001
    calls = []
    orig = SessionParams.from_args.__func__

    def spy(cls, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        calls.append(a)
        return orig(cls, *a, **k)

    monkeypatch.setattr(SessionParams, "from_args", classmethod(spy))
    rc = cli.main(["simulate", *argv, "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert len(calls) == 1
    assert rc == (0 if rep["ok"] else 1)
    assert _strip(rep) == _strip(simulate(**kw))


def test_trace_command_builds_its_params_from_args(capsys, monkeypatch) -> None:  # noqa: ANN001
    calls = []
    orig = SessionParams.from_args.__func__
    monkeypatch.setattr(SessionParams, "from_args", classmethod(lambda cls, *a, **k: calls.append(a) or orig(cls, *a, **k)))
    cli.main(["trace", "--clients", "5", "--variant", "active", "--drop", "1:unmasking", "--seed", "2", "--json"])
    tr = json.loads(capsys.readouterr().out)
    assert len(calls) == 1
    assert tr == trace(clients=5, variant="active", drops={1: "unmasking"}, seed=2)


# --------------------------------------------------------------- the plaintext baseline through every CLI
@pytest.mark.parametrize("n, d, bits, drops", [
    (6, 50, 32, {}),
    (9, 7, 20, {"share-keys": 2, "masked-input": 1, "unmasking": 3}),
    (4, 1000, 64, {"advertise-keys": 1}),
])
def test_plaintext_cost_model_equals_the_measured_ledger(n: int, d: int, bits: int, drops: dict) -> None:
    from secagg.cost import model_ledger, our_model

    modulus = 1 << bits
    sched, u = {}, 0
    for rnd, cnt in drops.items():
        for _ in range(cnt):
            sched[u] = rnd
            u += 1
    led = model_ledger(n, d, modulus, protocol="plaintext", dropouts=sched)
    cost = our_model(n, d, modulus, drops=drops, protocol="plaintext")
    assert cost.total_up == sum(led.upload_per_client().values()) and cost.total_down == 0 == sum(led.download_per_client().values())
    senders = [c for c in range(n) if c not in sched or sched[c] == "unmasking"]
    assert set(led.upload_per_client()) == set(senders)
    assert all(v == cost.upload_per_client for v in led.upload_per_client().values())


def test_plaintext_cost_command(capsys) -> None:  # noqa: ANN001
    assert cli.main(["cost", "-n", "100", "-d", "1000", "--protocol", "plaintext", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["protocol"] == "plaintext" and rep["ours"]["download_per_client"] == 0
    assert rep["ours"]["upload_per_client"] < json.loads(
        (cli.main(["cost", "-n", "100", "-d", "1000", "--json"]), capsys.readouterr().out)[1])["ours"]["upload_per_client"]
    assert cli.main(["cost", "-n", "100", "-d", "10", "--protocol", "plaintext", "--graph", "secagg+"]) == 2
    assert "plaintext has no" in capsys.readouterr().err


def test_plaintext_trace_shows_the_inputs_in_the_clear(capsys) -> None:  # noqa: ANN001
    assert cli.main(["trace", "--protocol", "plaintext", "--drop", "2:share-keys", "--drop", "1:masked-input:after", "--json"]) == 0
    tr = json.loads(capsys.readouterr().out)
    assert tr["parameters"]["protocol"] == "plaintext" and [r["round"] for r in tr["rounds"]] == ["masked-input"]
    plain = {e["client"]: e for e in tr["rounds"][0]["events"] if e["type"] == "plain"}
    assert {u for u, e in plain.items() if e["sent"]} == {0, 1, 3}
    assert all(e["matches_wire"] and e["x"] == tr["inputs"][str(u)] for u, e in plain.items() if e["sent"])
    assert tr["result"]["match"] and tr["result"]["sets"]["U3"] == [0, 1, 3]
    assert cli.main(["trace", "--protocol", "plaintext"]) == 0
    assert "in the clear" in capsys.readouterr().out
    assert cli.main(["trace", "--protocol", "plaintext", "--html", "/nonexistent/x.html"]) == 2
    assert "no masks to show" in capsys.readouterr().err
