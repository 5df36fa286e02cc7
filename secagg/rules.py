"""The protocol's rules, written once: small pure functions that every party and carrier calls.

The server (:mod:`secagg.server`), the client (:mod:`secagg.client`), the transport
(:mod:`secagg.transport`) and the cryptography-free pair behind the ``modular`` backend
(:mod:`secagg.modular`) decide *who takes part, who holds what and when to stop* only through these
functions, so the two implementations cannot drift apart: a rule changed here changes both.

Dropout schedule (the transport's rule). ``schedule[u] = (r, after)``: client ``u`` sends nothing from
round ``r`` on (``after=False``), or sends its round-``r`` message and then vanishes (``after=True``).

Threshold rules, and who sets them:

* ``t >= 2`` always (a one-share "secret" is the secret itself: with ``t = 1`` and one dropout at
  ``n = 2`` the released sum is one client's input in the clear) and ``t <= h``, ``h`` the holders of
  each client's shares (``n`` on the complete graph; ``k + 1`` on SecAgg+, self-edge included, as in
  Bell et al., *Secure Single-Server Aggregation with (Poly)Logarithmic Overhead*, CCS 2020).
* Every round needs ``|U_r| >= t`` messages, at the server and in each client's view (Bonawitz et al.,
  *Practical Secure Aggregation for Privacy-Preserving Machine Learning*, CCS 2017, Figure 4: "if fewer
  than t messages are received, abort").
* Active variant: ``2 t > h`` (:func:`check_active_threshold`; Bonawitz et al. prove active security
  for ``t > (n + n_C) / 2``, Section 4 and Appendix A).
* Active SecAgg+: also ``2 t > k + 2`` (:func:`check_interleaving_threshold`: otherwise a lying server
  can unmask parts of the ring separately); our extension.
* Reconstructibility (the server's early checks): every secret the server will need -- ``b_u`` for
  ``u in U3``, ``s_sk_v`` for dropped ``v in U2 \\ U3`` that masked with a survivor -- keeps ``>= t``
  live holders, and at the end ``t`` shares of each arrived.

Survivor policy (:func:`check_survivor_policy`), checked by the server once U3 is known and before it
asks for any share, so nothing is released when it fails:

* the survivors' residual mask graph ``G[U3]`` is connected: otherwise the masks between two live
  clients of different components are never in the sum, and the server can unmask each component's
  partial sum from what it legitimately holds (one breadth-first search; always true on the complete
  graph);
* ``|U3| >= min_survivors``. On SecAgg+ ``min_survivors = ceil((1 - delta) n)`` with ``delta`` the
  dropout fraction the graph was designed for. Bell et al. (CCS 2020) give security in the
  semi-honest and semi-malicious settings against an adversary controlling the server and a fraction
  of the clients, and correctness with a bounded fraction of dropouts; the (k, t) analysis assumes at
  most ``floor(delta n)`` dropouts: the bound is what keeps every survivor's neighbourhood above ``t``
  and ``G[U3]`` connected with overwhelming probability. Google's fcp SecAgg+ server
  likewise refuses to proceed below that minimum number of clients. On the complete graph ``min_survivors``
  defaults to ``t`` (the original protocol's rule); a caller may raise it or give ``delta``.

What the policy cannot see: the corrupt clients. A live corrupt client in U3 keeps ``G[U3]`` connected
while revealing its own mask keys, so privacy needs the *honest* survivors' graph ``G[U3 \\ C]``
connected. On SecAgg+ that, and "no client has ``t`` corrupt holders", hold with probability
``1 - 2^-40`` over the session's random relabelling **for a corrupt set and a dropout set fixed
independently of that relabelling** (the finder's union bounds place a fixed bad set of
``floor(gamma n) + floor(delta n)`` clients on a uniformly random ring). An adversary that chooses the
corrupt clients, or the dropouts, after seeing the public graph is outside that model: at most
``k - 2`` dropouts placed around live corrupt clients on two arcs of the ring split the honest
survivors while ``G[U3]`` stays connected, and the finder's ``k`` grows only logarithmically while
``floor(delta n)`` grows linearly (``k = 30 < floor(delta n) = 50`` at ``n = 1000``,
``gamma = delta = 0.05``). What does hold for *any* placement is measured exactly by :func:`survivor_tolerance`
(``s``: removing any ``s`` survivors leaves ``G[U3]`` connected) and reported by :class:`Guarantee`:
any set of at most ``min(s, t - 1)`` corrupt clients (``min(s, t - 1, 2t - h - 1)`` in the active
variant), however chosen, learns nothing beyond the sum. ``check_survivor_policy(..., tolerate=c)``
enforces ``s >= c`` before anything is released (rule ``survivors-robust``; a session's
``adaptive=True`` sets ``c = floor(gamma n)``, :class:`secagg.protocol.SessionParams`); requiring
``s >= floor(gamma n)`` is satisfiable only while ``floor(gamma n) < k`` (the Harary graph's vertex
connectivity is ``k``), i.e. for ``n`` below roughly ``k / gamma``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from secagg.errors import InvalidInput, ProtocolAborted
from secagg.rounds import ROUNDS, Round, Variant

__all__ = [
    "Schedule",
    "parse_drop",
    "parse_dropouts",
    "drops_before",
    "drops_after",
    "check_threshold_value",
    "default_threshold",
    "check_active_threshold",
    "check_interleaving_threshold",
    "require",
    "holders_of",
    "masks_to_cancel",
    "check_reconstructible",
    "check_shares_received",
    "signers_for",
    "check_signers",
    "min_survivors_for",
    "survivor_components",
    "survivor_tolerance",
    "floor_fraction",
    "check_survivor_policy",
    "longest_gap",
    "check_window_policy",
    "adaptive_corrupt_bound",
    "Guarantee",
    "DEFAULT_DROPOUT_FRACTION",
]

Schedule = Mapping[int, tuple[int, bool]]
"""A validated dropout schedule: ``client -> (round index, after)``."""

DEFAULT_DROPOUT_FRACTION = 0.05
"""delta when nothing is declared: the dropout fraction SecAgg+ graphs are designed for by default."""


# ------------------------------------------------------------------------------------------- dropouts
def parse_drop(spec: object) -> tuple[int, bool]:
    """``"ROUND"``, ``"ROUND:before"`` or ``"ROUND:after"`` -> ``(round index, after)``; InvalidInput otherwise."""
    if not isinstance(spec, str):
        raise InvalidInput(f"dropout round must be a round name, got {spec!r}")
    name, _, when = spec.partition(":")
    if name not in ROUNDS or when not in ("", "before", "after"):
        raise InvalidInput(f"unknown dropout round {spec!r}; use one of {ROUNDS}, optionally suffixed ':after'")
    return ROUNDS.index(name), when == "after"


def parse_dropouts(dropouts: Mapping[int, str] | None, n: int) -> dict[int, tuple[int, bool]]:
    """Validate a schedule ``client -> "round[:after]"`` -> ``{client: (round index, after)}``."""
    if dropouts is None:
        return {}
    if not isinstance(dropouts, Mapping):
        raise InvalidInput(f"dropouts must be a mapping client id -> round name, got {type(dropouts).__name__}")
    out: dict[int, tuple[int, bool]] = {}
    for k, v in dropouts.items():
        if isinstance(k, bool) or not hasattr(k, "__index__") or not 0 <= int(k) < n:
            raise InvalidInput(f"dropout key must be a client id in [0, {n}), got {k!r}")
        out[int(k)] = parse_drop(v)
    return out


def drops_before(schedule: Schedule, u: int, r: int) -> bool:
    """True when client ``u`` sends nothing in round ``r`` (it dropped earlier, or before sending in ``r``)."""
    d = schedule.get(u)
    return d is not None and (d[0] < r or (d[0] == r and not d[1]))


def drops_after(schedule: Schedule, u: int, r: int) -> bool:
    """True when client ``u`` sends its round-``r`` message and then vanishes."""
    d = schedule.get(u)
    return d is not None and d[0] == r and d[1]


# ----------------------------------------------------------------------------------------- thresholds
def check_threshold_value(t: object, holders: int) -> int:
    """``2 <= t <= holders`` (module docstring: ``t = 1`` makes a share the secret); InvalidInput otherwise."""
    if isinstance(t, bool) or not hasattr(t, "__index__"):
        raise InvalidInput(f"threshold must be an int with 2 <= t <= {holders}, got {t!r}")
    t = int(t)  # type: ignore[call-overload]
    if t < 2:
        raise InvalidInput(
            f"threshold t = {t} < 2: a 1-of-h share is the secret itself (with one dropout at n = 2 the "
            f"released sum is one client's input in the clear); use t >= 2"
        )
    if t > holders:
        raise InvalidInput(f"threshold t = {t} exceeds the {holders} holders of each client's shares")
    return t


def default_threshold(holders: int, variant: str) -> int:
    """``floor(h/2) + 1`` (honest-but-curious) or ``floor(2h/3) + 1`` (active) for ``h`` share holders,
    at least 2 and at most ``h``."""
    t = holders // 2 + 1 if variant != Variant.ACTIVE else (2 * holders) // 3 + 1
    return min(holders, max(2, t))


def check_active_threshold(holders: int, threshold: int, variant: str) -> None:
    """Active variant: refuse ``2 t <= h``, ``h`` = holders of a client's shares (``n`` on the complete
    graph, ``k + 1`` on SecAgg+, self-edge included).

    Bonawitz et al. (CCS 2017, Sec. 4, Appendix A) prove privacy against an active server only for
    ``t > (n + n_C) / 2`` (``n_C`` corrupt clients). With ``2 t <= h`` even ``n_C = 0`` is not enough: a
    server tells two disjoint groups of ``>= t`` holders two different U3 (with and without a live
    client v), forwards to each group only its own group's signatures -- all genuine, all over the U3 the
    reader signed -- and collects ``b_v`` from one group and ``s_sk_v`` from the other. The defaults
    (``floor(2h/3) + 1``) satisfy this and tolerate ``n_C < h/3``; ``h // 2 + 1`` is the smallest t accepted.
    """
    if variant != Variant.ACTIVE:
        return
    if 2 * int(threshold) <= holders:
        raise InvalidInput(
            f"active variant needs 2t > {holders} (the holders of each client's shares), got t = {threshold}: "
            f"with t <= {holders // 2} a lying server can split the clients into two groups with different U3 "
            f"and collect both share types of a live client; use t >= {holders // 2 + 1} "
            f"(default {default_threshold(holders, variant)})"
        )


def check_interleaving_threshold(k: int, threshold: int) -> None:
    """Active SecAgg+ (both consistency views): refuse ``2t <= k + 2`` (InvalidInput). Below it a
    lying server, with no corrupt client, unmasks parts of the ring separately; independent
    adversarial reviews found two such attacks at ``t = k/2 + 1``, the smallest ``t`` that ``2t > k + 1``
    allows (and the fcp finder's semi-malicious choice at ``k = 4``):

    * *interleaved classes* (window view): round 1 routes to each client only the ciphertexts of its own
      class (even or odd ring position), each class is shown a U3 equal to itself and its own signatures;
      every client has ``k/2 + 1 = t`` signers of its class around each peer, so every check passes and
      the server unmasks both classes' sums;
    * *islands* (full view, one honest U3 for everyone): periods of ``h + 1`` helpers and an island of
      ``h`` non-signers, ``h + 1`` signers, ``h`` non-signers (``h = k/2``); the non-signers are routed
      only their own island's ciphertexts (and abort on the stray rule, which nothing needs), their
      ``b`` is revealed by exactly ``h + 1 = t`` signers, the helpers' masks with the islands are
      one-sided, and every island's sum comes out.

    With ``2t > k + 2`` neither fits: two clients of different classes at ring distance ``d <= k + 1``
    with no class member between would need two disjoint sets of ``t`` signers among the
    ``k + 1 + d - (d - 1) = k + 2`` positions of ``N[p] ∪ N[q]`` left to them, and an exhaustive
    search of a model of every client check (the server choosing routing, one-sided included, starved
    clients, up to three U3, requests; every key list complete) finds no server that learns two sums,
    or one sum below ``min_survivors``, for ``(k, t) = (4, 4), (6, 5), (8, 6)`` and ``n`` from 16 to 40.
    That is evidence, not a proof (docs/protocol.md, "Active SecAgg+")."""
    if 2 * int(threshold) <= int(k) + 2:
        raise InvalidInput(
            f"active SecAgg+ needs 2t > k + 2 = {k + 2}, got t = {threshold}: with t <= {k // 2 + 1} a lying server "
            f"can route round-1 shares so that parts of the ring (interleaved classes, or islands between "
            f"signers) mask only among themselves and unmask each part's partial sum; use t >= {k // 2 + 2}"
        )


def require(round: str, have: int, t: int, what: str, party: int | None = None) -> None:
    """The per-round threshold: ``have >= t`` or :class:`ProtocolAborted` (by ``party``; None: the server)."""
    if have < t:
        raise ProtocolAborted(str(round), f"{what}: {have} < t = {t}", party, rule="threshold")


# ------------------------------------------------------------------------------- holders and secrets
def holders_of(u: int, recipients: Iterable[int], u2: frozenset[int]) -> frozenset[int]:
    """``H(u)``: ``u`` itself plus the clients of U2 the server forwarded ``u``'s ciphertexts to."""
    return frozenset(v for v in recipients if v in u2) | {u}


def masks_to_cancel(u2: frozenset[int], u3: frozenset[int], holders: Mapping[int, frozenset[int]]) -> dict[int, list[int]]:
    """Dropped ``v in U2 \\ U3`` whose pairwise masks are in the sum -> the survivors that masked with it
    (sorted; ``v``'s holders among U3). Dropped clients that masked with no survivor are left out."""
    out: dict[int, list[int]] = {}
    for v in sorted(u2 - u3):
        peers = sorted((holders[v] - {v}) & u3)
        if peers:
            out[v] = peers
    return out


def check_reconstructible(round: str, u2: frozenset[int], u3: frozenset[int], holders: Mapping[int, frozenset[int]],
                          alive: frozenset[int], t: int) -> None:
    """Every secret the server will need keeps ``>= t`` live holders, else :class:`ProtocolAborted` now,
    before anyone is asked for a share: ``b_u`` for ``u in U3``, ``s_sk_v`` for the dropped clients of
    :func:`masks_to_cancel`."""
    for u in sorted(u3):
        c = len(holders[u] & alive)
        if c < t:
            raise ProtocolAborted(str(round), f"self-mask seed of client {u} has {c} live holders < t = {t}", rule="reconstructible")
    for v in sorted(u2 - u3):
        if not ((holders[v] - {v}) & u3):
            continue
        c = len(holders[v] & alive)
        if c < t:
            raise ProtocolAborted(str(round), f"mask key of dropped client {v} has {c} live holders < t = {t}", rule="reconstructible")


def check_shares_received(u3: frozenset[int], to_cancel: Iterable[int], b_counts: Mapping[int, int],
                          k_counts: Mapping[int, int], t: int) -> None:
    """After round 4: ``t`` shares of ``b_u`` for each ``u in U3`` and of ``s_sk_v`` for each ``v`` to cancel."""
    for u in sorted(u3):
        c = b_counts.get(u, 0)
        if c < t:
            raise ProtocolAborted(str(Round.UNMASKING), f"{c} shares of b_{u} < t = {t}", rule="reconstructible")
    for v in to_cancel:
        c = k_counts.get(v, 0)
        if c < t:
            raise ProtocolAborted(str(Round.UNMASKING), f"{c} shares of s_sk_{v} < t = {t}", rule="reconstructible")


# --------------------------------------------------------------------------- round-3 signatures (active)
def signers_for(graph, u: int, u4: frozenset[int]) -> frozenset[int]:  # noqa: ANN001 - secagg.graph.Graph
    """The signers of U3 whose signatures the server forwards to ``u`` with its unmasking request (active
    variant): all of U4 on the complete graph; ``U4 ∩ N2[u]`` on SecAgg+, ``N2[u]`` =
    :meth:`secagg.graph.Graph.two_hop_neighbourhood` (the holders of ``u``'s peers' shares, at most
    ``2k + 1`` clients), so the download grows with ``k``, not ``n``."""
    if graph.is_complete:
        return u4
    return graph.two_hop_neighbourhood(u) & u4


def check_signers(round: str, graph, peers: Iterable[int], signers: frozenset[int], t: int,  # noqa: ANN001
                  party: int | None = None) -> None:
    """Active variant, before client ``party`` reveals a share of any peer ``v`` in ``peers`` (its view of
    U2, itself included): ``t`` valid signatures of its U3 from distinct members of ``N(v) ∪ {v}``, else
    :class:`ProtocolAborted` (rule ``threshold``). On the complete graph ``N(v) ∪ {v}`` is everyone and
    the rule is the original ``|U4| >= t`` (Bonawitz et al., Figure 4, round 4).

    Why per peer: the shares of ``v`` are held by ``N(v) ∪ {v}`` only, and honest clients sign one U3
    each; two honest holders that revealed different share types of ``v`` would have seen ``t``
    signatures each, over two different U3, from that set, so ``2t <= k + 1 + n_C(v)``, which the
    threshold excludes (docs/protocol.md, "Active SecAgg+").

    The honest server never sends a request that fails this rule: ``N(v) ∪ {v}`` contains the holders
    of ``v``'s shares, so a peer with fewer than ``t`` signers in U4 is a secret with fewer than ``t``
    live holders, and :func:`check_reconstructible` (applied to U4 at the end of round 3) has aborted
    the session already, before any request went out.
    """
    if graph.is_complete:
        require(round, len(signers), t, "|U4|", party)
        return
    for v in sorted(peers):
        c = len(graph.closed_neighbourhood(v) & signers)
        if c < t:
            raise ProtocolAborted(str(round), f"signers of U3 among N({v}) ∪ {{{v}}}: {c} < t = {t}", party, rule="threshold")


# ------------------------------------------------------------------------------------ survivor policy
def min_survivors_for(n: int, t: int, *, sparse: bool, delta: float | None, min_survivors: int | None) -> int:
    """The survivor bound of the module docstring.

    SecAgg+ (``sparse``) takes ``ceil((1 - delta) n)`` (``delta`` defaulting to
    :data:`DEFAULT_DROPOUT_FRACTION`), the complete graph ``t`` -- or ``ceil((1 - delta) n)`` when
    ``delta`` is given. An explicit ``min_survivors`` only *raises* that bound (it never lowers Bell et
    al.'s dropout bound on SecAgg+). Never below ``t``.
    """
    explicit = 0
    if min_survivors is not None:
        if isinstance(min_survivors, bool) or not hasattr(min_survivors, "__index__") or not 1 <= int(min_survivors) <= n:
            raise InvalidInput(f"min_survivors must be an int in [1, n = {n}], got {min_survivors!r}")
        explicit = int(min_survivors)
    if delta is None:
        if not sparse:
            return max(int(t), explicit)
        delta = DEFAULT_DROPOUT_FRACTION
    return max(int(t), explicit, _ceil_fraction(n, delta))


def _ceil_fraction(n: int, delta: float) -> int:
    """``ceil((1 - delta) n)`` computed exactly from delta's decimal representation (no float rounding)."""
    from fractions import Fraction

    d = Fraction(repr(float(delta)))
    return int(math.ceil((1 - d) * n))


def floor_fraction(n: int, fraction: float) -> int:
    """``floor(fraction * n)`` exactly from the fraction's decimal representation, as the (k, t) finder
    counts corrupt clients (``floor(gamma n)``)."""
    from fractions import Fraction

    return int(math.floor(Fraction(repr(float(fraction))) * n))


def survivor_components(graph, nodes: frozenset[int]) -> list[frozenset[int]]:  # noqa: ANN001 - secagg.graph.Graph
    """Connected components of the induced graph ``G[nodes]`` (:meth:`secagg.graph.Graph.components`:
    one breadth-first search; the complete graph's induced graph is connected whenever it is non-empty)."""
    return graph.components(frozenset(nodes))


def survivor_tolerance(graph, nodes: frozenset[int]) -> int:  # noqa: ANN001 - secagg.graph.Graph
    """The largest ``s`` such that ``G[nodes \\ S]`` is connected for *every* ``S`` of at most ``s``
    nodes of ``nodes``: the vertex connectivity of ``G[nodes]`` minus one, or ``|nodes| - 1`` when no
    removal disconnects it (a complete induced graph). 0 when ``G[nodes]`` is already disconnected.

    This is what survives an adversary that picks its corrupt survivors *after* seeing the graph: a
    corrupt client reveals its mask keys, so honest survivors are hidden from each other's partial sums
    only through ``G[U3 \\ C]``, which stays connected for any ``C`` with ``|C| <= s``.

    Complete graph: ``|nodes| - 1``. Harary graph ``H(k, n)`` (ring positions, ``h = k/2``): two survivors
    at ring distance ``<= h`` are adjacent, so ``G[X]`` splits exactly when two runs of ``h``
    consecutive positions hold no member of ``X`` and both arcs between them do. A minimum separator is
    therefore ``X`` restricted to two such windows ``W_i = [i, i + h)``, ``W_j``:
    ``kappa = min_i (c_i + min_{j in J_i} c_j)``, ``c_i = |X ∩ W_i|``, where ``J_i`` (the ``j`` that
    leave a member of ``X`` on both arcs) is an interval of the unrolled ring. One prefix sum and a
    sparse table of range minima: ``O(n log n)`` array operations.
    """
    nodes = frozenset(nodes)
    m = len(nodes)
    if m <= 1:
        return 0
    if len(survivor_components(graph, nodes)) > 1:
        return 0
    if graph.is_complete:
        return m - 1
    import numpy as np

    n, h = graph.n, graph.k // 2
    order = graph.ring_order()
    x = np.fromiter((u in nodes for u in order), dtype=np.int64, count=n)
    x3 = np.concatenate([x, x, x])  # unrolled ring, positions 0 .. 3n - 1
    cum = np.concatenate([[0], np.cumsum(x3)])
    c = cum[h:h + 3 * n - h + 1] - cum[:3 * n - h + 1]  # c[q] = |X ∩ [q, q + h)| for q in [0, 3n - h]
    pos = np.flatnonzero(x3)  # members' positions, unrolled
    i = np.arange(n)
    # first member at or after i + h, last member at or before i + n - 1 (both exist: m >= 2, positions < 3n)
    nx = pos[np.searchsorted(pos, i + h, side="left")]
    px = pos[np.searchsorted(pos, i + n - 1, side="right") - 1]
    lo, hi = nx + 1, px - h  # j in [lo, hi]: arc [i + h, j) and arc [j + h, i + n) each hold a member
    ok = lo <= hi
    if not ok.any():
        return m - 1
    lo, hi, ii = lo[ok], hi[ok], i[ok]
    # sparse table of minima over c
    table = [c]
    span = 1
    while 2 * span <= len(c):
        prev = table[-1]
        table.append(np.minimum(prev[:-span], prev[span:]))
        span *= 2
    length = hi - lo + 1
    lev = np.floor(np.log2(length)).astype(np.int64)
    best = np.empty(len(lo), dtype=np.int64)
    for L in np.unique(lev):
        sel = lev == L
        tab = table[int(L)]
        a, b = lo[sel], hi[sel] - (1 << int(L)) + 1
        best[sel] = np.minimum(tab[a], tab[b])
    kappa = int((c[ii] + best).min())
    return min(kappa - 1, m - 1)


def check_survivor_policy(round: str, graph, u3: frozenset[int], min_survivors: int,  # noqa: ANN001
                          party: int | None = None, tolerate: int = 0) -> None:
    """The survivor policy (module docstring): ``G[U3]`` connected and ``|U3| >= min_survivors``, else
    :class:`ProtocolAborted` naming the rule (nothing has been released when the server calls this;
    ``party``: the client that checks, in the active variant, the U3 it is asked to sign).

    ``tolerate = c > 0`` also requires ``G[U3 \\ S]`` connected for every ``S`` of at most ``c``
    survivors (:func:`survivor_tolerance` ``>= c``; rule ``survivors-robust``): the honest survivors
    stay connected whichever ``c`` live clients are corrupt, however they were chosen. ``tolerate = 0``
    is the connectivity rule alone."""
    if isinstance(tolerate, bool) or not isinstance(tolerate, int) or tolerate < 0:
        raise InvalidInput(f"tolerate must be an int >= 0, got {tolerate!r}")
    if len(u3) < min_survivors:
        raise ProtocolAborted(
            str(round),
            f"survivor policy: |U3| = {len(u3)} < min_survivors = {min_survivors} (the dropout bound the session "
            f"was designed for; declare a larger dropout fraction to tolerate more dropouts)",
            party, rule="min-survivors",
        )
    comps = survivor_components(graph, u3)
    if len(comps) > 1:
        sizes = sorted((len(c) for c in comps), reverse=True)
        raise ProtocolAborted(
            str(round),
            f"survivor policy: the survivors' mask graph G[U3] has {len(comps)} components (sizes {sizes[:5]}); "
            f"unmasking would reveal each component's partial sum",
            party, rule="survivors-connected",
        )
    if tolerate:
        s = survivor_tolerance(graph, u3)
        if s < tolerate:
            raise ProtocolAborted(
                str(round),
                f"survivor policy: removing {s + 1} of the {len(u3)} survivors can split G[U3] (it must stay "
                f"connected after removing any {tolerate}); corrupt survivors there would expose honest partial sums",
                party, rule="survivors-robust",
            )


def longest_gap(graph, members: frozenset[int], positions: tuple[int, ...] | None = None) -> int:  # noqa: ANN001
    """The longest run of consecutive ring positions holding no member of ``members``.

    ``positions=None``: over the whole (cyclic) ring of ``graph``; else along ``positions`` (ring
    positions in order, a client's window: :func:`secagg.survivor_tree.window_positions`)."""
    order = graph.ring_order()
    if positions is None:
        n = graph.n
        if not members:
            return n
        pos = sorted(graph.position(u) for u in members)
        gaps = [pos[i + 1] - pos[i] - 1 for i in range(len(pos) - 1)]
        gaps.append(pos[0] + n - pos[-1] - 1)
        return max(gaps)
    best = run = 0
    for p in positions:
        run = 0 if order[p] in members else run + 1
        best = max(best, run)
    return best


def check_window_policy(round: str, graph, w: int | None, members: frozenset[int], threshold: int) -> None:  # noqa: ANN001
    """The survivor rules a window can check (``consistency_view="window"``, active SecAgg+).

    A client ``w`` that sees U3 only on ``N2[w]`` (the ring positions within ``k`` of its own,
    :mod:`secagg.survivor_tree`) requires ``|U3 ∩ N2[w]| >= t`` and **no ``k/2`` consecutive
    positions of its window without a survivor** (rule ``survivors-gap``). ``G[U3]`` on the Harary
    ring splits only along two runs of ``k/2`` empty positions (:meth:`secagg.graph.HararyGraph.components`),
    and every survivor next to such a run has it in its window, as have all of its holders (they lie
    within ``k/2`` of it, and their windows reach ``k`` beyond), so a U3 with a split is refused by
    exactly the clients whose shares would unmask a component. A window cannot tell one run (which a
    connected ring allows) from two, so the rule refuses both; with the finder's ``k`` a run of ``k/2``
    dropouts has probability at most ``n delta^(k/2)`` under random dropouts.

    ``w=None`` is the server's form, over the whole ring and all of U3 (the union of the clients'
    checks, so an honest server aborts before any client would)."""
    h = graph.k // 2
    if w is None:
        gap = longest_gap(graph, members)
    else:
        from secagg.survivor_tree import window_positions

        require(round, len(members), threshold, "|U3 ∩ N2[u]|", w)
        gap = longest_gap(graph, members, window_positions(graph, w))
    if h >= 1 and gap >= h:
        where = "on the ring" if w is None else "in this client's window"
        raise ProtocolAborted(
            str(round),
            f"survivor policy (window view): {gap} consecutive ring positions {where} hold no survivor "
            f"(at most k/2 - 1 = {h - 1} allowed); a window cannot tell this gap from two, which would split G[U3]",
            w, rule="survivors-gap",
        )


def adaptive_corrupt_bound(tolerance: int, threshold: int, holders: int, active: bool) -> int:
    """The most corrupt clients that, *however chosen* (after seeing the graph), learn nothing beyond the
    sum with these survivors: ``min(tolerance, t - 1)``, and ``2t - h - 1`` more in the active variant
    (``h`` holders of each client's shares). ``t - 1``: fewer than ``t`` corrupt holders of any client
    (the complete graph's bound of Bonawitz et al., for any dropouts); ``tolerance``
    (:func:`survivor_tolerance`): the honest survivors' graph stays connected; ``2t > h + n_C``: the
    active variant's split-view bound."""
    c = min(int(tolerance), int(threshold) - 1)
    if active:
        c = min(c, 2 * int(threshold) - int(holders) - 1)
    return max(c, 0)


@dataclass(frozen=True)
class Guarantee:
    """What a completed session guarantees about what the server learned.

    Attributes:
        survivors: ``|U3|``, the number of inputs in the released sum.
        min_survivors: the bound the server enforced (``|U3| >= min_survivors``).
        connected: the survivors' mask graph ``G[U3]`` was connected (always checked).
        delta: dropout fraction the graph was designed for (None: complete graph without a declared delta).
        gamma: corrupt fraction the graph was designed for (None on the complete graph).
        threshold: Shamir threshold t.
        tolerance: :func:`survivor_tolerance` of U3 (None: not computed).
        any_corrupt: :func:`adaptive_corrupt_bound`: up to this many corrupt clients, chosen in any way
            (knowing the graph), learn nothing beyond the sum with these survivors (None: not computed).
        corrupt: ``floor(gamma n)``, the corrupt clients the SecAgg+ graph was designed for (None on
            the complete graph).

    On SecAgg+ the guarantee for ``corrupt`` clients is Bell et al.'s: it holds with probability
    ``1 - 2^-40`` over the session's random relabelling for corrupt clients and dropouts fixed
    independently of that relabelling. :attr:`adaptive` tells whether this run's survivors also meet it
    for any placement; ``str()`` states which (module docstring).
    """

    survivors: int
    min_survivors: int
    connected: bool
    delta: float | None
    gamma: float | None
    threshold: int
    tolerance: int | None = None
    any_corrupt: int | None = None
    corrupt: int | None = None

    @property
    def adaptive(self) -> bool | None:
        """SecAgg+: whether the guarantee for ``corrupt`` clients holds here for any choice of the
        corrupt clients and the dropouts (``any_corrupt >= corrupt``), not only for ones independent of
        the graph. None when not computed or on the complete graph (where no graph assumption is made)."""
        if self.corrupt is None or self.any_corrupt is None:
            return None
        return self.any_corrupt >= self.corrupt

    def __str__(self) -> str:
        s = f"sum of {self.survivors} >= {self.min_survivors} inputs, graph of survivors connected, t = {self.threshold}"
        if self.delta is not None:
            s += f", designed for delta = {self.delta:g}"
        if self.gamma is not None:
            s += f", gamma = {self.gamma:g}"
        if self.any_corrupt is None:
            return s
        if self.corrupt is None:
            return s + f"; holds for any {self.any_corrupt} corrupt clients, however chosen, and any dropouts"
        if self.adaptive:
            return s + (f"; holds for any {self.corrupt} = floor(gamma n) corrupt clients, however chosen, with "
                        f"these survivors (G[U3] stays connected without any {self.tolerance} of them)")
        return s + (f"; for {self.corrupt} = floor(gamma n) corrupt clients it assumes that they and the "
                    f"dropouts were fixed independently of the session's random graph (Bell et al.'s model: "
                    f"probability over the relabelling); any {self.any_corrupt}, chosen knowing the graph, learn "
                    f"nothing beyond the sum")
