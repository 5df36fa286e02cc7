"""Communication cost: an analytical model of *our* wire format, and the paper's model beside it.

Two models answer "how many bytes does one secure aggregation cost?":

1. :func:`model_ledger` -- the exact analytical model of this package's wire format
   (:mod:`secagg.messages`): given ``(n, d, M, graph, variant, dropout schedule, threshold)`` it lists
   every message the protocol would put on the wire, with its exact serialized size, and returns a
   :class:`~secagg.ledger.Ledger` equal (entry for entry, byte for byte) to the one a real run of
   :func:`secagg.protocol.run_secure_aggregation` measures. It also reproduces the run's survivor sets
   U1..U5 and its aborts (:func:`simulate_run`), so :func:`secagg.average.secure_average` with
   ``backend="modular"`` can skip the cryptography and still report the true cost.
   :func:`our_model` is its closed form: per-client means computed from message counts in ``O(1)``
   (exact for the complete graph; for a SecAgg+ graph with dropouts the number of dropped neighbours
   is replaced by its expectation ``k |D| / (n - 1)``), so ``secagg cost`` answers instantly for
   ``n = 2^14, d = 2^24``.

2. :func:`paper_model` -- Bonawitz et al. (CCS 2017, Section 7.1) per-user traffic in bits
   ``2 n a_K + (5 n - 4) a_S + d b`` with ``a_K = a_S = 256`` and ``b = B + ceil(log2 n)`` bits per
   masked element for ``B``-bit inputs, expansion ``= traffic / (B d)``: 1.73x for ``n = 2^10,
   d = 2^20`` and 1.98x for ``n = 2^14, d = 2^24`` (``B = 16``). The terms: ``2 n a_K`` = receiving
   the ``n`` pairs of public keys; ``(5 n - 4) a_S`` = sending and receiving ``2 (n - 1)`` encrypted
   shares each, plus sending ``n`` shares when unmasking; ``d b`` = the masked vector.

Our format adds what the paper's accounting idealizes away: a 22-byte header per message, ids (u32)
next to every key/ciphertext/share, AES-GCM nonces and tags (28 bytes per ciphertext), the (u, v,
session) header inside each ciphertext and 33-byte shares (a field element of a prime > 2^256).
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from secagg.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from secagg.ledger import Ledger

__all__ = [
    "with_commitments",
    "PaperCost",
    "OurCost",
    "paper_model",
    "paper_modulus",
    "our_model",
    "model_ledger",
    "modular_run",
    "simulate_run",
    "ModelRun",
    "ledger_table",
]

_ROUNDS = ("advertise-keys", "share-keys", "masked-input", "consistency-check", "unmasking")
_VARIANTS = ("honest-but-curious", "active")


# --------------------------------------------------------------------------------------------- paper
@dataclass(frozen=True)
class PaperCost:
    """Per-user traffic of Bonawitz et al. (CCS 2017, Section 7.1) for one configuration."""

    n: int
    d: int
    input_bits: int
    element_bits: int  # b = input_bits + ceil(log2 n)
    key_bits: int
    share_bits: int
    traffic_bits: int  # 2 n a_K + (5 n - 4) a_S + d b

    @property
    def traffic_bytes(self) -> float:
        return self.traffic_bits / 8

    @property
    def expansion(self) -> float:
        """``traffic / (input_bits * d)``: how much more a user sends and receives than its raw input."""
        return self.traffic_bits / (self.input_bits * self.d)


def paper_model(n: int, d: int, input_bits: int = 16, *, key_bits: int = 256, share_bits: int = 256) -> PaperCost:
    """The paper's per-user traffic ``2 n a_K + (5 n - 4) a_S + d b``, ``b = input_bits + ceil(log2 n)``.

    >>> round(paper_model(2**10, 2**20).expansion, 2), round(paper_model(2**14, 2**24).expansion, 2)
    (1.73, 1.98)
    """
    _check_pos(n, "n")
    _check_pos(d, "d")
    _check_pos(input_bits, "input_bits")
    b = input_bits + _ceil_log2(n)
    bits = 2 * n * key_bits + (5 * n - 4) * share_bits + d * b
    return PaperCost(n, d, input_bits, b, key_bits, share_bits, bits)


def paper_modulus(n: int, input_bits: int) -> int:
    """``M = 2^(input_bits + ceil(log2 n))``: the ring in which ``n`` sums of ``input_bits``-bit inputs
    cannot wrap (the paper's ``b`` bits per element)."""
    return 1 << (input_bits + _ceil_log2(n))


def _ceil_log2(n: int) -> int:
    return (int(n) - 1).bit_length()


def _check_pos(x: object, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise InvalidInput(f"{name} must be a positive integer, got {x!r}")
    return x


# ------------------------------------------------------------------------------------ closed form
@dataclass(frozen=True)
class OurCost:
    """Closed-form cost of one run in our wire format (means over clients; see :func:`our_model`).

    Attributes:
        upload_per_client: mean bytes sent by a client that completed every round.
        download_per_client: mean bytes the server sent to such a client.
        upload_mean: mean bytes sent, over all clients that sent at least one message (what
            :meth:`Ledger.expansion_factor` divides).
        total_up, total_down: bytes summed over all clients.
        by_round: ``round -> {"up": bytes, "down": bytes}`` (totals).
        raw_input_bytes: ``d * input_bits / 8``.
        exact: False when expected neighbour counts were used (sparse graph with dropouts).
    """

    n: int
    d: int
    modulus: int
    k: int
    variant: str
    input_bits: int
    upload_per_client: float
    download_per_client: float
    upload_mean: float
    total_up: float
    total_down: float
    by_round: dict[str, dict[str, float]] = field(default_factory=dict)
    exact: bool = True

    @property
    def raw_input_bytes(self) -> float:
        return self.d * self.input_bits / 8

    @property
    def expansion_upload(self) -> float:
        """Upload of a completing client / raw input (our analogue of the paper's factor, uplink only)."""
        return self.upload_per_client / self.raw_input_bytes

    @property
    def expansion_traffic(self) -> float:
        """(Upload + download) of a completing client / raw input: the paper's accounting."""
        return (self.upload_per_client + self.download_per_client) / self.raw_input_bytes

    @property
    def ledger_expansion(self) -> float:
        """What :meth:`Ledger.expansion_factor` of the matching run returns (mean upload of senders)."""
        return self.upload_mean / self.raw_input_bytes


def _sizes():  # late import: messages needs shamir/keys, which import cryptography
    from secagg import messages

    return messages


def our_model(
    n: int,
    d: int,
    modulus: int,
    *,
    k: int | None = None,
    variant: str = "honest-but-curious",
    drops: Mapping[str, int] | None = None,
    input_bits: int = 16,
    commit_self_masks: bool = False,
) -> OurCost:
    """Closed-form cost of one run in our wire format, in ``O(1)`` (no per-message enumeration).

    ``commit_self_masks``: the opt-in self-mask commitment, +32 bytes per round-1 upload (+64 more for
    its signature in the active variant).

    ``k``: neighbours per client (``None`` or ``n - 1``: complete graph). ``drops``: round name ->
    number of clients that drop at that round (they send nothing from that round on).
    Counts: ``U1 = n - a_0``, ``U2 = U1 - a_1``, ``U3 = U2 - a_2``, ``U4 = U3 - a_3``, ``U5 = U4 - a_4``.
    A client ``u`` in a set ``S`` has ``k (|S| - 1) / (n - 1)`` neighbours in ``S`` (exact for the complete
    graph, the expectation under a random relabelling of the Harary graph otherwise; ``exact`` says which).
    Message sizes: :mod:`secagg.messages` (affine in the counts, so expected sizes are exact expectations).
    """
    msg = _sizes()
    _check_pos(n, "n")
    _check_pos(d, "d")
    if variant not in _VARIANTS:
        raise InvalidInput(f"variant must be one of {_VARIANTS}, got {variant!r}")
    kk = n - 1 if k is None else int(k)
    if not 0 <= kk <= n - 1:
        raise InvalidInput(f"k must be in [0, n-1], got {k}")
    a = [0] * 5
    for r, cnt in (drops or {}).items():
        if r not in _ROUNDS:
            raise InvalidInput(f"unknown round {r!r}")
        a[_ROUNDS.index(r)] += int(cnt)
    active = variant == "active"
    if not active:  # no consistency round: a drop there means no unmasking response
        a[4] += a[3]
        a[3] = 0
    u1 = n - a[0]
    u2 = u1 - a[1]
    u3 = u2 - a[2]
    u4 = u3 - a[3]
    u5 = u4 - a[4]
    if min(u1, u2, u3, u4, u5) < 0:
        raise InvalidInput("more drops than clients")
    frac = kk / (n - 1) if n > 1 else 0.0
    exact = kk == n - 1 or sum(a) == 0

    def nb(size: int, member: bool) -> float:  # expected neighbours of u within a set of `size`
        return frac * (size - (1 if member else 0))

    signed = active
    rounds = {r: {"up": 0.0, "down": 0.0} for r in _ROUNDS}
    adv = msg.advertise_keys_size(signed)
    masked = msg.masked_input_size(d, modulus)
    sig = msg.consistency_signature_size()
    rounds["advertise-keys"]["up"] = u1 * adv
    rounds["advertise-keys"]["down"] = u1 * msg.key_list_size(nb(u1, True) + 1, signed)
    share_up = msg.share_keys_size(nb(u1, True), bool(commit_self_masks), active)
    rounds["share-keys"]["up"] = u2 * share_up
    rounds["share-keys"]["down"] = u2 * msg.ciphertexts_size(nb(u2, True))
    rounds["masked-input"]["up"] = u3 * masked
    req_round = "consistency-check" if active else "masked-input"
    ng = u4 if active else 0
    # survivors (ns includes u itself) and dropped neighbours of a client in U3
    ns = nb(u3, True) + 1
    nd = nb(u2 - u3, False)
    if active:
        rounds["masked-input"]["down"] += u3 * msg.consistency_request_size(u3)
        rounds["consistency-check"]["up"] = u4 * sig
        rounds[req_round]["down"] += u4 * msg.unmasking_request_size(ns, nd, ng)
    else:
        rounds[req_round]["down"] += u3 * msg.unmasking_request_size(ns, nd, 0)
    resp = msg.unmasking_response_size(ns, nd)
    rounds["unmasking"]["up"] = u5 * resp
    up_client = adv + share_up + masked + (sig if active else 0) + resp
    down_client = (
        msg.key_list_size(nb(u1, True) + 1, signed)
        + msg.ciphertexts_size(nb(u2, True))
        + (msg.consistency_request_size(u3) if active else 0)
        + msg.unmasking_request_size(ns, nd, ng)
    )
    total_up = sum(v["up"] for v in rounds.values())
    total_down = sum(v["down"] for v in rounds.values())
    rounds = {r: v for r, v in rounds.items() if v["up"] or v["down"]}
    return OurCost(
        n=n, d=d, modulus=modulus, k=kk, variant=variant, input_bits=input_bits,
        upload_per_client=float(up_client), download_per_client=float(down_client),
        upload_mean=total_up / u1 if u1 else 0.0, total_up=float(total_up), total_down=float(total_down),
        by_round=rounds, exact=exact,
    )


# ------------------------------------------------------------------------------ exact, per message
@dataclass(frozen=True)
class ModelRun:
    """What the analytical model predicts for one run: the ledger, the survivor sets, or the abort.

    Attributes:
        ledger: every message the run puts on the wire (up to the abort, if any).
        sets: ``"U1"``.. as far as the run got (``U4 == U3`` in the honest-but-curious variant).
        aborted: the :class:`~secagg.errors.ProtocolAborted` the server raises, or None.
        client_aborts: ``client -> round`` for clients that abort themselves (SecAgg+: fewer than ``t``
            live neighbours in their view); they behave like dropouts.
    """

    ledger: "Ledger"
    sets: dict[str, frozenset[int]]
    aborted: Exception | None
    client_aborts: dict[int, str]


def _schedule(dropouts: Mapping[int, object] | None, n: int) -> dict[int, tuple[int, bool]]:
    """A dropout schedule as :func:`secagg.protocol.parse_dropouts` returns it (``client -> (round index,
    after)``); accepts that form or the user-facing ``client -> "round[:after]"`` form."""
    if dropouts is None:
        return {}
    if not isinstance(dropouts, Mapping):
        raise InvalidInput(f"dropouts must be a mapping client id -> round name, got {type(dropouts).__name__}")
    if not dropouts:
        return {}
    if all(isinstance(v, tuple) for v in dropouts.values()):
        out = {}
        for u, v in dropouts.items():
            if not (len(v) == 2 and type(u) is int and 0 <= u < n and type(v[0]) is int and 0 <= v[0] < len(_ROUNDS)):
                raise InvalidInput(f"bad dropout entry {u!r}: {v!r}")
            out[u] = (v[0], bool(v[1]))
        return out
    from secagg.protocol import parse_dropouts

    return parse_dropouts(dropouts, n)  # type: ignore[arg-type]


RUN_CACHE_ENTRIES = 1 << 18
"""Ledger entries that :func:`simulate_run`'s memo keeps in total (least recently used runs go first)."""
_run_cache: "OrderedDict[tuple, tuple]" = OrderedDict()
_run_cache_size = 0
_run_cache_lock = threading.Lock()


def simulate_run(
    n: int,
    d: int,
    modulus: int,
    *,
    graph,  # noqa: ANN001 - secagg.graph.Graph
    threshold: int,
    variant: str = "honest-but-curious",
    dropouts: Mapping[int, object] | None = None,
) -> ModelRun:
    """Replay the protocol's message flow without cryptography (exact model of our wire format).

    Follows :mod:`secagg.transport` (dropout schedule, client aborts), :mod:`secagg.client` (its
    threshold checks: ``|U1 ∩ (N(u) ∪ {u})|``, ``|U2 ∩ (N(u) ∪ {u})|``, ``|U3 ∩ (N(u) ∪ {u})| >= t``)
    and :mod:`secagg.server` (``|U_r| >= t``; every secret needed has ``>= t`` live holders; ``t``
    shares of each received), recording each message's exact size from :mod:`secagg.messages`.
    Holders of ``u``'s shares: ``H(u) = {u} ∪ (N(u) ∩ U2)``.

    The run is a pure function of ``(n, d, M, graph, t, variant, schedule)``, so completed runs are
    memoised (up to :data:`RUN_CACHE_ENTRIES` ledger entries in all, least recently used evicted):
    repeated calls with the same configuration -- every oracle call of a training run -- replay the
    stored entries. Each call returns a fresh :class:`~secagg.ledger.Ledger` (the entries are immutable),
    fresh ``sets`` and ``client_aborts`` dicts, so callers may modify what they get. Aborted runs are
    not memoised (their exception object is the caller's).
    """
    global _run_cache_size
    from secagg.ledger import Ledger

    if variant not in _VARIANTS:
        raise InvalidInput(f"variant must be one of {_VARIANTS}, got {variant!r}")
    sched = _schedule(dropouts, n)
    key = (int(n), int(d), int(modulus), int(graph.n), int(graph.k), bool(graph.is_complete),
           None if graph.is_complete else tuple(graph.ring_order()), int(threshold), variant,
           tuple(sorted(sched.items())))
    with _run_cache_lock:
        hit = _run_cache.get(key)
        if hit is not None:
            _run_cache.move_to_end(key)
    if hit is not None:
        entries, sets, client_aborts = hit
        return ModelRun(Ledger(entries), dict(sets), None, dict(client_aborts))
    run = _simulate(n, d, modulus, graph, int(threshold), variant, sched)
    size = len(run.ledger.entries)
    if run.aborted is None and size <= RUN_CACHE_ENTRIES:
        with _run_cache_lock:
            if key not in _run_cache:
                _run_cache[key] = (tuple(run.ledger.entries), dict(run.sets), dict(run.client_aborts))
                _run_cache_size += size
                while _run_cache_size > RUN_CACHE_ENTRIES:
                    _, (old, _s, _c) = _run_cache.popitem(last=False)
                    _run_cache_size -= len(old)
    return run


def _simulate(n: int, d: int, modulus: int, graph, t: int, variant: str,  # noqa: ANN001
              sched: dict[int, tuple[int, bool]]) -> ModelRun:
    """:func:`simulate_run` itself (no memo); ``sched`` in the parsed ``client -> (round, after)`` form."""
    from secagg.errors import ProtocolAborted
    from secagg.ledger import Ledger

    msg = _sizes()
    active = variant == "active"
    ledger = Ledger()
    sets: dict[str, frozenset[int]] = {}
    client_aborts: dict[int, str] = {}
    closed = {u: frozenset(graph.neighbours(u)) | {u} for u in range(n)}

    def before(u: int, r: int) -> bool:
        s = sched.get(u)
        return s is not None and (s[0] < r or (s[0] == r and not s[1]))

    def after(u: int, r: int) -> bool:
        s = sched.get(u)
        return s is not None and s[0] == r and s[1]

    def done(exc: Exception | None) -> ModelRun:
        return ModelRun(ledger, dict(sets), exc, client_aborts)

    def need(rnd: str, have: int, what: str) -> ProtocolAborted | None:
        return ProtocolAborted(rnd, f"{what}: {have} < t = {t}") if have < t else None

    alive = set(range(n))
    # round 0
    r = 0
    u1 = set()
    for u in sorted(alive):
        if before(u, r):
            alive.discard(u)
            continue
        ledger.record("advertise-keys", "up", u, "advertise-keys", msg.advertise_keys_size(active))
        u1.add(u)
        if after(u, r):
            alive.discard(u)
    U1 = frozenset(u1)
    sets["U1"] = U1
    if (e := need("advertise-keys", len(U1), "|U1|")) is not None:
        return done(e)
    for u in sorted(U1):
        ledger.record("advertise-keys", "down", u, "key-list", msg.key_list_size(len(closed[u] & U1), active))
    alive &= U1
    # round 1
    r = 1
    u2 = set()
    for u in sorted(alive):
        if before(u, r):
            alive.discard(u)
            continue
        if len(closed[u] & U1) < t:
            client_aborts[u] = "share-keys"
            alive.discard(u)
            continue
        ledger.record("share-keys", "up", u, "share-keys", msg.share_keys_size(len(closed[u] & U1) - 1))
        u2.add(u)
        if after(u, r):
            alive.discard(u)
    U2 = frozenset(u2)
    sets["U2"] = U2
    if (e := need("share-keys", len(U2), "|U2|")) is not None:
        return done(e)
    holders = {u: (closed[u] & U2) | {u} for u in U2}
    for v in sorted(U2):
        ledger.record("share-keys", "down", v, "ciphertexts", msg.ciphertexts_size(len((closed[v] - {v}) & U2)))
    alive &= U2
    # round 2
    r = 2
    u3 = set()
    for u in sorted(alive):
        if before(u, r):
            alive.discard(u)
            continue
        if len(closed[u] & U2) < t:
            client_aborts[u] = "masked-input"
            alive.discard(u)
            continue
        ledger.record("masked-input", "up", u, "masked-input", msg.masked_input_size(d, modulus))
        u3.add(u)
        if after(u, r):
            alive.discard(u)
    U3 = frozenset(u3)
    sets["U3"] = U3
    if (e := need("masked-input", len(U3), "|U3|")) is not None:
        return done(e)
    alive &= U3

    def reconstructible(rnd: str, live: frozenset[int]) -> ProtocolAborted | None:
        for u in sorted(U3):
            c = len(holders[u] & live)
            if c < t:
                return ProtocolAborted(rnd, f"self-mask seed of client {u} has {c} live holders < t = {t}")
        for v in sorted(U2 - U3):
            if not ((holders[v] - {v}) & U3):
                continue
            c = len(holders[v] & live)
            if c < t:
                return ProtocolAborted(rnd, f"mask key of dropped client {v} has {c} live holders < t = {t}")
        return None

    def requests(rnd: str, recipients: frozenset[int], ng: int) -> None:
        for u in sorted(recipients):
            ns = len(closed[u] & U3)
            nd = len(((closed[u] - {u}) & U2) - U3)
            ledger.record(rnd, "down", u, "unmasking-request", msg.unmasking_request_size(ns, nd, ng))

    if active:
        for u in sorted(U3):
            ledger.record("masked-input", "down", u, "consistency-request", msg.consistency_request_size(len(U3)))
        r = 3
        u4 = set()
        for u in sorted(alive):
            if before(u, r):
                alive.discard(u)
                continue
            ledger.record("consistency-check", "up", u, "consistency-signature", msg.consistency_signature_size())
            u4.add(u)
            if after(u, r):
                alive.discard(u)
        U4 = frozenset(u4)
        sets["U4"] = U4
        if (e := need("consistency-check", len(U4), "|U4|")) is not None:
            return done(e)
        if (e := reconstructible("consistency-check", U4)) is not None:
            return done(e)
        requests("consistency-check", U4, len(U4))
        alive &= U4
        recipients = U4
    else:
        U4 = U3
        sets["U4"] = U4
        if (e := reconstructible("masked-input", U3)) is not None:
            return done(e)
        requests("masked-input", U3, 0)
        recipients = U3
    # round 4
    r = 4
    u5 = set()
    for u in sorted(alive & recipients):
        if before(u, r):
            continue
        ns = len(closed[u] & U3)
        if ns < t:
            client_aborts[u] = "unmasking"
            continue
        nd = len(((closed[u] - {u}) & U2) - U3)
        ledger.record("unmasking", "up", u, "unmasking-response", msg.unmasking_response_size(ns, nd))
        u5.add(u)
    U5 = frozenset(u5)
    sets["U5"] = U5
    if (e := need("unmasking", len(U5), "|U5|")) is not None:
        return done(e)
    for u in sorted(U3):
        c = len(closed[u] & U5)
        if c < t:
            return done(ProtocolAborted("unmasking", f"{c} shares of b_{u} < t = {t}"))
    for v in sorted(U2 - U3):
        if not ((holders[v] - {v}) & U3):
            continue
        c = len((closed[v] - {v}) & U5)
        if c < t:
            return done(ProtocolAborted("unmasking", f"{c} shares of s_sk_{v} < t = {t}"))
    return done(None)


def _resolve(n: int, graph, variant: str, threshold, seed, neighbours, corrupt_fraction, dropout_fraction):  # noqa: ANN001, ANN202
    """The (Graph, t) a run with these arguments uses (same derivation from the seed as the protocol)."""
    from secagg.graph import Graph

    if isinstance(graph, Graph):
        if graph.n != n:
            raise InvalidInput(f"graph has {graph.n} nodes, expected {n}")
        if threshold is None:
            raise InvalidInput("an explicit Graph needs an explicit threshold")
        return graph, int(threshold)
    from secagg.drbg import Drbg, _encode_seed
    from secagg.protocol import _setup_graph

    if graph == "complete":  # draws nothing from the run's DRBG: check the seed as Drbg would, skip the HKDF
        _encode_seed(seed)
        return _setup_graph(n, graph, variant, threshold, neighbours, corrupt_fraction, dropout_fraction, None)  # type: ignore[arg-type]
    root = Drbg(seed, b"secagg/run/v1")
    root.child(b"session")  # the protocol derives the session first; children are independent anyway
    return _setup_graph(n, graph, variant, threshold, neighbours, corrupt_fraction, dropout_fraction, root.child(b"graph"))


def model_ledger(
    n: int,
    d: int,
    modulus: int,
    *,
    graph="complete",  # noqa: ANN001 - "complete" | "secagg+" | secagg.graph.Graph
    variant: str = "honest-but-curious",
    dropouts: Mapping[int, object] | None = None,
    threshold: int | None = None,
    seed: int | bytes | None = None,
    neighbours: int | None = None,
    corrupt_fraction: float = 0.05,
    dropout_fraction: float = 0.05,
    commit_self_masks: bool = False,
) -> "Ledger":
    """The ledger a run of :func:`secagg.protocol.run_secure_aggregation` with these arguments measures,
    computed from the wire format alone (entry for entry, byte for byte; see :func:`simulate_run`).

    ``graph`` may be a :class:`~secagg.graph.Graph` (then ``threshold`` is required); otherwise the graph
    and threshold are derived from ``seed`` exactly as the protocol derives them (the SecAgg+ relabelling
    is public randomness). If the run would abort, raises the same
    :class:`~secagg.errors.ProtocolAborted` (round and reason), with the ledger up to the abort attached
    as ``exc.ledger``, as the protocol does. As a pure cost calculator it also prices active-variant
    thresholds with ``2t <= h`` that the protocol itself refuses (:func:`secagg.protocol.check_active_threshold`);
    :func:`modular_run` refuses them like the protocol. ``commit_self_masks``: price the opt-in
    self-mask commitment (:func:`with_commitments`).
    """
    _check_pos(n, "n")
    _check_pos(d, "d")
    if variant not in _VARIANTS:
        raise InvalidInput(f"variant must be one of {_VARIANTS}, got {variant!r}")
    g, t = _resolve(n, graph, variant, threshold, seed, neighbours, corrupt_fraction, dropout_fraction)
    run = simulate_run(n, d, modulus, graph=g, threshold=t, variant=variant, dropouts=_schedule(dropouts, n))
    if commit_self_masks:
        run = with_commitments(run, variant)
    if run.aborted is not None:
        run.aborted.ledger = run.ledger  # type: ignore[attr-defined]
        run.aborted.sets = run.sets  # type: ignore[attr-defined]
        raise run.aborted
    return run.ledger


def with_commitments(run: ModelRun, variant: str) -> ModelRun:
    """``run`` with the opt-in self-mask commitment on: every round-1 upload carries 32 more bytes
    (96 in the active variant: its Ed25519 signature too; :class:`secagg.messages.ShareKeys`). Nothing
    else changes: the commitment is checked only when the server reconstructs ``b_u``."""
    import dataclasses

    from secagg.ledger import Ledger

    msg = _sizes()
    extra = msg.COMMITMENT_SIZE + (msg.SIGNATURE_SIZE if variant == "active" else 0)
    entries = (
        dataclasses.replace(e, nbytes=e.nbytes + extra) if (e.round, e.direction, e.kind) == ("share-keys", "up", "share-keys") else e
        for e in run.ledger
    )
    return dataclasses.replace(run, ledger=Ledger(entries))


def modular_run(
    encodings,  # noqa: ANN001 - (n, dim) array over Z_M
    *,
    dim: int,
    modulus: int,
    threshold: int | None = None,
    graph: str = "complete",
    variant: str = "honest-but-curious",
    dropouts: Mapping[int, str] | None = None,
    seed: int | bytes | None = None,
    neighbours: int | None = None,
    corrupt_fraction: float = 0.05,
    dropout_fraction: float = 0.05,
    commit_self_masks: bool = False,
):  # noqa: ANN201 - (sum, included, ledger)
    """The protocol's outcome without cryptography: ``(sum over U3 mod M, U3, ledger)``.

    Same argument checks, graph, threshold, survivor sets and aborts as
    :func:`secagg.protocol.run_secure_aggregation`; the sum is the plain modular sum of the rows in U3
    (what the unmasked protocol output equals), the ledger comes from :func:`model_ledger`
    (``commit_self_masks`` as there).
    """
    from secagg import ring
    from secagg.protocol import GRAPHS, VARIANTS

    if variant not in VARIANTS:
        raise InvalidInput(f"variant must be one of {VARIANTS}, got {variant!r}")
    if graph not in GRAPHS:
        raise InvalidInput(f"graph must be one of {GRAPHS}, got {graph!r}")
    if not isinstance(commit_self_masks, bool):
        raise InvalidInput(f"commit_self_masks must be a bool, got {commit_self_masks!r}")
    m = ring.check_modulus(modulus)
    mat = _ring_matrix(encodings, m, dim)
    if mat is not None:  # a valid (n, dim) matrix over Z_M, checked in one pass (or none: see _ring_matrix)
        rows = mat
    else:
        rows = list(encodings)
        for x in rows:  # same validation as the protocol, without keeping copies
            ring.as_ring_vector(x, m, dim)
    n = len(rows)
    if n < 2:
        raise InvalidInput(f"secure aggregation needs n >= 2 clients, got {n}")
    from secagg.protocol import parse_dropouts

    schedule = parse_dropouts(dropouts, n)  # the protocol's own validation: same accepted schedules
    g, t = _resolve(n, graph, variant, threshold, seed, neighbours, corrupt_fraction, dropout_fraction)
    from secagg.protocol import check_active_threshold

    check_active_threshold(g, t, variant)  # the protocol refuses these; so does its cryptography-free twin
    run = simulate_run(n, dim, m, graph=g, threshold=t, variant=variant, dropouts=schedule)
    if commit_self_masks:
        run = with_commitments(run, variant)
    if run.aborted is not None:
        run.aborted.ledger = run.ledger  # type: ignore[attr-defined]
        run.aborted.sets = run.sets  # type: ignore[attr-defined]
        raise run.aborted
    included = tuple(sorted(run.sets["U3"]))
    if mat is not None and mat.dtype == np.uint64 and ring.is_power_of_two(m):
        # M divides 2^64: the uint64 column sums wrap mod 2^64, and (S mod 2^64) mod M = S mod M
        sel = mat if len(included) == n else mat[list(included)]
        total = np.add.reduce(sel, axis=0, dtype=np.uint64)
        if m != 1 << 64:
            np.bitwise_and(total, np.uint64(m - 1), out=total)
        return total, included, run.ledger
    if mat is not None and mat.dtype.itemsize <= 4 and n < 1 << 32:
        # M <= 2^32 and n < 2^32: the column sums (< n M <= 2^64) are exact in uint64, then reduced mod M
        sel = mat if len(included) == n else mat[list(included)]
        wide = np.add.reduce(sel, axis=0, dtype=np.uint64)
        np.remainder(wide, np.uint64(m), out=wide)
        return wide.astype(mat.dtype), included, run.ledger
    total = ring.zeros(dim, m)
    for u in included:
        if mat is not None:
            ring._add_unchecked(total, mat[u], m, mat.dtype)  # validated above, dtype_for(M)
        else:
            ring.add_into(total, ring.as_ring_vector(rows[u], m, dim), m)
    return total, included, run.ledger


def _ring_matrix(encodings, m: int, dim) -> "np.ndarray | None":  # noqa: ANN001
    """``encodings`` as an ``(n, dim)`` matrix of ``dtype_for(M)`` if it is a 2-D integer numpy array whose
    elements all lie in ``[0, M)`` (checked with one min/max pass, skipped when the dtype cannot hold a
    value outside), else ``None``: the caller then validates row by row (same errors as the protocol)."""
    from secagg import ring

    if not (isinstance(encodings, np.ndarray) and encodings.ndim == 2 and encodings.dtype.kind in "iu"):
        return None
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or encodings.shape[1] != int(dim):
        return None
    info = np.iinfo(encodings.dtype)
    if encodings.size and info.min < 0 and int(encodings.min()) < 0:
        return None
    if encodings.size and info.max >= m and int(encodings.max()) >= m:
        return None
    return encodings.astype(ring.dtype_for(m), copy=False)


def ledger_table(ledger: "Ledger", *, dim: int | None = None, input_bits: int | None = None) -> str:
    """A plain-text summary of a ledger: bytes and messages per round and direction, per-client means,
    and (with ``dim`` and ``input_bits``) the expansion factor of :meth:`Ledger.expansion_factor`."""
    rows: dict[str, dict[str, list[int]]] = {}
    for e in ledger.entries:
        r = rows.setdefault(e.round, {"up": [0, 0], "down": [0, 0]})
        r[e.direction][0] += e.nbytes
        r[e.direction][1] += 1
    order = [r for r in _ROUNDS if r in rows] + sorted(set(rows) - set(_ROUNDS))
    head = f"  {'round':<18}{'up msgs':>9}{'up bytes':>14}{'down msgs':>11}{'down bytes':>14}"
    lines = [head, "  " + "-" * (len(head) - 2)]
    tot = {"up": [0, 0], "down": [0, 0]}
    for r in order:
        u, d = rows[r]["up"], rows[r]["down"]
        for k, v in (("up", u), ("down", d)):
            tot[k][0] += v[0]
            tot[k][1] += v[1]
        lines.append(f"  {r:<18}{u[1]:>9,}{u[0]:>14,}{d[1]:>11,}{d[0]:>14,}")
    lines.append(f"  {'total':<18}{tot['up'][1]:>9,}{tot['up'][0]:>14,}{tot['down'][1]:>11,}{tot['down'][0]:>14,}")
    up, down = ledger.upload_per_client(), ledger.download_per_client()
    if up:
        lines.append(f"  per client: mean upload {sum(up.values()) / len(up):,.1f} B (max {max(up.values()):,}), "
                     f"mean download {sum(down.values()) / max(1, len(down)):,.1f} B")
    if dim and input_bits and up:
        lines.append(f"  expansion factor (mean upload / {dim} x {input_bits}-bit input): "
                     f"{ledger.expansion_factor(dim, input_bits):.3f}")
    return "\n".join(lines)
