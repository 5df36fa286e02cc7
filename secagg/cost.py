"""Communication cost: an analytical model of *our* wire format, and the paper's model beside it.

Two models answer "how many bytes does one secure aggregation cost?":

1. :func:`model_ledger` -- the ledger of a run, *measured* without cryptography: the
   cryptography-free client/server pair of :mod:`secagg.modular` runs through the protocol's own
   :class:`~secagg.transport.Transport` under the same :mod:`secagg.rules`, sending messages whose sizes
   come from the wire format's size functions (:mod:`secagg.messages`), so the
   :class:`~secagg.ledger.Ledger` equals (entry for entry, byte for byte) the one a real run of
   :func:`secagg.protocol.run_secure_aggregation` measures, with the same survivor sets U1..U5 and aborts
   (:func:`simulate_run`, :func:`modular_run`); :func:`secagg.average.secure_average` with
   ``backend="modular"`` skips the cryptography and still reports the true cost.
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

from secagg.rounds import ROUNDS as _ROUNDS  # noqa: E402 - crypto-free module, cheap
from secagg.rounds import VARIANTS as _VARIANTS  # noqa: E402


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
    protocol: str = "bonawitz",
    consistency_view: str = "full",
) -> OurCost:
    """Closed-form cost of one run in our wire format, in ``O(1)`` (no per-message enumeration).

    ``protocol="plaintext"``: the baseline in which every client sends its input in the clear (one
    masked-input message, nothing downloaded; clients dropping before that round send nothing); ``k``
    and ``variant`` do not apply.

    ``commit_self_masks``: the opt-in self-mask commitment, +32 bytes per round-1 upload (+64 more for
    its signature in the active variant).

    ``k``: neighbours per client (``None`` or ``n - 1``: complete graph). ``drops``: round name ->
    number of clients that drop at that round (they send nothing from that round on).
    Counts: ``U1 = n - a_0``, ``U2 = U1 - a_1``, ``U3 = U2 - a_2``, ``U4 = U3 - a_3``, ``U5 = U4 - a_4``.
    A client ``u`` in a set ``S`` has ``k (|S| - 1) / (n - 1)`` neighbours in ``S`` (exact for the complete
    graph, the expectation under a random relabelling of the Harary graph otherwise; ``exact`` says which).
    Message sizes: :mod:`secagg.messages` (affine in the counts, so expected sizes are exact expectations).
    Active SecAgg+ (``k < n - 1``): the consistency request is the ``ceil(n / 8)``-byte U3 bitmap and a
    client of U4 receives the signatures of ``U4 ∩ N2[u]``, ``1 + (min(2k + 1, n) - 1)(|U4| - 1)/(n - 1)``
    in expectation (``min(2k + 1, n)`` exactly without dropouts). ``k = n - 1`` prices the complete graph's
    id list (a Harary graph of degree ``n - 1``, odd ``n``, is complete but sends the bitmap).
    ``consistency_view="window"`` (active SecAgg+): the consistency request is instead the Merkle proof
    of the client's window, :func:`secagg.messages.consistency_proof_size` bytes (``O(k + log n)``).
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
    if consistency_view not in ("full", "window"):
        raise InvalidInput(f"consistency_view must be 'full' or 'window', got {consistency_view!r}")
    if consistency_view == "window" and (variant != "active" or kk >= n - 1):
        raise InvalidInput("consistency_view='window' applies to the active variant on a SecAgg+ graph (k < n - 1)")
    if protocol not in ("bonawitz", "plaintext"):
        raise InvalidInput(f"protocol must be 'bonawitz' or 'plaintext', got {protocol!r}")
    if protocol == "plaintext":
        if variant != "honest-but-curious" or kk != n - 1 or commit_self_masks:
            raise InvalidInput("protocol='plaintext' has no variant, graph or commitments (clients send in the clear)")
        senders = n - a[0] - a[1] - a[2]  # a drop at or after the upload's round still sends it
        if senders < 0:
            raise InvalidInput("more drops than clients")
        up = msg.masked_input_size(d, modulus)
        return OurCost(
            n=n, d=d, modulus=modulus, k=kk, variant=variant, input_bits=input_bits, upload_per_client=float(up),
            download_per_client=0.0, upload_mean=float(up) if senders else 0.0, total_up=float(senders * up),
            total_down=0.0, by_round={"masked-input": {"up": float(senders * up), "down": 0.0}} if senders else {},
            exact=True)
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
    sparse = kk < n - 1
    # active: signatures forwarded to a client of U4 -- all of U4 (complete graph), or U4 ∩ N2[u] on SecAgg+
    # (N2[u]: the min(2k + 1, n) ring positions within k of u; u itself signed, the others are in U4 with
    # probability (|U4| - 1) / (n - 1) under the random relabelling)
    h2 = min(2 * kk + 1, n)
    ng = (u4 if not sparse else 1 + (h2 - 1) * (u4 - 1) / (n - 1)) if active else 0
    # the U3 a client signs, in full: ids (complete graph) or an n-bit bitmap (SecAgg+)
    creq = (msg.consistency_proof_size(n, kk) if consistency_view == "window"
            else msg.consistency_request_size(u3, n if sparse else None))
    # survivors (ns includes u itself) and dropped neighbours of a client in U3
    ns = nb(u3, True) + 1
    nd = nb(u2 - u3, False)
    if active:
        rounds["masked-input"]["down"] += u3 * creq
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
        + (creq if active else 0)
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
    """What a cryptography-free run of the protocol measured: the ledger, the survivor sets, or the abort.

    Attributes:
        ledger: every message the run put on the wire (up to the abort, if any).
        sets: ``"U1"``.. as far as the run got (``U4 == U3`` in the honest-but-curious variant).
        aborted: the :class:`~secagg.errors.ProtocolAborted` the server raised, or None.
        client_aborts: ``client -> round`` for clients that aborted themselves (SecAgg+: fewer than ``t``
            live neighbours in their view); they behave like dropouts.
    """

    ledger: "Ledger"
    sets: dict[str, frozenset[int]]
    aborted: Exception | None
    client_aborts: dict[int, str]


RUN_CACHE_ENTRIES = 1 << 18
"""Ledger entries that :func:`simulate_run`'s memo keeps in total (least recently used runs go first)."""
_run_cache: "OrderedDict[tuple, tuple]" = OrderedDict()
_run_cache_size = 0
_run_cache_lock = threading.Lock()


def _params_key(p) -> tuple:  # noqa: ANN001 - SessionParams
    g = p.graph
    return (p.protocol, p.n, p.dim, p.modulus, g.n, g.k, bool(g.is_complete),
            None if g.is_complete else tuple(g.ring_order()), p.threshold, p.variant.value,
            tuple(sorted(p.schedule.items())), p.min_survivors, p.commit_self_masks, p.tolerate,
            p.consistency_view)


def _run_params(params, *, cache: bool = True) -> ModelRun:  # noqa: ANN001 - SessionParams
    """Run the cryptography-free pair of :mod:`secagg.modular` through the protocol's
    :class:`~secagg.transport.Transport`; the ledger is the transport's. Completed runs are memoised."""
    global _run_cache_size
    from secagg.errors import ProtocolAborted
    from secagg.ledger import Ledger
    from secagg.modular import ModularClient, ModularServer
    from secagg.transport import Transport

    key = _params_key(params)
    if cache:
        with _run_cache_lock:
            hit = _run_cache.get(key)
            if hit is not None:
                _run_cache.move_to_end(key)
        if hit is not None:
            entries, sets, client_aborts = hit
            return ModelRun(Ledger(entries), dict(sets), None, dict(client_aborts))
    if params.protocol == "plaintext":
        from secagg.plaintext import PlaintextClient, PlaintextServer

        clients: dict = {u: PlaintextClient(u, None, params) for u in range(params.n)}
        server: object = PlaintextServer(params, summing=False)
    else:
        clients = {u: ModularClient(u, params) for u in range(params.n)}
        server = ModularServer(params)
    tr = Transport(clients, server, dict(params.schedule))
    aborted = None
    try:
        for rnd in params.rounds:
            tr.run_round(rnd.value)
    except ProtocolAborted as exc:
        aborted = exc.with_context(ledger=tr.ledger, sets=dict(server.sets), client_errors=dict(tr.client_errors))  # type: ignore[attr-defined]
    sets = dict(server.sets)  # type: ignore[attr-defined]
    if aborted is None:
        sets.setdefault("U4", sets["U3"])
    client_aborts = {u: getattr(e, "round", "") for u, e in tr.client_errors.items()}
    run = ModelRun(tr.ledger, sets, aborted, client_aborts)
    size = len(run.ledger.entries)
    if cache and aborted is None and size <= RUN_CACHE_ENTRIES:
        with _run_cache_lock:
            if key not in _run_cache:
                _run_cache[key] = (tuple(run.ledger.entries), dict(sets), dict(client_aborts))
                _run_cache_size += size
                while _run_cache_size > RUN_CACHE_ENTRIES:
                    _, (old, _s, _c) = _run_cache.popitem(last=False)
                    _run_cache_size -= len(old)
    return run


def _graph_params(n: int, d: int, modulus: int, graph, threshold, variant: str, dropouts,  # noqa: ANN001
                  dropout_fraction: float | None = None, min_survivors: int | None = None):  # noqa: ANN202
    """SessionParams for an explicit :class:`~secagg.graph.Graph` (the caller's graph and threshold)."""
    from secagg.protocol import SessionParams

    return SessionParams.for_graph(n, d, modulus, graph, threshold, variant=variant, dropouts=dropouts,
                                   dropout_fraction=dropout_fraction, min_survivors=min_survivors)


def simulate_run(
    n: int,
    d: int,
    modulus: int,
    *,
    graph,  # noqa: ANN001 - secagg.graph.Graph
    threshold: int,
    variant: str = "honest-but-curious",
    dropouts: Mapping[int, object] | None = None,
    dropout_fraction: float | None = None,
    min_survivors: int | None = None,
    cache: bool = True,
) -> ModelRun:
    """Run the protocol's message flow without cryptography on an explicit graph and threshold.

    The cryptography-free :class:`~secagg.modular.ModularClient` / :class:`~secagg.modular.ModularServer`
    pair runs through the protocol's own :class:`~secagg.transport.Transport` and decides every step
    through :mod:`secagg.rules` (thresholds, holders, reconstructibility, survivor policy), so its
    ledger, survivor sets and aborts are those of a real run, measured on the same carrier.

    The run is a pure function of ``(n, d, M, graph, t, variant, schedule, survivor bound)``, so completed
    runs are memoised (up to :data:`RUN_CACHE_ENTRIES` ledger entries in all, least recently used evicted;
    ``cache=False`` bypasses it): repeated calls with the same configuration -- every oracle call of a
    training run -- replay the stored entries. Each call returns a fresh :class:`~secagg.ledger.Ledger`
    (the entries are immutable), fresh ``sets`` and ``client_aborts`` dicts. Aborted runs are not memoised.
    """
    params = _graph_params(n, d, modulus, graph, threshold, variant, dropouts, dropout_fraction, min_survivors)
    return _run_params(params, cache=cache)


def _params(n: int, d: int, modulus: int, graph, threshold, options: Mapping[str, object]):  # noqa: ANN001, ANN202
    """The SessionParams a run with these arguments uses (same derivation from the seed as the protocol)."""
    from secagg.graph import Graph
    from secagg.protocol import SessionParams

    if isinstance(graph, Graph):
        extra = set(options) - {"variant", "dropouts", "dropout_fraction", "min_survivors"}
        if extra:
            raise InvalidInput(f"with an explicit Graph, {sorted(extra)} do not apply")
        return _graph_params(n, d, modulus, graph, threshold, options.get("variant", "honest-but-curious"),  # type: ignore[arg-type]
                             options.get("dropouts"), options.get("dropout_fraction"), options.get("min_survivors"))  # type: ignore[arg-type]
    return SessionParams.create(n, d, modulus, graph=graph, threshold=threshold, derive_session=False, **options)  # type: ignore[arg-type]


def model_ledger(
    n: int,
    d: int,
    modulus: int,
    *,
    graph="complete",  # noqa: ANN001 - "complete" | "secagg+" | secagg.graph.Graph
    threshold: int | None = None,
    **options: object,
) -> "Ledger":
    """The ledger a run of :func:`secagg.protocol.run_secure_aggregation` with these arguments measures,
    measured on the cryptography-free pair (entry for entry, byte for byte; see :func:`simulate_run`).

    ``graph`` may be a :class:`~secagg.graph.Graph` (then ``threshold`` is required); otherwise the graph
    and threshold are derived from ``seed`` exactly as the protocol derives them (the SecAgg+ relabelling
    is public randomness). ``options``: the other session parameters of
    :meth:`secagg.protocol.SessionParams.create` (variant, dropouts, seed, neighbours, corrupt_fraction,
    dropout_fraction, min_survivors, protocol). Arguments are checked by the protocol's own rules (same InvalidInput). If the
    run would abort, raises the same :class:`~secagg.errors.ProtocolAborted` (round, reason, rule), with
    the ledger up to the abort in ``exc.ledger``, as the protocol does.
    """
    _check_pos(n, "n")
    _check_pos(d, "d")
    run = _run_params(_params(n, d, modulus, graph, threshold, options))
    if run.aborted is not None:
        raise run.aborted
    return run.ledger


def modular_run(
    encodings,  # noqa: ANN001 - (n, dim) array over Z_M
    *,
    dim: int,
    modulus: int,
    graph: str = "complete",
    threshold: int | None = None,
    **options: object,
):  # noqa: ANN201 - (sum, included, ledger)
    """The protocol's outcome without cryptography: ``(sum over U3 mod M, U3, ledger)``.

    Same argument checks, graph, threshold, survivor sets and aborts as
    :func:`secagg.protocol.run_secure_aggregation` (the same :class:`~secagg.protocol.SessionParams` and
    :mod:`secagg.rules`, run by the cryptography-free pair on the same transport); the sum is the plain
    modular sum of the rows in U3 (what the unmasked protocol output equals). ``options``: the other
    session parameters of :meth:`secagg.protocol.SessionParams.create`.
    """
    from secagg import ring
    from secagg.protocol import GRAPHS, _variant

    _variant(options.get("variant", "honest-but-curious"))
    if graph not in GRAPHS:
        raise InvalidInput(f"graph must be one of {GRAPHS}, got {graph!r}")
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
    run = _run_params(_params(n, int(dim), m, graph, threshold, options))
    if run.aborted is not None:
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
