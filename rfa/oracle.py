"""Secure average oracles: ``A((w_i), (beta_i)) = sum_i beta_i w_i / sum_i beta_i`` over the survivors.

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning" (IEEE TSP 2022), Definition 1 and
Algorithm 2: a robust aggregate is computed as a sequence of weighted averages whose weights ``beta_i`` are
computed *by the clients* from broadcast values and their own ``w_i``. The oracle is the only channel
between the clients' vectors and the server. Three implementations:

- :class:`IdealOracle` -- the paper's simplifying assumption: the exact weighted average (float64 for
  float64 inputs; one float32 matrix-vector product, float32-level, for float32 inputs);
- :class:`SecAggOracle` -- every call discretizes and runs the full secure aggregation protocol of
  :mod:`secagg` (real X25519/AES-GCM/Shamir, optional seeded dropouts) through
  ``secagg.secure_average(backend="protocol")``;
- :class:`ModularOracle` -- the same discretization and the same modular sum without the masks
  (``backend="modular"``): for the same seed its outputs are bit-identical to :class:`SecAggOracle`.

How weights are carried (precision design)
------------------------------------------
Weiszfeld weights ``beta_i = alpha_i / max(nu, ||v - w_i||)`` can span many orders of magnitude (a point
at the current iterate gets ``alpha_i / nu``, i.e. ``10^6`` times more than a point at distance 1). The
secure oracles hand ``secagg.secure_average`` the client weights together with a *public* bound
``W >= beta_i`` (``weight_bound``; Weiszfeld passes ``alpha_max / nu``, which every client knows), so
client ``i`` sends ``(omega_i w_i, omega_i c)`` with ``omega_i = beta_i / W in (0, 1]`` and ``c`` a public
bound on ``|w_ij|`` (``value_bound``; default: the largest ``|w_ij|`` of the call, a simulation
convenience). Every number lies in ``[-c, c]``, so nothing can overflow, and with ``bits=64`` (our
default) the grid has ``K = min(2^63 / (2n), 2^50)`` steps per ``c``: weights ``10^-6 W`` (a point at
distance 1 when ``nu = 10^-6``) keep ~9 significant digits (in general a call's relative precision is
about ``2 |U3| 2^-50 W / sum_i beta_i``, so it degrades gracefully when all distances are many orders of
magnitude above ``nu``; the stated bound always covers it). The server releases
``c N / (D c) = sum_{U3} beta_i w_i / sum_{U3} beta_i`` and secure_average states a deterministic
per-coordinate error bound ``2 c B / (D_hat c - 2 B)`` (``B ~ |U3| / s``), which
:attr:`OracleCall.error_bound` records (``inf`` if an input was clipped: the bound ignores clipping).

Every call records an :class:`OracleCall` (client weights, effective weights over the survivors, bytes).
Inputs are validated first; bad inputs raise :class:`secagg.errors.InvalidInput` and nothing is recorded.
"""

from __future__ import annotations

import abc
import hashlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from secagg.errors import InvalidInput

__all__ = [
    "OracleCall",
    "SecureAverageOracle",
    "IdealOracle",
    "SecAggOracle",
    "ModularOracle",
    "check_points",
    "check_weights",
    "row_distances",
    "weighted_sum",
    "pairwise_sq_distances",
    "CHUNK_ELEMENTS",
    "BLOCK_ELEMENTS",
]

CHUNK_ELEMENTS = 1 << 22
"""Largest number of float64 temporaries (``m x chunk``) a chunked pass allocates (32 MiB)."""

_HBC_ROUNDS = ("advertise-keys", "share-keys", "masked-input", "unmasking")
_ACTIVE_ROUNDS = ("advertise-keys", "share-keys", "masked-input", "consistency-check", "unmasking")


# ------------------------------------------------------------------------------------------ validation
def check_points(points: Any, *, name: str = "points") -> torch.Tensor:
    """``points`` as an ``(m, d)`` floating tensor (no copy), or :class:`InvalidInput`.

    Rejects non-tensors, wrong rank, empty shapes, non-floating dtypes and NaN/Inf entries.
    """
    if not isinstance(points, torch.Tensor):
        raise InvalidInput(f"{name} must be a torch.Tensor of shape (m, d), got {type(points).__name__}")
    if points.ndim != 2 or points.shape[0] < 1 or points.shape[1] < 1:
        raise InvalidInput(f"{name} must have shape (m, d) with m, d >= 1, got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise InvalidInput(f"{name} must be a floating tensor, got {points.dtype}")
    if not _all_finite(points):
        raise InvalidInput(f"{name} contains NaN or Inf")
    return points


def check_weights(weights: Any, m: int, *, device: torch.device | None = None, name: str = "weights",
                  default: float | None = 1.0) -> torch.Tensor:
    """Weights as a float64 ``(m,)`` tensor of finite positive numbers, or :class:`InvalidInput`.

    ``None`` gives ``default`` for every client (``default=None`` makes weights mandatory).
    """
    if weights is None:
        if default is None:
            raise InvalidInput(f"{name} are required")
        return torch.full((m,), float(default), dtype=torch.float64, device=device)
    if not isinstance(weights, torch.Tensor):
        try:
            weights = torch.as_tensor(np.asarray(weights, dtype=np.float64))
        except (TypeError, ValueError) as exc:
            raise InvalidInput(f"{name}: cannot convert to a tensor ({exc})") from exc
    if weights.ndim != 1 or weights.shape[0] != m:
        raise InvalidInput(f"{name} must have shape ({m},), got {tuple(weights.shape)}")
    if weights.is_complex() or weights.dtype == torch.bool:
        raise InvalidInput(f"{name} must be real numbers, got {weights.dtype}")
    w = weights.detach().to(dtype=torch.float64, device=device)
    if not bool(torch.isfinite(w).all()):
        raise InvalidInput(f"{name} contain NaN or Inf")
    if not bool((w > 0).all()):
        raise InvalidInput(f"{name} must be > 0, got min {float(w.min())}")
    return w


def _col_chunk(m: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, m))


def _row_chunk(d: int) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, d))


def _all_finite(points: torch.Tensor) -> bool:
    # fast path: row norms propagate NaN/Inf (one streaming pass, no (m, d) temporary); a non-finite norm
    # can also come from overflow of finite entries, so confirm with the exact check, block by block
    if bool(torch.isfinite(torch.linalg.vector_norm(points, dim=1)).all()):
        return True
    m, d = points.shape
    step = _row_chunk(d)
    return all(bool(torch.isfinite(points[lo:lo + step]).all()) for lo in range(0, m, step))


BLOCK_ELEMENTS = 1 << 18
"""Elements of the cache-resident scratch tile of :func:`row_distances`'s fast path on CPU (1 MiB in
float32; on an accelerator the tile is at least ``2^24`` elements)."""


def _check_shape(points: Any, *, name: str = "points") -> torch.Tensor:
    """The structural part of :func:`check_points` (type, rank, non-empty, floating): O(1), no pass."""
    if not isinstance(points, torch.Tensor):
        raise InvalidInput(f"{name} must be a torch.Tensor of shape (m, d), got {type(points).__name__}")
    if points.ndim != 2 or points.shape[0] < 1 or points.shape[1] < 1:
        raise InvalidInput(f"{name} must have shape (m, d) with m, d >= 1, got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise InvalidInput(f"{name} must be a floating tensor, got {points.dtype}")
    return points


def _row_distances_f64(points: torch.Tensor, v64: torch.Tensor, out: torch.Tensor, rows: torch.Tensor | None) -> None:
    """Reference path: exact float64 differences, row blocks, one ``CHUNK_ELEMENTS`` float64 temporary."""
    m, d = points.shape
    idx = range(m) if rows is None else rows.tolist()
    if rows is None:
        step = _row_chunk(d)
        for lo in range(0, m, step):
            hi = min(m, lo + step)
            diff = points[lo:hi].to(torch.float64, copy=True)  # a fresh block (never modify the caller's matrix)
            diff.sub_(v64)
            out[lo:hi] = torch.linalg.vector_norm(diff, dim=1)
            del diff
        return
    for i in idx:
        diff = points[i].to(torch.float64, copy=True)
        diff.sub_(v64)
        out[i] = torch.linalg.vector_norm(diff)
        del diff


def row_distances(points: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``(||w_i - v||_2)_i`` in float64, shape ``(m,)``, on ``points.device``.

    Always exact differences (no ``||w||^2 - 2 w.v + ||v||^2`` cancellation); the ``(m, d)`` matrix is
    never copied. Fast path (``float32``/``float64`` points, ``v`` of the same dtype or exactly representable
    in it): one streaming pass over the matrix in cache-resident blocks of ``BLOCK_ELEMENTS``,
    ``b = W[rows, cols] - v[cols]`` in the points' dtype (each difference correctly rounded: relative
    error ``<= u``, no cancellation), ``b *= b``, a pairwise (cascade) row sum of the block in the points'
    dtype, and the per-block partial sums accumulated in float64: the relative error of ``||w_i - v||^2``
    is about ``(2 + log2(min(d, BLOCK_ELEMENTS))) u`` at most to first order (``u`` the unit roundoff of
    the points' dtype), i.e. float32-level for float32 points (measured ~1e-8 at d = 1e6). A row whose float32 sum of squares is not finite (overflow of
    ``(w_ij - v_j)^2`` or NaN/Inf input) or below ``d * 1e-37`` (possible loss to subnormal squares) is
    recomputed with the float64 reference path (exact float64 differences, ``CHUNK_ELEMENTS`` temporaries).
    Other dtypes (float16, bfloat16), or a ``v`` not representable in the points' dtype, use that path
    throughout.
    """
    m, d = points.shape
    out = torch.empty(m, dtype=torch.float64, device=points.device)
    dt = points.dtype
    vd = v.to(device=points.device)
    fast = dt in (torch.float32, torch.float64)
    if fast and vd.dtype != dt:
        cast = vd.to(dt)
        fast = bool(torch.equal(cast.to(vd.dtype), vd)) if vd.is_floating_point() else False
        vd = cast
    if not fast:
        _row_distances_f64(points, v.to(device=points.device, dtype=torch.float64), out, None)
        return out
    out.zero_()
    # CPU: cache-resident tiles; accelerators: large tiles (few kernel launches, memory is not the issue)
    block = BLOCK_ELEMENTS if points.device.type == "cpu" else max(BLOCK_ELEMENTS, 1 << 24)
    if d <= block:  # whole rows, several at a time
        cstep = d
        rstep = max(1, min(m, block // d))
    else:  # 2-D tiles: rows of 16 Ki contiguous entries, as many rows as fit (fastest tiling measured)
        cstep = min(d, 1 << 14, block)
        rstep = max(1, min(m, block // cstep))
    buf = torch.empty(rstep * min(d, cstep), dtype=dt, device=points.device)
    for lo in range(0, m, rstep):
        hi = min(m, lo + rstep)
        acc = out[lo:hi]
        for c0 in range(0, d, cstep):
            c1 = min(d, c0 + cstep)
            b = buf[: (hi - lo) * (c1 - c0)].view(hi - lo, c1 - c0)
            torch.sub(points[lo:hi, c0:c1], vd[c0:c1], out=b)
            b.mul_(b)
            acc += b.sum(dim=1)
    del buf
    if dt != torch.float64:
        bad = ~torch.isfinite(out) | (out < d * 1e-37)
    else:
        bad = ~torch.isfinite(out)
    if bool(bad.any()):
        rows = bad.nonzero().flatten()
        _row_distances_f64(points, v.to(device=points.device, dtype=torch.float64), out, rows)
        ok = ~bad
        out[ok] = out[ok].sqrt()
        return out
    return out.sqrt_()


def weighted_sum(weights: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """``sum_i weights_i w_i`` in float64, shape ``(d,)``: ``weights @ W`` accumulated over row blocks."""
    m, d = points.shape
    wt = weights.to(device=points.device, dtype=torch.float64)
    out = torch.zeros(d, dtype=torch.float64, device=points.device)
    step = _row_chunk(d)
    if points.dtype == torch.float64:
        for lo in range(0, m, step):
            hi = min(m, lo + step)
            out += wt[lo:hi] @ points[lo:hi]
        return out
    buf = torch.empty((min(m, step), d), dtype=torch.float64, device=points.device)  # one reused block
    for lo in range(0, m, step):
        hi = min(m, lo + step)
        blk = buf[: hi - lo]
        blk.copy_(points[lo:hi])
        out += wt[lo:hi] @ blk
    return out


def pairwise_sq_distances(points: torch.Tensor) -> torch.Tensor:
    """``D_ij = ||w_i - w_j||^2`` in float64, ``(m, m)``, for plaintext baselines and audits.

    Exact differences when ``m^2 d <= 2^25``. Otherwise the Gram form on the points *centred at row 0*
    (``D`` is translation invariant; centring removes the cancellation a common offset would cause):
    ``x_i = w_i - w_0``, ``D_ij = |x_i|^2 + |x_j|^2 - 2 <x_i, x_j>``, streamed over column tiles of the
    matrix copied into one cache-resident float64 buffer (float32 products are exact in float64) and
    accumulated by float64 GEMM (``gram.addmm_``): no ``(m, d)`` float64 copy. The Gram form's absolute
    error is ~``1e-16 (|x_i|^2 + |x_j|^2)``, so pairs with ``D_ij < 1e-6 (|x_i|^2 + |x_j|^2)`` (near
    duplicates, e.g. identical sybil updates) are recomputed exactly from the difference of the two rows;
    clamped at 0, zero diagonal, symmetric by construction (the upper triangle is mirrored).
    """
    m, d = points.shape
    if m * m * d <= 1 << 25:
        w = points.to(torch.float64)
        diff = w[:, None, :] - w[None, :, :]
        return (diff * diff).sum(dim=2)
    gram = torch.zeros((m, m), dtype=torch.float64, device=points.device)
    tile = max(256, min(4096, BLOCK_ELEMENTS // m))
    buf = torch.empty((m, tile), dtype=torch.float64, device=points.device)
    for lo in range(0, d, tile):
        hi = min(d, lo + tile)
        b = buf[:, : hi - lo]
        b.copy_(points[:, lo:hi])
        b.sub_(b[0:1].clone())
        gram.addmm_(b, b.T)
    del buf
    # A BLAS GEMM need not round (i, j) and (j, i) alike (kernels differ by CPU vendor and thread count),
    # so D is symmetric by construction: the upper triangle is computed and mirrored.
    sq = gram.diagonal().clone()
    out = (sq[:, None] + sq[None, :] - 2 * gram).clamp_(min=0.0).triu_(diagonal=1)
    out.add_(out.T.clone())
    near = torch.triu(out < 1e-6 * (sq[:, None] + sq[None, :]), diagonal=1).nonzero().tolist()
    for i, j in near:
        diff = points[i].to(torch.float64, copy=True)
        diff.sub_(points[j].to(torch.float64))
        out[i, j] = out[j, i] = float(torch.dot(diff, diff))
    return out


# ------------------------------------------------------------------------------------------ the record
@dataclass
class OracleCall:
    """One call of a secure average oracle (what a report or the auditor needs).

    Attributes:
        dim: ``d``.
        n_clients: ``m``, the clients asked to contribute.
        survivors: ids (row indices) whose inputs are in the average (``U3`` of the protocol).
        weights: the client-computed weights ``beta_i`` (float64, CPU), all ``m`` of them.
        effective_weights: ``beta_i / sum_{j in U3} beta_j`` for survivors, 0 for dropped clients.
        bytes_up / bytes_down: total bytes client->server / server->client of this call.
        bytes_per_client: mean ``up + down`` bytes per participating client.
        error_bound: per-coordinate bound on ``|output - exact weighted average over the survivors|``
            (0 for :class:`IdealOracle` up to float64 rounding; ``inf`` if an input was clipped).
        backend: ``"ideal"``, ``"protocol"`` or ``"modular"``.
        seed: the per-call seed (``None`` for the ideal oracle).
        dropouts: the dropout schedule used ``{client: round}``.
        clipped: number of clipped input coordinates.
    """

    dim: int
    n_clients: int
    survivors: tuple[int, ...]
    weights: torch.Tensor
    effective_weights: torch.Tensor
    bytes_up: int
    bytes_down: int
    bytes_per_client: float
    error_bound: float = 0.0
    backend: str = "ideal"
    seed: bytes | None = None
    dropouts: dict[int, str] = field(default_factory=dict)
    clipped: int = 0

    @property
    def max_effective_weight(self) -> float:
        """``max_i beta_i / sum_j beta_j`` (the quantity Definition 1 (iv) bounds by ``s``)."""
        return float(self.effective_weights.max())


def _effective(weights: torch.Tensor, survivors: tuple[int, ...]) -> torch.Tensor:
    if len(survivors) == weights.shape[0]:  # everyone survived (the usual call): the same sum, no gather
        return weights / weights.sum()
    eff = torch.zeros_like(weights)
    idx = torch.tensor(survivors, dtype=torch.long)
    sel = weights[idx]
    eff[idx] = sel / sel.sum()
    return eff


# ------------------------------------------------------------------------------------------ the oracles
class SecureAverageOracle(abc.ABC):
    """Returns ``sum_i beta_i w_i / sum_i beta_i`` over the surviving clients and records the call.

    ``oracle(vectors (m, d), weights (m,))`` -> ``(d,)`` tensor on ``vectors.device`` with
    ``vectors.dtype``. Optional keyword hints, both *public* values every client knows:
    ``weight_bound`` (an upper bound on every ``beta_i``) and ``value_bound`` (a bound on ``|w_ij|``).
    """

    name: str = "oracle"

    def __init__(self) -> None:
        self.calls: list[OracleCall] = []

    def __call__(self, vectors: torch.Tensor, weights: torch.Tensor, *, weight_bound: float | None = None,
                 value_bound: float | None = None) -> torch.Tensor:
        x = check_points(vectors, name="vectors")
        beta = self._check_call(x, weights, weight_bound, value_bound)
        out, call = self._average(x, beta, weight_bound=weight_bound, value_bound=value_bound)
        self.calls.append(call)
        return out.to(device=x.device, dtype=x.dtype)

    @staticmethod
    def _check_call(x: torch.Tensor, weights: Any, weight_bound: float | None,
                    value_bound: float | None) -> torch.Tensor:
        """Validate the weights and the public hints; returns the float64 CPU weights."""
        beta = check_weights(weights, x.shape[0], device=torch.device("cpu"), default=None)
        if weight_bound is not None:
            wb = float(weight_bound)
            if not math.isfinite(wb) or wb <= 0:
                raise InvalidInput(f"weight_bound must be finite and > 0, got {weight_bound!r}")
            if float(beta.max()) > wb * (1.0 + 1e-12):
                raise InvalidInput(f"a weight {float(beta.max())} exceeds the public weight_bound {wb}")
        if value_bound is not None:
            vb = float(value_bound)
            if not math.isfinite(vb) or vb <= 0:
                raise InvalidInput(f"value_bound must be finite and > 0, got {value_bound!r}")
        return beta

    @abc.abstractmethod
    def _average(self, x: torch.Tensor, beta: torch.Tensor, *, weight_bound: float | None,
                 value_bound: float | None) -> tuple[torch.Tensor, OracleCall]:
        """Compute the average (float64) and the call record."""

    def reset(self) -> None:
        """Forget the recorded calls (and restart the per-call seed counter, so a run repeats)."""
        self.calls.clear()

    @property
    def num_calls(self) -> int:
        return len(self.calls)


class IdealOracle(SecureAverageOracle):
    """The exact weighted average (the paper's assumption of a perfect secure average oracle).

    ``sum_i p_i w_i`` with ``p_i = beta_i / sum_j beta_j`` normalised in float64. float64 inputs: float64
    ``(beta @ W) / sum beta`` accumulated over row blocks (as :func:`weighted_sum`). float32 inputs: ONE
    matrix-vector product in float32 on the matrix as stored (``p`` rounded to float32, ``m``-term sums),
    so each output coordinate is within ``gamma_{m+1} sum_i p_i |w_ij|`` (``gamma_k = k u / (1 - k u)``,
    ``u = 2^-24``) of the exact average -- float32-level, as the float32 output is anyway -- and the
    ``(m, d)`` input is never copied or converted. The finiteness check of the inputs is fused into that
    pass (all ``p_i > 0``, so a NaN/Inf entry makes its output coordinate non-finite; only then is the
    matrix scanned, and :class:`InvalidInput` raised before anything is recorded; the same fused check
    on the float64 path); a non-finite result from finite inputs (float32 overflow), or a ``p_i`` that
    underflows in float32, takes the float64 path. ``OracleCall.error_bound`` is 0: the rounding of the input dtype is not counted. Bytes recorded:
    the plaintext upload of a float32 vector and weight per client (``4 (d + 1)``), nothing down -- the
    cost of an insecure FedAvg round, for comparison.
    """

    name = "ideal"

    def __call__(self, vectors: torch.Tensor, weights: torch.Tensor, *, weight_bound: float | None = None,
                 value_bound: float | None = None) -> torch.Tensor:
        x = _check_shape(vectors, name="vectors")
        beta = self._check_call(x, weights, weight_bound, value_bound)
        total = float(beta.sum())
        p = beta / total
        out = None
        if x.dtype == torch.float32:
            p32 = p.to(device=x.device, dtype=torch.float32)
            if bool((p32 >= torch.finfo(torch.float32).tiny).all()):
                out = p32 @ x
                if not bool(torch.isfinite(out).all()):
                    check_points(x, name="vectors")  # raises on NaN/Inf input; else float32 overflow
                    out = None
        if out is None:
            out = weighted_sum(beta, x) / total  # float64 accumulation (rows converted block by block)
            if not bool(torch.isfinite(out).all()):
                check_points(x, name="vectors")  # raises on NaN/Inf input (nothing recorded)
        m, d = x.shape
        up = 4 * (d + 1) * m
        call = OracleCall(dim=d, n_clients=m, survivors=tuple(range(m)), weights=beta.clone(),
                          effective_weights=p, bytes_up=up, bytes_down=0,
                          bytes_per_client=float(up) / m, error_bound=0.0, backend="ideal")
        self.calls.append(call)
        return out.to(device=x.device, dtype=x.dtype)

    def _average(self, x, beta, *, weight_bound, value_bound):
        m, d = x.shape
        total = weighted_sum(beta, x) / float(beta.sum())
        survivors = tuple(range(m))
        up = 4 * (d + 1) * m
        call = OracleCall(dim=d, n_clients=m, survivors=survivors, weights=beta.clone(),
                          effective_weights=beta / beta.sum(), bytes_up=up, bytes_down=0,
                          bytes_per_client=float(up) / m, error_bound=0.0, backend="ideal")
        return total, call


def _seed_bytes(seed: int | bytes | str | None) -> bytes:
    if seed is None:
        return os.urandom(32)
    if isinstance(seed, bool):
        raise InvalidInput("seed must be an int, bytes, str or None")
    if isinstance(seed, (int, np.integer)):
        if int(seed) < 0:
            raise InvalidInput("seed must be non-negative")
        return b"i" + int(seed).to_bytes((int(seed).bit_length() + 8) // 8, "big")
    if isinstance(seed, str):
        return b"s" + seed.encode()
    if isinstance(seed, (bytes, bytearray)):
        return b"b" + bytes(seed)
    raise InvalidInput(f"seed must be an int, bytes, str or None, got {type(seed).__name__}")


DropoutSchedule = Mapping[int, str] | Callable[[int, int], Mapping[int, str]]

_NUMPY_DTYPES = (torch.float64, torch.float32, torch.float16)


def _host_array(x: torch.Tensor) -> np.ndarray:
    """``x`` as a numpy array on the host for ``secure_average``, converted once and never widened here.

    float64/float32/float16 CPU tensors are handed over as a zero-copy view (``secure_average`` makes its
    own float64 copy, and every float32/float16 value is exactly representable in float64, so the
    encodings are the same bits as from a float64 copy made here); an accelerator tensor is copied to
    the host once; dtypes numpy lacks (bfloat16) are widened to float64 on the tensor side (exact).
    """
    t = x.detach().resolve_conj().resolve_neg()  # no-ops unless a lazy view bit is set (numpy refuses those)
    if t.dtype not in _NUMPY_DTYPES:
        t = t.to(dtype=torch.float64)
    return t.cpu().numpy()


def _ledger_totals(ledger: Any) -> tuple[int, int, int]:
    """``(bytes up, bytes down, number of clients with at least one message)`` of a ledger, one pass."""
    up = down = 0
    clients: set[int] = set()
    for en in ledger.entries:
        if en.direction == "up":
            up += en.nbytes
        else:
            down += en.nbytes
        clients.add(en.client)
    return int(up), int(down), len(clients)


class SecAggOracle(SecureAverageOracle):
    """Discretize + the full secure aggregation protocol on every call (``secure_average(backend="protocol")``).

    Args:
        seed: oracle seed; call ``k`` uses ``SHA-256("rfa.oracle/v1" || seed || k)`` as the seed of the
            protocol run (keys, masks, rounding, dropouts), so a run is repeatable. ``None``: fresh random.
        value_bound: public bound ``c`` on ``|w_ij|`` (per-coordinate clip). ``None``: secure_average's
            default, the largest ``|w_ij|`` of the call (a simulation convenience; give a bound in a
            deployment). A per-call ``value_bound=`` keyword overrides it.
        dropout_rate: each client independently drops with this probability, in a round drawn uniformly
            among the protocol's rounds (a client dropping in ``"unmasking"`` is still summed).
        dropouts: a fixed schedule ``{client: round}`` applied to every call, or a callable
            ``(call_index, m) -> {client: round}``. Combined with ``dropout_rate`` (the schedule wins).
        bits: modulus bit width handed to ``secure_average`` (default 64, see the module docstring).
        threshold, graph, variant, rotate, modulus, scale: passed to ``secure_average`` unchanged.
        **options: any further ``secure_average`` keyword.

    The call raises whatever ``secure_average`` raises (e.g. ``ProtocolAborted`` when too many clients
    drop); no partial aggregate is ever returned.
    """

    name = "secagg"
    backend = "protocol"

    def __init__(self, *, seed: int | bytes | str | None = None, value_bound: float | None = None,
                 dropout_rate: float = 0.0, dropouts: DropoutSchedule | None = None, bits: int | None = 64,
                 threshold: int | None = None, graph: str = "complete", variant: str = "honest-but-curious",
                 rotate: bool = False, modulus: int | None = None, scale: float | None = None,
                 **options: Any) -> None:
        super().__init__()
        if not 0.0 <= float(dropout_rate) < 1.0:
            raise InvalidInput(f"dropout_rate must be in [0, 1), got {dropout_rate!r}")
        if value_bound is not None and not (math.isfinite(float(value_bound)) and float(value_bound) > 0):
            raise InvalidInput(f"value_bound must be finite and > 0, got {value_bound!r}")
        self.seed = _seed_bytes(seed)
        self.value_bound = None if value_bound is None else float(value_bound)
        self.dropout_rate = float(dropout_rate)
        self.dropouts = dropouts
        self.options: dict[str, Any] = dict(options)
        self.options.update(threshold=threshold, graph=graph, variant=variant, rotate=rotate)
        if modulus is not None:
            self.options["modulus"] = modulus
        elif bits is not None:
            self.options["bits"] = bits
        if scale is not None:
            self.options["scale"] = scale
        self._counter = 0

    def reset(self) -> None:
        super().reset()
        self._counter = 0

    def call_seed(self, index: int) -> bytes:
        """The seed of call number ``index`` (0-based): ``SHA-256("rfa.oracle/v1" || seed || index)``."""
        return hashlib.sha256(b"rfa.oracle/v1\x00" + self.seed + b"\x00" + int(index).to_bytes(8, "big")).digest()

    def _schedule(self, index: int, m: int, call_seed: bytes) -> dict[int, str]:
        out: dict[int, str] = {}
        if self.dropout_rate > 0:
            rounds = _ACTIVE_ROUNDS if self.options.get("variant") == "active" else _HBC_ROUNDS
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(b"dropouts" + call_seed).digest(), "big"))
            drop = rng.random(m) < self.dropout_rate
            which = rng.integers(0, len(rounds), size=m)
            out.update({int(i): rounds[int(which[i])] for i in range(m) if drop[i]})
        if self.dropouts is not None:
            sched = self.dropouts(index, m) if callable(self.dropouts) else self.dropouts
            for k, r in dict(sched).items():
                if not 0 <= int(k) < m:
                    raise InvalidInput(f"dropout schedule names client {k}, but only {m} clients take part")
                out[int(k)] = str(r)
        return out

    def _average(self, x, beta, *, weight_bound, value_bound):
        from secagg.average import secure_average  # the oracle's only dependency on the protocol stack

        m, d = x.shape
        index = self._counter
        self._counter += 1  # a failed call still consumes its index: the next call gets a fresh seed
        cseed = self.call_seed(index)
        schedule = self._schedule(index, m, cseed)
        wb = float(weight_bound) if weight_bound is not None else float(beta.max())
        xs = _host_array(x)
        c = value_bound if value_bound is not None else self.value_bound
        res = secure_average(xs, beta.numpy(), seed=cseed, clip=c, max_weight=wb, dropouts=schedule or None,
                             backend=self.backend, **self.options)
        del xs
        out = np.asarray(res.average, dtype=np.float64)
        bound = math.inf if int(res.clipped) else float(res.error_bound)
        survivors = tuple(int(i) for i in res.included)
        up, down, clients = _ledger_totals(res.ledger)
        call = OracleCall(dim=d, n_clients=m, survivors=survivors, weights=beta.clone(),
                          effective_weights=_effective(beta, survivors), bytes_up=up, bytes_down=down,
                          bytes_per_client=float(up + down) / max(1, clients), error_bound=bound,
                          backend=self.backend, seed=cseed, dropouts=schedule,
                          clipped=int(res.clipped))
        return torch.from_numpy(out), call


class ModularOracle(SecAggOracle):
    """:class:`SecAggOracle` with ``backend="modular"``: the same discretization (same seeds, same rounding,
    same dropouts) and the same sum over ``Z_M`` without running the masks; the ledger comes from the
    analytical cost model. Outputs are bit-identical to :class:`SecAggOracle` with the same ``seed`` and
    options (masks cancel exactly), which makes long training runs affordable."""

    name = "modular"
    backend = "modular"
