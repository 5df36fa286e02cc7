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
On SecAgg+ ``t`` counts share holders among ``N(u) ∪ {u}`` (self-edge included), so ``t <= k + 1``;
``t >= 2`` always. Every rule (thresholds, holders, reconstructibility, dropout schedule, and the
survivor policy: ``G[U3]`` connected, ``|U3| >= min_survivors`` with ``min_survivors = ceil((1 - delta) n)``
on SecAgg+) lives in :mod:`secagg.rules`; :class:`SessionParams` derives the session's values once.
The active variant refuses ``2t <= h`` (``h = n`` or ``k + 1`` holders), where its consistency check cannot
stop a server from collecting both share types of a live client (:func:`check_active_threshold`).

Dropout schedule: ``dropouts[u]`` is the name of the first round in which client ``u`` sends nothing
(``"masked-input"``: it shared its keys but never sends ``y_u``), or ``"<round>:after"``: it sends its
message of that round, then vanishes (``"masked-input:after"``: ``y_u`` arrives, ``u`` is in the sum,
but gives no shares). ``"<round>:before"`` is the same as the plain name. A dropout at
``"consistency-check"`` in the honest-but-curious variant (which has no such round) takes effect at
the next round the client would send in, unmasking.

Protocols: ``protocol="bonawitz"`` (the default, this module's subject) or ``"plaintext"`` (clients send
their inputs in the clear, :mod:`secagg.plaintext`), registered in :data:`PROTOCOLS`; each is a client and
a server class driven by the same :class:`~secagg.transport.Transport`.

Parallel clients (``workers=W > 1``, opt-in): the clients' round computations run in ``W`` forked worker
processes (:class:`~secagg.transport.ProcessTransport`); clients and server still exchange only bytes
through the transport and the result -- sum, sets, ledger, client errors, aborts -- is identical to
``workers=1`` for the same seed. Where ``fork`` is unavailable it falls back to ``workers=1`` with a
``RuntimeWarning``. ``workers=1`` (the default) is the in-process path.

Ray (``executor="ray"``, opt-in, needs the ``ray`` extra): the clients' round computations run in Ray
actors (:class:`~secagg.ray_transport.RayTransport`) on a local instance or on the cluster at
``ray_address`` / ``RAY_ADDRESS``; same result, sets, ledger, messages, client errors and aborts as the
in-process path for the same seed. A client task that fails there counts as that client's dropout at
that round (``AggregationResult.failures``).
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from secagg import ring, rules
from secagg.drbg import Drbg, _encode_seed
from secagg.errors import InvalidInput, ProtocolAborted, SecAggError, StateError
from secagg.graph import Graph, complete_graph, find_secagg_plus_params, harary_graph
from secagg.ledger import Ledger
from secagg.messages import SESSION_SIZE
from secagg.rounds import ROUNDS, VARIANTS, Round, Variant
from secagg.rules import Guarantee, default_threshold, parse_dropouts
from secagg.reconstruct import WrongShare
from secagg.transport import Interceptor, ProcessTransport, Transport, fork_available

__all__ = [
    "ROUNDS",
    "GRAPHS",
    "VARIANTS",
    "PROTOCOLS",
    "Round",
    "Variant",
    "AggregationResult",
    "SessionParams",
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
    return tuple(r.value for r in _variant(variant).rounds)


def _variant(variant: object) -> Variant:
    try:
        return Variant(variant)
    except ValueError:
        raise InvalidInput(f"variant must be one of {VARIANTS}, got {variant!r}") from None


def check_active_threshold(graph: Graph, threshold: int, variant: str) -> None:
    """Active variant: refuse ``2 t <= h`` (:func:`secagg.rules.check_active_threshold`, ``h`` =
    ``graph.holders_per_client``)."""
    rules.check_active_threshold(graph.holders_per_client, threshold, variant)


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
        guarantee: what the server enforced before releasing the sum (:class:`secagg.rules.Guarantee`:
            ``|U3| >= min_survivors``, ``G[U3]`` connected, the delta and gamma the graph was designed for).
        protocol: the protocol that ran (``"bonawitz"`` or ``"plaintext"``).
        wrong_shares: the round-4 shares robust reconstruction proved wrong and corrected
            (:class:`~secagg.reconstruct.WrongShare`: sender, secret, owner), in detection order; the
            senders' later shares were ignored. Empty when every share was right.
        failures: ``id -> (round, description)`` of client tasks that failed on Ray (``executor="ray"``);
            each counts as that client dropping before sending in that round. Empty otherwise.
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
    guarantee: Guarantee | None = None
    protocol: str = "bonawitz"
    wrong_shares: tuple[WrongShare, ...] = ()
    failures: dict[int, tuple[str, str]] = field(default_factory=dict)

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


def _fraction(x: object, name: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.integer, np.floating)) or not 0 <= float(x) < 1:
        raise InvalidInput(f"{name} must be a number in [0, 1), got {x!r}")
    return float(x)


def _setup_graph(
    n: int,
    graph: str,
    variant: str,
    threshold: int | None,
    neighbours: int | None,
    corrupt_fraction: float,
    dropout_fraction: float | None,
    drbg: Drbg | None,
) -> tuple[Graph, int]:
    """The (Graph, t) of a session (module docstring: thresholds); ``drbg`` draws the SecAgg+ relabelling."""
    if graph not in GRAPHS:
        raise InvalidInput(f"graph must be one of {GRAPHS}, got {graph!r}")
    _variant(variant)
    if threshold is not None:
        if isinstance(threshold, bool) or not isinstance(threshold, (int, np.integer)) or not 1 <= int(threshold) <= n:
            raise InvalidInput(f"threshold must be an int with 2 <= t <= n = {n}, got {threshold!r}")
        rules.check_threshold_value(threshold, n)
    t = None if threshold is None else int(threshold)
    delta = rules.DEFAULT_DROPOUT_FRACTION if dropout_fraction is None else dropout_fraction
    if graph == "complete":
        if neighbours is not None:
            raise InvalidInput("neighbours applies to graph='secagg+' only")
        return complete_graph(n), t if t is not None else default_threshold(n, variant)
    if neighbours is not None:
        if isinstance(neighbours, bool) or not isinstance(neighbours, (int, np.integer)):
            raise InvalidInput(f"neighbours must be an even int with 2 <= k < n, got {neighbours!r}")
        k = int(neighbours)
        assert drbg is not None
        g = harary_graph(n, k, drbg)
        t_default = min(k + 1, default_threshold(k + 1, variant))
    else:
        adversary = "active" if variant == "active" else "semi-honest"
        params = find_secagg_plus_params(n, corrupt_fraction, delta, adversary)
        if params is None or params[0] >= n - 1 or n < 3:
            return complete_graph(n), t if t is not None else default_threshold(n, variant)
        k, t_default = params
        assert drbg is not None
        g = harary_graph(n, k, drbg)
    if t is None:
        t = t_default
    rules.check_threshold_value(t, g.holders_per_client)
    return g, t


@dataclass(frozen=True)
class SessionParams:
    """The public parameters of one session, validated once and passed to every party.

    Build it with :meth:`create` (or :meth:`from_args` in a command line tool); it is frozen, and every
    party (server, clients, transport, the cryptography-free pair of :mod:`secagg.modular`) reads its
    parameters from here.

    Attributes:
        n, dim, modulus, threshold: the session's size, vector length, ring Z_M and Shamir threshold t.
        graph: the mask graph (:class:`~secagg.graph.CompleteGraph` or :class:`~secagg.graph.HararyGraph`).
        graph_name: the graph requested (``"complete"`` or ``"secagg+"``; SecAgg+ may fall back to complete).
        variant: :class:`~secagg.rounds.Variant`.
        session: the 16-byte session id (``b""`` for a cryptography-free run that needs none).
        schedule: the dropout schedule, ``client -> (round index, after)`` (read only).
        min_survivors: the survivor policy's bound on ``|U3|`` (:func:`secagg.rules.min_survivors_for`).
        delta, gamma: the dropout and corrupt fractions the graph was designed for (None on the complete
            graph when not declared).
        protocol: the protocol's name in :data:`PROTOCOLS`.
        commit_self_masks: opt-in self-mask commitments (every client commits to ``b_u`` in round 1, the
            server checks each reconstructed ``b_u`` against it; :func:`run_secure_aggregation`).
        tolerate: the survivor policy's robustness bound (``adaptive=True`` on SecAgg+: ``floor(gamma
            n)``; else 0): ``G[U3 \\ S]`` must stay connected for every ``S`` of that many survivors
            (:func:`secagg.rules.check_survivor_policy`), checked by the server and, in the active
            variant with the full view, by every client on the U3 it signs.
        consistency_view: how a client of the active variant sees the U3 it signs: ``"full"`` (all of U3:
            an id list on the complete graph, an ``n``-bit bitmap on SecAgg+) or ``"window"`` (active
            SecAgg+ only: the ring positions within ``k`` of its own, authenticated against a Merkle root
            of U3 that every client signs, ``O(k + log n)`` bytes; :mod:`secagg.survivor_tree`). With
            ``"window"`` the clients check the local rules of :func:`secagg.rules.check_window_policy`
            and the global survivor policy is the server's alone.
    """

    n: int
    dim: int
    modulus: int
    threshold: int
    graph: Graph
    graph_name: str
    variant: Variant
    session: bytes
    schedule: Mapping[int, tuple[int, bool]]
    min_survivors: int
    delta: float | None
    gamma: float | None
    protocol: str = "bonawitz"
    root: Drbg | None = field(default=None, repr=False, compare=False)
    commit_self_masks: bool = False
    tolerate: int = 0
    consistency_view: str = "full"

    @property
    def window_view(self) -> bool:
        """True when clients sign a Merkle root and see U3 on their window only (``consistency_view="window"``)."""
        return self.consistency_view == "window"

    @property
    def rounds(self) -> tuple[Round, ...]:
        """The rounds this session runs."""
        return PROTOCOLS[self.protocol].rounds(self.variant)

    @property
    def dropouts(self) -> dict[int, str]:
        """The schedule in the user-facing form ``client -> "round[:after]"``."""
        return {u: ROUNDS[r] + (":after" if a else "") for u, (r, a) in self.schedule.items()}

    @classmethod
    def create(
        cls,
        n: int,
        dim: int,
        modulus: int,
        *,
        threshold: int | None = None,
        graph: str = "complete",
        variant: str = "honest-but-curious",
        dropouts: Mapping[int, str] | Mapping[int, tuple[int, bool]] | None = None,
        seed: int | bytes | None = None,
        neighbours: int | None = None,
        corrupt_fraction: float = 0.05,
        dropout_fraction: float | None = None,
        min_survivors: int | None = None,
        protocol: str = "bonawitz",
        derive_session: bool = True,
        commit_self_masks: bool = False,
        adaptive: bool = False,
        consistency_view: str = "full",
    ) -> "SessionParams":
        """Validate every argument (InvalidInput before anything runs) and derive the graph, threshold,
        session id and survivor bound from ``seed`` (module docstring). ``derive_session=False`` (the
        cryptography-free pair) skips the session id, and on the complete graph every key derivation."""
        if protocol not in PROTOCOLS:
            raise InvalidInput(f"protocol must be one of {tuple(PROTOCOLS)}, got {protocol!r}")
        if not isinstance(commit_self_masks, bool):
            raise InvalidInput(f"commit_self_masks must be a bool, got {commit_self_masks!r}")
        if commit_self_masks and protocol == "plaintext":
            raise InvalidInput("protocol='plaintext' has no self masks to commit to")
        if not isinstance(adaptive, bool):
            raise InvalidInput(f"adaptive must be a bool, got {adaptive!r}")
        if adaptive and protocol == "plaintext":
            raise InvalidInput("protocol='plaintext' hides nothing: adaptive does not apply")
        if consistency_view != "full" and protocol == "plaintext":
            raise InvalidInput("protocol='plaintext' has no consistency round: consistency_view does not apply")
        var = _variant(variant)
        if graph not in GRAPHS:
            raise InvalidInput(f"graph must be one of {GRAPHS}, got {graph!r}")
        gamma = _fraction(corrupt_fraction, "corrupt_fraction")
        delta = None if dropout_fraction is None else _fraction(dropout_fraction, "dropout_fraction")
        schedule = parse_dropouts(dropouts, n)  # the user-facing form only
        if derive_session or graph != "complete":
            root: Drbg | None = Drbg(seed, b"secagg/run/v1")
            session = root.child(b"session").bytes(SESSION_SIZE) if derive_session else b""
            gdrbg = root.child(b"graph")
        else:  # draws nothing from the run's DRBG: check the seed as Drbg would, skip the HKDF
            _encode_seed(seed)
            root, session, gdrbg = None, b"", None
        if protocol == "plaintext":
            if threshold is not None or neighbours is not None or graph != "complete":
                raise InvalidInput("protocol='plaintext' has no threshold, graph or neighbours (clients send in the clear)")
            g, t = complete_graph(n), 1
            return cls(n, dim, modulus, t, g, graph, var, session, types.MappingProxyType(schedule), 1, None, None,
                       protocol, root)
        g, t = _setup_graph(n, graph, var, threshold, neighbours, gamma, delta, gdrbg)
        rules.check_active_threshold(g.holders_per_client, t, var)
        sparse = not g.is_complete
        # delta of the survivor bound: the finder's (default 0.05) on SecAgg+; on graph="complete" only a declared one
        d_policy = (delta if delta is not None else rules.DEFAULT_DROPOUT_FRACTION) if sparse else (
            delta if graph == "complete" else None)
        ms = rules.min_survivors_for(n, t, sparse=sparse, delta=d_policy, min_survivors=min_survivors)
        tol = _adaptive_tolerance(n, g, t, var, gamma) if adaptive and sparse else 0
        view = _consistency_view(consistency_view, g, var, graph)
        if sparse and var is Variant.ACTIVE:
            rules.check_interleaving_threshold(g.k, t)
        return cls(n, dim, modulus, t, g, graph, var, session, types.MappingProxyType(schedule), ms, d_policy,
                   gamma if sparse else None, protocol, root, commit_self_masks, tol, view)

    @classmethod
    def from_args(cls, args, n: int, dim: int, modulus: int, **overrides: object) -> "SessionParams":  # noqa: ANN001
        """Parameters from a command line namespace (``--clients``-style tools): reads ``threshold``,
        ``graph``, ``variant``, ``drop`` (``ID:ROUND[:after]`` strings), ``seed``, ``neighbours``,
        ``corrupt_fraction``, ``dropout_rate`` (the declared dropout fraction, which the SecAgg+ finder
        and the survivor bound follow), ``min_survivors`` and ``protocol`` where present."""
        get = lambda name, default=None: getattr(args, name, default)  # noqa: E731
        drops = parse_drop_specs(get("drop") or [], n)
        rate = get("dropout_rate")
        kw: dict = dict(
            threshold=get("threshold"), graph=get("graph", "complete"), variant=get("variant", "honest-but-curious"),
            dropouts=drops, seed=get("seed"), neighbours=get("neighbours"),
            corrupt_fraction=get("corrupt_fraction", 0.05) if get("corrupt_fraction") is not None else 0.05,
            dropout_fraction=rate if rate and get("graph", "complete") == "secagg+" else None,
            min_survivors=get("min_survivors"), protocol=get("protocol", "bonawitz") or "bonawitz",
            commit_self_masks=bool(get("commit_self_masks", False)),
            adaptive=bool(get("adaptive", False)),
            consistency_view=get("consistency_view", "full") or "full",
        )
        kw.update(overrides)
        return cls.create(n, dim, modulus, **kw)

    @classmethod
    def for_graph(
        cls,
        n: int,
        dim: int,
        modulus: int,
        graph: Graph,
        threshold: int | None,
        *,
        variant: str | Variant = "honest-but-curious",
        dropouts: Mapping[int, object] | None = None,
        dropout_fraction: float | None = None,
        min_survivors: int | None = None,
        session: bytes = b"",
        commit_self_masks: bool = False,
        consistency_view: str = "full",
    ) -> "SessionParams":
        """Parameters for an explicit :class:`~secagg.graph.Graph` and threshold (the caller's; nothing is
        derived from a seed): what :func:`secagg.cost.simulate_run` and the keyword constructors of
        :class:`~secagg.server.Server` and :class:`~secagg.client.Client` use. The same checks as
        :meth:`create`: ``t >= 2``, ``2t > h`` in the active variant, the survivor bound of
        :func:`secagg.rules.min_survivors_for` (SecAgg+: ``ceil((1 - delta) n)``, ``delta`` defaulting to
        0.05; the complete graph: t unless ``dropout_fraction`` is given)."""
        if not isinstance(graph, Graph):
            raise InvalidInput(f"graph must be a secagg.graph.Graph here, got {type(graph).__name__}")
        if graph.n != n:
            raise InvalidInput(f"graph has {graph.n} nodes, expected {n}")
        if threshold is None:
            raise InvalidInput("an explicit Graph needs an explicit threshold")
        if not isinstance(commit_self_masks, bool):
            raise InvalidInput(f"commit_self_masks must be a bool, got {commit_self_masks!r}")
        t = rules.check_threshold_value(threshold, graph.holders_per_client)
        var = _variant(variant)
        rules.check_active_threshold(graph.holders_per_client, t, var)
        sparse = not graph.is_complete
        delta = None if dropout_fraction is None else _fraction(dropout_fraction, "dropout_fraction")
        if sparse and delta is None:
            delta = rules.DEFAULT_DROPOUT_FRACTION
        ms = rules.min_survivors_for(n, t, sparse=sparse, delta=delta, min_survivors=min_survivors)
        gname = "complete" if graph.is_complete else "secagg+"
        view = _consistency_view(consistency_view, graph, var, gname)
        if sparse and var is Variant.ACTIVE:
            rules.check_interleaving_threshold(graph.k, t)
        return cls(n, dim, modulus, t, graph, gname, var, bytes(session),
                   types.MappingProxyType(_schedule(dropouts, n)), ms, delta, None, "bonawitz", None, commit_self_masks,
                   0, view)

    @classmethod
    def for_party(cls, who: str, params: "SessionParams | None", keywords: Mapping[str, object]) -> "SessionParams":
        """What a party's constructor (``who``: ``"Server"``, ``"Client"``) was given: ``params``, or the
        keyword form (``n, dim, modulus, threshold, graph, variant, session``, optionally
        ``min_survivors, commit_self_masks``) built with
        :meth:`for_graph`. InvalidInput for both at once, an unknown name (listing the accepted ones) or a
        missing one."""
        if params is not None:
            if keywords:
                raise InvalidInput(f"{who}: pass either params or keywords, not both ({sorted(keywords)})")
            return params
        unknown = set(keywords) - set(_PARTY_KEYWORDS) - _PARTY_OPTIONAL
        if unknown:
            raise InvalidInput(f"{who}: unknown parameters {sorted(unknown)}; accepted: "
                               f"{sorted(set(_PARTY_KEYWORDS) | _PARTY_OPTIONAL)}")
        missing = [k for k in _PARTY_KEYWORDS if k not in keywords]
        if missing:
            raise InvalidInput(f"{who}: pass params (a SessionParams) or every one of {list(_PARTY_KEYWORDS)} "
                               f"(missing {missing})")
        kw = dict(keywords)
        return cls.for_graph(int(kw["n"]), int(kw["dim"]), int(kw["modulus"]), kw["graph"], kw["threshold"],  # type: ignore[arg-type]
                             variant=kw["variant"], session=bytes(kw["session"]),  # type: ignore[arg-type]
                             min_survivors=kw.get("min_survivors"),  # type: ignore[arg-type]
                             commit_self_masks=bool(kw.get("commit_self_masks", False)),
                             consistency_view=str(kw.get("consistency_view", "full")))

    def __reduce__(self):  # noqa: ANN204 - the read-only schedule view does not pickle; its dict does
        """Pickles without ``root`` (the seed's DRBG, used only to build the clients' keys before they
        are shipped; it holds an AES context), so parties in worker processes or Ray actors get it."""
        state = {f: getattr(self, f) for f in self.__dataclass_fields__}
        state["schedule"] = dict(self.schedule)
        state["root"] = None
        return (_unpickle_params, (state,))

    def guarantee(self, u3: frozenset[int]) -> Guarantee:
        """What a completed session with survivors ``u3`` guarantees (:class:`secagg.rules.Guarantee`):
        the survivor bound, the designed ``delta`` and ``gamma``, and how many corrupt clients, chosen in
        any way, these survivors withstand (:func:`secagg.rules.survivor_tolerance`,
        :func:`secagg.rules.adaptive_corrupt_bound`)."""
        u3 = frozenset(u3)
        if self.protocol == "plaintext":  # nothing is hidden: no corrupt-client bound to state
            return Guarantee(len(u3), self.min_survivors, True, self.delta, self.gamma, self.threshold)
        tol = rules.survivor_tolerance(self.graph, u3)
        anyc = rules.adaptive_corrupt_bound(tol, self.threshold, self.graph.holders_per_client,
                                            self.variant is Variant.ACTIVE)
        corrupt = None if self.gamma is None else rules.floor_fraction(self.n, self.gamma)
        return Guarantee(len(u3), self.min_survivors, True, self.delta, self.gamma, self.threshold, tol, anyc, corrupt)


#: the keyword form of the parties' constructors (SessionParams.for_party): required and optional names
_PARTY_KEYWORDS = ("n", "dim", "modulus", "threshold", "graph", "variant", "session")
_PARTY_OPTIONAL = frozenset({"min_survivors", "commit_self_masks", "consistency_view"})

#: the values of SessionParams.consistency_view
CONSISTENCY_VIEWS = ("full", "window")


def _consistency_view(view: object, graph: Graph, variant: Variant, requested: str) -> str:
    """Validate ``consistency_view``: ``"window"`` only for the active variant on a SecAgg+ graph."""
    if view not in CONSISTENCY_VIEWS:
        raise InvalidInput(f"consistency_view must be one of {CONSISTENCY_VIEWS}, got {view!r}")
    if view == "window":
        if variant is not Variant.ACTIVE:
            raise InvalidInput("consistency_view='window' applies to the active variant (the honest-but-curious one "
                               "signs no U3)")
        if graph.is_complete or graph.k >= graph.n - 1:
            why = " (graph='secagg+' fell back to the complete graph at this n)" if requested == "secagg+" else ""
            raise InvalidInput(f"consistency_view='window' needs a SecAgg+ graph{why}: on the complete graph every "
                               f"client's window is all of U3")
    return str(view)


def _unpickle_params(state: dict) -> SessionParams:
    state = dict(state)
    state["schedule"] = types.MappingProxyType(state["schedule"])
    return SessionParams(**state)


def _adaptive_tolerance(n: int, graph: Graph, t: int, variant: Variant, gamma: float) -> int:
    """``adaptive=True`` on SecAgg+: the survivor tolerance to enforce, ``floor(gamma n)``, after checking
    that the threshold can support a guarantee for corrupt clients chosen after seeing the graph
    (:func:`secagg.rules.adaptive_corrupt_bound`); InvalidInput when no survivor check can certify it."""
    b = rules.floor_fraction(n, gamma)
    h = graph.holders_per_client
    active = variant is Variant.ACTIVE
    if rules.adaptive_corrupt_bound(b, t, h, active) < b:
        need = f"t > {b}" + (f" and 2t > {h + b}" if active else "")
        raise InvalidInput(
            f"adaptive=True needs {need} for floor(gamma n) = {b} corrupt clients (got k = {graph.k}, t = {t}): "
            f"corrupt clients chosen after seeing the graph could otherwise hold t shares of one client, which no "
            f"survivor check can detect; use the complete graph, larger neighbours= and threshold=, or a smaller corrupt_fraction"
        )
    return b


def parse_drop_spec(spec: str) -> tuple[int, str]:
    """One command line dropout ``ID:ROUND[:after]`` -> ``(client id, "ROUND[:after]")`` (InvalidInput)."""
    head, sep, rest = str(spec).partition(":")
    if not sep or not head.strip().isdigit():
        raise InvalidInput(f"--drop expects ID:ROUND[:after], got {spec!r}")
    rules.parse_drop(rest)
    return int(head), rest


def parse_drop_specs(specs: Sequence[str], n: int | None = None) -> dict[int, str]:
    """Several ``ID:ROUND[:after]`` specs -> a schedule (the last one for a client wins)."""
    out: dict[int, str] = {}
    for spec in specs:
        u, rnd = parse_drop_spec(spec)
        if n is not None and not 0 <= u < n:
            raise InvalidInput(f"--drop {spec!r}: client id must be in [0, {n})")
        out[u] = rnd
    return out


def _schedule(dropouts: Mapping | None, n: int) -> dict[int, tuple[int, bool]]:
    """A schedule in either form (``client -> "round[:after]"`` or ``client -> (round index, after)``)."""
    if dropouts and isinstance(dropouts, Mapping) and all(isinstance(v, tuple) for v in dropouts.values()):
        out = {}
        for u, v in dropouts.items():
            if not (len(v) == 2 and type(u) is int and 0 <= u < n and type(v[0]) is int and 0 <= v[0] < len(ROUNDS)):
                raise InvalidInput(f"bad dropout entry {u!r}: {v!r}")
            out[u] = (v[0], bool(v[1]))
        return out
    return parse_dropouts(dropouts, n)


class Session:
    """One prepared session: clients, server, transport (see :func:`run_secure_aggregation`).

    Exposed so tests and tools can plug in a different ``server_class`` (e.g. a malicious server), an
    ``interceptor`` on the wire, and inspect ``clients`` (``released`` shares, ``aborted`` errors) after
    :meth:`run`. With ``workers > 1`` the clients compute in worker processes forked by :meth:`run`
    (stopped when it returns or raises) and ``clients`` are mirrors kept up to date with each client's
    ``aborted``, ``released`` and ``views`` (see :mod:`secagg.transport`). A session runs once: a second
    :meth:`run` raises :class:`~secagg.errors.StateError`.
    """

    def __init__(
        self,
        inputs,  # noqa: ANN001
        *,
        modulus: int | None = None,
        server_class: type | Callable[..., object] | None = None,
        interceptor: Interceptor | None = None,
        workers: int = 1,
        params: SessionParams | None = None,
        executor: str = "local",
        ray_address: str | None = None,
        **options: object,
    ) -> None:
        """``options``: the session parameters of :meth:`SessionParams.create` (threshold, graph, variant,
        dropouts, seed, ...), or a prepared ``params``. ``executor``: ``"local"`` (in-process, or
        ``workers`` forked processes) or ``"ray"`` (Ray actors; ``ray_address`` the cluster to join)."""
        if executor not in ("local", "ray"):
            raise InvalidInput(f"executor must be 'local' or 'ray', got {executor!r}")
        if executor == "ray" and workers != 1:
            raise InvalidInput("executor='ray' replaces workers: the clients run on the Ray cluster's CPUs; leave workers=1")
        if executor == "local" and ray_address is not None:
            raise InvalidInput("ray_address applies to executor='ray' only")
        if executor == "ray":
            from secagg.ray_transport import require_ray

            require_ray()  # before any work: says how to install Ray when it is missing
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or int(workers) < 1:
            raise InvalidInput(f"workers must be an int >= 1, got {workers!r}")
        if params is None:
            _variant(options.get("variant", Variant.HONEST_BUT_CURIOUS))
            if options.get("graph", "complete") not in GRAPHS:
                raise InvalidInput(f"graph must be one of {GRAPHS}, got {options.get('graph')!r}")
        elif options:
            raise InvalidInput(f"pass either params or session options, not both ({sorted(options)})")
        vecs, d, m = _validate_inputs(inputs, params.modulus if params is not None else modulus)
        n = len(vecs)
        if params is None:
            params = SessionParams.create(n, d, m, **options)  # type: ignore[arg-type]
        elif (params.n, params.dim) != (n, d):
            raise InvalidInput(f"params are for n = {params.n}, d = {params.dim}; inputs are {n} x {d}")
        self.params = params
        self.session = params.session
        self.graph, self.threshold = params.graph, params.threshold
        self.graph_name = params.graph_name
        self.n, self.dim, self.modulus, self.variant = n, d, m, params.variant.value
        spec = PROTOCOLS[params.protocol]
        self.pki: dict[int, bytes] = {}
        self.clients, self.pki = spec.make_clients(params, vecs)
        del vecs
        self.server = spec.make_server(params, self.pki, server_class)
        self.workers = min(int(workers), n)
        if self.workers > 1 and not fork_available():
            warnings.warn("parallel clients need the fork start method; running with workers=1", RuntimeWarning, stacklevel=2)
            self.workers = 1
        schedule = dict(params.schedule)
        if executor == "ray":
            from secagg.ray_transport import RayTransport  # imported only when chosen (optional extra)

            self.transport: Transport = RayTransport(self.clients, self.server, schedule, interceptor, address=ray_address)
        elif self.workers > 1:
            self.transport = ProcessTransport(self.clients, self.server, schedule, interceptor, workers=self.workers)
        else:
            self.transport = Transport(self.clients, self.server, schedule, interceptor)
        self._ran = False

    def run(self) -> AggregationResult:
        """Run every round; return the result or raise ProtocolAborted (carrying the ``ledger``,
        ``client_errors`` and ``sets`` at the abort)."""
        if self._ran:
            raise StateError("this session has already run: a session runs once (build a new one)")
        self._ran = True
        tr = self.transport
        total = None
        try:
            for rnd in self.params.rounds:
                total = tr.run_round(rnd.value)
        except ProtocolAborted as exc:
            aborted = exc.with_context(ledger=tr.ledger, sets=dict(self.server.sets), client_errors=dict(tr.client_errors))
            aborted.failures = dict(getattr(tr, "failures", {}))  # type: ignore[attr-defined]
            raise aborted from exc
        finally:
            tr.close()  # parallel clients: stop the workers (no-op in-process)
        assert isinstance(total, np.ndarray)
        sets = dict(self.server.sets)
        sets.setdefault("U4", sets["U3"])  # the honest-but-curious variant has no consistency round
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
            guarantee=self.params.guarantee(sets["U3"]),
            protocol=self.params.protocol,
            wrong_shares=tuple(getattr(self.server, "wrong_shares", ())),  # a Server stand-in may not record them
            failures=dict(getattr(tr, "failures", {})),
        )


def run_secure_aggregation(
    inputs,  # noqa: ANN001 - sequence of integer vectors (or a 2-D integer array)
    *,
    modulus: int,
    server_class: type | Callable[..., object] | None = None,
    interceptor: Interceptor | None = None,
    workers: int = 1,
    executor: str = "local",
    ray_address: str | None = None,
    **options: object,
) -> AggregationResult:
    """Securely sum ``inputs`` over Z_M with the protocol of Bonawitz et al. (CCS 2017, Figure 4).

    Args:
        inputs: ``n >= 2`` equal-length integer vectors with elements in ``[0, modulus)``; client ``u``
            holds ``inputs[u]``.
        modulus: M, ``2 <= M <= 2**64``.
        options: the session parameters, checked by :meth:`SessionParams.create` (one list for every
            entry point):
            threshold: Shamir threshold t (``2 <= t <= n``; active variant: ``2t > n``, or ``2t > k + 1`` on
                SecAgg+); None picks the default (module docstring).
            graph: ``"complete"`` or ``"secagg+"`` (Harary graph; falls back to complete for small n).
            variant: ``"honest-but-curious"`` (rounds 0, 1, 2, 4) or ``"active"`` (signatures, round 3).
            dropouts: ``client -> round name`` (optionally ``":after"``), see module docstring.
            seed: int, bytes or None (fresh randomness). Every key and mask is a deterministic function of the
                seed: never reuse a seed with *different* inputs, or the server sees ``y_u - y'_u = x_u - x'_u``
                (a two-time pad). Callers that run many sessions derive one seed per session (e.g. a hash of a
                base seed and a call counter).
            neighbours: SecAgg+ degree k (even, ``2 <= k < n``), overriding the parameter finder.
            corrupt_fraction, dropout_fraction: gamma, delta the SecAgg+ graph is designed for (the parameter
                finder's inputs; delta defaults to 0.05). On SecAgg+ the server refuses to unmask fewer than
                ``ceil((1 - delta) n)`` survivors; on ``graph="complete"`` a given ``dropout_fraction`` sets
                that bound too (else it is t). See :mod:`secagg.rules` (survivor policy).
            min_survivors: raise the survivor bound explicitly (never below t).
            protocol: ``"bonawitz"`` (the default) or ``"plaintext"`` (clients send their inputs in the
                clear: the baseline of the expansion factor); see :data:`PROTOCOLS`.
            commit_self_masks: opt-in: every client sends a SHA-256 commitment to its self-mask seed
                ``b_u``, bound to the session and ``u`` (signed in the active variant), with its round-1
                shares (32 bytes, +64 signed, per client); the server checks every reconstructed ``b_u``
                against it, so wrong shares beyond the decoding radius abort instead of corrupting the
                sum. Off (default): the paper's wire format.
            consistency_view: ``"full"`` (default) or ``"window"`` (active SecAgg+ only): each client receives
                U3 only on the ring positions within ``k`` of its own, with Merkle authentication paths to a
                root that every client signs (``O(k + log n)`` bytes per client instead of ``n / 8``), and
                checks the local survivor rules (rule ``survivors-gap``: no ``k/2`` consecutive positions
                without a survivor); the global survivor policy is then checked by the server only
                (docs/protocol.md, "Active SecAgg+").
            adaptive: opt-in (SecAgg+): guarantee privacy against ``floor(gamma n)`` corrupt clients and
                dropouts chosen *after* seeing the public graph, not only against ones independent of
                its random relabelling (Bell et al.'s model). Requires ``t > floor(gamma n)`` (and
                ``2t > k + 1 + floor(gamma n)`` in the active variant; InvalidInput otherwise, since no
                check could certify it), and aborts (rule ``survivors-robust``) unless the survivors' graph
                stays connected after removing any ``floor(gamma n)`` of them. Satisfiable only while
                ``floor(gamma n) < k``: a few hundred clients at ``gamma = 0.05`` (docs/protocol.md,
                "Survivor policy"). No effect on the complete graph, whose guarantee (fewer than t
                corrupt clients) already holds for any choice of them.
        server_class: alternative Server (tests: malicious servers). interceptor: hook on the wire.
        workers: run the clients' computations in this many forked worker processes (``1``, the
            default: in-process). Same result, ledger and errors for any value (module docstring).
        commit_self_masks: opt-in: every client sends a SHA-256 commitment to its self-mask seed
            ``b_u``, bound to the session and ``u`` (signed in the active variant), with its round-1
            shares (32 bytes, +64 signed, per client); the server checks every reconstructed ``b_u``
            against it, so wrong shares beyond the decoding radius abort instead of corrupting the sum.
            Off (default): the paper's wire format.
        executor: ``"local"`` (default: in-process, or ``workers`` forked processes) or ``"ray"``: the
            clients run in Ray actors (module docstring); InvalidInput saying how to install Ray if it is
            missing. ray_address: the cluster to join (default ``RAY_ADDRESS``, else a local instance
            started and shut down by this call; an already initialized Ray is used as is).

    Returns:
        :class:`AggregationResult` with ``sum = sum_{u in U3} x_u mod M``.

    Raises:
        InvalidInput: bad arguments (before anything runs).
        ProtocolAborted: some round had fewer than t participants (or shares), or the survivor policy
            failed; nothing is released. :class:`~secagg.errors.InconsistentShares` (a subclass) when
            round-4 shares are wrong beyond what decoding corrects, or a reconstructed secret fails its check.
    """
    return Session(inputs, modulus=modulus, server_class=server_class, interceptor=interceptor, workers=workers,
                   executor=executor, ray_address=ray_address, **options).run()


# ------------------------------------------------------------------------------------------ protocols
@dataclass(frozen=True)
class ProtocolSpec:
    """A protocol registered in :data:`PROTOCOLS`: how to build its clients and its server from the
    session's parameters, and which rounds it runs. Its client and server classes name their methods
    after :attr:`secagg.rounds.Round.method`, so the one :class:`~secagg.transport.Transport` drives it."""

    name: str
    make_clients: Callable[[SessionParams, list[np.ndarray]], tuple[dict[int, object], dict[int, bytes]]]
    make_server: Callable[[SessionParams, dict[int, bytes], object], object]
    rounds: Callable[[Variant], tuple[Round, ...]]
    doc: str = ""


def _bonawitz_clients(params: SessionParams, vecs: list[np.ndarray]) -> tuple[dict[int, object], dict[int, bytes]]:
    from secagg.client import Client
    from secagg.keys import SigningKey

    root = params.root
    assert root is not None
    n = params.n
    drbgs = [root.child(b"client/" + u.to_bytes(4, "big")) for u in range(n)]
    active = params.variant is Variant.ACTIVE
    signing = [SigningKey.generate(drbgs[u].child(b"signing-key")) for u in range(n)] if active else None
    pki: dict[int, bytes] = {u: signing[u].public_bytes for u in range(n)} if signing else {}
    clients = {u: Client(u, vecs[u], params, drbg=drbgs[u], pki=pki, signing_key=signing[u] if signing else None)
               for u in range(n)}
    return clients, pki


def _bonawitz_server(params: SessionParams, pki: dict[int, bytes], server_class: object) -> object:
    from secagg.server import Server

    return (server_class or Server)(params, pki=pki)  # type: ignore[operator]


def _plaintext_clients(params: SessionParams, vecs: list[np.ndarray]) -> tuple[dict[int, object], dict[int, bytes]]:
    from secagg.plaintext import PlaintextClient

    return {u: PlaintextClient(u, vecs[u], params) for u in range(params.n)}, {}


def _plaintext_server(params: SessionParams, pki: dict[int, bytes], server_class: object) -> object:
    from secagg.plaintext import PlaintextServer

    return (server_class or PlaintextServer)(params)  # type: ignore[operator]


#: The registered protocols: name -> :class:`ProtocolSpec`. Adding a protocol is one module with its
#: client and server classes plus one entry here (docs/protocol.md, "How to add a protocol").
PROTOCOLS: dict[str, ProtocolSpec] = {
    "bonawitz": ProtocolSpec("bonawitz", _bonawitz_clients, _bonawitz_server, lambda v: v.rounds,
                             "Bonawitz et al. (CCS 2017), rounds 0-4; SecAgg+ graphs of Bell et al. (CCS 2020)"),
    "plaintext": ProtocolSpec("plaintext", _plaintext_clients, _plaintext_server, lambda v: (Round.MASKED_INPUT,),
                              "clients send their inputs in the clear (the expansion factor's baseline)"),
}

