"""Run one secure aggregation session: Bonawitz et al. (CCS 2017) rounds 0-4, or SecAgg+ (Bell et al. 2020).

:func:`run_secure_aggregation` validates its arguments, builds ``n`` :class:`~secagg.client.Client`
objects, one :class:`~secagg.server.Server` and the :class:`~secagg.transport.Transport` between them,
and runs the rounds ``advertise-keys, share-keys, masked-input, [consistency-check,] unmasking``
(the consistency check only in the active variant). It returns the sum over Z_M of the inputs of
``U3`` (the clients whose masked input reached the server, including those that dropped later) or
raises :class:`~secagg.errors.ProtocolAborted` naming the round, with nothing released.

Randomness: a root :class:`~secagg.drbg.Drbg` from ``seed`` (``None``: fresh OS randomness) with
independent children for the session id (16 bytes), the SecAgg+ graph relabelling (public, as in Bell
et al.) and each client (its key pairs, signing key, self-mask seed, Shamir coefficients, nonces). The
server draws no randomness. Same seed, same inputs and parameters -> bit-identical run and ledger.

Thresholds when ``threshold=None``:

* complete graph: ``floor(n/2) + 1`` (honest-but-curious), ``floor(2n/3) + 1`` (active; the paper's
  headline setting t > 2n/3);
* ``graph="secagg+"``: ``(k, t) = find_secagg_plus_params(n, corrupt_fraction, dropout_fraction,
  "semi-honest" | "semi-malicious")``; when it returns None (small n, no sparse k) the complete graph
  and its default t are used. With ``neighbours=k`` given, the graph is the Harary graph of degree k
  and the default t applies the complete-graph rule to the ``k + 1`` holders of each client's shares
  (``floor((k+1)/2) + 1`` or ``floor(2(k+1)/3) + 1``).
On SecAgg+ ``t`` counts share holders among ``N(u) ∪ {u}`` (self-edge included), so ``t <= k + 1``.
The active variant refuses ``2t <= h`` (``h = n`` or ``k + 1`` holders), where its consistency check cannot
stop a server from collecting both share types of a live client (:func:`check_active_threshold`).

Dropout schedule: ``dropouts[u]`` is the name of the first round in which client ``u`` sends nothing
(``"masked-input"``: it shared its keys but never sends ``y_u``), or ``"<round>:after"``: it sends its
message of that round, then vanishes (``"masked-input:after"``: ``y_u`` arrives, ``u`` is in the sum,
but gives no shares). ``"<round>:before"`` is the same as the plain name. A dropout at
``"consistency-check"`` in the honest-but-curious variant (which has no such round) takes effect at
the next round the client would send in, unmasking.

Parallel clients (``workers=W > 1``, opt-in): the clients' round computations run in ``W`` forked worker
processes (:class:`~secagg.transport.ProcessTransport`); clients and server still exchange only bytes
through the transport and the result -- sum, sets, ledger, client errors, aborts -- is identical to
``workers=1`` for the same seed. Where ``fork`` is unavailable it falls back to ``workers=1`` with a
``RuntimeWarning``. ``workers=1`` (the default) is the in-process path.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from secagg import ring
from secagg.client import VARIANTS, Client
from secagg.drbg import Drbg
from secagg.errors import InvalidInput, ProtocolAborted, SecAggError
from secagg.graph import Graph, complete_graph, find_secagg_plus_params, harary_graph
from secagg.keys import SigningKey
from secagg.ledger import Ledger
from secagg.messages import ROUNDS, SESSION_SIZE
from secagg.reconstruct import WrongShare
from secagg.server import Server
from secagg.transport import Interceptor, ProcessTransport, Transport, fork_available

__all__ = [
    "ROUNDS",
    "GRAPHS",
    "VARIANTS",
    "AggregationResult",
    "Session",
    "run_secure_aggregation",
    "default_threshold",
    "check_active_threshold",
    "parse_dropouts",
    "rounds_for",
]

GRAPHS = ("complete", "secagg+")


def rounds_for(variant: str) -> tuple[str, ...]:
    """The rounds a variant runs: all five for ``"active"``, no consistency check otherwise."""
    return ROUNDS if variant == "active" else tuple(r for r in ROUNDS if r != "consistency-check")


def default_threshold(holders: int, variant: str) -> int:
    """``floor(h/2) + 1`` (honest-but-curious) or ``floor(2h/3) + 1`` (active) for ``h`` share holders."""
    return holders // 2 + 1 if variant != "active" else (2 * holders) // 3 + 1


def check_active_threshold(graph: Graph, threshold: int, variant: str) -> None:
    """Active variant: refuse ``2 t <= h``, ``h`` = holders of a client's shares (``n`` on the complete graph,
    ``k + 1`` on SecAgg+, self-edge included).

    Bonawitz et al. (CCS 2017, Sec. 4, Appendix A) prove privacy against an active server only for
    ``t > (n + n_C) / 2`` (``n_C`` corrupt clients). With ``2 t <= h`` even ``n_C = 0`` is not enough: a
    server tells two disjoint groups of ``>= t`` holders two different U3 (with and without a live
    client v), forwards to each group only its own group's signatures -- all genuine, all over the U3 the
    reader signed -- and collects ``b_v`` from one group and ``s_sk_v`` from the other. The defaults
    (``floor(2h/3) + 1``) satisfy this and tolerate ``n_C < h/3``; ``h // 2 + 1`` is the smallest t accepted.
    """
    if variant != "active":
        return
    holders = graph.n if graph.is_complete else graph.k + 1
    if 2 * int(threshold) <= holders:
        raise InvalidInput(
            f"active variant needs 2t > {holders} (the holders of each client's shares), got t = {threshold}: "
            f"with t <= {holders // 2} a lying server can split the clients into two groups with different U3 "
            f"and collect both share types of a live client; use t >= {holders // 2 + 1} "
            f"(default {default_threshold(holders, variant)})"
        )


def parse_dropouts(dropouts: Mapping[int, str] | None, n: int) -> dict[int, tuple[int, bool]]:
    """Validate a dropout schedule -> ``{client: (round index, after)}`` (InvalidInput on bad entries)."""
    if dropouts is None:
        return {}
    if not isinstance(dropouts, Mapping):
        raise InvalidInput(f"dropouts must be a mapping client id -> round name, got {type(dropouts).__name__}")
    out: dict[int, tuple[int, bool]] = {}
    for k, v in dropouts.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) < n:
            raise InvalidInput(f"dropout key must be a client id in [0, {n}), got {k!r}")
        if not isinstance(v, str):
            raise InvalidInput(f"dropout round must be a round name, got {v!r}")
        name, _, when = v.partition(":")
        if name not in ROUNDS or when not in ("", "before", "after"):
            raise InvalidInput(f"unknown dropout round {v!r}; use one of {ROUNDS}, optionally suffixed ':after'")
        out[int(k)] = (ROUNDS.index(name), when == "after")
    return out


@dataclass(frozen=True)
class AggregationResult:
    """Outcome of one session.

    Attributes:
        sum: ``sum_{u in U3} x_u mod M`` (dtype ``dtype_for(M)``).
        included: U3, the ids whose inputs are in ``sum``.
        sets: ``"U1"``..``"U5"`` (U4 == U3 in the honest-but-curious variant).
        timings: ``round -> {"clients": s (summed over clients), "client_max": s, "server": s}`` for every
            name in ROUNDS (zeros for a round the variant does not run). With ``workers > 1``,
            ``"clients"`` is the wall time of the parallel client phase (the part of the round the main
            process waited for the workers; ``clients + server`` = the round's wall time) and the rounds
            that ran also carry ``"client_sum"`` (client seconds summed over clients, measured in the
            workers) and ``"client_cpu"`` (their summed CPU seconds).
        ledger: every message on the wire. modulus, threshold, dim, n, variant, graph, session: the run.
        client_errors: ``id -> error`` of clients that aborted (they are treated as dropped).
        rejected: ``id -> error`` of uploads the server refused.
        graph_name: ``"complete"`` or ``"secagg+"`` as requested (``graph.is_complete`` tells whether
            SecAgg+ fell back to the complete graph).
        wrong_shares: the round-4 shares robust reconstruction proved wrong and corrected
            (:class:`~secagg.reconstruct.WrongShare`: sender, secret, owner), in detection order; the
            senders' later shares were ignored. Empty when every share was right.
    """

    sum: np.ndarray
    included: tuple[int, ...]
    sets: dict[str, frozenset[int]]
    timings: dict[str, dict[str, float]]
    ledger: Ledger
    modulus: int
    threshold: int
    dim: int
    n: int
    variant: str
    graph: Graph
    session: bytes
    client_errors: dict[int, SecAggError] = field(default_factory=dict)
    rejected: dict[int, SecAggError] = field(default_factory=dict)
    graph_name: str = "complete"
    wrong_shares: tuple[WrongShare, ...] = ()

    @property
    def cheaters(self) -> frozenset[int]:
        """The clients that sent at least one wrong share (the senders in :attr:`wrong_shares`)."""
        return frozenset(w.sender for w in self.wrong_shares)


def _validate_inputs(inputs, modulus: int) -> tuple[list[np.ndarray], int, int]:  # noqa: ANN001
    m = ring.check_modulus(modulus)
    if isinstance(inputs, np.ndarray):
        if inputs.ndim != 2:
            raise InvalidInput(f"inputs array must be 2-D (clients x dim), got shape {inputs.shape}")
        rows = list(inputs)
    elif isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
        rows = list(inputs)
    else:
        raise InvalidInput(f"inputs must be a sequence of integer vectors, got {type(inputs).__name__}")
    if len(rows) < 2:
        raise InvalidInput(f"secure aggregation needs n >= 2 clients, got {len(rows)}")
    first = ring.as_ring_vector(rows[0], m)
    d = int(first.shape[0])
    if d < 1:
        raise InvalidInput("input vectors must have length >= 1")
    vecs = [first] + [ring.as_ring_vector(x, m, d) for x in rows[1:]]
    return vecs, d, m


def _setup_graph(
    n: int,
    graph: str,
    variant: str,
    threshold: int | None,
    neighbours: int | None,
    corrupt_fraction: float,
    dropout_fraction: float,
    drbg: Drbg,
) -> tuple[Graph, int]:
    if graph not in GRAPHS:
        raise InvalidInput(f"graph must be one of {GRAPHS}, got {graph!r}")
    if variant not in VARIANTS:
        raise InvalidInput(f"variant must be one of {VARIANTS}, got {variant!r}")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 1 <= int(threshold) <= n):
        raise InvalidInput(f"threshold must be an int with 1 <= t <= n = {n}, got {threshold!r}")
    t = None if threshold is None else int(threshold)
    if graph == "complete":
        if neighbours is not None:
            raise InvalidInput("neighbours applies to graph='secagg+' only")
        return complete_graph(n), t if t is not None else default_threshold(n, variant)
    if neighbours is not None:
        if isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)):
            raise InvalidInput(f"neighbours must be an even int with 2 <= k < n, got {neighbours!r}")
        k = int(neighbours)
        g = harary_graph(n, k, drbg)
        t_default = min(k + 1, default_threshold(k + 1, variant))
    else:
        adversary = "semi-malicious" if variant == "active" else "semi-honest"
        params = find_secagg_plus_params(n, corrupt_fraction, dropout_fraction, adversary)
        if params is None or params[0] >= n - 1 or n < 3:
            return complete_graph(n), t if t is not None else default_threshold(n, variant)
        k, t_default = params
        g = harary_graph(n, k, drbg)
    if t is None:
        t = t_default
    if t > g.k + 1:
        raise InvalidInput(f"threshold t = {t} exceeds the k + 1 = {g.k + 1} holders of each client's shares")
    return g, t


class Session:
    """One prepared session: clients, server, transport (see :func:`run_secure_aggregation`).

    Exposed so tests and tools can plug in a different ``server_class`` (e.g. a malicious server), an
    ``interceptor`` on the wire, and inspect ``clients`` (``released`` shares, ``aborted`` errors) after
    :meth:`run`. With ``workers > 1`` the clients compute in worker processes forked by :meth:`run`
    (stopped when it returns or raises) and ``clients`` are mirrors kept up to date with each client's
    ``aborted``, ``released`` and ``views`` (see :mod:`secagg.transport`); a session runs once.
    """

    def __init__(
        self,
        inputs,  # noqa: ANN001
        *,
        modulus: int,
        threshold: int | None = None,
        graph: str = "complete",
        variant: str = "honest-but-curious",
        dropouts: Mapping[int, str] | None = None,
        seed: int | bytes | None = None,
        neighbours: int | None = None,
        corrupt_fraction: float = 0.05,
        dropout_fraction: float = 0.05,
        server_class: type[Server] | Callable[..., Server] | None = None,
        interceptor: Interceptor | None = None,
        workers: int = 1,
        commit_self_masks: bool = False,
    ) -> None:
        if not isinstance(commit_self_masks, bool):
            raise InvalidInput(f"commit_self_masks must be a bool, got {commit_self_masks!r}")
        self.commit_self_masks = commit_self_masks
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or int(workers) < 1:
            raise InvalidInput(f"workers must be an int >= 1, got {workers!r}")
        if variant not in VARIANTS:
            raise InvalidInput(f"variant must be one of {VARIANTS}, got {variant!r}")
        if graph not in GRAPHS:
            raise InvalidInput(f"graph must be one of {GRAPHS}, got {graph!r}")
        vecs, d, m = _validate_inputs(inputs, modulus)
        n = len(vecs)
        schedule = parse_dropouts(dropouts, n)
        root = Drbg(seed, b"secagg/run/v1")
        self.session = root.child(b"session").bytes(SESSION_SIZE)
        self.graph, self.threshold = _setup_graph(
            n, graph, variant, threshold, neighbours, corrupt_fraction, dropout_fraction, root.child(b"graph")
        )
        check_active_threshold(self.graph, self.threshold, variant)
        self.graph_name = graph
        self.n, self.dim, self.modulus, self.variant = n, d, m, variant
        drbgs = [root.child(b"client/" + u.to_bytes(4, "big")) for u in range(n)]
        signing = [SigningKey.generate(drbgs[u].child(b"signing-key")) for u in range(n)] if variant == "active" else None
        self.pki: dict[int, bytes] = {u: signing[u].public_bytes for u in range(n)} if signing else {}
        self.clients = {
            u: Client(
                u,
                vecs[u],
                modulus=m,
                threshold=self.threshold,
                graph=self.graph,
                variant=variant,
                session=self.session,
                drbg=drbgs[u],
                pki=self.pki,
                signing_key=signing[u] if signing else None,
                commit_self_mask=commit_self_masks,
            )
            for u in range(n)
        }
        del vecs
        cls = server_class or Server
        self.server = cls(
            n=n, dim=d, modulus=m, threshold=self.threshold, graph=self.graph, variant=variant, session=self.session, pki=self.pki,
            commit_self_masks=commit_self_masks,
        )
        self.workers = min(int(workers), n)
        if self.workers > 1 and not fork_available():
            warnings.warn("parallel clients need the fork start method; running with workers=1", RuntimeWarning, stacklevel=2)
            self.workers = 1
        if self.workers > 1:
            self.transport: Transport = ProcessTransport(self.clients, self.server, schedule, interceptor, workers=self.workers)
        else:
            self.transport = Transport(self.clients, self.server, schedule, interceptor)

    def run(self) -> AggregationResult:
        """Run every round; return the result or raise ProtocolAborted (with ``ledger``,
        ``client_errors`` and ``sets`` attached to the exception for inspection)."""
        tr = self.transport
        total = None
        try:
            for rnd in rounds_for(self.variant):
                total = tr.run_round(rnd)
        except ProtocolAborted as exc:
            exc.ledger = tr.ledger  # type: ignore[attr-defined]
            exc.client_errors = dict(tr.client_errors)  # type: ignore[attr-defined]
            exc.sets = dict(self.server.sets)  # type: ignore[attr-defined]
            raise
        finally:
            tr.close()  # parallel clients: stop the workers (no-op in-process)
        assert isinstance(total, np.ndarray)
        sets = dict(self.server.sets)
        sets.setdefault("U4", sets["U3"])
        timings = {r: tr.timings.get(r, {"clients": 0.0, "client_max": 0.0, "server": 0.0}) for r in ROUNDS}
        return AggregationResult(
            sum=total,
            included=tuple(sorted(sets["U3"])),
            sets={k: sets[k] for k in ("U1", "U2", "U3", "U4", "U5")},
            timings=timings,
            ledger=tr.ledger,
            modulus=self.modulus,
            threshold=self.threshold,
            dim=self.dim,
            n=self.n,
            variant=self.variant,
            graph=self.graph,
            session=self.session,
            client_errors=dict(tr.client_errors),
            rejected=dict(self.server.rejected),
            graph_name=self.graph_name,
            wrong_shares=tuple(getattr(self.server, "wrong_shares", ())),  # a Server stand-in may not record them
        )


def run_secure_aggregation(
    inputs,  # noqa: ANN001 - sequence of integer vectors (or a 2-D integer array)
    *,
    modulus: int,
    threshold: int | None = None,
    graph: str = "complete",
    variant: str = "honest-but-curious",
    dropouts: Mapping[int, str] | None = None,
    seed: int | bytes | None = None,
    neighbours: int | None = None,
    corrupt_fraction: float = 0.05,
    dropout_fraction: float = 0.05,
    server_class: type[Server] | Callable[..., Server] | None = None,
    interceptor: Interceptor | None = None,
    workers: int = 1,
    commit_self_masks: bool = False,
) -> AggregationResult:
    """Securely sum ``inputs`` over Z_M with the protocol of Bonawitz et al. (CCS 2017, Figure 4).

    Args:
        inputs: ``n >= 2`` equal-length integer vectors with elements in ``[0, modulus)``; client ``u``
            holds ``inputs[u]``.
        modulus: M, ``2 <= M <= 2**64``.
        threshold: Shamir threshold t (``1 <= t <= n``; active variant: ``2t > n``, or ``2t > k + 1`` on
            SecAgg+); None picks the default (module docstring).
        graph: ``"complete"`` or ``"secagg+"`` (Harary graph; falls back to complete for small n).
        variant: ``"honest-but-curious"`` (rounds 0, 1, 2, 4) or ``"active"`` (signatures, round 3).
        dropouts: ``client -> round name`` (optionally ``":after"``), see module docstring.
        seed: int, bytes or None (fresh randomness). Every key and mask is a deterministic function of the
            seed: never reuse a seed with *different* inputs, or the server sees ``y_u - y'_u = x_u - x'_u``
            (a two-time pad). Callers that run many sessions derive one seed per session (e.g. a hash of a
            base seed and a call counter).
        neighbours: SecAgg+ degree k (even, ``2 <= k < n``), overriding the parameter finder.
        corrupt_fraction, dropout_fraction: gamma, delta for the SecAgg+ parameter finder.
        server_class: alternative Server (tests: malicious servers). interceptor: hook on the wire.
        workers: run the clients' computations in this many forked worker processes (``1``, the
            default: in-process). Same result, ledger and errors for any value (module docstring).
        commit_self_masks: opt-in: every client sends a SHA-256 commitment to its self-mask seed
            ``b_u``, bound to the session and ``u`` (signed in the active variant), with its round-1
            shares (32 bytes, +64 signed, per client); the server checks every reconstructed ``b_u``
            against it, so wrong shares beyond the decoding radius abort instead of corrupting the sum.
            Off (default): the paper's wire format.

    Returns:
        :class:`AggregationResult` with ``sum = sum_{u in U3} x_u mod M``.

    Raises:
        InvalidInput: bad arguments (before anything runs).
        ProtocolAborted: some round had fewer than t participants (or shares); nothing is released.
            :class:`~secagg.errors.InconsistentShares` (a subclass) when round-4 shares are wrong
            beyond what decoding corrects, or a reconstructed secret fails its check.
    """
    return Session(
        inputs,
        modulus=modulus,
        threshold=threshold,
        graph=graph,
        variant=variant,
        dropouts=dropouts,
        seed=seed,
        neighbours=neighbours,
        corrupt_fraction=corrupt_fraction,
        dropout_fraction=dropout_fraction,
        server_class=server_class,
        interceptor=interceptor,
        workers=workers,
        commit_self_masks=commit_self_masks,
    ).run()
