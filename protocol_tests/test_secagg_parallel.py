"""Parallel clients (``workers > 1``, secagg.transport.ProcessTransport) give exactly the serial run.

* Hypothesis property: for random n, t, d, M, variant, graph (complete / SecAgg+ Harary) and dropout
  schedules over every round (before / after sending, including schedules that abort), ``workers=2``
  and ``workers=3`` give the same outcome as ``workers=1`` with the same seed: the same sum (values and
  dtype), U1..U5, included ids, ledger entries *in the same order*, client errors (ids, types,
  messages), rejected uploads, or the same ProtocolAborted (round, reason, party, ledger, sets); and the
  client mirrors in ``session.clients`` show the same ``aborted``, ``released`` and ``views``.
* Malicious servers (``server_class``) and wire tampering (``interceptor``) are detected the same way;
  the interceptor sees every message in the same order, interleaved with the server's consumption.
* A server that stops reading uploads early: the unread clients count as not having run, as serially.
* A bug inside a client (non-SecAggError) surfaces as the same exception type.
* Workers are always reaped (none left in ``multiprocessing.active_children()``) after runs, aborts, crashes.
* ``workers`` is validated; ``secagg simulate --workers`` gives the serial report.
No timing assertions (speed is measured in bench/ and docs/).
"""

from __future__ import annotations

import dataclasses
import itertools
import multiprocessing

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from secagg import client as client_mod
from secagg.cli import main as secagg_main
from secagg.commands.simulate import random_inputs, simulate
from secagg.errors import DecryptionFailed, InconsistentView, InvalidInput, ProtocolAborted, ProtocolViolation
from secagg.messages import ROUNDS, Ciphertexts, ConsistencyRequest, UnmaskingRequest
from secagg.protocol import Session
from secagg.server import Server
from secagg.transport import ProcessTransport, fork_available

pytestmark = pytest.mark.skipif(not fork_available(), reason="parallel clients need fork (Linux)")

VARIANTS = ("honest-but-curious", "active")
drop_specs = st.sampled_from([f"{r}{suffix}" for r in ROUNDS for suffix in ("", ":after")])
moduli = st.one_of(st.integers(1, 64).map(lambda b: 1 << b), st.sampled_from([3, 251, 2**31 - 1, 2**64 - 59]))


def _workers_alive() -> list:
    """Live worker processes of ProcessTransport in this process (other tests' children are ignored)."""
    return [p for p in multiprocessing.active_children() if p.name.startswith("secagg-clients-")]


def _err(e) -> tuple | None:  # noqa: ANN001
    return None if e is None else (type(e), str(e), getattr(e, "round", None), getattr(e, "party", None))


def _outcome(make_session, workers: int) -> dict:  # noqa: ANN001
    """Everything observable about one run (the parallel path must reproduce it exactly)."""
    session = make_session(workers)
    assert isinstance(session.transport, ProcessTransport) == (workers > 1)
    out: dict = {}
    try:
        res = session.run()
    except ProtocolAborted as exc:
        out["aborted"] = (exc.round, exc.reason, exc.party)
        out["ledger"] = list(exc.ledger)
        out["client_errors"] = {u: _err(e) for u, e in exc.client_errors.items()}
        out["sets"] = dict(exc.sets)
        out["acc"] = session.server._acc
    else:
        out["sum"] = (res.sum.dtype, res.sum.tolist())
        out["included"] = res.included
        out["sets"] = res.sets
        out["ledger"] = list(res.ledger)
        out["client_errors"] = {u: _err(e) for u, e in res.client_errors.items()}
        out["rejected"] = {u: _err(e) for u, e in res.rejected.items()}
        out["params"] = (res.threshold, res.n, res.dim, res.modulus, res.variant, res.session, res.graph_name)
        out["timing_rounds"] = set(res.timings)
    out["clients"] = {u: (_err(c.aborted), c.released, c.views) for u, c in session.clients.items()}
    assert _workers_alive() == []  # workers reaped
    return out


@st.composite
def scenarios(draw):
    n = draw(st.integers(2, 14))
    variant = draw(st.sampled_from(VARIANTS))
    sparse = n >= 5 and draw(st.booleans())
    k = 2 * draw(st.integers(1, (n - 2) // 2)) if sparse else None
    holders = (k + 1) if sparse else n
    # active: 2t > holders, and on SecAgg+ 2t > k + 2 (secagg.rules.check_interleaving_threshold)
    low = max(holders // 2 + 1, (k // 2 + 2) if sparse else 0) if variant == "active" else 2
    t = draw(st.integers(low, holders))  # t >= 2 always
    d = draw(st.integers(1, 24))
    m = draw(moduli)
    schedule = draw(st.dictionaries(st.integers(0, n - 1), drop_specs, max_size=n))
    delta = draw(st.sampled_from([None, 0.5, 0.9])) if sparse else None  # the survivor bound's delta
    return n, variant, k, t, d, m, schedule, draw(st.integers(0, 2**32)), draw(st.sampled_from([2, 3])), delta


@settings(max_examples=45)
@given(scenarios())
def test_parallel_run_is_identical_to_serial(case) -> None:  # noqa: ANN001
    n, variant, k, t, d, m, schedule, seed, workers, delta = case
    xs = random_inputs(n, d, m, seed)
    kw = dict(modulus=m, threshold=t, variant=variant, dropouts=schedule, seed=seed)
    if k is not None:
        kw.update(graph="secagg+", neighbours=k, dropout_fraction=delta)
    serial = _outcome(lambda w: Session(xs, workers=w, **kw), 1)
    event(f"aborted in {serial['aborted'][0]}" if "aborted" in serial else "completed")
    event("with client errors" if serial["client_errors"] else "no client errors")
    assert _outcome(lambda w: Session(xs, workers=w, **kw), workers) == serial


# ------------------------------------------------------------------------------------------------
# malicious servers and wire tampering
# ------------------------------------------------------------------------------------------------
class SplitView(Server):
    """Active variant: even clients are told client 1 is not in U3 (InconsistentView expected)."""

    def consistency_request_for(self, u: int) -> ConsistencyRequest:
        msg = super().consistency_request_for(u)
        return dataclasses.replace(msg, survivors=tuple(v for v in msg.survivors if v != 1)) if u % 2 == 0 else msg

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        if u % 2 == 0:
            return dataclasses.replace(msg, survivors=tuple(v for v in msg.survivors if v != 1), dropped=tuple(sorted(msg.dropped + (1,))))
        return msg


class BothShares(Server):
    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        return dataclasses.replace(msg, dropped=tuple(sorted(msg.dropped + (1,))))


class Rerouter(Server):
    """Hands client 0 the ciphertext e_{1,2} as if it were e_{1,0} (DecryptionFailed at client 0)."""

    def ciphertexts_for(self, v: int) -> Ciphertexts:
        msg = super().ciphertexts_for(v)
        if v != 0:
            return msg
        cts = dict(msg.ciphertexts)
        cts[1] = self._routed[2][1]
        return dataclasses.replace(msg, ciphertexts=tuple(sorted(cts.items())))


class EarlyStop(Server):
    """Reads only the first n - 2 key advertisements, yet sends every client a key list."""

    def advertise_keys(self, uploads):  # noqa: ANN001, ANN201
        out = super().advertise_keys(itertools.islice(uploads, self.n - 2))
        for u in range(self.n):
            out.setdefault(u, self.key_list_for(u).to_bytes())
        return out


@pytest.mark.parametrize(
    "server_class,variant,t,expected",
    [
        (SplitView, "active", 5, InconsistentView),
        (BothShares, "honest-but-curious", 3, ProtocolViolation),
        (BothShares, "active", 5, ProtocolViolation),
        (Rerouter, "honest-but-curious", 3, DecryptionFailed),
        (EarlyStop, "honest-but-curious", 3, ProtocolViolation),
    ],
)
def test_malicious_servers_are_detected_the_same_way(server_class, variant: str, t: int, expected: type) -> None:  # noqa: ANN001
    xs = random_inputs(8, 5, 2**16, 1)
    make = lambda w: Session(xs, modulus=2**16, threshold=t, seed=3, variant=variant, server_class=server_class, workers=w)  # noqa: E731
    serial = _outcome(make, 1)
    assert _outcome(make, 2) == serial
    errors = list(serial["client_errors"].values())
    assert errors and all(issubclass(e[0], expected) for e in errors)
    if server_class is EarlyStop:  # the two unread clients refuse the key list: they never sent their keys
        assert set(serial["client_errors"]) == {6, 7} and "expecting advertise_keys" in errors[0][1]


def test_interceptor_sees_the_same_stream_and_tampering_is_detected() -> None:
    """The interceptor runs in the main process at the same points as serially: same messages, same order,
    interleaved the same way with the server's consumption; a tampered ciphertext aborts client 0."""

    def make(events: list):  # noqa: ANN202
        class Recorder(Server):
            def masked_input_collection(self, uploads):  # noqa: ANN001, ANN201
                def watch():  # noqa: ANN202
                    for cid, data in uploads:
                        events.append(("consumed", cid))
                        yield cid, data

                return super().masked_input_collection(watch())

        def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
            events.append((rnd, direction, client, len(data)))
            if rnd == "share-keys" and direction == "down" and client == 0:
                msg = Ciphertexts.from_bytes(data)
                (v, ct), rest = msg.ciphertexts[0], msg.ciphertexts[1:]
                bad = bytearray(ct)
                bad[20] ^= 1
                return dataclasses.replace(msg, ciphertexts=((v, bytes(bad)),) + rest).to_bytes()
            return data

        return lambda w: Session(random_inputs(7, 6, 2**20, 2), modulus=2**20, threshold=3, seed=5, server_class=Recorder,
                                 interceptor=hook, dropouts={4: "masked-input"}, workers=w)

    ev1: list = []
    ev2: list = []
    serial = _outcome(make(ev1), 1)
    assert _outcome(make(ev2), 3) == serial
    assert ev1 == ev2 and ("consumed", 0) in ev1
    assert serial["client_errors"][0][0] is DecryptionFailed and serial["clients"][0][1] == {}


# ------------------------------------------------------------------------------------------------
# crashes, shutdown, validation, CLI
# ------------------------------------------------------------------------------------------------
def test_a_bug_inside_a_client_surfaces_as_serially_and_workers_are_reaped(monkeypatch) -> None:  # noqa: ANN001
    original = client_mod.Client.masked_input_collection

    def buggy(self, data):  # noqa: ANN001, ANN202
        if self.id == 3:
            raise KeyError("bug in client 3")
        return original(self, data)

    monkeypatch.setattr(client_mod.Client, "masked_input_collection", buggy)
    xs = random_inputs(6, 4, 2**8, 0)
    for w in (1, 2):
        session = Session(xs, modulus=2**8, threshold=2, seed=1, workers=w)
        with pytest.raises(KeyError, match="bug in client 3"):
            session.run()
        assert _workers_alive() == []


def test_aborts_reap_workers_and_a_session_runs_once() -> None:
    xs = random_inputs(5, 3, 2**8, 0)
    session = Session(xs, modulus=2**8, threshold=4, seed=0, workers=2, dropouts={0: "share-keys", 1: "share-keys"})
    with pytest.raises(ProtocolAborted) as info:
        session.run()
    assert info.value.round == "share-keys" and _workers_alive() == []
    with pytest.raises(ProtocolViolation, match="runs once"):
        session.run()
    seen: list[int] = []

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        seen.append(len(_workers_alive()))
        return data

    ok = Session(xs, modulus=2**8, threshold=2, seed=0, workers=9, interceptor=hook)  # capped at n = 5
    assert ok.workers == 5
    ok.run()
    assert set(seen) == {5} and _workers_alive() == []  # 5 workers during the run, none after
    Session(xs, modulus=2**8, threshold=2, seed=0, workers=2)  # never run: no worker is ever started
    assert _workers_alive() == []


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", None])
def test_workers_is_validated(bad) -> None:  # noqa: ANN001
    with pytest.raises(InvalidInput, match="workers"):
        Session(random_inputs(3, 2, 2**8, 0), modulus=2**8, seed=0, workers=bad)


def test_simulate_workers_flag_gives_the_serial_report(capsys) -> None:  # noqa: ANN001
    kw = dict(clients=9, dim=16, graph="secagg+", neighbours=4, dropout_rate=0.2, seed=4)
    serial = simulate(**kw)
    parallel = simulate(workers=2, **kw)
    for rep in (serial, parallel):
        rep.pop("timings", None)
    assert parallel == serial and serial["ok"]
    assert secagg_main(["simulate", "-n", "6", "-d", "8", "--workers", "2"]) == 0
    assert "YES" in capsys.readouterr().out
    assert _workers_alive() == []


def test_without_fork_it_warns_and_runs_in_process(monkeypatch) -> None:  # noqa: ANN001
    import secagg.protocol as protocol_mod

    monkeypatch.setattr(protocol_mod, "fork_available", lambda: False)
    xs = random_inputs(4, 3, 2**8, 0)
    with pytest.warns(RuntimeWarning, match="fork"):
        session = Session(xs, modulus=2**8, threshold=2, seed=0, workers=2)
    assert session.workers == 1 and not isinstance(session.transport, ProcessTransport)
    assert session.run().included == (0, 1, 2, 3)


@pytest.mark.parametrize("when", ["advertise-keys", "share-keys"])
def test_a_killed_worker_stops_the_session_cleanly(when: str) -> None:
    """A worker process that dies (killed) mid-session: RuntimeError naming it, nothing released, no
    process left behind."""
    import os
    import signal

    holder: list[Session] = []

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if rnd == when and direction == "down" and client == 0:
            p = holder[0].transport._procs[1]
            os.kill(p.pid, signal.SIGKILL)
            p.join()
        return data

    session = Session(random_inputs(6, 4, 2**8, 0), modulus=2**8, threshold=2, seed=0, workers=2, interceptor=hook)
    holder.append(session)
    with pytest.raises(RuntimeError, match="client worker 1 died"):
        session.run()
    assert _workers_alive() == []
    assert not any(e.round == "unmasking" for e in session.transport.ledger)
    assert all(not c.released for c in session.clients.values())
