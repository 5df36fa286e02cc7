"""Secure weighted average of real vectors: one secure aggregation of ``[w_i x_i, w_i]``.

Each client ``i`` holds a real vector ``x_i in R^d`` and a weight ``w_i > 0`` it computed itself. It
sends, discretized into ``Z_M`` (:mod:`secagg.discretize`), the vector

    ``z_i = [ omega_i * v_i ,  omega_i * c ]``,   ``omega_i = w_i / W in (0, 1]``,   ``v_i = clip(R x_i)``

where ``W`` is a public upper bound on the weights (``max_weight``), ``c`` the clip bound and ``R`` the
optional randomized Hadamard rotation (identity by default). Every coordinate of ``z_i`` lies in
``[-c, c]``, so one scale ``s`` and one offset ``K = ceil(c s)`` serve all of them, and the weight
rides as the last coordinate: the server learns only the totals ``N = sum_{U3} omega_i v_i`` and
``D c = sum_{U3} omega_i c`` -- never an individual weight -- and releases

    ``average = R^T (c N / (D c)) = sum_{U3} w_i v_i / sum_{U3} w_i``  (over the survivors U3).

**The average is over U3**, the clients whose masked input reached the server (Bonawitz et al. CCS'17,
round 2); clients that drop before sending it are not in the sum, clients that drop later are.

Error bound (deterministic, "clipping aside": relative to the weighted average of the clipped inputs
``R^T v_i``). Each of the ``n3 = |U3|`` clients moves each coordinate by less than one grid step
``1/s`` when rounding stochastically, so the decoded ``N`` and ``D c`` are each within
``B = n3 / s + 8 n3 2^-53 (c + 1/s)`` of their exact values (:func:`secagg.discretize.rounding_error_bound`,
the second term is float64 slack). For ``A = N / D`` with ``|A| <= c`` and errors ``|e_N|, |e_D| <= B``,

    ``|c (N + e_N) / (D c + e_D) - A| = |c e_N - A e_D| / (D c + e_D) <= 2 c B / (D_hat c - 2 B)``

using ``D c >= D_hat c - B`` (``D_hat c`` = the decoded weight coordinate), plus ``4 c 2^-53`` for the
float division. With the rotation, the rotated-domain bound ``e`` maps back as ``sqrt(P) e`` (plus the
transforms' float error). :attr:`SecureAverageResult.error_bound` is this number.

Weights and precision. The weight resolution is one grid step of the weight coordinate, i.e. ``omega``
is known to ``1 / (c s) = 1 / K``. Normalise weights by a *public* bound ``W`` (pass ``max_weight``;
for Weiszfeld weights ``beta_i = 1 / max(nu, ||z - x_i||)`` use ``W = 1 / nu``) so ``omega_i in (0, 1]``;
the default ``W = max_i w_i`` is a simulation convenience (in a deployment the clients cannot know it).
When weights span many orders of magnitude use ``bits=64``: the automatic scale then takes
``K = min(floor((2^64 - 1) / (2 n)), 2^50)`` (about ``10^15`` for ``n <= 8000``), so weights ``10^-6 W``
keep ~9 significant digits; with the default 32 bits and 100 clients ``K ~ 2 * 10^7``. Check
``result.error_bound``: it is about ``2 n / (s * sum_{U3} omega_i)``.

``backend="modular"`` performs the identical discretization (same seeded rounding draws, same survivor
sets and aborts) and sums the encodings over ``Z_M`` without masks or cryptography; its ledger is
measured on the protocol's transport by the cryptography-free pair of :mod:`secagg.modular`
(:func:`secagg.cost.modular_run`). For the same seed its result is
bit-identical to ``backend="protocol"``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from secagg.discretize import (
    Quantizer,
    _check_modulus,
    positive_finite,
    as_real_array,
    choose_modulus,
    grid_sum,
    _quantize_rows,
    rounding_error_bound,
    scale_for_modulus,
    seed_entropy,
)
from secagg.errors import InvalidInput

if TYPE_CHECKING:  # pragma: no cover
    from secagg.ledger import Ledger
    from secagg.protocol import AggregationResult

__all__ = ["SecureAverageResult", "secure_average", "encode_clients", "BACKENDS"]

BACKENDS = ("protocol", "modular")
_U = 2.0**-53


@dataclass(frozen=True)
class SecureAverageResult:
    """Outcome of :func:`secure_average`.

    Attributes:
        average: float64 ``(d,)``: ``sum_{U3} w_i x_i / sum_{U3} w_i`` of the clipped inputs -- **over U3**,
            the clients whose masked input reached the server (see :attr:`over`).
        total_weight: decoded ``sum_{U3} w_i`` (in the caller's weight units).
        included: U3 as sorted client ids (indices into ``vectors``).
        protocol: the :class:`~secagg.protocol.AggregationResult` (``None`` for ``backend="modular"``).
        error_bound: deterministic bound on ``max_j |average_j - exact weighted average_j over U3|`` of the
            clipped inputs (module docstring gives the formula).
        ledger: every message's size (measured, or from the analytical model for ``"modular"``).
        clipped: number of clipped coordinates among the clients in U3.
        modulus: ``M``; scale: ``s`` (grid step ``1/s`` in the units of ``x``); clip: ``c``.
        weight_bound: ``W``, the public bound the weights were normalised by.
        encoded_dim: coordinates sent per client (``d + 1``, or ``P + 1`` with the rotation).
        over: ``"U3"``: the population the average is taken over.
        backend: ``"protocol"`` or ``"modular"``.
        sum: the unmasked sum over Z_M (``encoded_dim`` elements), as the server obtained it.
        data_derived: the released parameters that were computed from the clients' data because the
            caller gave no public value: ``"clip"`` (``c = max_ij |x_ij|``, or the rotated/L2 analogue,
            when neither ``clip`` nor ``clip_norm`` is given) and ``"max_weight"`` (``W = max_i w_i``).
            Each is a statistic of *all* m inputs (dropped clients included) that no server could know,
            and publishing it (:attr:`clip`, :attr:`weight_bound`, :attr:`scale`, :attr:`modulus` depend on
            it) leaks it: the defaults are a simulation convenience. A deployment passes public bounds,
            and then this is empty.
    """

    average: np.ndarray
    total_weight: float
    included: tuple[int, ...]
    protocol: "AggregationResult | None"
    error_bound: float
    ledger: "Ledger"
    clipped: int
    modulus: int
    scale: float
    clip: float = 0.0
    clip_mode: str = "coordinate"
    weight_bound: float = 1.0
    encoded_dim: int = 0
    over: str = "U3"
    backend: str = "protocol"
    sum: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64), repr=False)
    data_derived: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Plan:
    quantizer: Quantizer  # the vector part (clip, rotation); its integer stage is shared with the weight
    weights: np.ndarray  # w_i
    weight_bound: float  # W
    encodings: np.ndarray  # (m, encoded_dim + 1) over Z_M (dtype_for(M)); row i is client i's vector
    clipped: tuple[int, ...]
    data_derived: tuple[str, ...] = ()  # parameters computed from the data (SecureAverageResult.data_derived)


def _as_matrix_view(vectors: Any) -> tuple[np.ndarray, bool]:
    """``(x, owned)``: the validated ``(m, d)`` reals. A 2-D float32/float64 numpy array is checked in place
    and returned as is (``owned=False``: never to be written); anything else becomes a fresh float64 copy
    (:func:`as_real_array`, ``owned=True``). Same errors either way."""
    if isinstance(vectors, np.ndarray) and vectors.ndim == 2 and vectors.dtype in (np.float32, np.float64):
        if vectors.size and not np.isfinite(vectors).all():
            raise InvalidInput("vectors: contains NaN or Inf")
        if vectors.shape[0] < 1 or vectors.shape[1] < 1:
            raise InvalidInput(f"vectors must have shape (m >= 1, d >= 1), got {vectors.shape}")
        return vectors, False
    return _as_matrix_copy(vectors), True


def _as_matrix_copy(vectors: Any) -> np.ndarray:
    if isinstance(vectors, (list, tuple)):
        if not vectors:
            raise InvalidInput("vectors: need at least one client")
        rows = [as_real_array(v, ndim=1, name=f"vectors[{i}]") for i, v in enumerate(vectors)]
        d = rows[0].shape[0]
        for i, r in enumerate(rows):
            if r.shape[0] != d:
                raise InvalidInput(f"vectors[{i}] has length {r.shape[0]}, expected {d}")
        x = np.stack(rows)
    else:
        x = as_real_array(vectors, ndim=2, name="vectors")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise InvalidInput(f"vectors must have shape (m >= 1, d >= 1), got {x.shape}")
    return x


def _rotation_seed(seed: Any) -> int:
    ent = seed_entropy(seed, "rotation")
    return ent if ent is not None else int.from_bytes(os.urandom(32), "big")


def _row_extremes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row maxima and minima of ``x`` as float64 (exact for float32 rows, and compared with ``c`` in float64)."""
    return x.max(axis=1).astype(np.float64), x.min(axis=1).astype(np.float64)


def _entropy_words(ent: int) -> np.ndarray:
    """A non-negative int as numpy's ``SeedSequence`` reads an int entropy: its little-endian 32-bit words,
    without high zero words (``[0]`` for 0). ``SeedSequence(words, spawn_key=k)`` then draws the same
    stream as ``SeedSequence(ent, spawn_key=k)`` and skips converting the 256-bit int once per client."""
    words = []
    while True:
        words.append(ent & 0xFFFFFFFF)
        ent >>= 32
        if not ent:
            return np.array(words, dtype=np.uint32)


def encode_clients(
    vectors: Any,
    weights: Any = None,
    *,
    seed: int | bytes | None = None,
    clip: float | None = None,
    clip_norm: float | None = None,
    rotate: bool = False,
    modulus: int | None = None,
    bits: int | None = None,
    scale: float | None = None,
    max_weight: float | None = None,
) -> _Plan:
    """Validate everything and discretize every client's ``[omega_i v_i, omega_i c]`` (module docstring).

    Client ``i``'s stochastic rounding uses its own numpy stream ``SeedSequence(H(seed), spawn_key=(i,))``,
    so the encodings depend on ``seed`` and the client's own data only (identical in both backends).
    Raises :class:`InvalidInput` / :class:`OverflowRisk` before any encoding is produced.

    Vectorised over clients: :meth:`Quantizer.prepare_rows` (only for the norm clip, the rotation, or a
    row with a coordinate outside ``[-c, c]``; on a float64 copy) and :func:`secagg.discretize.quantize_rows` (tiles, ``z_i`` formed inside
    them) give, row for row and bit for bit, what ``Quantizer.prepare`` and ``quantize`` give client by
    client, with the same per-client generators; a float32/float64 input matrix is read in place (its
    float32 entries widen exactly). Returns the encodings as one ``(m, encoded_dim + 1)`` matrix.
    """
    x, owned = _as_matrix_view(vectors)  # x may be the caller's array when not owned: never written then
    m, d = x.shape
    if weights is None:
        w = np.ones(m)
    else:
        w = as_real_array(weights, ndim=1, dim=m, name="weights")
        if np.any(w <= 0):
            raise InvalidInput("weights must be > 0 (a client with zero weight should not take part)")
    if max_weight is None:
        wb = float(np.max(w))
    else:
        wb = positive_finite(max_weight, "max_weight")
        if np.any(w > wb):
            raise InvalidInput(f"a weight exceeds max_weight={wb}: {float(np.max(w))}")
    if clip is not None and clip_norm is not None:
        raise InvalidInput("give clip (per coordinate) or clip_norm (L2), not both")
    if modulus is not None and bits is not None:
        raise InvalidInput("give modulus or bits, not both")
    rseed = _rotation_seed(seed) if rotate else 0
    mode = "norm" if clip_norm is not None else "coordinate"
    extremes = None  # row maxima and minima of x, when the default clip already needed them
    if clip is not None or clip_norm is not None:
        c = positive_finite(clip if clip is not None else clip_norm, "clip")
    else:  # data-dependent default (a simulation convenience: nothing is clipped)
        if rotate:
            from secagg.discretize import RandomizedHadamard

            c = float(np.max(np.abs(RandomizedHadamard(d, rseed).forward(x))))
        else:  # max |x_ij| = max(max x, -min x), exactly; the row extremes serve the clip count too
            extremes = _row_extremes(x)
            c = max(float(extremes[0].max()), -float(extremes[1].min()))
        c = c if c > 0 else 1.0
    if modulus is not None:
        mod = _check_modulus(modulus)
        s = scale if scale is not None else scale_for_modulus(m, c, mod)
    else:
        mod, s = choose_modulus(m, c, scale=scale, bits=bits)
    vq = Quantizer(mode, c, float(s), mod, m, d, rotate, rseed)  # OverflowRisk if M <= 2 m ceil(c s)
    ent = seed_entropy(seed, "stochastic-rounding")
    if ent is None:
        ent = int.from_bytes(os.urandom(32), "big")
    omega = w / wb
    direct = mode == "coordinate" and not rotate
    if direct:  # rows inside [-c, c] need no clip: quantize them straight from x (no float64 copy of x)
        if extremes is None:
            extremes = _row_extremes(x)
        direct = not bool(np.any((extremes[0] > c) | (extremes[1] < -c)))
    if direct:
        v, clipped = x, np.zeros(m, dtype=np.int64)
    else:  # clip (and rotate) a float64 copy of our own, in place
        if not owned:
            x = np.array(x, dtype=np.float64)
        v, clipped = vq._prepare_rows(x, extremes if mode == "coordinate" and not rotate else None)
    words = _entropy_words(ent)  # SeedSequence(words, ...) is SeedSequence(ent, ...), without re-reading ent
    rngs = [np.random.Generator(np.random.PCG64(np.random.SeedSequence(words, spawn_key=(i,)))) for i in range(m)]
    # z_i = [omega_i v_i, omega_i c], formed tile by tile inside the quantizer. |omega_i v_ij| <= |v_ij| <= c
    # and omega_i c <= c (omega_i = w_i / W <= 1 exactly, products rounded monotonically), so quantize's
    # safety clip is the identity here and is skipped
    enc = _quantize_rows(v, clip=c, scale=vq.scale, modulus=mod, rngs=rngs, in_range=True, row_scale=omega, tail=c)
    derived = (("clip",) if clip is None and clip_norm is None else ()) + (("max_weight",) if max_weight is None else ())
    return _Plan(vq, w, wb, enc, tuple(int(k) for k in clipped), derived)


def secure_average(
    vectors: Any,
    weights: Any = None,
    *,
    seed: int | bytes | None = None,
    clip: float | None = None,
    clip_norm: float | None = None,
    rotate: bool = False,
    modulus: int | None = None,
    bits: int | None = None,
    scale: float | None = None,
    max_weight: float | None = None,
    threshold: int | None = None,
    graph: str = "complete",
    variant: str = "honest-but-curious",
    dropouts: Mapping[int, str] | None = None,
    neighbours: int | None = None,
    corrupt_fraction: float = 0.05,
    dropout_fraction: float | None = None,
    backend: str = "protocol",
    min_survivors: int | None = None,
    protocol: str = "bonawitz",
    commit_self_masks: bool = False,
    adaptive: bool = False,
    consistency_view: str = "full",
) -> SecureAverageResult:
    """Weighted average ``sum_{U3} w_i x_i / sum_{U3} w_i`` of real vectors by one secure aggregation.

    Args:
        vectors: ``(m, d)`` reals (numpy, torch, or a sequence of 1-D vectors); client ``i`` is row ``i``.
        weights: ``(m,)`` finite weights ``> 0`` computed by the clients (default: all 1).
        seed: reproducibility seed for the protocol's keys/masks, the rounding draws and the rotation.
        clip / clip_norm: per-coordinate bound ``c`` or L2 bound (at most one; default: the largest
            ``|x_ij|``, a simulation convenience -- a deployment fixes ``c`` publicly: the default is a
            statistic of the data, released in the result, see :attr:`SecureAverageResult.data_derived`).
        rotate: apply the randomized Walsh-Hadamard rotation before clipping coordinates.
        modulus / bits / scale: the ring and grid. Default: ``bits=32`` and the largest scale that cannot
            wrap for ``m`` clients (:func:`secagg.discretize.choose_modulus`); a forced ``modulus`` with a
            forced ``scale`` that can wrap raises :class:`OverflowRisk` before anything runs.
        max_weight: public bound ``W >= w_i`` used to normalise weights (default ``max w_i``, derived from
            the data and released like the default clip).
        threshold, graph, variant, dropouts, neighbours, corrupt_fraction, dropout_fraction, min_survivors,
            protocol: passed to :func:`secagg.protocol.run_secure_aggregation` (``dropouts``: client -> round
            at which it drops; ``dropout_fraction``: the delta a SecAgg+ graph is designed for, which also
            sets the survivor bound; ``protocol="plaintext"``: clients send their encodings in the clear).
        backend: ``"protocol"`` (the real protocol) or ``"modular"`` (same result without cryptography).
        adaptive: opt-in (SecAgg+): the survivor policy also withstands ``floor(gamma n)`` corrupt clients
            placed after the graph is known (:func:`secagg.protocol.run_secure_aggregation`).
        consistency_view: ``"window"`` (active SecAgg+): each client sees U3 on its window of the ring only,
            with Merkle paths to a root every client signs (:func:`secagg.protocol.run_secure_aggregation`).
        commit_self_masks: opt-in self-mask commitments (:func:`secagg.protocol.run_secure_aggregation`);
            the modular backend prices them in its ledger.

    Returns:
        :class:`SecureAverageResult`; the average is over U3 (module docstring: encoding and error bound).

    Raises:
        InvalidInput: NaN/Inf, shapes, non-positive weights, bad parameters (nothing is sent).
        OverflowRisk: the modulus cannot hold the sum. ProtocolAborted: fewer than t clients in a round.
    """
    if backend not in BACKENDS:
        raise InvalidInput(f"backend must be one of {BACKENDS}, got {backend!r}")
    plan = encode_clients(
        vectors, weights, seed=seed, clip=clip, clip_norm=clip_norm, rotate=rotate, modulus=modulus,
        bits=bits, scale=scale, max_weight=max_weight,
    )
    vq = plan.quantizer
    dims = int(plan.encodings[0].shape[0])
    proto_kwargs = dict(
        modulus=vq.modulus, threshold=threshold, graph=graph, variant=variant, dropouts=dropouts, seed=seed,
        neighbours=neighbours, corrupt_fraction=corrupt_fraction, dropout_fraction=dropout_fraction,
        min_survivors=min_survivors, protocol=protocol, commit_self_masks=commit_self_masks,
    )
    if adaptive:  # passed only when asked, so the default call is the one it always was
        proto_kwargs["adaptive"] = True
    if consistency_view != "full":
        proto_kwargs["consistency_view"] = consistency_view
    if backend == "protocol":
        from secagg.protocol import run_secure_aggregation

        res = run_secure_aggregation(plan.encodings, **proto_kwargs)
        total = np.asarray(res.sum)
        included = tuple(int(i) for i in res.included)
        ledger = res.ledger
        proto = res
    else:
        from secagg.cost import modular_run

        total, included, ledger = modular_run(plan.encodings, dim=dims, **proto_kwargs)
        proto = None
    return _decode(plan, total, included, ledger, proto, backend)


def _decode(plan: _Plan, total: np.ndarray, included: tuple[int, ...], ledger: Any, proto: Any, backend: str) -> SecureAverageResult:
    vq = plan.quantizer
    c, s = vq.clip, vq.scale
    n3 = len(included)
    # Work in grid units (the integers q = S - n3 K, exact in int64 since M > 2 n K): N s = q_num and
    # D c s = q_den, so average = c q_num / q_den never forms N or D themselves, which overflow float64
    # when n c is near the float range (c = 1e300), and the bound B s is free of s as well.
    q = grid_sum(np.asarray(total), n3, clip=c, scale=s, modulus=vq.modulus).astype(np.float64)
    q_num, q_den = q[:-1], float(q[-1])
    b = rounding_error_bound(n3, c, s) * s  # the rounding bound B of the module docstring, in grid units
    if not q_den > 2 * b:
        raise InvalidInput(
            f"the survivors' total weight (decoded {q_den / (c * s) * plan.weight_bound:.3g}) is below the "
            f"quantization resolution ({2 * b / (c * s) * plan.weight_bound:.3g}); use more bits or a smaller max_weight"
        )
    avg_r = c * (q_num / q_den)
    bound = 2 * c * b / (q_den - 2 * b) + 4 * c * _U
    if vq.rotation is not None:
        p = vq.rotation.padded_dim
        levels = int(math.log2(p))
        bound = math.sqrt(p) * bound + 4.0 * (levels + 2) * _U * c * math.sqrt(p)
    average = vq.finish(avg_r)
    clipped = sum(plan.clipped[i] for i in included)
    return SecureAverageResult(
        average=np.asarray(average, dtype=np.float64),
        total_weight=q_den / (c * s) * plan.weight_bound,
        included=tuple(sorted(included)),
        protocol=proto,
        error_bound=float(bound),
        ledger=ledger,
        clipped=int(clipped),
        modulus=vq.modulus,
        scale=s,
        clip=c,
        clip_mode=vq.clip_mode,
        weight_bound=plan.weight_bound,
        encoded_dim=int(plan.encodings[0].shape[0]),
        over="U3",
        backend=backend,
        sum=np.asarray(total),
        data_derived=plan.data_derived,
    )
