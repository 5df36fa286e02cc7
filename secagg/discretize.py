"""Real vectors -> Z_M and back: clipping, rotation, scaling, stochastic rounding, modulus choice.

Secure aggregation (Bonawitz et al., CCS 2017) sums vectors over the ring Z_M. Model updates are real, so
each client maps its vector ``x in R^d`` to ``Z_M^d`` before masking, and the server maps the unmasked sum
back. The pipeline of one client (common practice; see ``protocol.md``, "Discretization into Z_M"):

1. **clip** -- per coordinate to ``[-c, c]`` (``clip_mode="coordinate"``), or the L2 norm to ``c``
   (``clip_mode="norm"``: ``x <- x * min(1, c / ||x||_2)``);
2. **rotate** (optional) -- ``v = R x`` with the randomized Walsh-Hadamard transform
   ``R = H D / sqrt(P)``: ``D`` a diagonal of seeded random signs, ``H`` the ``P x P`` Hadamard matrix,
   ``P`` the next power of two ``>= d`` (``x`` zero-padded). ``R`` is orthonormal, ``R^-1 = R^T = D H / sqrt(P)``,
   applied in ``O(P log P)``. In ``"coordinate"`` mode the coordinate clip happens *after* the rotation
   (where coordinates are flattened); in ``"norm"`` mode the norm clip is rotation invariant;
3. **scale** by ``s`` and **round stochastically**: ``q = floor(s v) + Bernoulli(frac(s v))``, so
   ``E[q] = s v`` (unbiased) and ``|q - s v| < 1`` always (variance ``<= 1/4``);
4. **shift** to unsigned: ``q + K`` with ``K = ceil(c s)``, an element of ``[0, 2K]``.

The server obtains ``S = sum_{u in U3} (q_u + K) mod M``. If ``M > 2 n K`` (``n`` = number of clients that
can be summed) the sum never wraps, so ``sum_u q_u = S - |U3| K`` exactly and the decoded sum
``(S - |U3| K) / s`` is within ``|U3| / s`` of the sum of the clipped inputs per coordinate (each client
contributes a rounding error ``< 1`` grid step), plus a float64 slack that :meth:`Quantizer.error_bound`
states exactly. With the rotation the per-coordinate error in the original basis is at most
``sqrt(P)`` times the rotated one (``|R^T e|_inf <= ||e||_2 <= sqrt(P) |e|_inf``).

Inputs may be numpy arrays, sequences, or torch tensors: this module never imports torch, it converts any
object with ``.detach().cpu().numpy()`` (or ``__array__``) to a float64 numpy array. NaN/Inf, complex or
wrongly shaped inputs raise :class:`~secagg.errors.InvalidInput` before anything is produced.

The random signs of the rotation and the rounding draws are *data* randomness (not key material), so they
come from seeded numpy Generators; masks and keys never do (see :mod:`secagg.prg`, :mod:`secagg.keys`).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from secagg.errors import InvalidInput, OverflowRisk

__all__ = [
    "CLIP_MODES",
    "DEFAULT_BITS",
    "AUTO_OFFSET_CAP",
    "MAX_MODULUS",
    "Encoding",
    "Quantizer",
    "RandomizedHadamard",
    "as_real_array",
    "choose_modulus",
    "clip_coordinates",
    "clip_norm",
    "dequantize",
    "fwht",
    "grid_sum",
    "make_rng",
    "next_power_of_two",
    "offset_for",
    "quantize",
    "quantize_rows",
    "QUANTIZE_TILE",
    "rounding_error_bound",
    "scale_for_modulus",
    "seed_entropy",
    "stochastic_round",
]

CLIP_MODES = ("coordinate", "norm")
DEFAULT_BITS = 32
"""Bit width of the modulus chosen when the caller gives neither a modulus, a bit width nor a scale."""
MAX_MODULUS = 2**64
AUTO_OFFSET_CAP = 2**50
"""Largest ``K = ceil(c s)`` the automatic scale choice uses: beyond ``2^50`` the product ``s x`` in float64
carries no more precision (its rounding error ``|s x| 2^-53`` approaches a grid step), so extra modulus bits
would only add bytes. A caller may still force a larger scale explicitly."""
_U = 2.0**-53  # unit roundoff of float64


# --------------------------------------------------------------------------------------------- inputs
def as_real_array(x: Any, *, ndim: int | None = 1, dim: int | None = None, name: str = "input") -> np.ndarray:
    """A finite float64 numpy copy of ``x`` (numpy array, sequence, or torch tensor by duck typing).

    Raises :class:`InvalidInput` for NaN/Inf, complex, boolean or non-numeric data, a wrong number of axes (``ndim``)
    or a last axis of the wrong length (``dim``). Never imports torch: an object with ``detach``, ``cpu``
    and ``numpy`` methods is converted with ``x.detach().cpu().numpy()``.
    """
    try:
        if hasattr(x, "detach") and hasattr(x, "cpu") and hasattr(x, "numpy"):
            t = x.detach().cpu()
            try:
                x = t.numpy()
            except TypeError:  # dtypes numpy lacks (e.g. bfloat16): widen on the tensor side first
                if not hasattr(t, "double"):
                    raise
                x = t.double().numpy()
        arr = np.asarray(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InvalidInput(f"{name}: cannot convert to a numeric array ({exc})") from exc
    if arr.dtype == object or arr.dtype.kind not in "iuf":
        # booleans are refused as secagg.ring.as_ring_vector refuses them: True is not a measurement
        raise InvalidInput(f"{name}: expected real numbers, got dtype {arr.dtype}")
    if isinstance(x, (list, tuple)) and arr.dtype.kind in "iu" and any(
        isinstance(v, (bool, np.bool_)) for v in np.asarray(x, dtype=object).ravel()
    ):
        raise InvalidInput(f"{name}: expected real numbers, got booleans")
    if ndim is not None and arr.ndim != ndim:
        raise InvalidInput(f"{name}: expected {ndim} axes, got shape {arr.shape}")
    if dim is not None and (arr.ndim == 0 or arr.shape[-1] != dim):
        raise InvalidInput(f"{name}: expected length {dim} on the last axis, got shape {arr.shape}")
    out = np.array(arr, dtype=np.float64, copy=True)
    if out.size and not np.all(np.isfinite(out)):
        raise InvalidInput(f"{name}: contains NaN or Inf")
    return out


def positive_finite(value: Any, name: str) -> float:
    """``float(value)`` if it is a finite number > 0, else :class:`InvalidInput` naming ``name``."""
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be a positive number, got {value!r}") from exc
    if not math.isfinite(v) or v <= 0.0:
        raise InvalidInput(f"{name} must be finite and > 0, got {value!r}")
    return v


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < 1:
        raise InvalidInput(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _dtype_for(modulus: int) -> np.dtype:
    # Same rule as secagg.ring.dtype_for (smallest unsigned type holding M - 1); kept local so this module
    # has no dependency on the ring module's import order.
    for dt in (np.uint8, np.uint16, np.uint32, np.uint64):
        if modulus - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise InvalidInput(f"modulus {modulus} exceeds 2**64")


def _check_modulus(modulus: Any) -> int:
    if isinstance(modulus, bool) or not isinstance(modulus, (int, np.integer)):
        raise InvalidInput(f"modulus must be an integer, got {modulus!r}")
    m = int(modulus)
    if not 2 <= m <= MAX_MODULUS:
        raise InvalidInput(f"modulus must satisfy 2 <= M <= 2**64, got {m}")
    return m


# ------------------------------------------------------------------------------------------- seeding
def seed_entropy(seed: int | bytes | str | None, label: str) -> int | None:
    """A 256-bit integer derived from ``(seed, label)`` by SHA-256 (``None`` stays ``None``: fresh entropy).

    Used to give independent, reproducible numpy streams to distinct purposes (rotation signs, rounding of
    client ``i``) from one user-facing seed.
    """
    if seed is None:
        return None
    if isinstance(seed, (bool,)) or not isinstance(seed, (int, np.integer, bytes, str)):
        raise InvalidInput(f"seed must be an int, bytes, str or None, got {type(seed).__name__}")
    if isinstance(seed, (int, np.integer)):
        if int(seed) < 0:
            raise InvalidInput("seed must be non-negative")
        raw = b"i" + int(seed).to_bytes((int(seed).bit_length() + 8) // 8, "big")
    elif isinstance(seed, str):
        raw = b"s" + seed.encode()
    else:
        raw = b"b" + bytes(seed)
    digest = hashlib.sha256(b"secagg.discretize\x00" + label.encode() + b"\x00" + raw).digest()
    return int.from_bytes(digest, "big")


def make_rng(seed: int | bytes | str | None | np.random.Generator, label: str = "stochastic-rounding") -> np.random.Generator:
    """A numpy Generator: ``seed`` itself if it is one, else PCG64 seeded from :func:`seed_entropy`."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed_entropy(seed, label))


# ------------------------------------------------------------------------------------------- clipping
def clip_coordinates(x: np.ndarray, c: float) -> tuple[np.ndarray, int]:
    """``(clip(x, -c, c), number of coordinates with |x_j| > c)``."""
    over = int(np.count_nonzero(np.abs(x) > c))
    return np.clip(x, -c, c), over


def clip_norm(x: np.ndarray, c: float) -> tuple[np.ndarray, int]:
    """``(x * min(1, c / ||x||_2), k)`` where ``k`` is the number of nonzero coordinates changed
    (all of them when ``||x||_2 > c``, else 0)."""
    norm = float(np.linalg.norm(x))
    if norm <= c:
        return x.copy(), 0
    return x * (c / norm), int(np.count_nonzero(x))


# ------------------------------------------------------------------------------------------- rotation
def next_power_of_two(d: int) -> int:
    """Smallest power of two ``>= d`` (``d >= 1``)."""
    return 1 << (int(d) - 1).bit_length()


def fwht(a: np.ndarray) -> np.ndarray:
    """Orthonormal fast Walsh-Hadamard transform ``H a / sqrt(P)`` along the last axis (length ``P``, a
    power of two). Vectorised butterflies, ``log2 P`` passes of ``O(P)`` each. It is its own inverse."""
    a = np.asarray(a, dtype=np.float64)
    p = a.shape[-1]
    if p & (p - 1) or p == 0:
        raise InvalidInput(f"fwht needs a power-of-two length, got {p}")
    lead = a.shape[:-1]
    h = 1
    out = a
    while h < p:
        blocks = out.reshape(*lead, p // (2 * h), 2, h)
        top = blocks[..., 0, :]
        bottom = blocks[..., 1, :]
        out = np.stack((top + bottom, top - bottom), axis=-2)
        h *= 2
    return out.reshape(*lead, p) / math.sqrt(p)


@dataclass(frozen=True)
class RandomizedHadamard:
    """The rotation ``R x = H D pad(x) / sqrt(P)`` with random signs ``D`` drawn from ``seed``.

    ``R`` is orthonormal, so :meth:`inverse` (``D H y / sqrt(P)``, then truncation to ``dim``) undoes
    :meth:`forward` up to float64 rounding. All clients and the decoder use the same ``seed`` (in a
    deployment the server broadcasts it; it is public).
    """

    dim: int
    seed: int | bytes | str | None = 0
    signs: np.ndarray = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _positive_int(self.dim, "dim")
        rng = make_rng(self.seed, "hadamard-signs")
        signs = rng.integers(0, 2, size=self.padded_dim).astype(np.float64) * 2.0 - 1.0
        signs.setflags(write=False)
        object.__setattr__(self, "signs", signs)

    @property
    def padded_dim(self) -> int:
        """``P``: the next power of two ``>= dim``."""
        return next_power_of_two(self.dim)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``R x`` (length ``P``); ``x`` has length ``dim`` on its last axis."""
        x = np.asarray(x, dtype=np.float64)
        pad = np.zeros(x.shape[:-1] + (self.padded_dim,), dtype=np.float64)
        pad[..., : self.dim] = x
        return fwht(pad * self.signs)

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """``R^T y`` truncated to the first ``dim`` coordinates."""
        return (fwht(np.asarray(y, dtype=np.float64)) * self.signs)[..., : self.dim]


# ------------------------------------------------------------------------------ rounding and the ring
def offset_for(clip: float, scale: float) -> int:
    """``K = ceil(c s)``: the shift that makes every rounded coordinate non-negative (``q in [-K, K]``).

    :class:`OverflowRisk` when ``c s`` overflows float64 (no modulus ``<= 2^64`` could hold it anyway).
    """
    cs = float(clip) * float(scale)
    if not math.isfinite(cs):
        raise OverflowRisk(f"clip * scale = {float(clip)!r} * {float(scale)!r} overflows: no modulus <= 2^64 can hold it")
    return int(math.ceil(cs))


def stochastic_round(y: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Unbiased randomized rounding to int64: ``floor(y) + Bernoulli(y - floor(y))``.

    ``E[q] = y`` and ``|q - y| < 1`` for every coordinate; the per-coordinate variance is
    ``f (1 - f) <= 1/4`` with ``f = frac(y)``. Exactly one uniform draw per coordinate is consumed.
    """
    fl = np.floor(y)
    frac = y - fl  # exact in float64
    up = rng.random(y.shape) < frac
    return fl.astype(np.int64) + up.astype(np.int64)


def quantize(v: np.ndarray, *, clip: float, scale: float, modulus: int, rng: np.random.Generator) -> np.ndarray:
    """``(q + K) mod M`` as ``dtype_for(M)`` with ``q = stochastic_round(s * clip(v, -c, c))``, ``K = ceil(c s)``.

    ``v`` must already be in ``[-c, c]`` up to float noise (a final safety clip removes that noise).
    Requires ``2 K < M`` so ``q + K in [0, 2K]`` is a valid element of Z_M.
    """
    k = offset_for(clip, scale)
    if 2 * k >= modulus:
        raise OverflowRisk(f"one client's range [0, 2*ceil(c s)] = [0, {2 * k}] does not fit in Z_{modulus}")
    y = np.clip(v, -clip, clip) * scale
    q = stochastic_round(y, rng)
    shifted = q.astype(np.uint64) + np.uint64(k)  # wraps mod 2^64 for q < 0, exact since 0 <= q + K < 2^64
    return shifted.astype(_dtype_for(modulus))


QUANTIZE_TILE = 1 << 15
"""Coordinates per tile of :func:`quantize_rows`: its five scratch buffers (~1 MiB) stay in a core's L2
cache, and a tile holds several rows of a model update (fewer calls per row; fastest of 2^13..2^18 measured
at ``(20, 7851)``)."""


def quantize_rows(z: np.ndarray, *, clip: float, scale: float, modulus: int,
                  rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Row ``i`` of the result is ``quantize(z[i], clip=clip, scale=scale, modulus=modulus, rng=rngs[i])``,
    bit for bit: an ``(m, D)`` matrix of dtype ``dtype_for(M)`` from a float64 ``(m, D)`` matrix ``z``
    (:class:`InvalidInput` otherwise), so the rounding is the same unbiased ``floor(s v) +
    Bernoulli(frac(s v))`` with ``|q - s v| < 1``, and every stated error bound applies unchanged.

    Every step of :func:`quantize` is elementwise (clip, ``* s``, ``floor``, ``y - floor(y)``, the
    comparison with a uniform draw, the conversion to int64, the shift by ``K`` mod ``2^64``), so it is
    applied tile by tile (:data:`QUANTIZE_TILE` coordinates, one or several whole rows or a part of one
    row) through reused scratch buffers: no ``(m, D)`` temporaries, and the same bits as row by row.
    Row ``i`` draws its ``D`` uniforms from ``rngs[i]`` in order (``random(out=...)`` on consecutive
    slices continues the stream exactly as one ``random(D)`` call), so each client's rounding depends on
    its own generator only, as in :func:`quantize`.
    """
    return _quantize_rows(z, clip=clip, scale=scale, modulus=modulus, rngs=rngs, in_range=False)


def _quantize_rows(z: np.ndarray, *, clip: float, scale: float, modulus: int, rngs: Sequence[np.random.Generator],
                   in_range: bool, row_scale: np.ndarray | None = None, tail: float | None = None) -> np.ndarray:
    """:func:`quantize_rows`; ``in_range=True`` is the caller's guarantee that every entry of ``z`` already
    lies in ``[-c, c]`` (then the clip, the identity, is skipped: same bits, one pass less).

    With ``row_scale`` (float64 ``(m,)``) and ``tail``, the matrix quantized is ``[row_scale_i * z_i,
    row_scale_i * tail]`` (one more column), formed tile by tile: the same float64 products as building it
    first (``z`` may then be float32 or float64; float32 entries widen exactly), without the ``(m, D)``
    temporary."""
    k = offset_for(clip, scale)
    if 2 * k >= modulus:
        raise OverflowRisk(f"one client's range [0, 2*ceil(c s)] = [0, {2 * k}] does not fit in Z_{modulus}")
    z = np.asarray(z)
    fused = row_scale is not None
    if z.ndim != 2 or not (z.dtype == np.float64 or (fused and z.dtype == np.float32)):
        # quantize computes in the input's precision: float64 only here
        raise InvalidInput(f"quantize_rows needs a 2-D float64 matrix, got {z.dtype} {z.shape}")
    m, d = z.shape
    width = d + 1 if fused else d
    if fused:
        rs = np.asarray(row_scale, dtype=np.float64)
        rs_col = rs[:, None]
        tail_col = rs * float(tail)  # row_scale_i * tail, the last column
    if len(rngs) != m:
        raise InvalidInput(f"quantize_rows needs one generator per row: {len(rngs)} for {m} rows")
    dt = _dtype_for(modulus)
    out = np.empty((m, width), dtype=dt)
    if m == 0 or width == 0:
        return out
    cols = min(width, QUANTIZE_TILE)
    rows = max(1, QUANTIZE_TILE // width) if cols == width else 1
    y = np.empty((rows, cols))
    fl = np.empty((rows, cols))
    u = np.empty((rows, cols))
    up = np.empty((rows, cols), dtype=bool)
    q = np.empty((rows, cols), dtype=np.int64)
    qu = q.view(np.uint64)
    kk = np.uint64(k)
    kf = float(k)
    in_float = 2 * k <= 1 << 53  # floor(y) + K + Bernoulli is an integer in [0, 2K]: exact in float64
    neg_c = -clip
    for r0 in range(0, m, rows):
        r1 = min(m, r0 + rows)
        nr = r1 - r0
        for c0 in range(0, width, cols):
            c1 = min(width, c0 + cols)
            nc = c1 - c0
            yt, ft, ut, upt, qt, qut = y[:nr, :nc], fl[:nr, :nc], u[:nr, :nc], up[:nr, :nc], q[:nr, :nc], qu[:nr, :nc]
            if fused:
                sc1 = min(c1, d)  # the source columns of this tile; the tail column is column d
                if sc1 > c0:
                    np.multiply(z[r0:r1, c0:sc1], rs_col[r0:r1], out=yt[:, : sc1 - c0])
                if c1 > d:
                    yt[:, d - c0] = tail_col[r0:r1]
                if not in_range:
                    np.clip(yt, neg_c, clip, out=yt)
                yt *= scale  # y = clip(z) * s
            elif in_range:
                np.multiply(z[r0:r1, c0:c1], scale, out=yt)  # y = z * s = clip(z) * s
            else:
                np.clip(z[r0:r1, c0:c1], neg_c, clip, out=yt)
                yt *= scale  # y = clip(z) * s
            np.floor(yt, out=ft)
            np.subtract(yt, ft, out=yt)  # frac = y - floor(y)
            for j in range(nr):
                rngs[r0 + j].random(out=ut[j])
            np.less(ut, yt, out=upt)  # Bernoulli(frac)
            if in_float:  # the same integers as the int64 path below, one pass fewer
                ft += kf  # floor(y) + K in [0, 2K] (-K <= floor(y) <= K)
                ft += upt  # + Bernoulli(frac): <= 2K still (floor(y) = K means y = K, frac = 0, no step up)
                np.copyto(out[r0:r1, c0:c1], ft, casting="unsafe")  # integral, < M: exact in dtype_for(M)
                continue
            np.copyto(qt, ft, casting="unsafe")  # floor(y) -> int64 (integral, |.| <= K < 2^63: exact)
            qt += upt
            qut += kk  # q + K, wrapping mod 2^64 for q < 0: exact since 0 <= q + K < 2^64
            np.copyto(out[r0:r1, c0:c1], qut, casting="unsafe")  # < M <= 2^bits of dtype_for(M): exact
    return out


def dequantize(total: np.ndarray, n_summed: int, *, clip: float, scale: float, modulus: int) -> np.ndarray:
    """``(S - n K) / s`` for a sum ``S`` over Z_M of ``n_summed`` quantized vectors (no wrap assumed).

    When ``M > 2 n K`` the integer ``S - n K`` equals ``sum_u q_u`` exactly (it lies in ``[-nK, nK]``,
    ``|.| < 2^63``); it is computed in uint64 with wrap-around and reinterpreted as int64
    (:func:`grid_sum`), then converted to float64 and divided by ``s``.
    """
    return grid_sum(total, n_summed, clip=clip, scale=scale, modulus=modulus).astype(np.float64) / scale


def grid_sum(total: np.ndarray, n_summed: int, *, clip: float, scale: float, modulus: int) -> np.ndarray:
    """``sum_u q_u = S - n K`` as int64 (exact when ``M > 2 n K``): the decoded sum in grid units ``1/s``.

    Ratios of grid sums (e.g. a weighted average ``c q_num / q_den``) need no division by ``s``, so they
    stay finite even when ``n c`` exceeds the float64 range.
    """
    k = offset_for(clip, scale)
    s = np.asarray(total)
    if s.ndim != 1 or s.dtype.kind not in "ui":
        raise InvalidInput(f"sum must be a 1-D integer vector, got {s.dtype} {s.shape}")
    if s.size and (int(s.min()) < 0 or int(s.max()) >= modulus):
        raise InvalidInput("sum has elements outside [0, M)")
    shift = np.uint64((n_summed * k) % 2**64)
    return (s.astype(np.uint64) - shift).view(np.int64)


def rounding_error_bound(n_summed: int, clip: float, scale: float) -> float:
    """Per-coordinate bound on ``|dequantize(sum) - sum of the clipped inputs|`` (no rotation).

    ``n/s`` (each client's stochastic rounding moves a coordinate by ``< 1`` grid step ``1/s``) plus the
    float64 slack ``8 n 2^-53 (c + 1/s)`` covering the rounding of ``s v``, of ``S - nK`` to float and of
    the division by ``s`` (each a relative ``2^-53`` of a quantity ``<= n (c + 1/s)`` in magnitude).
    """
    return n_summed / scale + 8.0 * n_summed * _U * (clip + 1.0 / scale)


# ------------------------------------------------------------------------------------- modulus choice
def choose_modulus(
    n_clients: int,
    clip: float,
    *,
    scale: float | None = None,
    precision: float | None = None,
    bits: int | None = None,
) -> tuple[int, float]:
    """Choose ``(M, s)`` so that the sum of ``n_clients`` discretized vectors cannot wrap: ``M > 2 n K``,
    ``K = ceil(c s)`` (``protocol.md``; the TFF rule "bits >= log2 n" is implied).

    - ``scale`` (or ``precision``, the grid step ``1/s``) given: ``M`` is the smallest power of two
      ``> 2 n K``; if it exceeds ``2^bits`` (when ``bits`` is given) or ``2^64``, :class:`OverflowRisk`.
    - neither given: the scale uses the available bits (``bits``, default :data:`DEFAULT_BITS`):
      ``K = min(floor((2^bits - 1) / (2n)), 2^50)``, ``s = K / c`` (the largest float with
      ``ceil(c s) <= K``), and ``M`` the smallest power of two ``> 2 n K`` (``2^bits`` unless capped).
      :class:`OverflowRisk` if ``K < 1`` (too many clients for ``bits``).

    Returns ``(modulus, scale)``.
    """
    n = _positive_int(n_clients, "n_clients")
    c = positive_finite(clip, "clip")
    if scale is not None and precision is not None:
        raise InvalidInput("give scale or precision, not both")
    if bits is not None:
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not 1 <= int(bits) <= 64:
            raise InvalidInput(f"bits must be an integer in [1, 64], got {bits!r}")
        bits = int(bits)
    if precision is not None:
        scale = 1.0 / positive_finite(precision, "precision")
    if scale is not None:
        s = positive_finite(scale, "scale")
        k = offset_for(c, s)
        need = 2 * n * k + 1  # smallest admissible modulus
        m = 1 << max(1, (need - 1).bit_length())
        cap = MAX_MODULUS if bits is None else min(MAX_MODULUS, 1 << bits)
        if m > cap:
            raise OverflowRisk(
                f"{n} clients with clip {c} and scale {s} need M > 2 n ceil(c s) = {need - 1}, "
                f"i.e. {(need - 1).bit_length()} bits, more than the cap of {cap.bit_length() - 1} bits"
            )
        return m, s
    b = DEFAULT_BITS if bits is None else bits
    if ((1 << b) - 1) // (2 * n) < 1:
        raise OverflowRisk(f"{n} clients cannot be summed without wrapping in {b} bits (need M > 2n)")
    s = scale_for_modulus(n, c, 1 << b)
    k = offset_for(c, s)
    m = 1 << max(1, (2 * n * k).bit_length())
    return m, s


def scale_for_modulus(n_clients: int, clip: float, modulus: int) -> float:
    """The largest scale ``s`` a given modulus allows: ``ceil(c s) <= K = min(floor((M-1) / (2n)), 2^50)``.

    :class:`OverflowRisk` when ``K < 1`` (the modulus cannot hold the sum of ``n`` clients at any scale).
    """
    n = _positive_int(n_clients, "n_clients")
    c = positive_finite(clip, "clip")
    m = _check_modulus(modulus)
    k = min((m - 1) // (2 * n), AUTO_OFFSET_CAP)
    if k < 1:
        raise OverflowRisk(f"modulus {m} cannot hold the sum of {n} clients without wrapping (need M > 2n)")
    # k / c overflows float64 for a tiny clip (e.g. c = 1e-300): start from the largest finite scale instead
    s = min(k / c, float(np.finfo(np.float64).max))
    while offset_for(c, s) > k:
        s = float(np.nextafter(s, 0.0))
    return s


# ------------------------------------------------------------------------------------------ Quantizer
class Encoding(NamedTuple):
    """One client's encoded vector over Z_M and the number of its coordinates that were clipped."""

    values: np.ndarray
    clipped: int


@dataclass(frozen=True)
class Quantizer:
    """Discretization of ``dim``-vectors of ``n_clients`` clients into ``Z_M`` (see module docstring).

    ``encode(x) = (stochastic_round(s * clip(R x)) + K) mod M`` with ``K = ceil(c s)`` (``R`` = identity
    unless ``rotate``), of length :attr:`encoded_dim` (``P`` with rotation, else ``dim``);
    ``decode(S, n) = R^T ((S - n K) / s)``. Construction checks the no-wrap condition ``M > 2 n K`` and
    raises :class:`OverflowRisk` otherwise, so a forced modulus that could wrap fails before any data is
    touched.

    Attributes:
        clip_mode: ``"coordinate"`` (clip each coordinate to ``[-c, c]``) or ``"norm"`` (clip ``||x||_2``).
        clip: ``c > 0``.
        scale: ``s > 0``; the grid step is ``1/s``.
        modulus: ``M`` with ``2 <= M <= 2^64``.
        n_clients: the largest number of encodings that will be summed.
        dim: ``d``, the length of the real vectors.
        rotate: apply the randomized Walsh-Hadamard rotation.
        rotation_seed: public seed of the rotation's signs.
    """

    clip_mode: str
    clip: float
    scale: float
    modulus: int
    n_clients: int
    dim: int
    rotate: bool = False
    rotation_seed: int | bytes | str | None = 0
    rotation: RandomizedHadamard | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.clip_mode not in CLIP_MODES:
            raise InvalidInput(f"clip_mode must be one of {CLIP_MODES}, got {self.clip_mode!r}")
        object.__setattr__(self, "clip", positive_finite(self.clip, "clip"))
        object.__setattr__(self, "scale", positive_finite(self.scale, "scale"))
        object.__setattr__(self, "modulus", _check_modulus(self.modulus))
        object.__setattr__(self, "n_clients", _positive_int(self.n_clients, "n_clients"))
        object.__setattr__(self, "dim", _positive_int(self.dim, "dim"))
        object.__setattr__(self, "rotate", bool(self.rotate))
        if self.rotate and self.rotation_seed is None:
            raise InvalidInput("a rotation needs a seed shared by every client and the decoder")
        k = self.offset
        if self.modulus <= 2 * self.n_clients * k:
            raise OverflowRisk(
                f"modulus {self.modulus} can wrap: the sum of {self.n_clients} clients spans "
                f"[0, 2 n ceil(c s)] = [0, {2 * self.n_clients * k}]; need M > {2 * self.n_clients * k}"
            )
        rot = RandomizedHadamard(self.dim, self.rotation_seed) if self.rotate else None
        object.__setattr__(self, "rotation", rot)

    @classmethod
    def auto(
        cls,
        n_clients: int,
        dim: int,
        clip: float,
        *,
        clip_mode: str = "coordinate",
        scale: float | None = None,
        precision: float | None = None,
        bits: int | None = None,
        rotate: bool = False,
        rotation_seed: int | bytes | str | None = 0,
    ) -> "Quantizer":
        """A quantizer with ``(M, s)`` from :func:`choose_modulus`."""
        m, s = choose_modulus(n_clients, clip, scale=scale, precision=precision, bits=bits)
        return cls(clip_mode, clip, s, m, n_clients, dim, rotate, rotation_seed)

    # -- derived quantities
    @property
    def offset(self) -> int:
        """``K = ceil(c s)``."""
        return offset_for(self.clip, self.scale)

    @property
    def encoded_dim(self) -> int:
        """Length of an encoding: ``P = next_power_of_two(dim)`` with rotation, else ``dim``."""
        return self.rotation.padded_dim if self.rotation is not None else self.dim

    @property
    def bits(self) -> int:
        """``bit_length(M - 1)``: bits per element on the wire."""
        return (self.modulus - 1).bit_length()

    # -- the two halves of encode/decode (exposed so secure_average can append a weight coordinate)
    def prepare(self, x: Any) -> tuple[np.ndarray, int]:
        """Clip (and rotate) one real vector: returns ``(v, clipped)`` with ``v in [-c, c]^encoded_dim``.

        Validates ``x`` (1-D, length ``dim``, finite) -> :class:`InvalidInput`.
        """
        v = as_real_array(x, ndim=1, dim=self.dim)
        clipped = 0
        if self.clip_mode == "norm":
            v, clipped = clip_norm(v, self.clip)
        if self.rotation is not None:
            v = self.rotation.forward(v)
        if self.clip_mode == "coordinate":
            v, clipped = clip_coordinates(v, self.clip)
        else:  # norm <= c implies |v_j| <= c; this only removes float noise of the rotation
            v = np.clip(v, -self.clip, self.clip)
        return v, clipped

    def prepare_rows(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`prepare` of every row of an ``(m, dim)`` matrix at once: ``(V, clipped)`` with
        ``V[i], clipped[i] == prepare(x[i])`` bit for bit (``V`` float64 ``(m, encoded_dim)``, ``clipped``
        int64 ``(m,)``). Validates ``x`` (2-D, ``dim`` columns, finite) -> :class:`InvalidInput`."""
        return self._prepare_rows(as_real_array(x, ndim=2, dim=self.dim))

    def _prepare_rows(self, v: np.ndarray, extremes: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`prepare_rows` on a fresh, finite float64 matrix ``v`` that it may modify in place.

        ``extremes``: the row maxima and minima of ``v`` if the caller has them. Rotation, norm clip and
        coordinate clip are the per-row operations of :meth:`prepare`: the rotation and the clips are
        elementwise along a row (identical bits in batch), the L2 norm is taken row by row with the same
        call as :meth:`prepare` (a batched norm could sum in another order), and rows whose entries all lie
        in ``[-c, c]`` are left as they are (clipping them is the identity)."""
        m = v.shape[0]
        c = self.clip
        clipped = np.zeros(m, dtype=np.int64)
        if self.clip_mode == "norm":
            for i in range(m):  # a fresh row, as prepare's own copy (the BLAS norm sees the same operand)
                v[i], clipped[i] = clip_norm(v[i].copy(), c)
        if self.rotation is not None:  # row blocks bound the transform's temporaries
            p = self.rotation.padded_dim
            step = max(1, (1 << 21) // p)
            if m <= step:
                v = self.rotation.forward(v)
            else:
                out = np.empty((m, p))
                for lo in range(0, m, step):
                    out[lo:lo + step] = self.rotation.forward(v[lo:lo + step])
                v = out
            extremes = None
        if self.clip_mode == "coordinate":
            hi, lo = extremes if extremes is not None else (v.max(axis=1), v.min(axis=1))
            for i in np.flatnonzero((hi > c) | (lo < -c)):
                v[i], clipped[i] = clip_coordinates(v[i], c)
        else:  # norm <= c implies |v_j| <= c; this only removes float noise of the rotation
            np.clip(v, -c, c, out=v)
        return v, clipped

    def finish(self, v: np.ndarray) -> np.ndarray:
        """Undo the rotation (``R^T v``, truncated to ``dim``); identity without rotation."""
        return self.rotation.inverse(v) if self.rotation is not None else np.asarray(v, dtype=np.float64)

    # -- full pipeline
    def encode(self, x: Any, rng: np.random.Generator | int | bytes | None = None) -> Encoding:
        """``x in R^dim`` -> ``Encoding(values in Z_M^encoded_dim, clipped)``.

        ``rng`` drives the stochastic rounding (a Generator, or a seed for :func:`make_rng`).
        """
        v, clipped = self.prepare(x)
        values = quantize(v, clip=self.clip, scale=self.scale, modulus=self.modulus, rng=make_rng(rng))
        return Encoding(values, clipped)

    def decode(self, total: Any, n_summed: int) -> np.ndarray:
        """Sum over Z_M of ``n_summed`` encodings -> float64 estimate of the sum of the clipped inputs.

        :class:`InvalidInput` if ``n_summed`` is not in ``[1, n_clients]`` or ``total`` has the wrong
        length or elements outside ``[0, M)``.
        """
        n = _positive_int(n_summed, "n_summed")
        if n > self.n_clients:
            raise InvalidInput(f"n_summed={n} exceeds n_clients={self.n_clients}: the sum may have wrapped")
        s = np.asarray(total)
        if s.ndim != 1 or s.shape[0] != self.encoded_dim:
            raise InvalidInput(f"sum must have shape ({self.encoded_dim},), got {s.shape}")
        flat = dequantize(s, n, clip=self.clip, scale=self.scale, modulus=self.modulus)
        return self.finish(flat)

    def clipped_reference(self, x: Any) -> np.ndarray:
        """The clipped input the decoded sum estimates: ``R^T clip(R x)`` (``clip(x)`` without rotation)."""
        return self.finish(self.prepare(x)[0])

    def error_bound(self, n_summed: int) -> float:
        """Deterministic per-coordinate bound on ``|decode(sum) - sum of clipped_reference(x_u)|``.

        Without rotation: :func:`rounding_error_bound` = ``n/s + 8 n 2^-53 (c + 1/s)``. With rotation
        the rotated-domain error vector ``e`` maps back as ``|R^T e|_inf <= sqrt(P) |e|_inf``, plus the
        float error of the two transforms, at most ``4 (log2 P + 2) 2^-53`` times the L2 norm of the
        transformed sum (``<= n c sqrt(P)``).
        """
        base = rounding_error_bound(n_summed, self.clip, self.scale)
        if self.rotation is None:
            return base
        p = self.rotation.padded_dim
        rp = math.sqrt(p)
        levels = int(math.log2(p))
        return rp * base + 4.0 * (levels + 2) * _U * n_summed * (self.clip + 1.0 / self.scale) * rp
