"""U3 in ``O(k + log n)`` bytes per client: a Merkle tree over the survivors' ring bitmap (active SecAgg+).

In the active variant every client signs the survivor set U3, so that a lying server cannot show
two holders of one client's shares different U3 (Bonawitz et al., *Practical Secure Aggregation for
Privacy-Preserving Machine Learning*, CCS 2017, the consistency check). Sending all of U3 costs every
client ``n / 8`` bytes even on the sparse graph of Bell et al. (*Secure Single-Server Aggregation with
(Poly)Logarithmic Overhead*, CCS 2020). With ``consistency_view="window"`` the server instead commits to
U3 with a Merkle tree and sends each client only the part it needs with its authentication paths:

* **Ring bitmap.** Bit ``p`` is 1 iff the client at ring position ``p`` of the Harary graph
  (:meth:`secagg.graph.Graph.ring_order`) is in U3; ``n`` bits cut into leaves of
  :data:`LEAF_BITS` = 256 positions (32 bytes, least significant bit first; the last leaf's bits past
  ``n`` are zero), padded with all-zero leaves to a power of two ``P = 2^depth``.
* **Hashes** (SHA-256, each bound to the session so no tree is replayed into another):
  leaf ``j`` = ``H("secagg/u3-leaf/v1" | session | j u32 | 32 bytes)``, inner node =
  ``H("secagg/u3-node/v1" | session | left | right)``. The root is what every client signs
  (:func:`secagg.messages.consistency_root_payload`, which also binds ``n``).
* **Window.** Client ``w`` receives the leaves holding the ring positions within ``k`` of its own
  (``N2[w]``, the holders of its peers' shares, :meth:`secagg.graph.Graph.two_hop_neighbourhood`):
  :func:`window_leaves` fixes them as ``c = min(m, 3 + ceil((2k - 1) / 256))`` cyclically consecutive
  leaves starting at the one holding position ``p(w) - k`` (``m = ceil(n / 256)`` leaves; ``c`` does
  not depend on ``w``, so every client's request has the same size), each with its ``depth`` sibling
  hashes. ``c`` is enough: from the first position the window needs, the first leaf gives at least one
  position, at most one leaf (the last, partial one) gives fewer than 256, and it gives at least one.

A client recomputes the root from every leaf it was sent (they must all give the same root), reads the
bits of ``N2[w]`` and signs the root. Two clients that sign the same root saw the same U3 on every
position either of them read (collision resistance); that is the property the split-view argument needs
(docs/protocol.md, "Active SecAgg+"). What a window cannot show is U3 as a whole, so the clients check
the local rules of :func:`secagg.rules.check_window_policy` and the global survivor policy is the
server's alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from cryptography.hazmat.primitives import hashes

from secagg.errors import InvalidInput, ProtocolViolation

__all__ = [
    "LEAF_BITS",
    "LEAF_SIZE",
    "HASH_SIZE",
    "SurvivorTree",
    "tree_shape",
    "window_leaves",
    "window_positions",
    "root_from_proof",
    "survivors_in_window",
]

LEAF_BITS = 256
"""Ring positions per leaf."""
LEAF_SIZE = LEAF_BITS // 8
"""Bytes per leaf (32)."""
HASH_SIZE = 32
"""SHA-256 digest size."""

_LEAF_DOMAIN = b"secagg/u3-leaf/v1"
_NODE_DOMAIN = b"secagg/u3-node/v1"


def _h(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    for part in parts:
        h.update(part)
    return h.finalize()


def _leaf_hash(session: bytes, j: int, leaf: bytes) -> bytes:
    return _h(_LEAF_DOMAIN, session, j.to_bytes(4, "big"), leaf)


def _node_hash(session: bytes, left: bytes, right: bytes) -> bytes:
    return _h(_NODE_DOMAIN, session, left, right)


def _leaves_and_depth(n: int) -> tuple[int, int]:
    """Leaves holding ``n`` positions, and the depth of the tree padded to a power of two."""
    m = -(-n // LEAF_BITS)
    return m, (math.ceil(math.log2(m)) if m > 1 else 0)


def tree_shape(n: int, k: int) -> tuple[int, int, int]:
    """``(m, depth, c)``: leaves holding the ``n`` positions, tree depth (``P = 2^depth >= m`` leaves
    after padding) and leaves per client window (:func:`window_leaves`)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidInput(f"n must be an int >= 1, got {n!r}")
    m, depth = _leaves_and_depth(n)
    c = m if 2 * k + 1 >= n else min(m, 3 + -(-(2 * k - 1) // LEAF_BITS))
    return m, depth, c


def window_positions(graph, w: int) -> tuple[int, ...]:  # noqa: ANN001 - secagg.graph.Graph
    """The ring positions of ``N2[w]`` (within ``k`` of ``w``'s; all ``n`` when ``2k + 1 >= n``), in
    cyclic order from ``p(w) - k``."""
    n, k = graph.n, graph.k
    if 2 * k + 1 >= n:
        return tuple(range(n))
    p = graph.position(w)
    return tuple((p + j) % n for j in range(-k, k + 1))


def window_leaves(graph, w: int) -> tuple[int, ...]:  # noqa: ANN001 - secagg.graph.Graph
    """The ``c`` leaf indices client ``w`` receives (module docstring): cyclically consecutive from the
    leaf of ring position ``p(w) - k``; all leaves when the window is the whole ring."""
    m, _, c = tree_shape(graph.n, graph.k)
    if c == m:
        return tuple(range(m))
    first = ((graph.position(w) - graph.k) % graph.n) // LEAF_BITS
    return tuple((first + i) % m for i in range(c))


class SurvivorTree:
    """The server's Merkle tree over U3's ring bitmap (module docstring).

    Attributes:
        n, depth: positions and tree depth. root: the 32-byte root every client signs.
    """

    def __init__(self, graph, session: bytes, survivors: Iterable[int]) -> None:  # noqa: ANN001
        n = graph.n
        m, depth, _ = tree_shape(n, graph.k)
        bits = bytearray(m * LEAF_SIZE)
        for u in survivors:
            p = graph.position(int(u))
            bits[p >> 3] |= 1 << (p & 7)
        self.n, self.depth = n, depth
        self.session = bytes(session)
        self.leaves = [bytes(bits[j * LEAF_SIZE : (j + 1) * LEAF_SIZE]) for j in range(m)]
        zero = bytes(LEAF_SIZE)
        level = [_leaf_hash(self.session, j, self.leaves[j] if j < m else zero) for j in range(1 << depth)]
        self.levels = [level]
        while len(level) > 1:
            level = [_node_hash(self.session, level[i], level[i + 1]) for i in range(0, len(level), 2)]
            self.levels.append(level)
        self.root = level[0]

    def path(self, j: int) -> tuple[bytes, ...]:
        """The ``depth`` sibling hashes from leaf ``j`` up to the root."""
        out = []
        for level in self.levels[:-1]:
            out.append(level[j ^ 1])
            j >>= 1
        return tuple(out)

    def proof(self, leaves: Sequence[int]) -> tuple[tuple[bytes, ...], tuple[tuple[bytes, ...], ...]]:
        """``(leaf bytes, paths)`` for the given leaf indices, in that order."""
        return tuple(self.leaves[j] for j in leaves), tuple(self.path(j) for j in leaves)


def root_from_proof(session: bytes, n: int, indices: Sequence[int], leaves: Sequence[bytes],
                    paths: Sequence[Sequence[bytes]]) -> bytes:
    """The root every ``(index, leaf, path)`` leads to; :class:`ProtocolViolation` if they disagree, a
    path has the wrong length or the last leaf's bits past ``n`` are set."""
    m, depth = _leaves_and_depth(n)
    if not (len(indices) == len(leaves) == len(paths)) or not indices:
        raise ProtocolViolation("survivor proof: leaves, paths and expected leaves do not match")
    root = None
    for j, leaf, path in zip(indices, leaves, paths):
        if len(path) != depth or len(leaf) != LEAF_SIZE:
            raise ProtocolViolation(f"survivor proof: leaf {j} comes with {len(path)} sibling hashes, expected {depth}")
        if j == m - 1 and n % LEAF_BITS:
            used = n % LEAF_BITS
            if int.from_bytes(leaf, "little") >> used:
                raise ProtocolViolation("survivor proof: bits set past the last ring position")
        h = _leaf_hash(session, j, leaf)
        x = j
        for sib in path:
            h = _node_hash(session, sib, h) if x & 1 else _node_hash(session, h, sib)
            x >>= 1
        if root is None:
            root = h
        elif h != root:
            raise ProtocolViolation(f"survivor proof: leaf {j} leads to another root than leaf {indices[0]}")
    assert root is not None
    return root


def survivors_in_window(graph, w: int, leaves: Sequence[bytes]) -> frozenset[int]:  # noqa: ANN001
    """The members of U3 among ``N2[w]``, read from the leaves of :func:`window_leaves` (same order)."""
    idx = window_leaves(graph, w)
    by_leaf = dict(zip(idx, leaves))
    order = graph.ring_order()
    out = set()
    for p in window_positions(graph, w):
        leaf = by_leaf[p // LEAF_BITS]
        q = p % LEAF_BITS
        if leaf[q >> 3] >> (q & 7) & 1:
            out.add(order[p])
    return frozenset(out)
