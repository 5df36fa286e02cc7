"""The geometric median as an iterative secure aggregate: smoothed Weiszfeld (Algorithm 2), one-step RFA
(Algorithm 3), and a high-accuracy plaintext reference.

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning" (IEEE TSP 2022).

The geometric median of ``w_1..w_m`` with weights ``alpha_i > 0`` minimises (eq. 6)

    ``g(v) = sum_i alpha_i ||v - w_i||``.

Algorithm 2 (smoothed Weiszfeld), for ``r = 0..R-1``: the server broadcasts ``v^(r)``; client ``i``
computes ``beta_i^(r) = alpha_i / max(nu, ||v^(r) - w_i||)`` from ``v^(r)`` and its own ``w_i``; one call of
the secure average oracle gives ``v^(r+1) = sum_i beta_i^(r) w_i / sum_i beta_i^(r)``. It is alternating
minimisation of ``G(v, eta) = 1/2 sum_k alpha_k (||v - w_k||^2 / eta_k + eta_k)`` over ``eta >= nu``, so the
*smoothed* objective

    ``g_nu(v) = min_{eta >= nu} G(v, eta) = sum_i alpha_i h_nu(||v - w_i||)``,
    ``h_nu(t) = t`` if ``t >= nu`` else ``(t^2 / nu + nu) / 2``,

never increases along the iterates, and ``g <= g_nu <= g + nu/2 sum alpha``. Proposition 2: for
``v^(0) in conv{w_i}``, ``g(v^(R)) - g(v*) <= (2 ||v^(0) - v*||^2 / (nu_bar R) + nu/2) * sum_i alpha_i``
(the paper states it for ``sum alpha = 1``; ``g`` scales linearly and the iterates do not depend on the
scale), ``nu_bar = min_{r, i} max(nu, ||v^(r-1) - w_i||)``.

Initialisation and the call count (our choice, documented): ``init=None`` (or ``"mean"``) starts at the
weighted mean ``sum alpha_i w_i / sum alpha_i``, computed through the oracle and *counted* as one of the
``budget`` calls -- exactly what the paper's scripts do (``budget = 3``: the mean, then 2 Weiszfeld steps;
TFF counts the same way). The mean is itself an iterative-secure-aggregate step (``beta = alpha`` depends
on ``w_i`` only). With an explicit ``init`` tensor (or ``"zero"``) every one of the ``budget`` calls is a
Weiszfeld step. One-step RFA (Algorithm 3) is ``init="zero", budget=1`` (on model updates, footnote 4).

Discretization error (``WeiszfeldResult.error_bound``): with a secure oracle each call ``r`` returns the
exact average up to ``e_r`` per coordinate (``OracleCall.error_bound``). We bound ``delta_r``, the distance
between the iterates of this run and those of an exact-oracle run from the same ``init`` (and the same
survivor sets), by propagation: ``delta_{r+1} <= sqrt(d) e_r + 2 u ||v^(r+1)|| + sum_i |p_i - q_i| r_i``,
where ``p, q`` are the normalised weights of the two runs, ``r_i = ||w_i - v^(r+1)||`` (as
``sum_i (p_i - q_i) = 0``) and ``u`` the unit roundoff of the output dtype. With
``s_i = max(nu, d_i)``, ``d_i = ||v^(r) - w_i||``, the exact run's weight ratio ``x_i = beta'_i / beta_i`` lies in ``[s_i / max(nu, d_i + delta),
s_i / max(nu, d_i - delta)]`` (so ``x_i = 1`` exactly for a point deep inside the ``nu``-ball: the
``beta = 1/nu`` iterations lose nothing), and ``||p - q||_1 = sum_i p_i |x_i - X| / X`` with
``X = sum_i p_i x_i``, so ``sum_i |p_i - q_i| r_i <= sum_{i != j} p_i r_i p_j (|mid_i - mid_j| + h_i + h_j)
/ sum_i p_i a_i`` (and ``<= 2 max_i r_i``), with ``mid_i``, ``h_i`` the midpoint and half-width of
``[a_i, b_i]``. The bound is rigorous up to float64 rounding of the exact run itself. It is worst case over the weight perturbations (no sign
cancellation), so in long, slowly converging runs it can grow by ~2-3x per step while the true deviation
does not; for the paper's budgets (R = 3) and inside the ``nu``-ball of a median data point it stays at
the level of the per-call errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from secagg.discretize import positive_finite
from secagg.errors import InvalidInput
from rfa.oracle import (OracleCall, SecureAverageOracle, _check_shape, check_points, check_weights, row_distances,
                        weighted_sum)

__all__ = ["WeiszfeldResult", "smoothed_weiszfeld", "one_step_rfa", "geometric_median", "objective",
           "smoothed_objective"]


def objective(distances: torch.Tensor, alpha: torch.Tensor) -> float:
    """``g(v) = sum_i alpha_i ||v - w_i||`` from the distances (eq. 6); clients whose distance is NaN
    (a NaN/Inf vector: they refuse every call) are left out."""
    keep = ~torch.isnan(distances)
    return float((alpha[keep] * distances[keep]).sum())


def smoothed_objective(distances: torch.Tensor, alpha: torch.Tensor, nu: float) -> float:
    """``g_nu(v) = sum_i alpha_i h_nu(||v - w_i||)`` (see module docstring; NaN distances left out)."""
    keep = ~torch.isnan(distances)
    d = distances[keep]
    h = torch.where(d >= nu, d, (d * d / nu + nu) / 2)
    return float((alpha[keep] * h).sum())


S_MAX = 1e300
"""Public cap on ``max(nu, ||v - w_i||)``: a client whose distance overflows (a finite vector near the
float64 range) still computes a positive weight ``alpha_i / S_MAX``; the secure oracles then raise it to
their public floor (:meth:`rfa.oracle.SecureAverageOracle.weight_floor`)."""


@dataclass
class WeiszfeldResult:
    """Result of :func:`smoothed_weiszfeld` / :func:`one_step_rfa`.

    Attributes:
        median: the last iterate ``v^(K)`` (``points.dtype``, ``points.device``).
        objective: ``g(v^(r))`` for ``r = 0..K`` (index 0 is the initial iterate; with ``init="mean"``
            that is the mean returned by the first call). Diagnostic: computed with plaintext access.
        smoothed_objective: ``g_nu(v^(r))``, non-increasing over the Weiszfeld steps.
        betas: the client-computed weights of every oracle call (float64 ``(m,)``; ``alpha`` for the mean).
        kinds: ``"mean"`` or ``"weiszfeld"`` for every call.
        calls: number of oracle calls made.
        effective_weights: ``beta_i / sum_{j in U3} beta_j`` of every call (from the oracle's records).
        oracle_calls: the :class:`OracleCall` records of this run.
        distances: ``(||v^(r) - w_i||)_i`` for every iterate ``r = 0..K`` (float64).
        nu: the smoothing parameter.
        nu_bar: ``min_{r, i} max(nu, ||v^(r-1) - w_i||)`` over the Weiszfeld steps (Prop. 2/3; ``inf`` if none).
        error_bound: bound on ``||median - median of an exact-oracle run||_2`` (module docstring).
        stopped_early: whether ``tol`` ended the run before the budget.
        init: ``"mean"``, ``"zero"`` or ``"tensor"``: where the run started (the auditor needs to know
            whether ``v^(0)`` lies in the hull of the points: the mean does, the others in general not).
        refused: clients that refused in some call (a NaN/Inf vector or weight; never in an average).
    """

    median: torch.Tensor
    objective: list[float]
    smoothed_objective: list[float]
    betas: list[torch.Tensor]
    kinds: list[str]
    calls: int
    effective_weights: list[torch.Tensor]
    oracle_calls: list[OracleCall]
    distances: list[torch.Tensor] = field(repr=False)
    nu: float
    nu_bar: float
    error_bound: float
    stopped_early: bool = False
    init: str = "mean"
    refused: tuple[int, ...] = ()


def _check_nu(nu: Any) -> float:
    return positive_finite(nu, "nu")


def _weighted_change(p: torch.Tensor, r: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> float:
    """Bound on ``sum_i |p_i - q_i| r_i`` where ``q ∝ p * x``, ``x_i in [a_i, b_i]`` (module docstring).

    ``|p_i - q_i| = p_i |x_i - X| / X`` with ``X = sum_j p_j x_j >= sum_j p_j a_j`` and
    ``|x_i - X| <= sum_{j != i} p_j (|mid_i - mid_j| + h_i + h_j)``; also ``sum_i |p_i - q_i| <= 2``.
    """
    mid = (a + b) / 2
    half = (b - a) / 2
    den = float((p * a).sum())
    if den <= 0:
        return 2.0 * float(r.max())
    m = p.shape[0]
    if m <= 2048:
        pair = (mid[:, None] - mid[None, :]).abs() + half[:, None] + half[None, :]
        pair.fill_diagonal_(0.0)
        num = float(((p * r)[:, None] * p[None, :] * pair).sum())
    else:  # coarser: |x_i - X| <= max_j b_j - min_j a_j
        num = float((p * r).sum()) * float(b.max() - a.min())
    return min(2.0 * float(r.max()), num / den)


def _norm64(v: torch.Tensor) -> float:
    """``||v||_2`` accumulated in float64 (float32 squares are exact in float64)."""
    return float(torch.linalg.vector_norm(v, dtype=torch.float64))


def _propagate(delta: float, dist: torch.Tensor, beta: torch.Tensor, nu: float, survivors: tuple[int, ...],
               call: OracleCall, dist_next: torch.Tensor, v_next: torch.Tensor, weiszfeld: bool,
               vnorm: float | None = None) -> float:
    d = call.dim
    u = torch.finfo(v_next.dtype).eps / 2
    own = math.sqrt(d) * call.error_bound + 2 * u * (_norm64(v_next) if vnorm is None else vnorm)
    if not math.isfinite(own):
        return math.inf
    if not weiszfeld or delta == 0.0:
        return own
    idx = torch.tensor(survivors, dtype=torch.long)
    dd = dist.cpu()[idx]
    if not bool(torch.isfinite(dd).all()) or not bool(torch.isfinite(dist_next.cpu()[idx]).all()):
        return math.inf
    s = dd.clamp(min=nu)
    a = s / (dd + delta).clamp(min=nu)
    b = s / (dd - delta).clamp(min=nu)
    bb = beta.cpu()[idx]
    p = bb / bb.sum()
    # sum_i (p_i - q_i) w_i = sum_i (p_i - q_i) (w_i - v_next): weigh each change by ||w_i - v_next||
    return own + _weighted_change(p, dist_next.cpu()[idx], a, b)


def _first_distances(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``row_distances(w, v)``, with NaN for the rows that hold a NaN/Inf entry (those clients refuse
    every call); a finite row whose distance overflows keeps ``inf``. The matrix is scanned only when
    some distance is not finite."""
    dist = row_distances(w, v)
    if not bool(torch.isfinite(dist).all()):
        from rfa.oracle import _finite_rows

        bad = ~_finite_rows(w)
        dist[bad.to(dist.device)] = math.nan
    return dist


def smoothed_weiszfeld(points: torch.Tensor, weights: torch.Tensor | None = None, *,
                       oracle: SecureAverageOracle, nu: float = 1e-6, budget: int = 3,
                       init: torch.Tensor | str | None = None, tol: float | None = None) -> WeiszfeldResult:
    """Smoothed Weiszfeld (Algorithm 2) through ``oracle``: an approximate weighted geometric median.

    Args:
        points: ``(m, d)`` client vectors ``w_i`` (row ``i`` lives on client ``i``).
        weights: ``alpha_i > 0`` (default ``1/m`` each).
        oracle: the secure average oracle (one call per iteration).
        nu: smoothing ``nu > 0`` (paper: ``1e-6``).
        budget: ``R``, the number of oracle calls, *including* the mean when ``init`` is ``None``/"mean".
        init: ``None``/"mean" (weighted mean via the oracle, counted), ``"zero"``, or a ``(d,)`` tensor.
        tol: optional early stop when ``||v^(r+1) - v^(r)|| <= tol * max(||v^(r)||, 1e-300)``.

    Each iteration: the clients compute ``beta_i = alpha_i / max(nu, ||v - w_i||)`` from the broadcast
    ``v``, then one oracle call with the public weight bound ``max(alpha) / nu`` (``max(nu, ||v - w_i||)``
    capped at :data:`S_MAX` so a weight is never 0; the secure oracles raise tiny weights to their public
    floor). A row with a NaN/Inf entry is a client that refuses every call (``WeiszfeldResult.refused``;
    the objectives leave it out); the run goes on with the others. Raises :class:`InvalidInput` on bad
    inputs (shapes, weights, ``nu``, ``budget``, ``init``) and :class:`ProtocolAborted` if a call has no
    survivors.

    Cost (plaintext simulation): the ``(m, d)`` matrix is never copied or converted; each iteration streams
    over it twice -- the oracle's weighted sum (for :class:`~rfa.oracle.IdealOracle` one matrix-vector
    product in the points' dtype) and the distances to the new iterate (:func:`~rfa.oracle.row_distances`,
    exact differences in cache-resident tiles, float32-level for float32 points), which also give the
    objectives. The finiteness check of ``points`` is fused into the first of these passes (the first
    oracle call, or the distances to an explicit ``init``), so a run with ``budget = R`` makes ``2R``
    passes (``2R + 1`` with an explicit ``init``).
    """
    w = _check_shape(points)  # finiteness: fused into the first pass over the matrix (below)
    m, d = w.shape
    alpha = check_weights(weights, m, device=w.device, default=1.0 / m)
    nu = _check_nu(nu)
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise InvalidInput(f"budget must be a positive integer, got {budget!r}")
    if tol is not None and not (math.isfinite(float(tol)) and float(tol) >= 0):
        raise InvalidInput(f"tol must be finite and >= 0, got {tol!r}")
    if not isinstance(oracle, SecureAverageOracle):
        raise InvalidInput(f"oracle must be a SecureAverageOracle, got {type(oracle).__name__}")
    amax = float(alpha.max())
    betas: list[torch.Tensor] = []
    kinds: list[str] = []
    calls: list[OracleCall] = []
    delta = 0.0
    bad: torch.Tensor | None = None  # rows with a NaN/Inf entry (their clients refuse every call)

    def _dist(v: torch.Tensor) -> torch.Tensor:
        out = row_distances(w, v)
        if bad is not None:
            out[bad.to(out.device)] = math.nan
        return out

    if init is None or (isinstance(init, str) and init == "mean"):
        init_kind = "mean"
        call = oracle.average(w, alpha, weight_bound=amax)  # the oracle's fused check finds NaN/Inf rows
        calls.append(call)
        v = call.output.to(device=w.device, dtype=w.dtype)
        if call.refused:
            bad = torch.zeros(m, dtype=torch.bool)
            bad[list(call.refused)] = True
        betas.append(call.weights.clone())
        kinds.append("mean")
        dist = _dist(v)
        delta = _propagate(0.0, dist, alpha, nu, call.survivors, call, dist, v, False)
    elif isinstance(init, str):
        if init not in ("zero", "zeros"):
            raise InvalidInput(f"init must be None, 'mean', 'zero' or a tensor, got {init!r}")
        init_kind = "zero"
        v = torch.zeros(d, dtype=w.dtype, device=w.device)
        dist = _first_distances(w, v)
    else:
        if not isinstance(init, torch.Tensor) or init.shape != (d,) or not init.is_floating_point():
            raise InvalidInput(f"init must be a floating tensor of shape ({d},)")
        if not bool(torch.isfinite(init).all()):
            raise InvalidInput("init contains NaN or Inf")
        init_kind = "tensor"
        v = init.detach().to(device=w.device, dtype=w.dtype).clone()
        dist = _first_distances(w, v)
    if bad is None and bool(torch.isnan(dist).any()):
        bad = torch.isnan(dist).cpu()
    distances = [dist.cpu()]
    obj = [objective(dist, alpha)]
    sobj = [smoothed_objective(dist, alpha, nu)]
    nu_bar = math.inf
    stopped = False
    vnorm = _norm64(v)
    while len(betas) < budget:
        s = dist.clamp(min=nu, max=S_MAX)  # NaN (a refusing client) stays NaN
        fin = s[~torch.isnan(s)]
        if fin.numel():
            nu_bar = min(nu_bar, float(fin.min()))
        beta = alpha / s  # client i: alpha_i / max(nu, ||v - w_i||)
        call = oracle.average(w, beta, weight_bound=amax / nu)
        calls.append(call)
        v_new = call.output.to(device=w.device, dtype=w.dtype)
        betas.append(call.weights.clone())
        kinds.append("weiszfeld")
        dist_new = _dist(v_new)
        vnorm_new = _norm64(v_new)
        bused = call.weights.to(torch.float64)
        delta = _propagate(delta, dist, bused, nu, call.survivors, call, dist_new, v_new, True, vnorm_new)
        ref = max(vnorm, 1e-300)
        step = float((v_new.double() - v.double()).norm()) if tol is not None else math.nan
        v, dist, vnorm = v_new, dist_new, vnorm_new
        distances.append(dist.cpu())
        obj.append(objective(dist, alpha))
        sobj.append(smoothed_objective(dist, alpha, nu))
        if tol is not None and step <= float(tol) * ref and len(betas) < budget:
            stopped = True
            break
    refused = tuple(sorted({i for c in calls for i in c.refused}))
    return WeiszfeldResult(median=v, objective=obj, smoothed_objective=sobj, betas=betas, kinds=kinds,
                           calls=len(calls), effective_weights=[c.effective_weights for c in calls],
                           oracle_calls=list(calls), distances=distances, nu=nu, nu_bar=nu_bar,
                           error_bound=delta, stopped_early=stopped, init=init_kind, refused=refused)


def one_step_rfa(points: torch.Tensor, weights: torch.Tensor | None = None, *, oracle: SecureAverageOracle,
                 nu: float = 1e-6) -> WeiszfeldResult:
    """One-step RFA (Algorithm 3): ``beta_i = alpha_i / max(nu, ||w_i||)``, one oracle call.

    Algorithm 2 with ``v^(0) = 0`` and ``R = 1``; meant for model *updates* (footnote 4), which sit near 0.
    """
    return smoothed_weiszfeld(points, weights, oracle=oracle, nu=nu, budget=1, init="zero")


def _g64(w64: torch.Tensor, alpha: torch.Tensor, y: torch.Tensor) -> float:
    return float((alpha * row_distances(w64, y)).sum())


def _newton_polish(w64: torch.Tensor, alpha: torch.Tensor, y: torch.Tensor, tol: float, scale: float,
                   iters: int = 60) -> tuple[torch.Tensor, bool]:
    """Damped Newton on ``g`` (smooth away from the data points): gradient ``sum alpha_i u_i``, Hessian
    ``sum alpha_i (I - u_i u_i^T) / ||y - w_i||``, backtracking so ``g`` never increases. Returns the point
    and whether the step fell below ``tol`` (``False`` if the iterate approaches a data point)."""
    d = y.shape[0]
    eye = torch.eye(d, dtype=torch.float64, device=y.device)
    gy = _g64(w64, alpha, y)
    for _ in range(iters):
        diff = y - w64
        n = torch.linalg.vector_norm(diff, dim=1)
        if bool((n <= 1e-9 * scale).any()):
            return y, False
        u = diff / n[:, None]
        grad = (alpha[:, None] * u).sum(0)
        hess = ((alpha / n)[:, None, None] * (eye - u[:, :, None] * u[:, None, :])).sum(0)
        try:
            step = torch.linalg.solve(hess, grad)
        except RuntimeError:
            return y, False
        t = 1.0
        while t > 1e-12:
            cand = y - t * step
            gc = _g64(w64, alpha, cand)
            if gc <= gy:
                break
            t /= 2
        else:
            return y, False
        moved = float((t * step).norm())
        y, gy = cand, gc
        if moved <= tol * max(1.0, float(y.norm())):
            return y, True
    return y, False


def geometric_median(points: torch.Tensor, weights: torch.Tensor | None = None, *, tol: float = 1e-12,
                     max_iter: int = 100_000) -> torch.Tensor:
    """Plaintext float64 reference geometric median (``argmin_v sum_i alpha_i ||v - w_i||``).

    Vardi & Zhang's modified Weiszfeld iteration (PNAS 2000), which is correct when the iterate hits a
    data point: with ``eta`` the total weight of the points coinciding with ``y``,
    ``T~(y)`` the Weiszfeld map over the other points and ``r = ||sum_{w_i != y} alpha_i (w_i - y) /
    ||w_i - y|| ||``, stop if ``r <= eta`` (``y`` is optimal), else
    ``y <- (1 - eta/r)^+ T~(y) + min(1, eta/r) y``. Starts at the coordinate-wise median; for ``d <= 256``
    it periodically tries a damped Newton polish (quadratic convergence when the median is not a data
    point; accepted only if it lowers ``g``). Stops when a step is ``<= tol * max(1, ||y||)``. Returns a
    float64 tensor on the points' device. For tests and reports only: it reads every plaintext.
    """
    w = check_points(points)
    m, d = w.shape
    alpha = check_weights(weights, m, device=w.device, default=1.0)
    if not (math.isfinite(float(tol)) and float(tol) > 0):
        raise InvalidInput(f"tol must be finite and > 0, got {tol!r}")
    w64 = w.to(torch.float64)
    y = w64.median(dim=0).values if m > 2 else weighted_sum(alpha, w64) / float(alpha.sum())
    scale = float(w64.abs().max()) + 1.0
    for it in range(int(max_iter)):
        if d <= 256 and it % 50 == 49:
            cand, done = _newton_polish(w64, alpha, y, float(tol), scale)
            if _g64(w64, alpha, cand) <= _g64(w64, alpha, y):
                y = cand
                if done:
                    return y
        dist = row_distances(w64, y)
        coincide = dist <= 1e-15 * scale
        eta = float(alpha[coincide].sum())
        far = ~coincide
        inv = torch.zeros_like(dist)
        inv[far] = alpha[far] / dist[far]
        if float(inv.sum()) == 0.0:
            return y
        t = weighted_sum(inv, w64) / float(inv.sum())
        if eta > 0:
            rvec = weighted_sum(inv, w64) - float(inv.sum()) * y
            r = float(rvec.norm())
            if r <= eta:
                return y
            lam = eta / r
            y_new = (1 - lam) * t + lam * y
        else:
            y_new = t
        step = float((y_new - y).norm())
        y = y_new
        if step <= float(tol) * max(1.0, float(y.norm())):
            break
    return y
