"""Clients on a Ray cluster: the transport seam's third carrier (in-process, forked workers, Ray).

:class:`RayTransport` is a :class:`~secagg.transport.Transport` whose clients' round computations run
in `Ray <https://docs.ray.io>`_ *actors* (``Session(..., executor="ray")``,
``run_secure_aggregation(..., executor="ray")``, ``secagg simulate --executor ray``). Nothing else
changes: the server is the same single streaming :class:`~secagg.server.Server` in the driver process,
clients and server exchange only serialized bytes, and the uplink hands uploads to the server one at a
time in ascending client id, recording each in the ledger and passing it through the interceptor at the
moment the serial carrier would. Hence the sum, the sets ``U1..U5``, the ledger, the client errors and
the aborts are **bit-identical** to the in-process path for the same seed (only timings differ).

How the clients get there. The clients are built in the driver exactly as for the serial path and,
at the first round (before any of them has drawn a random byte), shipped once: client ``i``-th in id
order goes to actor ``i mod A`` (``A`` actors, by default one per CPU of the cluster, spread over its
nodes). Each actor's clients are serialized into one object in Ray's object store (their input
vectors included) and fetched by that actor; from then on a client's state (key pairs, shares, pairwise
seeds) lives only in its actor. Per round the driver submits, to each actor, its clients' incoming
messages in chunks of consecutive clients (so the server consumes the first uploads while the actors
compute the next ones) and gets the uploads back through the object store.

**Failures are dropouts.** A client task that fails -- its round method raises something other than a
:class:`~secagg.errors.SecAggError` (a :class:`~secagg.errors.SecAggError` *aborts* the client as in
the serial path), or its actor or node dies -- counts as that client dropping *before sending* in that
round: it sends nothing from then on and is recorded in :attr:`RayTransport.failures` (``client ->
(round, description)``). The result then equals a serial run given the dropout schedule extended by
``{u: round for u, (round, _) in failures.items()}``. If the server stops reading a round's uploads
early, the clients it never read are treated as not having run (as in the lazy serial uplink), as in
:class:`~secagg.transport.ProcessTransport`.

The driver keeps *mirrors* of the clients: after each call the mirror's observable attributes
(``aborted``, ``released``, ``views`` and the expected next call) are updated from the actor, so
``session.clients`` shows what the serial path shows. Timings as for
:class:`~secagg.transport.ProcessTransport`: ``clients`` = the part of the round the driver waited for
the actors, ``server`` = the rest, plus ``client_sum``/``client_cpu`` measured in the actors.

Cluster. :func:`ray_cluster` joins an existing cluster (``address`` or ``RAY_ADDRESS``) or starts a local
instance that stays local: bound to 127.0.0.1, usage statistics and dashboard off, the machine's cores,
shut down when the context exits. If Ray is already initialized (by the caller) it is used as is and
left running. Ray is an optional dependency (``pip install 'secagg-rfa[ray]'``); this module imports it
only when a Ray carrier starts. On a multi-machine cluster every node needs this package installed.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from secagg.drbg import Drbg
from secagg.errors import InvalidInput, ProtocolViolation, SecAggError
from secagg.graph import Graph
from secagg.keys import SigningKey
from secagg.messages import ROUNDS
from secagg.transport import _MIRRORED, METHODS, Interceptor, Transport, _pack_exc, _unpack_exc

__all__ = ["RayTransport", "ray_cluster", "require_ray", "INSTALL_HINT", "EXECUTORS"]

#: the executors of :func:`secagg.run_secure_aggregation` (``"local"``: in-process or forked workers)
EXECUTORS = ("local", "ray")

INSTALL_HINT = "the Ray executor needs Ray: pip install 'secagg-rfa[ray]' (from a checkout: pip install -e '.[ray]')"

# _MIRRORED (from secagg.transport): the client attributes copied back to the driver's mirror after every
# call, as for forked workers (``aborted`` separately)


def require_ray() -> None:
    """Raise :class:`~secagg.errors.InvalidInput` saying how to install Ray if it is not installed
    (without importing it: :func:`ray_cluster` must set up the environment first)."""
    import importlib.util

    if "ray" in sys.modules:
        if sys.modules["ray"] is None:  # import blocked
            raise InvalidInput(INSTALL_HINT)
        return
    if importlib.util.find_spec("ray") is None:
        raise InvalidInput(INSTALL_HINT)


#: Ray reads this when it is imported: false makes a node take 127.0.0.1 as its address, so that every
#: service of a local instance (GCS, raylet, workers, object manager, agents) listens on loopback only.
_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _init_keeping_handlers(ray: Any, kwargs: dict[str, Any]) -> None:
    """``ray.init(**kwargs)`` that leaves the caller's signal handlers in place.

    ``ray.init`` replaces the driver's SIGTERM handler by ``sys.exit(15)`` (and Ray's core worker adds a
    C-level handler that prints a stack dump). A caller that installed its own Python handlers (a
    command that stops cleanly on SIGINT/SIGTERM) gets them back once ``ray.init`` returns; with the
    default handlers, Ray's ``sys.exit`` stays (it lets :func:`ray_cluster` shut the instance down).
    If ``ray.init`` fails or is interrupted, whatever it already started is shut down before the
    exception propagates; a SIGTERM that arrived meanwhile is delivered again, to the caller's handler."""
    import signal
    import threading

    watched = (signal.SIGTERM, signal.SIGINT)
    main = threading.current_thread() is threading.main_thread()
    saved = {s: signal.getsignal(s) for s in watched} if main else {}
    own = {s: h for s, h in saved.items() if callable(h) and h is not signal.default_int_handler}
    try:
        ray.init(**kwargs)
    except BaseException as exc:
        ray.shutdown()
        for s, h in own.items():
            signal.signal(s, h)
        if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM and signal.SIGTERM in own:
            signal.raise_signal(signal.SIGTERM)  # Ray's handler turned the caller's SIGTERM into sys.exit
        raise
    for s, h in own.items():
        signal.signal(s, h)


@contextmanager
def ray_cluster(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray, initialized for the duration of the ``with`` block; yields the :mod:`ray` module.

    * Ray already initialized in this process: used as is, left running (``address`` is ignored).
    * ``address`` (or the ``RAY_ADDRESS`` environment variable) given: ``ray.init(address=...)`` joins
      that cluster; :func:`ray.shutdown` at the end disconnects (the cluster keeps running).
    * Otherwise a local instance is started for this block only: ``num_cpus`` (default: this machine's
      cores), every service bound to ``127.0.0.1`` (Ray's single-machine mode), the dashboard and usage
      statistics off, workers at the driver's priority (Ray's default is nice 15); shut down at the end
      (also on Ctrl-C or an error).

    ``ray.init`` would replace the caller's SIGTERM handler; Python handlers the caller installed for
    SIGINT/SIGTERM are put back once it returns (see :func:`_init_keeping_handlers`).
    """
    require_ray()
    if num_cpus is not None and (isinstance(num_cpus, bool) or not isinstance(num_cpus, int) or num_cpus < 1):
        raise InvalidInput(f"num_cpus must be an int >= 1, got {num_cpus!r}")
    address = address or os.environ.get("RAY_ADDRESS") or None
    local = address is None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # read by ray.init and the processes it starts
    if local:
        # Ray lowers its workers' priority (nice 15) by default; here they are the job: run them like the
        # driver, or on a busy machine the clients starve behind everything else
        os.environ.setdefault("RAY_worker_niceness", "0")
    restore = None
    if local and "ray" not in sys.modules:
        restore = os.environ.get(_LOCAL_ONLY_ENV)
        os.environ[_LOCAL_ONLY_ENV] = "0"
    import ray
    from ray._private import ray_constants

    if ray.is_initialized():
        yield ray
        return
    old_flag = ray_constants.ENABLE_RAY_CLUSTER
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
    try:
        if local:
            ray_constants.ENABLE_RAY_CLUSTER = False  # also when ray was imported before this block
            kwargs.update(num_cpus=num_cpus or os.cpu_count() or 1, _node_ip_address="127.0.0.1")
        else:
            kwargs.update(address=address)
        _init_keeping_handlers(ray, kwargs)
        try:
            yield ray
        finally:
            ray.shutdown()
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if local and restore is None:
            os.environ.pop(_LOCAL_ONLY_ENV, None)
        elif restore is not None:
            os.environ[_LOCAL_ONLY_ENV] = restore


# ------------------------------------------------------------------------------------------------
# shipping clients: Drbg and SigningKey hold cryptography contexts that plain pickle cannot carry
# ------------------------------------------------------------------------------------------------
def _drbg_from_key(key: bytes) -> Drbg:
    """A :class:`Drbg` at the start of the stream of ``key`` (what :meth:`Drbg._init` would build)."""
    d = Drbg.__new__(Drbg)
    d._key = key
    d._enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    d._buf = b""
    d._pos = 0
    return d


class _ClientPickler(pickle.Pickler):
    """Pickles clients that have not started: a fresh :class:`Drbg` as its key (it has produced no
    output: clients draw their first bytes in round 0, after shipping), a :class:`SigningKey` as its seed,
    the (immutable) :class:`~secagg.graph.Graph` by its constructor arguments (once: pickle memoizes it)."""

    def reducer_override(self, obj: object):  # noqa: ANN201
        if type(obj) is Graph:
            return Graph, (obj.n, obj.k, obj.is_complete, obj._label)
        if type(obj) is Drbg:
            return _drbg_from_key, (obj._key,)
        if type(obj) is SigningKey:
            from cryptography.hazmat.primitives import serialization as s

            raw = obj._sk.private_bytes(s.Encoding.Raw, s.PrivateFormat.Raw, s.NoEncryption())
            return SigningKey.from_private_bytes, (raw,)
        return NotImplemented


def dumps_clients(clients: Mapping[int, object]) -> bytes:
    """Serialize not-yet-started clients (see :class:`_ClientPickler`); ProtocolViolation if one has started."""
    started = [u for u, c in clients.items() if getattr(c, "expected_round", "advertise-keys") != "advertise-keys"]
    if started:
        raise ProtocolViolation(f"clients {started[:5]} have already run a round; only fresh clients can be shipped")
    buf = io.BytesIO()
    _ClientPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(dict(clients))
    return buf.getvalue()


class ClientHost:
    """A Ray actor's body: holds some clients and runs their round methods in submission order."""

    def __init__(self, blob: bytes) -> None:
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
        self.clients: dict[int, object] = pickle.loads(blob)

    def size(self) -> int:
        return len(self.clients)

    def run(self, round: str, tasks: list[tuple[int, bytes | None]]) -> list[tuple]:
        """Per client ``(client, status ("ok" | "error" | "failed"), upload bytes | packed error |
        traceback text, seconds, cpu seconds, mirrored attributes, aborted)``."""
        cmethod = METHODS[round][0]
        out = []
        for u, incoming in tasks:
            client = self.clients[u]
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                fn = getattr(client, cmethod)
                res = fn() if incoming is None else fn(incoming)
                if type(res) is not bytes:
                    raise TypeError(f"client {u}: {cmethod} returned {type(res).__name__}, not bytes")
                status, payload = "ok", res
            except SecAggError as exc:
                status, payload = "error", _pack_exc(exc)
            except Exception as exc:  # noqa: BLE001 - a failed client task: the transport drops it
                status, payload = "failed", "".join(traceback.format_exception_only(type(exc), exc)).strip()
                del self.clients[u]  # it takes no further part; its secrets go
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            aborted = getattr(client, "aborted", None)
            mirror = {a: getattr(client, a) for a in _MIRRORED if hasattr(client, a)}
            packed = None if aborted is None else _pack_exc(aborted)
            out.append((u, status, payload, dt, cpu, mirror if status != "failed" else {}, packed))
        return out


class RayTransport(Transport):
    """:class:`~secagg.transport.Transport` whose clients compute in Ray actors (module docstring).

    Same arguments as :class:`~secagg.transport.Transport` plus:

    Args:
        actors: number of actors (default: the cluster's CPUs, at most one per client); each reserves one
            CPU, or an equal share of the cluster's CPUs when there are more actors than CPUs.
        chunk: clients per submitted call (default: about eight calls per actor per round, at most 256).
        address: cluster to join when Ray is not initialized yet (else ``RAY_ADDRESS``, else a local
            instance, see :func:`ray_cluster`), shut down by :meth:`close`.

    Attributes:
        failures: ``client -> (round, description)`` of client tasks that failed (counted as dropouts).
        startup_s: seconds spent joining Ray, creating the actors and shipping the clients (first round).
        actor_handles: the actors (after the first round); client ``u`` is on ``actor_handles[slot[u]]``.
    """

    def __init__(
        self,
        clients: Mapping[int, object],
        server: object,
        dropouts: Mapping[int, tuple[int, bool]] | None = None,
        interceptor: Interceptor | None = None,
        *,
        actors: int | None = None,
        chunk: int | None = None,
        address: str | None = None,
    ) -> None:
        super().__init__(clients, server, dropouts, interceptor)
        for name, v in (("actors", actors), ("chunk", chunk)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidInput(f"{name} must be an int >= 1, got {v!r}")
        require_ray()
        self._want_actors, self._chunk, self._address = actors, chunk, address
        self.failures: dict[int, tuple[str, str]] = {}
        self.actor_handles: list = []
        self.slot: dict[int, int] = {}
        self._stack: ExitStack | None = None
        self._ray = None
        self._pending: dict[int, tuple[int, int]] = {}  # client -> (chunk number, position) this round
        self._refs: list = []  # this round's chunk refs
        self._got: dict[int, list | BaseException] = {}  # chunk number -> results (or the Ray error)
        self._remote: set[int] = set()
        self._unread: set[int] = set()
        self._closed = False
        self.startup_s = 0.0

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Join or start Ray, create the actors and ship each its clients. Idempotent."""
        if self._closed:
            raise ProtocolViolation("this transport is closed: a session runs once")
        if self.actor_handles:
            return
        t0 = time.perf_counter()
        stack = ExitStack()
        try:
            ray = stack.enter_context(ray_cluster(self._address))
            self._stack, self._ray = stack, ray
            cpus = int(ray.cluster_resources().get("CPU", 1)) or 1
            a = max(1, min(self._want_actors or cpus, len(self.clients)))
            ids = sorted(self.clients)
            self.slot = {u: i % a for i, u in enumerate(ids)}
            # one CPU per actor by default; more actors than CPUs share them (never wait for CPUs that do not exist)
            host = ray.remote(num_cpus=min(1.0, cpus / a), max_restarts=0, max_task_retries=0, scheduling_strategy="SPREAD")(ClientHost)
            handles = []
            for w in range(a):
                mine = {u: self.clients[u] for u in ids if self.slot[u] == w}
                blob = ray.put(dumps_clients(mine))  # the clients (inputs included) travel once, via the object store
                handles.append(host.remote(blob))
                del blob
            self.actor_handles = handles
            ray.get([h.size.remote() for h in handles])  # wait until every actor holds its clients
            self.startup_s = time.perf_counter() - t0
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Cancel what is in flight, kill the actors, leave Ray (shut down if this transport started it).
        Idempotent."""
        self._closed = True
        ray = self._ray
        if ray is not None:
            for ref in self._refs:
                try:
                    ray.cancel(ref, force=False)
                except Exception:  # noqa: BLE001, S110 - already done or gone
                    pass
            for h in self.actor_handles:
                try:
                    ray.kill(h, no_restart=True)
                except Exception:  # noqa: BLE001, S110
                    pass
        self._refs, self._got, self.actor_handles = [], {}, []
        stack, self._stack, self._ray = self._stack, None, None
        if stack is not None:
            stack.close()

    # -- rounds ---------------------------------------------------------------------------------
    def run_round(self, round: str):  # noqa: ANN201
        """As :meth:`Transport.run_round`, with the clients' methods run in the actors."""
        if self._closed:
            raise ProtocolViolation("this transport is closed: a session runs once")
        self.start()
        r = ROUNDS.index(round)
        tasks = [u for u in sorted(self.alive) if u in self._inbox and not self._drops_before(u, r) and u not in self._unread]
        per: list[list[int]] = [[] for _ in self.actor_handles]
        for u in tasks:
            per[self.slot[u]].append(u)
        a = len(self.actor_handles)
        size = self._chunk or max(1, min(256, -(-len(tasks) // (8 * a))))
        # submit chunk by chunk in ascending client id: the k-th chunk of every actor before the (k+1)-th
        lists = [[lst[i : i + size] for i in range(0, len(lst), size)] for lst in per]
        self._pending, self._refs, self._got = {}, [], {}
        for k in range(max((len(x) for x in lists), default=0)):
            for w, chunks in enumerate(lists):
                if k < len(chunks):
                    c = len(self._refs)
                    for pos, u in enumerate(chunks[k]):
                        self._pending[u] = (c, pos)
                    self._refs.append(self.actor_handles[w].run.remote(round, [(u, self._inbox[u]) for u in chunks[k]]))
        self._remote = set(tasks)
        try:
            return super().run_round(round)
        finally:
            self._unread |= {u for u in self._pending if u in self._remote}
            for ref in self._refs:  # calls whose results were never read (an abort, Ctrl-C): cancel them
                if ref is not None:
                    try:
                        self._ray.cancel(ref)
                    except Exception:  # noqa: BLE001, S110 - finished or gone
                        pass
            self._remote = set()
            self._pending, self._refs, self._got = {}, [], {}
            stats = self.timings.get(round)
            if stats is not None:
                stats.setdefault("client_sum", 0.0)
                stats.setdefault("client_cpu", 0.0)

    def _uplink(self, round: str, stats: dict[str, float]) -> Iterator[tuple[int, bytes]]:
        stats.setdefault("client_sum", 0.0)
        stats.setdefault("client_cpu", 0.0)
        return super()._uplink(round, stats)

    def _chunk_results(self, c: int) -> list | BaseException:
        if c not in self._got:
            ray = self._ray
            try:
                self._got[c] = ray.get(self._refs[c])
            except ray.exceptions.RayError as exc:  # the actor (or its node) died, or the call failed
                self._got[c] = exc
            self._refs[c] = None  # the driver's reference goes: the object store frees the chunk
        return self._got[c]

    def _client_upload(self, u: int, cmethod: str, incoming: bytes | None, stats: dict[str, float]) -> bytes | None:
        if u not in self._remote:
            # never scheduled remotely this round (not run last round as far as the server knows): the
            # mirror answers, refusing the call as the serial client would
            return self._call_local(u, cmethod, incoming, stats, "client_sum")
        c, pos = self._pending.pop(u)
        round = next(r for r, (m, _) in METHODS.items() if m == cmethod)
        t0 = time.perf_counter()
        try:
            got = self._chunk_results(c)
        finally:
            stats["clients"] += time.perf_counter() - t0
        if isinstance(got, BaseException):
            return self._fail(u, round, f"{type(got).__name__}: {str(got).strip().splitlines()[0] if str(got).strip() else ''}")
        u_, status, payload, dt, cpu, mirror, aborted = got[pos]
        assert u_ == u, "actor results out of order"
        got[pos] = None  # release the upload once handed over
        stats["client_max"] = max(stats["client_max"], dt)
        stats["client_sum"] += dt
        stats["client_cpu"] += cpu
        if status == "failed":
            return self._fail(u, round, str(payload))
        client = self.clients[u]
        for k, v in mirror.items():
            setattr(client, k, v)
        error = _unpack_exc(payload) if status == "error" else None
        if hasattr(client, "aborted") or aborted is not None:
            client.aborted = None if aborted is None else (error if status == "error" else _unpack_exc(aborted))  # type: ignore[attr-defined]
        if status == "error":
            assert isinstance(error, SecAggError)
            self.client_errors[u] = error
            self.alive.discard(u)
            return None
        return payload

    def _fail(self, u: int, round: str, why: str) -> None:
        """A failed client task: the client drops before sending in this round (module docstring)."""
        self.failures[u] = (round, why)
        self.alive.discard(u)
        self.dropped.add(u)
        return None
