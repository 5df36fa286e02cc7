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
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from secagg.errors import SecAggError
from secagg.ledger import Ledger
from secagg.messages import MESSAGE_TYPES, ROUNDS

__all__ = ["Transport", "Interceptor", "UPLOAD_KIND", "DOWNLOAD_KIND"]

Interceptor = Callable[[str, str, int, bytes], bytes]

#: round -> (client method, server method)
METHODS = {
    "advertise-keys": ("advertise_keys", "advertise_keys"),
    "share-keys": ("share_keys", "share_keys"),
    "masked-input": ("masked_input_collection", "masked_input_collection"),
    "consistency-check": ("consistency_check", "consistency_check"),
    "unmasking": ("unmasking", "unmasking"),
}
UPLOAD_KIND = {
    "advertise-keys": "advertise-keys",
    "share-keys": "share-keys",
    "masked-input": "masked-input",
    "consistency-check": "consistency-signature",
    "unmasking": "unmasking-response",
}
DOWNLOAD_KIND = {"advertise-keys": "key-list", "share-keys": "ciphertexts"}


_KIND_BY_CODE = {t.CODE: t.KIND for t in MESSAGE_TYPES}


def _kind(data: bytes, default: str) -> str:
    """Kind of a message from its first byte (no full parse: the ledger must not cost a copy)."""
    if isinstance(data, (bytes, bytearray)) and data:
        return _KIND_BY_CODE.get(data[0], default)
    return default


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
        d = self.dropouts.get(u)
        return d is not None and (d[0] < r or (d[0] == r and not d[1]))

    def _drops_after(self, u: int, r: int) -> bool:
        d = self.dropouts.get(u)
        return d is not None and d[0] == r and d[1]

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
            incoming = self._inbox.pop(u)
            t0 = time.perf_counter()
            try:
                fn = getattr(self.clients[u], cmethod)
                out = fn() if incoming is None else fn(incoming)
            except SecAggError as exc:
                self.client_errors[u] = exc
                self.alive.discard(u)
                continue
            finally:
                dt = time.perf_counter() - t0
                stats["clients"] += dt
                stats["client_max"] = max(stats["client_max"], dt)
            self.ledger.record(round, "up", u, _kind(out, UPLOAD_KIND[round]), len(out))
            if self.interceptor is not None:
                out = self.interceptor(round, "up", u, out)
            if self._drops_after(u, r):
                self.alive.discard(u)
                self.dropped.add(u)
            yield u, out

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
