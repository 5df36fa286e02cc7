"""Who is whose neighbour: the complete graph (Bonawitz et al. 2017) or a SecAgg+ graph (Bell et al. 2020).

SecAgg+ (Bell, Bonawitz, Gascon, Lepoint, Raykova, CCS 2020) replaces the complete graph by a sparse
k-regular graph: a user shares keys and pairwise masks only with its k neighbours, and the Shamir
threshold t counts neighbours. The production construction used here is a *Harary graph* H(k, n):
nodes on a ring, each linked to the k/2 nodes on either side, under a fresh uniformly random
relabelling per session (drawn from a :class:`~secagg.drbg.Drbg`).

:func:`find_secagg_plus_params` chooses (k, t) for n users, a corrupt fraction gamma and a dropout
fraction delta, with statistical security 2^-40 and failure probability < 2^-20 (see protocol.md).
Every probability is computed *exactly* in integer arithmetic (no floating-point quantiles):

* bad = floor(gamma n) + floor(delta n). Removing nodes disconnects a Harary ring only if the removed
  set contains two disjoint runs of k/2 consecutive ring positions, hence contains k fixed positions;
  there are n (n - k - 1) / 2 such pairs of runs, and under the random relabelling a fixed set of k
  positions is entirely bad with probability bad!/(bad-k)! * (n-k)!/n!. Union bound:
  ``P[disconnect] <= n (n-k-1)/2 * (bad)_k / (n)_k``; k is acceptable iff this is < 2^-41
  (automatically when k > bad).
* A node's corrupt neighbours C ~ Hypergeometric(n, floor(gamma n), k):
  ``t1 = min{x : P[C > x] < 2^-41 / n}`` (then a union bound over n nodes gives 2^-41).
* A node's surviving neighbours S ~ Hypergeometric(n, ceil((1 - delta) n), k):
  ``t2 = min{x : P[S <= x] >= 2^-20 / n}``.
* semi-malicious server: ``t1 <- ceil((t1 + k - 1.25) / 2)`` (2t - k must exceed the corrupt count).
* ``"active"`` (our active variant on SecAgg+): the semi-malicious rule, then ``t1 <- max(t1, k/2 + 1)``
  so that ``t >= k/2 + 2``, i.e. ``2t > k + 2`` (:func:`secagg.rules.check_interleaving_threshold`:
  below it a lying server can unmask parts of the ring separately); the correctness test ``t2 > t1``
  then holds for that ``t``.
* k is the first even k in [2, n - 1) passing the ring test with ``t2 > t1``; ``t = max(t1 + 1, 2)``.

These reproduce the table of vectors.md and the values of Google's fcp parameter finder. For speed at
large k, each k is first screened with floating-point (lgamma) versions of the same bounds and skipped
only when it clearly fails (margins of 1e-6 relative / 3 units in t2 - t1); every accepted answer is
decided by the exact integer computation, so the pre-filter never changes the result.
"""

from __future__ import annotations

import bisect
from collections import deque
import functools
import math
from fractions import Fraction

from secagg.drbg import Drbg
from secagg.errors import InvalidInput

__all__ = [
    "Graph",
    "CompleteGraph",
    "HararyGraph",
    "complete_graph",
    "harary_graph",
    "find_secagg_plus_params",
    "SECURITY_BITS",
    "CORRECTNESS_BITS",
    "ADVERSARIES",
]

SECURITY_BITS = 40
CORRECTNESS_BITS = 20
ADVERSARIES = ("semi-honest", "semi-malicious", "active")


class Graph:
    """Who is whose neighbour: an immutable undirected graph on nodes ``0..n-1`` (no self loops in
    :meth:`neighbours`). Two implementations: :class:`CompleteGraph` (Bonawitz et al. 2017) and
    :class:`HararyGraph` (SecAgg+, Bell et al. 2020). ``Graph(n, k, is_complete, labels)`` builds the
    matching one.

    The protocol uses only this interface: :attr:`holders_per_client` (``h``, the clients holding shares
    of one client's secrets, itself included: ``n`` or ``k + 1``), :meth:`neighbours`,
    :meth:`closed_neighbourhood` (``N(u) ∪ {u}``), :meth:`two_hop_neighbourhood` (``N2[u]``, the
    clients whose round-3 signatures ``u`` receives in the active variant) and :meth:`are_neighbours`.

    Attributes:
        n: number of nodes. k: neighbours per node excluding itself (``n - 1`` when complete).
        is_complete: True for the complete graph of the original protocol.
    """

    __slots__ = ("n", "k", "is_complete", "_pos", "_label", "_cache", "_closed")

    def __new__(cls, *args: object, **kwargs: object):  # noqa: ANN204
        if cls is Graph:
            complete = args[2] if len(args) > 2 else kwargs["is_complete"]
            cls = CompleteGraph if complete else HararyGraph
        return object.__new__(cls)

    def __init__(self, n: int, k: int, is_complete: bool, labels: tuple[int, ...] | None = None) -> None:
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "k", k)
        object.__setattr__(self, "is_complete", is_complete)
        # labels[p] = node sitting at ring position p; _pos is the inverse
        lab = labels if labels is not None else tuple(range(n))
        pos = [0] * n
        for p, u in enumerate(lab):
            pos[u] = p
        object.__setattr__(self, "_label", lab)
        object.__setattr__(self, "_pos", tuple(pos))
        object.__setattr__(self, "_cache", {})
        object.__setattr__(self, "_closed", {})

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Graph is immutable")

    def __reduce__(self):  # noqa: ANN204
        return (Graph, (self.n, self.k, self.is_complete, self._label))

    def _check_node(self, u: int) -> int:
        if isinstance(u, bool) or not isinstance(u, int) or not 0 <= u < self.n:
            raise InvalidInput(f"node must be an int in [0, {self.n}), got {u!r}")
        return u

    @property
    def holders_per_client(self) -> int:
        """``h``: clients holding shares of one client's secrets, itself included (``k + 1``)."""
        return self.k + 1

    def neighbours(self, u: int) -> tuple[int, ...]:
        """Sorted neighbours of ``u`` (excluding ``u``); the relation is symmetric."""
        u = self._check_node(u)
        got = self._cache.get(u)
        if got is None:
            got = self._cache[u] = self._neighbours(u)
        return got

    def _neighbours(self, u: int) -> tuple[int, ...]:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    def closed_neighbourhood(self, u: int) -> frozenset[int]:
        """``N(u) ∪ {u}``: the clients whose keys ``u`` receives and who hold ``u``'s shares."""
        got = self._closed.get(u)
        if got is None:
            got = self._closed[u] = frozenset(self.neighbours(u)) | {u}
        return got

    def two_hop_neighbourhood(self, u: int) -> frozenset[int]:
        """``N2[u]``: the union of ``N(v) ∪ {v}`` over ``v`` in ``N(u) ∪ {u}`` (the clients within two hops
        of ``u``, ``u`` included): every holder of the shares of every peer of ``u``. Not cached (``O(k)``
        nodes on a Harary graph, needed once per client and round)."""
        u = self._check_node(u)
        out: set[int] = set()
        for v in self.closed_neighbourhood(u):
            out |= self.closed_neighbourhood(v)
        return frozenset(out)

    def are_neighbours(self, u: int, v: int) -> bool:
        """True iff ``u != v`` are adjacent."""
        u = self._check_node(u)
        v = self._check_node(v)
        return u != v and self._adjacent(u, v)

    def _adjacent(self, u: int, v: int) -> bool:  # pragma: no cover - implemented by subclasses
        raise NotImplementedError

    is_neighbour = are_neighbours

    def components(self, nodes: frozenset[int]) -> list[frozenset[int]]:
        """Connected components of the induced graph ``G[nodes]`` (breadth-first search, ascending start)."""
        left = set(nodes)
        comps = []
        while left:
            start = min(left)
            left.discard(start)
            comp = {start}
            queue = deque([start])
            while queue:
                u = queue.popleft()
                for v in self.neighbours(u):
                    if v in left:
                        left.discard(v)
                        comp.add(v)
                        queue.append(v)
            comps.append(frozenset(comp))
        return comps

    def position(self, u: int) -> int:
        """Ring position of node ``u`` (``ring_order()[position(u)] == u``; ``u`` itself on the complete graph)."""
        return self._pos[self._check_node(u)]

    def ring_order(self) -> tuple[int, ...]:
        """Nodes in ring order (position p holds ``ring_order()[p]``); identity for the complete graph."""
        return self._label

    def edges(self) -> list[tuple[int, int]]:
        """All edges ``(u, v)`` with ``u < v``."""
        out = []
        for u in range(self.n):
            nb = self.neighbours(u)
            out.extend((u, v) for v in nb[bisect.bisect_right(nb, u) :])
        return out

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Graph):
            return NotImplemented
        if (self.n, self.k, self.is_complete) != (other.n, other.k, other.is_complete):
            return False
        return self.is_complete or all(self.neighbours(u) == other.neighbours(u) for u in range(self.n))

    def __hash__(self) -> int:
        return hash((self.n, self.k, self.is_complete))

    def __repr__(self) -> str:
        kind = "complete" if self.is_complete else "harary"
        return f"Graph({kind}, n={self.n}, k={self.k})"


class CompleteGraph(Graph):
    """The complete graph of Bonawitz et al. (CCS 2017): every client masks with and shares to all others."""

    __slots__ = ()

    def __init__(self, n: int, k: int | None = None, is_complete: bool = True, labels: tuple[int, ...] | None = None) -> None:
        super().__init__(n, n - 1, True, None)

    @property
    def holders_per_client(self) -> int:
        """``n``: every client holds a share of every client's secrets."""
        return self.n

    def _neighbours(self, u: int) -> tuple[int, ...]:
        return tuple(v for v in range(self.n) if v != u)

    def closed_neighbourhood(self, u: int) -> frozenset[int]:
        """All nodes (one shared frozenset)."""
        got = self._closed.get(None)
        if got is None:
            got = self._closed[None] = frozenset(range(self.n))
        return got

    def two_hop_neighbourhood(self, u: int) -> frozenset[int]:
        """All nodes (the closed neighbourhood already is)."""
        self._check_node(u)
        return self.closed_neighbourhood(u)

    def _adjacent(self, u: int, v: int) -> bool:
        return True

    def components(self, nodes: frozenset[int]) -> list[frozenset[int]]:
        """One component: every pair of nodes is adjacent."""
        return [frozenset(nodes)] if nodes else []


class HararyGraph(Graph):
    """SecAgg+'s random Harary graph H(k, n) (Bell et al., CCS 2020): ring positions ``p +- 1 .. p +- k/2``
    under a public random relabelling (:func:`harary_graph`)."""

    __slots__ = ()

    def __init__(self, n: int, k: int, is_complete: bool = False, labels: tuple[int, ...] | None = None) -> None:
        super().__init__(n, k, False, labels)

    def _neighbours(self, u: int) -> tuple[int, ...]:
        p = self._pos[u]
        h = self.k // 2
        n = self.n
        return tuple(sorted(self._label[(p + j) % n] for j in range(-h, h + 1) if j != 0))

    def _adjacent(self, u: int, v: int) -> bool:
        d = (self._pos[u] - self._pos[v]) % self.n
        return min(d, self.n - d) <= self.k // 2

    def two_hop_neighbourhood(self, u: int) -> frozenset[int]:
        """The ring positions within ``k`` of ``u``'s (two hops of ``k/2``): ``min(2k + 1, n)`` nodes, in
        ``O(k)``; :meth:`Graph.two_hop_neighbourhood` (the union of closed neighbourhoods) gives the same set."""
        u = self._check_node(u)
        n, k = self.n, self.k
        if 2 * k + 1 >= n:
            return frozenset(range(n))
        p = self._pos[u]
        lab = self._label
        return frozenset(lab[(p + j) % n] for j in range(-k, k + 1))

    def components(self, nodes: frozenset[int]) -> list[frozenset[int]]:
        """Components of ``G[nodes]`` from the ring alone, in ``O(|nodes| log |nodes|)``: two nodes at
        cyclically consecutive ring positions ``p < q`` (among ``nodes``) are adjacent iff ``q - p <= k/2``,
        and no edge can cross a run of more than ``k/2 - 1`` missing positions, so the components are the
        arcs between the gaps wider than ``k/2`` (one gap or none: a single component).
        :meth:`Graph.components` (a breadth-first search) gives the same partition."""
        if not nodes:
            return []
        pos = sorted(self._pos[u] for u in nodes)
        h = self.k // 2
        m = len(pos)
        cuts = [i for i in range(m) if (pos[(i + 1) % m] - pos[i]) % self.n > h or m == 1]
        if len(cuts) <= 1:
            return [frozenset(nodes)]
        lab = self._label
        comps = []
        for a, b in zip(cuts, cuts[1:] + [cuts[0] + m]):
            comps.append(frozenset(lab[pos[i % m]] for i in range(a + 1, b + 1)))
        comps.sort(key=min)
        return comps


def _check_n(n: int, minimum: int = 1) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or n < minimum:
        raise InvalidInput(f"number of nodes must be an int >= {minimum}, got {n!r}")
    return n


def complete_graph(n: int) -> Graph:
    """Every node adjacent to every other (the original protocol), k = n - 1."""
    _check_n(n)
    return CompleteGraph(n)


def harary_graph(n: int, k: int, drbg: Drbg) -> Graph:
    """Harary graph H(k, n) under a uniformly random relabelling drawn from ``drbg``.

    Ring position p holds node ``perm[p]`` (``perm = drbg.permutation(n)``) and is linked to the
    positions p +- 1, ..., p +- k/2 (mod n). Requires k even and ``2 <= k < n`` (InvalidInput).
    """
    _check_n(n, 3)
    if isinstance(k, bool) or not isinstance(k, int) or k % 2 or not 2 <= k < n:
        raise InvalidInput(f"Harary degree k must be even with 2 <= k < n = {n}, got {k!r}")
    if not isinstance(drbg, Drbg):
        raise InvalidInput("harary_graph needs a Drbg for the relabelling")
    return HararyGraph(n, k, False, tuple(drbg.permutation(n)))


# ----------------------------------------------------------------------------------------- (k, t)


def _rate(x: float, name: str) -> Fraction:
    if isinstance(x, bool) or not isinstance(x, (int, float, Fraction)):
        raise InvalidInput(f"{name} must be a number in [0, 1), got {x!r}")
    if not 0 <= x < 1 or (isinstance(x, float) and not math.isfinite(x)):
        raise InvalidInput(f"{name} must lie in [0, 1), got {x!r}")
    # the shortest decimal that round-trips: 0.33 means 33/100, not 0.33000000000000001554...
    return Fraction(repr(float(x))) if isinstance(x, float) else Fraction(x)


def _upper_tail_quantile(n: int, marked: int, k: int, num: int, den: int) -> int:
    """min{x : P[X > x] < num/den} for X ~ Hypergeometric(n, marked, k), exactly.

    With T_j = C(marked, j) C(n - marked, k - j) and total C(n, k):
    P[X > x] < num/den  <=>  den * sum_{j > x} T_j < num * C(n, k).
    """
    total = math.comb(n, k) * num
    jmin = max(0, k - (n - marked))
    jmax = min(k, marked)
    x = jmax  # P[X > jmax] = 0
    term = math.comb(marked, jmax) * math.comb(n - marked, k - jmax)  # T_jmax
    tail = 0
    while x > jmin:
        # try x - 1: adds T_x to the tail
        if den * (tail + term) >= total:
            return x
        tail += term
        # T_{x-1} = T_x * x (n - marked - k + x) / ((marked - x + 1) (k - x + 1)), exact
        term = term * x * (n - marked - k + x) // ((marked - x + 1) * (k - x + 1))
        x -= 1
    return x


def _lower_quantile(n: int, marked: int, k: int, num: int, den: int) -> int:
    """min{x : P[X <= x] >= num/den} for X ~ Hypergeometric(n, marked, k), exactly."""
    total = math.comb(n, k) * num
    jmin = max(0, k - (n - marked))
    jmax = min(k, marked)
    x = jmin
    term = math.comb(marked, jmin) * math.comb(n - marked, k - jmin)
    cdf = 0
    while True:
        cdf += term
        if den * cdf >= total or x >= jmax:
            return x
        # T_{x+1} = T_x (marked - x)(k - x) / ((x + 1)(n - marked - k + x + 1)), exact
        term = term * (marked - x) * (k - x) // ((x + 1) * (n - marked - k + x + 1))
        x += 1


def _ring_survives(n: int, k: int, bad: int) -> bool:
    """Union bound n (n-k-1)/2 * (bad)_k / (n)_k < 2^-(SECURITY_BITS + 1), exactly."""
    if k > bad:
        return True
    return n * (n - k - 1) * math.perm(bad, k) * 2 ** (SECURITY_BITS + 1) < 2 * math.perm(n, k)


def _log_pmf(n: int, marked: int, k: int, j: int) -> float:
    lg = math.lgamma
    return (
        lg(marked + 1) - lg(j + 1) - lg(marked - j + 1)
        + lg(n - marked + 1) - lg(k - j + 1) - lg(n - marked - k + j + 1)
        - lg(n + 1) + lg(k + 1) + lg(n - k + 1)
    )


def _log_tail_up(n: int, marked: int, k: int, x: int) -> float:
    """log P[X >= x] in floating point (x above the mode: terms decay, summed until negligible)."""
    jmax = min(k, marked)
    if x > jmax:
        return -math.inf
    total, term, j = 1.0, 1.0, x
    while j < jmax:
        term *= (marked - j) * (k - j) / ((j + 1) * (n - marked - k + j + 1))
        total += term
        j += 1
        if term < 1e-18 * total:
            break
    return _log_pmf(n, marked, k, x) + math.log(total)


def _log_tail_down(n: int, marked: int, k: int, x: int) -> float:
    """log P[X <= x] in floating point (x below the mode)."""
    jmin = max(0, k - (n - marked))
    if x < jmin:
        return -math.inf
    total, term, j = 1.0, 1.0, x
    while j > jmin:
        term *= j * (n - marked - k + j) / ((marked - j + 1) * (k - j + 1))
        total += term
        j -= 1
        if term < 1e-18 * total:
            break
    return _log_pmf(n, marked, k, x) + math.log(total)


def _approx_quantiles(n: int, corrupt: int, surviving: int, k: int, log_q1: float, log_q2: float) -> tuple[int, int]:
    """Floating-point estimates of (t1, t2) by bisection (a pre-filter; exact values decide)."""
    # t1 = min{x : P[C >= x + 1] < q1}; the answer lies in [mode, jmax]
    jmax = min(k, corrupt)
    lo = max(0, min(jmax, (k + 1) * (corrupt + 1) // (n + 2)))
    hi = jmax  # P[C >= jmax + 1] = 0 < q1
    while lo < hi:
        mid = (lo + hi) // 2
        if _log_tail_up(n, corrupt, k, mid + 1) < log_q1:
            hi = mid
        else:
            lo = mid + 1
    t1 = lo
    # t2 = min{x : P[S <= x] >= q2}; the answer lies in [jmin, mode]
    jmin = max(0, k - (n - surviving))
    lo = jmin
    hi = max(jmin, min(k, surviving, (k + 1) * (surviving + 1) // (n + 2)))
    while lo < hi:
        mid = (lo + hi) // 2
        if _log_tail_down(n, surviving, k, mid) >= log_q2:
            hi = mid
        else:
            lo = mid + 1
    return t1, lo


def _log_ring_bound(n: int, k: int, bad: int) -> float:
    lg = math.lgamma
    return (
        math.log(n) + math.log(n - k - 1) - math.log(2)
        + lg(bad + 1) - lg(bad - k + 1) + lg(n - k + 1) - lg(n + 1)
    )


@functools.lru_cache(maxsize=256)
def _find(n: int, gamma: Fraction, delta: Fraction, malicious: bool, active: bool = False) -> tuple[int, int] | None:
    corrupt = math.floor(gamma * n)
    bad = corrupt + math.floor(delta * n)
    surviving = math.ceil((1 - delta) * n)
    sec = 2 ** (SECURITY_BITS + 1)
    cor = 2**CORRECTNESS_BITS
    log_sec = -(SECURITY_BITS + 1) * math.log(2)
    log_q1 = log_sec - math.log(n)
    log_q2 = -CORRECTNESS_BITS * math.log(2) - math.log(n)
    for k in range(2, n - 1, 2):
        # floating-point pre-filters (skip k only when clearly failing); exact arithmetic decides
        ring_ok = None
        if k <= bad and k > 64:
            lr = _log_ring_bound(n, k, bad)
            margin = 1e-6 * (1 + abs(lr))
            if lr > log_sec + margin:
                continue
            if lr < log_sec - margin:
                ring_ok = True
        if ring_ok is None and not _ring_survives(n, k, bad):
            continue
        if k > 64:
            a1, a2 = _approx_quantiles(n, corrupt, surviving, k, log_q1, log_q2)
            if malicious:
                a1 = -((-(4 * a1 + 4 * k - 5)) // 8)
            if active:
                a1 = max(a1, k // 2 + 1)
            if a2 - a1 <= -3:
                continue
        t1 = _upper_tail_quantile(n, corrupt, k, 1, sec * n)
        t2 = _lower_quantile(n, surviving, k, 1, cor * n)
        if malicious:
            t1 = -((-(4 * t1 + 4 * k - 5)) // 8)  # ceil((t1 + k - 1.25) / 2)
        if active:
            t1 = max(t1, k // 2 + 1)  # t >= k/2 + 2 (secagg.rules.check_interleaving_threshold)
        if t2 > t1:
            return k, max(t1 + 1, 2)
    return None


def find_secagg_plus_params(
    n: int,
    corrupt_fraction: float = 0.05,
    dropout_fraction: float = 0.05,
    adversary: str = "semi-honest",
) -> tuple[int, int] | None:
    """(k, t) for a SecAgg+ Harary graph on ``n`` users, or None (fall back to the complete graph).

    ``corrupt_fraction`` = gamma and ``dropout_fraction`` = delta in [0, 1); ``adversary`` is
    ``"semi-honest"``, ``"semi-malicious"`` (Bell et al.'s two settings, the values of Google's fcp
    finder) or ``"active"`` (semi-malicious with ``t >= k/2 + 2``, what the active variant on SecAgg+
    requires). Procedure and exact probability bounds in the module docstring (Bell et al. 2020;
    protocol.md). None when no even ``k < n - 1`` qualifies.
    """
    _check_n(n)
    g = _rate(corrupt_fraction, "corrupt_fraction")
    d = _rate(dropout_fraction, "dropout_fraction")
    if adversary not in ADVERSARIES:
        raise InvalidInput(f"adversary must be one of {ADVERSARIES}, got {adversary!r}")
    return _find(n, g, d, adversary != "semi-honest", adversary == "active")
