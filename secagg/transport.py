"""The in-memory network: the only place where protocol messages travel.

:class:`Transport` carries bytes between the :class:`~secagg.client.Client` objects and the
:class:`~secagg.server.Server`, one round at a time (:meth:`Transport.run_round`):

1. the *uplink* is a lazy generator: each live client (ascending id) is handed the server's previous
   message to it, runs its round method, and its upload is recorded in the :class:`~secagg.ledger.Ledger`
   and yielded to the server, which consumes it (e.g. adds the masked input to its accumulator) before
   the next client computes -- the server streams, no round ever holds all n uploads;
2. the server's replies (the *downlink*) are recorded and queued for the next round.

The **dropout schedule** maps a client to ``(round index, after)``: the client sends nothing from that
round on (``after=False``), or sends its message of that round and then vanishes (``after=True``).
A client whose round method raises a :class:`~secagg.errors.SecAggError` *aborts*: it is removed like
a dropout and the error is kept in :attr:`Transport.client_errors`. A client the server did not
address in the previous round (it is not in the server's current set) takes no further part.

An optional ``interceptor(round, direction, client, data) -> bytes`` sees every message in flight
and may replace it (tests use it to tamper with or replay messages); the ledger records the size of
what the sender sent.

Timings: wall-clock seconds spent inside client methods (summed over clients, and the maximum over
clients) and inside the server (the rest of the round), per round.

**Parallel clients** (opt-in, :class:`ProcessTransport`, ``Session(..., workers=W)`` with ``W > 1``): the
same carrier, but the clients' round methods run in ``W`` forked worker processes. The clients are
built in the main process and the workers are forked at the first round, so each inherits its share
of the :class:`~secagg.client.Client` objects (client ``i``-th in id order goes to worker ``i mod W``);
from then on a client's state lives only in its worker. Per round the main process sends each worker
the ``(client id, incoming bytes)`` pairs it must deliver -- decided exactly as above, from the dropout
schedule and the server's previous replies -- and receives the upload *bytes* back. The uplink generator
still hands uploads to the server one at a time in ascending id order, recording each in the ledger and
passing it through the interceptor at the moment the serial carrier would, so the server streams
(while it consumes ``y_u`` the workers compute the next clients) and the ledger, the sets, the sum,
the errors and the aborts are identical to the serial carrier's. A client that raises a
:class:`~secagg.errors.SecAggError` in its worker aborts there; the error is sent back and recorded in
:attr:`Transport.client_errors` as in the serial path. The main process keeps *mirrors* of the clients:
after each delivered message the mirror's observable attributes (``aborted``, ``released``, ``views``
and the expected next call) are updated from the worker, so inspecting ``session.clients`` during (in
the interceptor) or after a run sees what the serial path shows; the mirrors hold no live secrets and
must not be driven directly. If the server stops reading a round's uploads early, the clients whose
uploads it never read are treated as if they had not run (as in the lazy serial uplink): their worker
copies are retired and any later call reaches the mirror, which refuses it as the serial client would.
Timings in this mode: ``clients`` = the part of the round's wall time the main process spent waiting
for the workers (so ``clients + server`` is still the round's wall time), ``server`` = the rest,
``client_max`` = the longest single client call, plus ``client_sum`` (seconds of client calls summed
over clients, measured in the workers) and ``client_cpu`` (their summed CPU time).
"""

from __future__ import annotations

import gc
import multiprocessing
import pickle
import signal
import sys
import time
import traceback
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Mapping

from secagg import rules
from secagg.errors import InvalidInput, ProtocolViolation, SecAggError
from secagg.ledger import Ledger
from secagg.messages import MESSAGE_TYPES
from secagg.rounds import ROUNDS, Round

__all__ = ["Transport", "ProcessTransport", "Interceptor", "UPLOAD_KIND", "DOWNLOAD_KIND", "fork_available"]

Interceptor = Callable[[str, str, int, bytes], bytes]

#: round -> (client method, server method): the same name on both sides (:attr:`Round.method`)
METHODS = {r.value: (r.method, r.method) for r in Round}
UPLOAD_KIND = {r.value: r.upload_kind for r in Round}
DOWNLOAD_KIND = {"advertise-keys": "key-list", "share-keys": "ciphertexts"}


_KIND_BY_CODE = {t.CODE: t.KIND for t in MESSAGE_TYPES}


def _kind(data: object, default: str) -> str:
    """Kind of a message from its first byte (no full parse: the ledger must not cost a copy); a
    message object that is not bytes (the cryptography-free pair of :mod:`secagg.modular`) names its
    kind in ``KIND``."""
    if isinstance(data, (bytes, bytearray)):
        return _KIND_BY_CODE.get(data[0], default) if data else default
    return getattr(data, "KIND", default)


class Transport:
    """In-memory, ledger-recording, dropout-applying message carrier (see module docstring).

    Args:
        clients: ``id -> Client``.  server: the Server.
        dropouts: ``id -> (round index in ROUNDS, after)``.
        interceptor: optional hook on every message in flight.

    Attributes:
        ledger, client_errors (``id -> error`` of aborted clients), dropped (ids that vanished by
        schedule), timings (``round -> {"clients", "client_max", "server"}`` seconds).
    """

    def __init__(
        self,
        clients: Mapping[int, object],
        server: object,
        dropouts: Mapping[int, tuple[int, bool]] | None = None,
        interceptor: Interceptor | None = None,
    ) -> None:
        self.clients = dict(clients)
        self.server = server
        self.dropouts = dict(dropouts or {})
        self.interceptor = interceptor
        self.ledger = Ledger()
        self.client_errors: dict[int, SecAggError] = {}
        self.dropped: set[int] = set()
        self.alive: set[int] = set(self.clients)
        self.timings: dict[str, dict[str, float]] = {}
        self._inbox: dict[int, bytes | None] = {u: None for u in self.clients}

    def _drops_before(self, u: int, r: int) -> bool:
        return rules.drops_before(self.dropouts, u, r)

    def _drops_after(self, u: int, r: int) -> bool:
        return rules.drops_after(self.dropouts, u, r)

    def _uplink(self, round: str, stats: dict[str, float]) -> Iterator[tuple[int, bytes]]:
        r = ROUNDS.index(round)
        cmethod = METHODS[round][0]
        for u in sorted(self.alive):
            if u not in self._inbox:
                # not addressed by the server last round: no longer part of the protocol
                self.alive.discard(u)
                continue
            if self._drops_before(u, r):
                self.alive.discard(u)
                self.dropped.add(u)
                continue
            out = self._client_upload(u, cmethod, self._inbox.pop(u), stats)
            if out is None:  # the client aborted; its error is in client_errors
                continue
            self.ledger.record(round, "up", u, _kind(out, UPLOAD_KIND[round]), len(out))
            if self.interceptor is not None:
                out = self.interceptor(round, "up", u, out)
            if self._drops_after(u, r):
                self.alive.discard(u)
                self.dropped.add(u)
            yield u, out

    def _client_upload(self, u: int, cmethod: str, incoming: bytes | None, stats: dict[str, float]) -> bytes | None:
        """Run client ``u``'s round method in this process; ``None`` (error recorded) if it aborts."""
        return self._call_local(u, cmethod, incoming, stats)

    def _call_local(self, u: int, cmethod: str, incoming: bytes | None, stats: dict[str, float],
                    *also: str) -> bytes | None:
        t0 = time.perf_counter()
        try:
            fn = getattr(self.clients[u], cmethod)
            return fn() if incoming is None else fn(incoming)
        except SecAggError as exc:
            self.client_errors[u] = exc
            self.alive.discard(u)
            return None
        finally:
            dt = time.perf_counter() - t0
            stats["clients"] += dt
            for key in also:
                stats[key] += dt
            stats["client_max"] = max(stats["client_max"], dt)

    def close(self) -> None:
        """Release resources (nothing to do in-process; :class:`ProcessTransport` stops its workers)."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run_round(self, round: str):  # noqa: ANN201 - server reply (dict of bytes, or the aggregate)
        """Run one round: clients' uploads streamed into the server; record and queue its replies.

        Returns the server method's return value (``{client: bytes}``, or the aggregate vector in the
        last round). ProtocolAborted from the server propagates.
        """
        stats = {"clients": 0.0, "client_max": 0.0, "server": 0.0}
        self.timings[round] = stats
        smethod = getattr(self.server, METHODS[round][1])
        t0 = time.perf_counter()
        try:
            reply = smethod(self._uplink(round, stats))
        finally:
            stats["server"] = max(0.0, time.perf_counter() - t0 - stats["clients"])
        if isinstance(reply, dict):
            inbox: dict[int, bytes | None] = {}
            for u in sorted(reply):
                data = reply[u]
                self.ledger.record(round, "down", u, _kind(data, DOWNLOAD_KIND.get(round, "unmasking-request")), len(data))
                if self.interceptor is not None:
                    data = self.interceptor(round, "down", u, data)
                inbox[u] = data
            self._inbox = inbox
        return reply


# ------------------------------------------------------------------------------------------------
# parallel clients: forked worker processes (see the module docstring)
# ------------------------------------------------------------------------------------------------
#: Client attributes copied back to the main process's mirror after every call (``aborted`` separately).
_MIRRORED = ("released", "views", "expected_round")


def fork_available() -> bool:
    """True where worker processes can be forked (POSIX ``fork`` start method; macOS excluded, where
    forking a process that loaded system frameworks is unsafe)."""
    return sys.platform != "darwin" and "fork" in multiprocessing.get_all_start_methods()


def _pack_exc(exc: BaseException) -> tuple:
    """An exception as picklable parts (``ProtocolAborted`` cannot round-trip through plain pickle: its
    ``__init__`` takes three arguments but ``args`` holds one message)."""
    state = (type(exc), exc.args, dict(getattr(exc, "__dict__", {})))
    try:
        pickle.dumps(state)
        return ("exc", state)
    except Exception:  # noqa: BLE001 - unpicklable attributes: keep the type name and message
        return ("text", type(exc).__name__, str(exc), isinstance(exc, SecAggError))


def _unpack_exc(packed: tuple) -> BaseException:
    if packed[0] == "exc":
        cls, args, attrs = packed[1]
        exc = cls.__new__(cls)
        exc.args = args
        exc.__dict__.update(attrs)
        return exc
    return (SecAggError if packed[3] else RuntimeError)(f"{packed[1]}: {packed[2]}")


def _worker_main(conn, clients: dict, inherited: list) -> None:  # noqa: ANN001
    """Worker loop: receive ``(round, [(client, incoming bytes | None), ...])``, run each client's round
    method in order and send back, per client, a pickled header ``(client, status ("ok" | "error" |
    "crash"), packed error, traceback, seconds, cpu seconds, mirrored attributes, aborted, other)`` and,
    when the upload is ``bytes`` (``other`` is None), the upload itself as a raw message (no pickling).
    ``None`` or a closed pipe ends the loop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    for c in inherited:  # the main process's pipe ends: without this, EOF would never reach us
        c.close()
    try:
        while True:
            try:
                job = conn.recv()
            except (EOFError, OSError):
                return
            if job is None:
                return
            round, tasks = job
            cmethod = METHODS[round][0]
            for u, incoming in tasks:
                client = clients[u]
                out = err = None
                status = "ok"
                t0, c0 = time.perf_counter(), time.process_time()
                try:
                    fn = getattr(client, cmethod)
                    out = fn() if incoming is None else fn(incoming)
                except SecAggError as exc:
                    status, err = "error", exc
                except Exception as exc:  # noqa: BLE001 - a bug: re-raised in the main process
                    status, err = "crash", exc
                dt, cpu = time.perf_counter() - t0, time.process_time() - c0
                aborted = getattr(client, "aborted", None)
                mirror = {a: getattr(client, a) for a in _MIRRORED if hasattr(client, a)}
                header = (
                    u,
                    status,
                    None if err is None else _pack_exc(err),
                    "".join(traceback.format_exception(err)) if status == "crash" else None,
                    dt,
                    cpu,
                    mirror,
                    None if aborted is None else ("same" if aborted is err else _pack_exc(aborted)),
                    None if status != "ok" or type(out) is bytes else ("obj", out),
                )
                try:
                    try:
                        conn.send(header)  # pickles first: nothing is written if that fails
                    except (pickle.PicklingError, TypeError, AttributeError) as exc:
                        bad = RuntimeError(f"client {u}: its {cmethod} result cannot be sent to the main process: {exc!r}")
                        conn.send((u, "crash", _pack_exc(bad), None, dt, cpu, {}, None, None))
                        continue
                    if header[1] == "ok" and header[8] is None:
                        conn.send_bytes(out)
                except (BrokenPipeError, ConnectionError, EOFError, OSError):
                    return
                del out
    finally:
        conn.close()


def _shutdown(procs: list, conns: list) -> None:
    """Stop the workers: a stop message, then close the pipes (a worker blocked on a send gets EPIPE),
    join; terminate / kill whatever is still alive. Safe to call more than once."""
    for c in conns:
        try:
            c.send(None)
        except Exception:  # noqa: BLE001, S110 - already gone
            pass
        try:
            c.close()
        except Exception:  # noqa: BLE001, S110
            pass
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
            p.join(timeout=2)
        if p.is_alive():
            p.kill()
            p.join()
    conns.clear()
    procs.clear()


class ProcessTransport(Transport):
    """:class:`Transport` whose clients compute in ``workers`` forked processes (module docstring).

    Same arguments as :class:`Transport` plus ``workers >= 2``. The workers are forked on the first
    :meth:`run_round` (after the clients exist) and stopped by :meth:`close` (also on garbage
    collection and at interpreter exit); use it as a context manager, or let
    :class:`~secagg.protocol.Session` do it. A closed transport refuses further rounds.
    """

    def __init__(
        self,
        clients: Mapping[int, object],
        server: object,
        dropouts: Mapping[int, tuple[int, bool]] | None = None,
        interceptor: Interceptor | None = None,
        *,
        workers: int,
    ) -> None:
        super().__init__(clients, server, dropouts, interceptor)
        if not fork_available():
            raise InvalidInput("parallel clients need the fork start method (Linux)")
        self.workers = max(1, min(int(workers), len(self.clients)))
        self._slot = {u: i % self.workers for i, u in enumerate(sorted(self.clients))}
        self._procs: list = []
        self._conns: list = []
        self._queues: list[deque] = [deque() for _ in range(self.workers)]
        self._remote: set[int] = set()
        self._unread: set[int] = set()  # computed in a worker but never read by the server
        self._broken = False
        self._closed = False
        self._finalizer: weakref.finalize | None = None

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Fork the workers (each inherits its clients copy-on-write). Idempotent."""
        if self._closed:
            raise ProtocolViolation("this transport is closed: a session runs once")
        if self._procs:
            return
        ctx = multiprocessing.get_context("fork")
        pairs = [ctx.Pipe(duplex=True) for _ in range(self.workers)]
        parent_ends = [a for a, _ in pairs]
        child_ends = [b for _, b in pairs]
        procs: list = []
        # objects that exist now move to a permanent GC generation for the fork: the workers' collector
        # then never walks (and so never copies, through copy-on-write) the inherited heap. Left alone if
        # the caller froze objects itself (unfreezing would undo that).
        freeze = gc.get_freeze_count() == 0
        if freeze:
            gc.freeze()
        try:
            for w in range(self.workers):
                mine = {u: c for u, c in self.clients.items() if self._slot[u] == w}
                inherited = parent_ends + [c for i, c in enumerate(child_ends) if i != w]
                p = ctx.Process(target=_worker_main, args=(child_ends[w], mine, inherited), daemon=True, name=f"secagg-clients-{w}")
                p.start()
                procs.append(p)
        except BaseException:
            for c in child_ends:
                c.close()
            _shutdown(procs, parent_ends)
            raise
        finally:
            if freeze:
                gc.unfreeze()
        for c in child_ends:
            c.close()
        self._procs, self._conns = procs, parent_ends
        self._finalizer = weakref.finalize(self, _shutdown, procs, parent_ends)

    def close(self) -> None:
        """Stop and reap every worker (idempotent)."""
        self._closed = True
        if self._finalizer is not None:
            self._finalizer()

    # -- rounds ---------------------------------------------------------------------------------
    def run_round(self, round: str):  # noqa: ANN201
        """As :meth:`Transport.run_round`, with the clients' methods run in the workers."""
        if self._closed:
            raise ProtocolViolation("this transport is closed: a session runs once")
        if self._broken:
            raise ProtocolViolation("a client worker failed earlier; the session cannot continue")
        self.start()
        r = ROUNDS.index(round)
        tasks = [u for u in sorted(self.alive) if u in self._inbox and not self._drops_before(u, r) and u not in self._unread]
        per: list[list] = [[] for _ in range(self.workers)]
        for u in tasks:
            per[self._slot[u]].append((u, self._inbox[u]))
        self._remote = set(tasks)
        try:
            for w, lst in enumerate(per):
                if lst:
                    try:
                        self._conns[w].send((round, lst))
                    except OSError as exc:
                        self._broken = True
                        raise self._died(w, lst[0][0]) from exc
                    self._queues[w].extend(u for u, _ in lst)
            return super().run_round(round)
        except Exception:
            raise
        except BaseException:
            self._broken = True  # KeyboardInterrupt / SystemExit: do not wait for the workers
            raise
        finally:
            self._drain()
            self._remote = set()
            stats = self.timings.get(round)
            if stats is not None:
                stats.setdefault("client_sum", 0.0)
                stats.setdefault("client_cpu", 0.0)

    def _drain(self) -> None:
        """Read and discard what the server did not read this round; those clients count as not run."""
        if self._broken:
            return
        for w, q in enumerate(self._queues):
            while q:
                u = q.popleft()
                self._unread.add(u)
                try:
                    header = self._conns[w].recv()
                    if header[1] == "ok" and header[8] is None:
                        self._conns[w].recv_bytes()
                except (EOFError, OSError):
                    self._broken = True
                    return

    def _died(self, w: int, u: int) -> RuntimeError:
        p = self._procs[w]
        p.join(timeout=1)
        return RuntimeError(f"client worker {w} died (exit code {p.exitcode}) while running client {u}; session stopped")

    def _receive(self, u: int, stats: dict[str, float]) -> tuple[str, object]:
        """Next result of client ``u`` from its worker; update its mirror. -> (status, bytes | error)."""
        w = self._slot[u]
        q = self._queues[w]
        assert q and q[0] == u, "worker results out of order"
        q.popleft()
        try:
            u_, status, err, tb, dt, cpu, mirror, aborted, other = self._conns[w].recv()
            out = self._conns[w].recv_bytes() if status == "ok" and other is None else (other[1] if other else None)
        except (EOFError, OSError) as exc:
            self._broken = True
            raise self._died(w, u) from exc
        assert u_ == u
        stats["client_max"] = max(stats["client_max"], dt)
        stats["client_sum"] = stats.get("client_sum", 0.0) + dt
        stats["client_cpu"] = stats.get("client_cpu", 0.0) + cpu
        client = self.clients[u]
        error = None if err is None else _unpack_exc(err)
        for k, v in mirror.items():
            setattr(client, k, v)
        if hasattr(client, "aborted") or aborted is not None:
            client.aborted = None if aborted is None else (error if aborted == "same" else _unpack_exc(aborted))  # type: ignore[attr-defined]
        if status == "crash":
            assert error is not None
            if tb and hasattr(error, "add_note"):  # Python >= 3.11
                error.add_note(f"raised in client worker {w}:\n{tb}")
            raise error
        return status, (error if status == "error" else out)

    def _uplink(self, round: str, stats: dict[str, float]) -> Iterator[tuple[int, bytes]]:
        stats.setdefault("client_sum", 0.0)
        stats.setdefault("client_cpu", 0.0)
        return super()._uplink(round, stats)

    def _client_upload(self, u: int, cmethod: str, incoming: bytes | None, stats: dict[str, float]) -> bytes | None:
        if u not in self._remote:
            # its worker computed an upload the server never read: like the lazy serial uplink, the
            # client has not run that call; its mirror (state before that call) answers instead
            return self._call_local(u, cmethod, incoming, stats, "client_sum")
        t0 = time.perf_counter()
        try:
            status, res = self._receive(u, stats)
        finally:
            stats["clients"] += time.perf_counter() - t0
        if status == "error":
            assert isinstance(res, SecAggError)
            self.client_errors[u] = res
            self.alive.discard(u)
            return None
        return res  # type: ignore[return-value]
