"""Aggregators: robust (and plain) ways to combine client updates, each declaring what it costs and reveals.

Every aggregator is a small object with

- ``name`` (one of :data:`NAMES`), ``secure_compatible`` (computable through a secure average oracle, i.e.
  an iterative secure aggregate in the sense of Definition 1 of Pillutla et al., IEEE TSP 2022),
- ``calls_per_aggregation`` (oracle calls per aggregation; an upper bound when early stopping applies;
  ``None`` for plaintext-only ones), ``reveals`` (what the server learns),
- ``__call__(updates (m, d), weights (m,) | None, oracle) -> AggregateOutput``.

Secure-compatible: ``fedavg``, ``rfa`` (smoothed Weiszfeld, Algorithm 2), ``one-step-rfa`` (Algorithm 3),
``rlr`` (robust learning rate, Ozdayi et al., AAAI 2021, eqs. 5-6), ``norm-clipping`` (client-side L2 clip
then mean). Plaintext-only (Section V-B baselines; they need every update in the clear, so they cannot
run on masked inputs and ignore the oracle): ``coordinate-median``, ``trimmed-mean`` (known ``rho``),
``krum`` and ``multi-krum`` (known ``f``).

``make(name, **params)`` builds one. Bad inputs raise :class:`secagg.errors.InvalidInput`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

from secagg.discretize import positive_finite
from secagg.errors import InvalidInput
from rfa.oracle import SecureAverageOracle, _col_chunk, check_points, check_weights, pairwise_sq_distances, weighted_sum
from rfa.weiszfeld import one_step_rfa, smoothed_weiszfeld

__all__ = ["AggregateOutput", "Aggregator", "FedAvg", "RFA", "OneStepRFA", "RLR", "NormClipping",
           "CoordinateMedian", "TrimmedMean", "Krum", "MultiKrum", "make", "NAMES", "rlr_plaintext",
           "pairwise_sq_distances", "krum_scores"]


@dataclass
class AggregateOutput:
    """The aggregate ``vector`` (``updates.dtype``/device), the oracle calls made, and diagnostics."""

    vector: torch.Tensor
    oracle_calls: int
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Aggregator(Protocol):
    name: str
    secure_compatible: bool
    calls_per_aggregation: int | None
    reveals: str

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None,
                 oracle: SecureAverageOracle | None) -> AggregateOutput: ...


def _inputs(updates: Any, weights: Any) -> tuple[torch.Tensor, torch.Tensor]:
    u = check_points(updates, name="updates")
    a = check_weights(weights, u.shape[0], device=u.device, default=1.0)
    return u, a


def _need_oracle(oracle: Any) -> SecureAverageOracle:
    if not isinstance(oracle, SecureAverageOracle):
        raise InvalidInput(f"this aggregator needs a SecureAverageOracle, got {type(oracle).__name__}")
    return oracle


def _nonneg_int(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise InvalidInput(f"{name} must be a non-negative integer, got {x!r}")
    return x


# ---------------------------------------------------------------------------------- secure-compatible
class FedAvg:
    """FedAvg mean (McMahan et al. 2017): ``sum_i alpha_i u_i / sum_i alpha_i``, one oracle call."""

    name = "fedavg"
    secure_compatible = True
    calls_per_aggregation = 1
    reveals = "one weighted average of the updates (weights alpha)"

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        v = o(u, a, weight_bound=float(a.max()))
        return AggregateOutput(v, 1, {"survivors": o.calls[-1].survivors})


class RFA:
    """RFA (Algorithm 1 line 9): the smoothed Weiszfeld approximation of the geometric median,
    ``argmin_v sum_i alpha_i ||v - u_i||`` (eq. 6), with ``budget`` oracle calls (Algorithm 2; default
    3 = mean + 2 Weiszfeld steps, as in the paper's experiments; see :mod:`rfa.weiszfeld`)."""

    name = "rfa"
    secure_compatible = True
    reveals = "budget weighted averages of the updates (weights alpha_i / max(nu, ||v - u_i||))"

    def __init__(self, nu: float = 1e-6, budget: int = 3, init: Any = None, tol: float | None = None) -> None:
        self.nu = positive_finite(nu, "nu")
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise InvalidInput(f"budget must be a positive integer, got {budget!r}")
        self.budget, self.init, self.tol = budget, init, tol
        self.calls_per_aggregation = budget

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        res = smoothed_weiszfeld(u, a, oracle=_need_oracle(oracle), nu=self.nu, budget=self.budget,
                                 init=self.init, tol=self.tol)
        return AggregateOutput(res.median, res.calls, {"objective": res.objective, "error_bound": res.error_bound,
                                                       "result": res})


class OneStepRFA:
    """One-step RFA (Algorithm 3): ``sum_i beta_i u_i / sum_i beta_i`` with
    ``beta_i = alpha_i / max(nu, ||u_i||)`` (``v^(0) = 0``, ``R = 1``, on updates), one oracle call."""

    name = "one-step-rfa"
    secure_compatible = True
    calls_per_aggregation = 1
    reveals = "one weighted average of the updates (weights alpha_i / max(nu, ||u_i||))"

    def __init__(self, nu: float = 1e-6) -> None:
        self.nu = positive_finite(nu, "nu")

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        res = one_step_rfa(u, a, oracle=_need_oracle(oracle), nu=self.nu)
        return AggregateOutput(res.median, res.calls, {"objective": res.objective, "result": res})


def rlr_plaintext(updates: torch.Tensor, weights: torch.Tensor | None, theta: float, eta: float = 1.0) -> torch.Tensor:
    """Plaintext RLR (Ozdayi et al., AAAI 2021): eq. 5 ``eta_theta,j = eta`` if
    ``|sum_k sgn(u_kj)| >= theta`` else ``-eta``; eq. 6 returns ``eta_theta * sum_k n_k u_k / sum_k n_k``
    (the server adds it to the model)."""
    u, a = _inputs(updates, weights)
    votes = torch.sign(u).sum(dim=0).to(torch.float64)
    lr = torch.where(votes.abs() >= theta, eta, -eta).to(torch.float64)
    mean = weighted_sum(a, u) / float(a.sum())
    return (lr * mean).to(u.dtype)


class RLR:
    """Robust learning rate (Ozdayi, Kantarcioglu, Gel, AAAI 2021), eqs. 5-6, in ONE oracle call.

    Plaintext form: :func:`rlr_plaintext`. Secure form: client ``k`` sends the ``(2d + 1)``-vector
    ``z_k = (n_k u_k, sgn(u_k), n_k)`` with *uniform* oracle weight 1. The oracle returns the plain mean
    over the ``m'`` survivors ``(sum n_k u_k / m', S / m', N / m')`` with ``S = sum_k sgn(u_k)`` the vote
    sums and ``N = sum n_k``; the server knows ``m' = |U3|`` (the protocol tells it who was summed), so
    ``S = round(m' * mean_S)`` (an integer vector: rounding removes the oracle's error as long as
    ``m' e < 1/2``, checked) and the weighted mean is ``mean_1 / mean_N``. Then eq. 5 and 6 as above. With
    no dropout this equals :func:`rlr_plaintext` (exactly for the ideal oracle, up to the oracle's stated
    error for a secure one). ``theta`` is the learning threshold (the paper uses 4-8), ``eta`` the server
    learning rate (1 in the paper's FedAvg experiments).
    """

    name = "rlr"
    secure_compatible = True
    calls_per_aggregation = 1
    reveals = "one average of (n_k u_k, sgn(u_k), n_k): the weighted mean, the per-coordinate sign-vote sums and N"

    def __init__(self, theta: float = 4.0, eta: float = 1.0) -> None:
        self.theta = positive_finite(theta, "theta")
        self.eta = positive_finite(eta, "eta")

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        m, d = u.shape
        an = a / float(a.max())  # any public normalisation cancels in mean_1 / mean_N; keeps |z| <= max|u|, 1
        z = torch.empty((m, 2 * d + 1), dtype=torch.float64, device=u.device)
        z[:, :d] = u.to(torch.float64) * an[:, None]
        z[:, d:2 * d] = torch.sign(u).to(torch.float64)
        z[:, 2 * d] = an
        ones = torch.ones(m, dtype=torch.float64, device=u.device)
        avg = o(z, ones, weight_bound=1.0).to(torch.float64)
        call = o.calls[-1]
        mp = len(call.survivors)
        s_hat = avg[d:2 * d] * mp
        votes = torch.round(s_hat)
        vote_err = mp * call.error_bound
        if not vote_err < 0.5:
            raise InvalidInput(f"oracle error {call.error_bound} too large to recover integer sign votes "
                               f"from {mp} survivors")
        den = float(avg[2 * d])
        mean = avg[:d] / den
        lr = torch.where(votes.abs() >= self.theta, self.eta, -self.eta).to(torch.float64)
        out = (lr * mean).to(device=u.device, dtype=u.dtype)
        return AggregateOutput(out, 1, {"votes": votes, "flipped": int((lr < 0).sum()), "survivors": call.survivors})


class NormClipping:
    """Client-side L2 norm clipping then mean (Sun et al. 2019, the paper's [84]):
    ``u_i <- u_i min(1, bound / ||u_i||)`` on the client, then ``sum alpha_i u_i / sum alpha_i`` (1 call)."""

    name = "norm-clipping"
    secure_compatible = True
    calls_per_aggregation = 1
    reveals = "one weighted average of the clipped updates"

    def __init__(self, bound: float = 1.0) -> None:
        self.bound = positive_finite(bound, "bound")

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        norms = torch.linalg.vector_norm(u.to(torch.float64), dim=1)
        factor = torch.clamp(self.bound / norms.clamp(min=1e-300), max=1.0)
        clipped = (u.to(torch.float64) * factor[:, None]).to(u.dtype)
        v = o(clipped, a, weight_bound=float(a.max()), value_bound=None)
        return AggregateOutput(v, 1, {"clipped_clients": int((factor < 1).sum())})


# --------------------------------------------------------------------------------- plaintext-only
class _Plaintext:
    secure_compatible = False
    calls_per_aggregation = None
    reveals = "every client's update in plaintext (not computable on masked inputs; the oracle is ignored)"


class CoordinateMedian(_Plaintext):
    """Coordinate-wise median (Yin et al. 2018, the paper's [52]): ``v_j = median_i u_ij`` (unweighted;
    the mean of the two middle values for even ``m``). Plaintext-only."""

    name = "coordinate-median"

    def __call__(self, updates, weights=None, oracle=None):
        u, _ = _inputs(updates, weights)
        m, d = u.shape
        out = torch.empty(d, dtype=torch.float64, device=u.device)
        step = _col_chunk(m)
        for lo in range(0, d, step):
            srt = torch.sort(u[:, lo:lo + step].to(torch.float64), dim=0).values
            out[lo:lo + step] = (srt[(m - 1) // 2] + srt[m // 2]) / 2
        return AggregateOutput(out.to(u.dtype), 0, {})


class TrimmedMean(_Plaintext):
    """Coordinate-wise trimmed mean (Yin et al. 2018): drop the ``k = ceil(rho m)`` largest and ``k``
    smallest values of every coordinate, average the remaining ``m - 2k`` (unweighted). ``rho`` is the
    known corruption level; needs ``2k < m``. Plaintext-only."""

    name = "trimmed-mean"

    def __init__(self, rho: float = 0.1) -> None:
        r = float(rho)
        if not (0.0 <= r < 0.5):
            raise InvalidInput(f"rho must be in [0, 0.5), got {rho!r}")
        self.rho = r

    def __call__(self, updates, weights=None, oracle=None):
        u, _ = _inputs(updates, weights)
        m, d = u.shape
        k = math.ceil(self.rho * m - 1e-9)
        if 2 * k >= m:
            raise InvalidInput(f"trimming {k} from each side of {m} values leaves nothing")
        out = torch.empty(d, dtype=torch.float64, device=u.device)
        step = _col_chunk(m)
        for lo in range(0, d, step):
            srt = torch.sort(u[:, lo:lo + step].to(torch.float64), dim=0).values
            out[lo:lo + step] = srt[k:m - k].mean(dim=0)
        return AggregateOutput(out.to(u.dtype), 0, {"trimmed_each_side": k})


def krum_scores(u: torch.Tensor, f: int) -> torch.Tensor:
    """Krum scores (Blanchard et al., NeurIPS 2017): ``score(i) = sum_{j in N_i} ||u_i - u_j||^2`` over the
    ``m - f - 2`` nearest other updates ``N_i``. Needs ``m > 2 f + 2``."""
    m = u.shape[0]
    if m <= 2 * f + 2:
        raise InvalidInput(f"Krum needs m > 2f + 2, got m={m}, f={f}")
    dist = pairwise_sq_distances(u)
    dist.fill_diagonal_(math.inf)
    nearest = torch.sort(dist, dim=1).values[:, : m - f - 2]
    return nearest.sum(dim=1)


class Krum(_Plaintext):
    """Krum (Blanchard et al. 2017): the update with the smallest score (:func:`krum_scores`), ties to the
    lowest index. ``f`` = known number of corrupt clients. Plaintext-only."""

    name = "krum"

    def __init__(self, f: int = 1) -> None:
        self.f = _nonneg_int(f, "f")

    def __call__(self, updates, weights=None, oracle=None):
        u, _ = _inputs(updates, weights)
        scores = krum_scores(u, self.f)
        i = int(torch.argmin(scores))
        return AggregateOutput(u[i].clone(), 0, {"selected": [i], "scores": scores})


class MultiKrum(_Plaintext):
    """Multi-Krum (Blanchard et al. 2017): the ``q`` updates with the smallest Krum scores (default
    ``q = m - f``), averaged with their weights ``alpha``. Plaintext-only."""

    name = "multi-krum"

    def __init__(self, f: int = 1, q: int | None = None) -> None:
        self.f = _nonneg_int(f, "f")
        self.q = None if q is None else _nonneg_int(q, "q")

    def __call__(self, updates, weights=None, oracle=None):
        u, a = _inputs(updates, weights)
        m = u.shape[0]
        q = m - self.f if self.q is None else self.q
        if not 1 <= q <= m:
            raise InvalidInput(f"multi-krum must select between 1 and m={m} updates, got {q}")
        scores = krum_scores(u, self.f)
        sel = torch.sort(torch.argsort(scores, stable=True)[:q]).values
        a_sel = torch.zeros_like(a)
        a_sel[sel] = a[sel]  # zero weight for the others: no copy of the selected rows
        out = weighted_sum(a_sel, u) / float(a[sel].sum())
        return AggregateOutput(out.to(u.dtype), 0, {"selected": sel.tolist(), "scores": scores})


_REGISTRY = {
    "fedavg": FedAvg,
    "rfa": RFA,
    "one-step-rfa": OneStepRFA,
    "rlr": RLR,
    "norm-clipping": NormClipping,
    "coordinate-median": CoordinateMedian,
    "trimmed-mean": TrimmedMean,
    "krum": Krum,
    "multi-krum": MultiKrum,
}
NAMES: tuple[str, ...] = tuple(_REGISTRY)


def make(name: str, **params: Any) -> Aggregator:
    """Build the aggregator ``name`` (one of :data:`NAMES`) with its parameters, e.g.
    ``make("rfa", nu=1e-6, budget=3)``, ``make("rlr", theta=4)``, ``make("trimmed-mean", rho=0.1)``,
    ``make("krum", f=2)``, ``make("multi-krum", f=2, q=5)``, ``make("norm-clipping", bound=1.0)``."""
    cls = _REGISTRY.get(name)
    if cls is None:
        raise InvalidInput(f"unknown aggregator {name!r}; choose one of {', '.join(NAMES)}")
    try:
        return cls(**params)
    except TypeError as exc:
        raise InvalidInput(f"bad parameters for {name!r}: {exc}") from exc
