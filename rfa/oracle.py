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
bound on ``|w_ij|`` (``value_bound``; see "Public bounds" below). Every number lies in ``[-c, c]``, so nothing can overflow, and with ``bits=64`` (our
default) the grid has ``K = min(2^63 / (2n), 2^50)`` steps per ``c``: weights ``10^-6 W`` (a point at
distance 1 when ``nu = 10^-6``) keep ~9 significant digits (in general a call's relative precision is
about ``2 |U3| 2^-50 W / sum_i beta_i``, so it degrades gracefully when all distances are many orders of
magnitude above ``nu``; the stated bound always covers it). The server releases
``c N / (D c) = sum_{U3} beta_i w_i / sum_{U3} beta_i`` and secure_average states a deterministic
per-coordinate error bound ``2 c B / (D_hat c - 2 B)`` (``B ~ |U3| / s``), which
:attr:`OracleCall.error_bound` records (``inf`` if an input was clipped: the bound ignores clipping).

Public bounds, never the call's data. In training every call's ``c`` is public and fixed before the
call: the aggregator's own clip bound (``value_bound=`` per call) or the oracle's configured bound (the
loop sets one, ``rfa.fl.loop.DEFAULT_VALUE_BOUND``); ``W`` is a public function of the clients' public
sizes and ``nu``. Each client clips its own vector to ``[-c, c]`` in its encoding. The data-dependent
default ``c = max |w_ij|`` remains for single calls outside training (recorded as
``value_bound_source="data"``: an attacker could steer it).

Never crash on a client's data. A client whose vector or weight has a NaN/Inf entry refuses: it sends
nothing (for the secure oracles it drops before its masked input, so the server sees a dropout) and is
listed in ``OracleCall.refused``. A weight so small that its encoding would fall below the grid's
resolution (all Weiszfeld weights ``alpha / dist`` when every distance is huge: the old "total weight
below the quantization resolution" abort) is raised by its client to the public floor
``W * weight_floor(m)`` (``8 / K``): the floor is a public function of ``m`` and the configuration, and
with it the decoded total weight of any non-empty survivor set is always usable. Only too few survivors
stop a call (:class:`~secagg.errors.ProtocolAborted`, nothing released).

Every call returns and records an :class:`OracleCall` (:meth:`SecureAverageOracle.average`): the released
``output`` and what else the server sees, and, marked apart (``metadata["view"] == "auditor"``), the
clients' weights and effective weights. Structural errors (shapes, dtypes, non-positive weights, a weight
above its public bound) raise :class:`secagg.errors.InvalidInput` and nothing is recorded. The
protocol-deviation seam (:class:`Deviation`, :class:`DeviatingOracle`) lets chosen clients run other code
than the protocol's: claim the largest weight, skip clipping, send any element of ``Z_M``.
"""

from __future__ import annotations

import abc
import hashlib
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import torch

from secagg.errors import InvalidInput, ProtocolAborted
from secagg.rounds import Variant

__all__ = [
    "OracleCall",
    "Deviation",
    "SecureAverageOracle",
    "IdealOracle",
    "SecAggOracle",
    "ModularOracle",
    "DeviatingOracle",
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
                  default: float | None = 1.0, finite: bool = True) -> torch.Tensor:
    """Weights as a float64 ``(m,)`` tensor of finite positive numbers, or :class:`InvalidInput`.

    ``None`` gives ``default`` for every client (``default=None`` makes weights mandatory).
    ``finite=False`` lets NaN/Inf through (an oracle call: those clients refuse); the finite ones must
    still be > 0.
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
    fin = torch.isfinite(w)
    if finite and not bool(fin.all()):
        raise InvalidInput(f"{name} contain NaN or Inf")
    if not bool((w[fin] > 0).all()):
        raise InvalidInput(f"{name} must be > 0, got min {float(w[fin].min())}")
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
_SERVER = {"view": "server"}
_AUDITOR = {"view": "auditor"}


@dataclass
class OracleCall:
    """One call of a secure average oracle: what the server learned, and, marked apart, the auditor's data.

    Every field carries ``metadata["view"]``: ``"server"`` for what the server sees or knows in a real
    deployment (the released average, who was summed, public bounds, sizes, bytes), ``"auditor"`` for what
    only a plaintext auditor can know (the clients' own weights, their effective weights, which clients
    were clipped or deviated). :meth:`server_view` returns the server's part alone.

    Attributes (server):
        output: the released average (float64, CPU): exactly what the server learns from this call.
        dim: ``d``. n_clients: ``m``, the clients asked to contribute.
        survivors: ids (row indices) whose inputs are in the average (``U3`` of the protocol).
        refused: clients that did not send an input because theirs was not encodable (NaN/Inf vector or
            weight): the server sees only that they did not send (as a dropout before the masked input).
        bytes_up / bytes_down: total bytes client->server / server->client of this call.
        bytes_per_client: mean ``up + down`` bytes per participating client.
        error_bound: per-coordinate bound on ``|output - exact weighted average over the survivors|`` of
            the *unclipped* inputs (0 for :class:`IdealOracle` up to float64 rounding; ``inf`` if an input
            was clipped or a weight floored: the bound does not cover those changes).
        rounding_bound: the same bound relative to the inputs as encoded (clipped, floored): always finite.
        value_bound: the public per-coordinate bound ``c`` used (``None`` for the ideal oracle);
            value_bound_source: ``"call"`` (the aggregator's public bound), ``"oracle"`` (the configured
            public bound) or ``"data"`` (the largest ``|w_ij|`` of the call: attacker-steerable, a
            simulation convenience that training never uses).
        weight_bound: the public bound ``W`` on every weight (``None`` for the ideal oracle).
        modulus: the ring ``Z_M`` of the call (``None`` for the ideal oracle).
        backend: ``"ideal"``, ``"protocol"`` or ``"modular"``. seed: the per-call seed (``None`` for ideal).
        dropouts: the dropout schedule used ``{client: round}``.

    Attributes (auditor):
        weights: the client-computed weights ``beta_i`` as encoded (float64, CPU), all ``m`` of them
            (a refused client's entry is its own, possibly non-finite, weight).
        effective_weights: ``beta_i / sum_{j in U3} beta_j`` for survivors, 0 for the others.
        clipped: number of clipped input coordinates. floored: clients whose weight was raised to the
            public floor (:meth:`SecureAverageOracle.weight_floor`).
        deviations: the protocol deviations applied ``{client: Deviation}``.
    """

    dim: int = field(metadata=_SERVER)
    n_clients: int = field(metadata=_SERVER)
    survivors: tuple[int, ...] = field(metadata=_SERVER)
    weights: torch.Tensor = field(metadata=_AUDITOR)
    effective_weights: torch.Tensor = field(metadata=_AUDITOR)
    bytes_up: int = field(metadata=_SERVER)
    bytes_down: int = field(metadata=_SERVER)
    bytes_per_client: float = field(metadata=_SERVER)
    error_bound: float = field(default=0.0, metadata=_SERVER)
    backend: str = field(default="ideal", metadata=_SERVER)
    seed: bytes | None = field(default=None, metadata=_SERVER)
    dropouts: dict[int, str] = field(default_factory=dict, metadata=_SERVER)
    clipped: int = field(default=0, metadata=_AUDITOR)
    output: torch.Tensor | None = field(default=None, repr=False, metadata=_SERVER)
    refused: tuple[int, ...] = field(default=(), metadata=_SERVER)
    rounding_bound: float = field(default=0.0, metadata=_SERVER)
    value_bound: float | None = field(default=None, metadata=_SERVER)
    value_bound_source: str = field(default="none", metadata=_SERVER)
    weight_bound: float | None = field(default=None, metadata=_SERVER)
    floored: int = field(default=0, metadata=_AUDITOR)
    deviations: dict[int, "Deviation"] = field(default_factory=dict, metadata=_AUDITOR)
    modulus: int | None = field(default=None, metadata=_SERVER)

    @property
    def max_effective_weight(self) -> float:
        """``max_i beta_i / sum_j beta_j`` (the quantity Definition 1 (iv) bounds by ``s``)."""
        return float(self.effective_weights.max()) if self.effective_weights.numel() else 0.0

    def server_view(self) -> dict[str, Any]:
        """The fields the server sees (``metadata["view"] == "server"``), by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.metadata.get("view") == "server"}

    @staticmethod
    def auditor_fields() -> tuple[str, ...]:
        """Names of the fields only a plaintext auditor can know."""
        return tuple(f.name for f in fields(OracleCall) if f.metadata.get("view") == "auditor")


@dataclass(frozen=True)
class Deviation:
    """How one client deviates from the protocol in one oracle call (the second threat model).

    The first threat model (every corruption in :mod:`rfa.fl.attacks`) changes a client's *input* before
    the honest client code computes its weight, clips and encodes. A Byzantine client under secure
    aggregation can also run other code: the server cannot check what it sends without input
    validation (range proofs), which this tool does not emulate. A deviation is passed per client to
    :meth:`SecureAverageOracle.average`:

    Attributes:
        claim_max_weight: send the largest weight the public bound allows (``beta_i = W``) instead of its
            own; the ideal oracle applies it too.
        skip_clipping: encode the vector without clipping it to the public bound (secure oracles: its
            coordinates are rounded and reduced mod ``M`` as they are, so they may wrap; the ideal oracle
            never clips, so this changes nothing there).
        ring_element: send this ``(d + 1,)`` vector of integers in ``[0, M)`` as the whole encoding (the
            last entry is the weight coordinate); secure oracles only (:class:`InvalidInput` on the ideal
            oracle). Overrides the other two.
    """

    claim_max_weight: bool = False
    skip_clipping: bool = False
    ring_element: Any = None


def _effective(weights: torch.Tensor, survivors: tuple[int, ...]) -> torch.Tensor:
    if len(survivors) == weights.shape[0]:  # everyone survived (the usual call): the same sum, no gather
        return weights / weights.sum()
    eff = torch.zeros_like(weights)
    if not survivors:
        return eff
    idx = torch.tensor(survivors, dtype=torch.long)
    sel = weights[idx]
    eff[idx] = sel / sel.sum()
    return eff


def _finite_rows(x: torch.Tensor) -> torch.Tensor:
    """Boolean ``(m,)`` CPU mask of the rows without NaN/Inf (row norms first; exact check where a norm is
    not finite, since finite entries can overflow a norm)."""
    ok = torch.isfinite(torch.linalg.vector_norm(x, dim=1)).cpu()
    if bool(ok.all()):
        return ok
    for i in (~ok).nonzero().flatten().tolist():
        ok[i] = bool(torch.isfinite(x[i]).all())
    return ok


# ------------------------------------------------------------------------------------------ the oracles
class SecureAverageOracle(abc.ABC):
    """Returns ``sum_i beta_i w_i / sum_i beta_i`` over the surviving clients and records the call.

    :meth:`average` ``(vectors (m, d), weights (m,))`` returns the call's :class:`OracleCall` (its
    ``output`` is the released average, float64); ``oracle(vectors, weights)`` returns that output as a
    ``(d,)`` tensor on ``vectors.device`` with ``vectors.dtype``. Optional keywords, both *public* values
    every client knows before the call: ``weight_bound`` (an upper bound ``W`` on every ``beta_i``) and
    ``value_bound`` (the bound ``c`` on ``|w_ij|``; each client clips to it before encoding).

    Never crash on a client's data: a client whose vector or weight has a NaN/Inf entry *refuses* (it
    sends nothing, like a client dropping before its masked input; recorded in ``refused``); a vector of
    any finite size is clipped by its own client to the public bound; a weight below the public floor
    ``W * weight_floor`` is raised to it (so the decoded total weight can never fall below the grid's
    resolution). What can still stop a call is too few survivors (:class:`ProtocolAborted`, nothing
    released). Structural errors of the caller (shapes, dtypes, non-positive weights, a weight above
    ``weight_bound``) raise :class:`InvalidInput` and record nothing.
    """

    name: str = "oracle"
    value_bound: float | None = None

    def __init__(self) -> None:
        self.calls: list[OracleCall] = []

    def __call__(self, vectors: torch.Tensor, weights: torch.Tensor, *, weight_bound: float | None = None,
                 value_bound: float | None = None,
                 deviations: Mapping[int, Deviation] | None = None) -> torch.Tensor:
        x = _check_shape(vectors, name="vectors")
        call = self.average(x, weights, weight_bound=weight_bound, value_bound=value_bound, deviations=deviations)
        assert call.output is not None
        return call.output.to(device=x.device, dtype=x.dtype)

    def average(self, vectors: torch.Tensor, weights: Any, *, weight_bound: float | None = None,
                value_bound: float | None = None,
                deviations: Mapping[int, Deviation] | None = None) -> OracleCall:
        """One call: validate, let non-encodable clients refuse, apply ``deviations``, average, record.

        ``deviations`` maps a client (row index) to its :class:`Deviation` (the protocol-deviation seam).
        Returns the recorded :class:`OracleCall`; ``call.output`` is the released average (float64 CPU).
        Raises :class:`ProtocolAborted` when no (or, for the secure oracles, too few) clients remain.
        """
        x = _check_shape(vectors, name="vectors")
        m = x.shape[0]
        # NaN/Inf allowed (those clients refuse); finite weights must be > 0
        beta = check_weights(weights, m, device=torch.device("cpu"), default=None, finite=False)
        wb = self._check_bounds(beta, weight_bound, value_bound)
        devs = self._check_deviations(deviations, m)
        call = self._average(x, beta, weight_bound=wb, value_bound=value_bound, deviations=devs)
        self.calls.append(call)
        return call

    @staticmethod
    def _check_bounds(beta: torch.Tensor, weight_bound: float | None, value_bound: float | None) -> float | None:
        fin = beta[torch.isfinite(beta)]
        if weight_bound is not None:
            wb = float(weight_bound)
            if not math.isfinite(wb) or wb <= 0:
                raise InvalidInput(f"weight_bound must be finite and > 0, got {weight_bound!r}")
            if fin.numel() and float(fin.max()) > wb * (1.0 + 1e-12):
                raise InvalidInput(f"a weight {float(fin.max())} exceeds the public weight_bound {wb}")
        if value_bound is not None:
            vb = float(value_bound)
            if not math.isfinite(vb) or vb <= 0:
                raise InvalidInput(f"value_bound must be finite and > 0, got {value_bound!r}")
        return None if weight_bound is None else float(weight_bound)

    @staticmethod
    def _check_deviations(deviations: Mapping[int, Deviation] | None, m: int) -> dict[int, Deviation]:
        if not deviations:
            return {}
        out: dict[int, Deviation] = {}
        for k, dv in dict(deviations).items():
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 0 <= int(k) < m:
                raise InvalidInput(f"deviations name client {k!r}, but only {m} clients take part")
            if not isinstance(dv, Deviation):
                raise InvalidInput(f"deviations[{k}] must be a Deviation, got {type(dv).__name__}")
            out[int(k)] = dv
        return out

    def weight_floor(self, m: int, value_bound: float | None = None) -> float:
        """Smallest relative weight ``omega_min = beta_min / W`` this oracle encodes without loss of the
        call: ``8 / K`` for the secure oracles (``K`` grid steps per ``c``; module docstring), 0 for the
        ideal oracle. A public function of ``m`` and the configuration only."""
        return 0.0

    @abc.abstractmethod
    def _average(self, x: torch.Tensor, beta: torch.Tensor, *, weight_bound: float | None,
                 value_bound: float | None, deviations: dict[int, Deviation]) -> OracleCall:
        """Compute the average and the call record (with ``output``)."""

    def reset(self) -> None:
        """Forget the recorded calls (and restart the per-call seed counter, so a run repeats)."""
        self.calls.clear()

    @property
    def num_calls(self) -> int:
        return len(self.calls)


def _no_survivors(refused: tuple[int, ...]) -> ProtocolAborted:
    return ProtocolAborted("masked-input", f"no client sent an input ({len(refused)} refused: NaN/Inf vector or weight)")


class IdealOracle(SecureAverageOracle):
    """The exact weighted average (the paper's assumption of a perfect secure average oracle).

    ``sum_i p_i w_i`` with ``p_i = beta_i / sum_j beta_j`` normalised in float64. float64 inputs: float64
    ``(beta @ W) / sum beta`` accumulated over row blocks (as :func:`weighted_sum`). float32 inputs: ONE
    matrix-vector product in float32 on the matrix as stored (``p`` rounded to float32, ``m``-term sums),
    so each output coordinate is within ``gamma_{m+1} sum_i p_i |w_ij|`` (``gamma_k = k u / (1 - k u)``,
    ``u = 2^-24``) of the exact average -- float32-level, as the float32 output is anyway -- and the
    ``(m, d)`` input is never copied or converted. The finiteness check of the inputs is fused into that
    pass (all ``p_i > 0``, so a NaN/Inf entry makes its output coordinate non-finite; only then is the
    matrix scanned, the clients with a NaN/Inf entry refuse, and the average is taken over the others);
    a non-finite result from finite inputs (float32 overflow), or a ``p_i`` that underflows in float32,
    takes the float64 path. No clipping, no weight floor. ``OracleCall.error_bound`` is 0: the rounding
    of the input dtype is not counted. Bytes recorded: the plaintext upload of a float32 vector and
    weight per client (``4 (d + 1)``), nothing down -- the cost of an insecure FedAvg round, for comparison.
    """

    name = "ideal"

    def _average(self, x, beta, *, weight_bound, value_bound, deviations):
        m, d = x.shape
        for k, dv in deviations.items():
            if dv.ring_element is not None:
                raise InvalidInput("a ring_element deviation needs a secure oracle (the ideal oracle has no ring)")
        beta_used = beta.clone()
        if deviations:
            claim = weight_bound if weight_bound is not None else float(beta[torch.isfinite(beta)].max())
            for k, dv in deviations.items():
                if dv.claim_max_weight:
                    beta_used[k] = claim
        okw = torch.isfinite(beta_used)
        refused: tuple[int, ...] = ()
        out = None
        if bool(okw.all()):
            out = self._fused(x, beta_used)
        if out is None:  # some client's vector or weight is not finite: those clients refuse
            ok = _finite_rows(x) & okw
            refused = tuple(int(i) for i in (~ok).nonzero().flatten().tolist())
            if not bool(ok.any()):
                raise _no_survivors(refused)
            beta_used = torch.where(ok, beta_used, torch.zeros_like(beta_used))
            sel = ok.nonzero().flatten()
            out = weighted_sum(beta_used[sel], x[sel.to(x.device)]) / float(beta_used[sel].sum())
        survivors = tuple(i for i in range(m) if i not in set(refused)) if refused else tuple(range(m))
        eff = _effective(torch.where(torch.isfinite(beta_used), beta_used, torch.zeros_like(beta_used)), survivors)
        up = 4 * (d + 1) * m
        return OracleCall(dim=d, n_clients=m, survivors=survivors, weights=beta_used, effective_weights=eff,
                          bytes_up=up, bytes_down=0, bytes_per_client=float(up) / m, error_bound=0.0,
                          backend="ideal", output=out.detach().to(device="cpu", dtype=torch.float64),
                          refused=refused, deviations=dict(deviations))

    @staticmethod
    def _fused(x: torch.Tensor, beta: torch.Tensor) -> torch.Tensor | None:
        """The average with the finiteness check fused in; ``None`` if some input is not finite."""
        total = float(beta.sum())
        p = beta / total
        out = None
        if x.dtype == torch.float32:
            p32 = p.to(device=x.device, dtype=torch.float32)
            if bool((p32 >= torch.finfo(torch.float32).tiny).all()):
                out = p32 @ x
                if not bool(torch.isfinite(out).all()):
                    if not _all_finite(x):
                        return None
                    out = None  # float32 overflow of finite inputs: float64 below
        if out is None:
            out = weighted_sum(beta, x) / total  # float64 accumulation (rows converted block by block)
            if not bool(torch.isfinite(out).all()) and not _all_finite(x):
                return None
        return out


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
            rounds = Variant(self.options.get("variant", Variant.HONEST_BUT_CURIOUS)).rounds
            rng = np.random.default_rng(int.from_bytes(hashlib.sha256(b"dropouts" + call_seed).digest(), "big"))
            drop = rng.random(m) < self.dropout_rate
            which = rng.integers(0, len(rounds), size=m)
            out.update({int(i): rounds[int(which[i])].value for i in range(m) if drop[i]})
        if self.dropouts is not None:
            sched = self.dropouts(index, m) if callable(self.dropouts) else self.dropouts
            for k, r in dict(sched).items():
                if not 0 <= int(k) < m:
                    raise InvalidInput(f"dropout schedule names client {k}, but only {m} clients take part")
                out[int(k)] = str(r)
        return out

    _ENCODE_KEYS = ("rotate", "modulus", "bits", "scale", "clip_norm")

    def _grid_steps(self, m: int, c: float) -> int:
        """``K = ceil(c s)``, the grid steps per ``c`` that ``secure_average`` will use for ``m`` clients."""
        from secagg.discretize import choose_modulus, offset_for, scale_for_modulus

        scale = self.options.get("scale")
        if "modulus" in self.options:
            s = scale if scale is not None else scale_for_modulus(m, c, int(self.options["modulus"]))
        else:
            _, s = choose_modulus(m, c, scale=scale, bits=self.options.get("bits"))
        return offset_for(c, s)

    def weight_floor(self, m: int, value_bound: float | None = None) -> float:
        """``8 / K`` (``K <= 2^50`` grid steps per ``c`` for ``m`` clients). A client's weight coordinate
        ``omega_i c`` is then at least 8 grid steps, and after stochastic rounding (each client moves it by
        less than one step) at least 7; ``secure_average`` decodes when the total exceeds
        ``2 B = 2 |U3| (1 + 8 * 2^-53 (K + 1)) <= 4 |U3| + 2`` steps (its rounding bound with float slack),
        and ``7 |U3| > 4 |U3| + 2`` for every non-empty survivor set: the underflow abort cannot happen."""
        c = value_bound if value_bound is not None else (self.value_bound if self.value_bound is not None else 1.0)
        return 8.0 / float(self._grid_steps(m, float(c)))

    def _average(self, x, beta, *, weight_bound, value_bound, deviations):
        from secagg.average import secure_average  # the oracle's only dependency on the protocol stack

        m, d = x.shape
        index = self._counter
        self._counter += 1  # a failed call still consumes its index: the next call gets a fresh seed
        cseed = self.call_seed(index)
        schedule = self._schedule(index, m, cseed)
        okw = torch.isfinite(beta)
        ok = _finite_rows(x) & okw
        refused = tuple(int(i) for i in (~ok).nonzero().flatten().tolist())
        if len(refused) == m:
            raise _no_survivors(refused)
        b = beta.clone()
        wb = float(weight_bound) if weight_bound is not None else float(b[ok].max())  # default: a convenience
        for k, dv in deviations.items():
            if dv.claim_max_weight and ok[k]:
                b[k] = wb
        if value_bound is not None:
            c, source = float(value_bound), "call"
        elif self.value_bound is not None:
            c, source = self.value_bound, "oracle"
        else:
            c, source = None, "data"
        floor = wb * self.weight_floor(m, c)
        low = ok & (b < floor)
        floored = int(low.sum())
        if floored:
            b[low] = floor
        xs = _host_array(x)
        if refused:  # a refusing client sends nothing: it drops before its masked input
            xs = np.array(xs, dtype=np.float64)
            xs[list(refused)] = 0.0
            b[list(refused)] = wb
            rounds = Variant(self.options.get("variant", Variant.HONEST_BUT_CURIOUS)).rounds
            stop = rounds.index("masked-input")
            for k in refused:
                if k not in schedule or rounds.index(schedule[k]) > stop:
                    schedule[k] = "masked-input"
        opts = self.options
        if self.dropout_rate > 0 and opts.get("graph") == "secagg+" and opts.get("dropout_fraction") is None:
            # the SecAgg+ graph is designed for the dropout rate this oracle declares (finder and survivor bound)
            opts = dict(opts, dropout_fraction=self.dropout_rate)
        special = {k: dv for k, dv in deviations.items() if dv.ring_element is not None or dv.skip_clipping}
        if special:
            res = self._deviating_average(xs, b.numpy(), cseed, c, wb, schedule, special)
        else:
            res = secure_average(xs, b.numpy(), seed=cseed, clip=c, max_weight=wb, dropouts=schedule or None,
                                 backend=self.backend, **opts)
        del xs
        out = np.asarray(res.average, dtype=np.float64)
        rbound = float(res.error_bound)
        bound = math.inf if (int(res.clipped) or floored or deviations) else rbound
        survivors = tuple(int(i) for i in res.included)
        up, down, clients = _ledger_totals(res.ledger)
        w_rec = torch.where(ok, b, beta)  # a refused client's own (non-finite) weight, for the auditor
        eff_base = torch.where(ok, b, torch.zeros_like(b))
        return OracleCall(dim=d, n_clients=m, survivors=survivors, weights=w_rec,
                          effective_weights=_effective(eff_base, survivors), bytes_up=up, bytes_down=down,
                          bytes_per_client=float(up + down) / max(1, clients), error_bound=bound,
                          backend=self.backend, seed=cseed, dropouts=schedule, clipped=int(res.clipped),
                          output=torch.from_numpy(out), refused=refused, rounding_bound=rbound,
                          value_bound=float(res.clip), value_bound_source=source, weight_bound=wb,
                          floored=floored, deviations=dict(deviations), modulus=int(res.modulus))

    def _deviating_average(self, xs: np.ndarray, b: np.ndarray, cseed: bytes, c: float | None, wb: float,
                           schedule: dict[int, str], special: dict[int, Deviation]) -> Any:
        """``secure_average`` with some clients' encodings replaced (the protocol-deviation seam): the honest
        clients encode as always (:func:`secagg.average.encode_clients`); a deviating client sends its
        ``ring_element``, or its vector rounded to the grid *without* clipping, reduced mod ``M``. The
        sum then runs through the same protocol (or modular) backend and decoder. A decoded total weight
        the decoder cannot use (a deviating client can send any weight coordinate) stops the call with
        :class:`ProtocolAborted`: the server releases nothing."""
        from secagg import average as sa

        enc_opts = {k: v for k, v in self.options.items() if k in self._ENCODE_KEYS}
        proto_opts = {k: v for k, v in self.options.items() if k not in self._ENCODE_KEYS}
        if any(dv.skip_clipping and dv.ring_element is None for dv in special.values()) and enc_opts.get("rotate"):
            raise InvalidInput("a skip_clipping deviation is not supported with rotate=True")
        plan = sa.encode_clients(xs, b, seed=cseed, clip=c, max_weight=wb, **enc_opts)
        vq = plan.quantizer
        mod = int(vq.modulus)
        enc = plan.encodings
        dim = int(enc.shape[1])
        from secagg.discretize import offset_for

        k_off = offset_for(vq.clip, vq.scale)
        for i, dv in special.items():
            if dv.ring_element is not None:
                r = np.asarray(dv.ring_element)
                if r.shape != (dim,) or r.dtype.kind not in "ui" or (r.size and (int(r.min()) < 0 or int(r.max()) >= mod)):
                    raise InvalidInput(f"ring_element of client {i} must be {dim} integers in [0, {mod})")
                enc[i] = r.astype(enc.dtype)
            else:  # the client's own vector, rounded to the grid but not clipped, reduced mod M
                omega = float(b[i]) / wb
                vals = [omega * float(v) * vq.scale for v in xs[i]] + [omega * vq.clip * vq.scale]
                enc[i] = np.array([(int(round(v)) + k_off) % mod for v in vals], dtype=object).astype(enc.dtype)
        kw = dict(modulus=mod, dropouts=schedule or None, seed=cseed, **proto_opts)
        if self.backend == "protocol":
            from secagg.protocol import run_secure_aggregation

            pres = run_secure_aggregation(enc, **kw)
            total, included, ledger, proto = np.asarray(pres.sum), tuple(int(i) for i in pres.included), pres.ledger, pres
        else:
            from secagg.cost import modular_run

            total, included, ledger = modular_run(enc, dim=dim, **kw)
            proto = None
        try:
            return sa._decode(plan, total, included, ledger, proto, self.backend)
        except InvalidInput as exc:
            raise ProtocolAborted("unmasking", f"the decoded sum is not a usable average ({exc})") from exc


class ModularOracle(SecAggOracle):
    """:class:`SecAggOracle` with ``backend="modular"``: the same discretization (same seeds, same rounding,
    same dropouts) and the same sum over ``Z_M`` without running the masks; the ledger is measured on
    the protocol's transport by the cryptography-free client/server pair (:mod:`secagg.modular`). Outputs are bit-identical to :class:`SecAggOracle` with the same ``seed`` and
    options (masks cancel exactly), which makes long training runs affordable."""

    name = "modular"
    backend = "modular"


class DeviatingOracle(SecureAverageOracle):
    """An oracle view in which fixed clients deviate from the protocol on every call (the second threat
    model, :class:`Deviation`): ``clients`` are row indices of the full client set of size ``m``; calls
    over all ``m`` rows get ``deviations={i: deviation for i in clients}``. A call over a subset of the
    rows (e.g. one bucket of :class:`rfa.aggregators.Bucketing`) cannot be mapped back to client ids and
    is passed through unchanged. ``calls`` is the inner oracle's list."""

    def __init__(self, inner: SecureAverageOracle, clients: Any, deviation: Deviation, m: int) -> None:
        if not isinstance(deviation, Deviation):
            raise InvalidInput(f"deviation must be a Deviation, got {type(deviation).__name__}")
        self.inner, self.deviation, self.m = inner, deviation, int(m)
        self.clients = tuple(int(i) for i in clients)
        self.name = inner.name

    @property
    def calls(self):  # type: ignore[override]
        return self.inner.calls

    @property
    def value_bound(self):  # type: ignore[override]
        return self.inner.value_bound

    def average(self, vectors, weights, *, weight_bound=None, value_bound=None, deviations=None):
        devs = dict(deviations or {})
        if int(vectors.shape[0]) == self.m:
            devs.update({i: self.deviation for i in self.clients})
        return self.inner.average(vectors, weights, weight_bound=weight_bound, value_bound=value_bound,
                                  deviations=devs or None)

    def weight_floor(self, m, value_bound=None):
        return self.inner.weight_floor(m, value_bound)

    def _average(self, x, beta, **kw):  # pragma: no cover - delegated in average
        raise NotImplementedError
