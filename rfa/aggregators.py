"""Aggregators: robust (and plain) ways to combine client updates, each owning its defaults, its cost and
what it reveals.

Every aggregator is a small object with

- ``name`` (one of :data:`NAMES`), ``secure_compatible`` (computable through a secure average oracle, i.e.
  an iterative secure aggregate in the sense of Definition 1 of Pillutla, Kakade, Harchaoui, "Robust
  Aggregation for Federated Learning", IEEE TSP 2022),
- ``calls_per_aggregation`` (secure-aggregation rounds per aggregation; an upper bound when early stopping
  applies; ``None`` for plaintext-only ones), ``reveals`` (what the server learns, in words),
- ``sweep_params(rho, m)`` (its parameters in a study at corruption level ``rho`` with ``m`` clients per
  round) and ``accepted_params()``,
- ``__call__(updates (m, d), weights (m,) | None, oracle) -> AggregateOutput``. The output carries the
  oracle records of the calls made (``calls``) and, in ``revealed``, one :class:`Revealed` entry per
  quantity the server learned, with each client's effective weight in it (``audit`` part) -- the one
  record the privacy accounting reads.

Secure-compatible: ``fedavg``, ``rfa`` (breakdown-free default: smoothed Weiszfeld from the origin),
``rfa-paper`` (the paper's configuration: mean start, R = 3), ``one-step-rfa`` (Algorithm 3), ``rlr``
(robust learning rate, Ozdayi et al., AAAI 2021), ``norm-clipping``, ``centered-clipping`` (Karimireddy,
He, Jaggi, ICML 2021), ``clip-and-noise``, ``bucketing`` (Karimireddy, He, Jaggi, ICLR 2022; at bucket
level). Plaintext-only (they need every update in the clear and ignore the oracle):
``coordinate-median`` and ``trimmed-mean`` (weighted; ``-unweighted`` forms by name), ``krum``,
``multi-krum``, ``bulyan``.

Never crash on a client's data: a row with a NaN/Inf entry is refused by its client (the secure oracles
leave it out of every average; plaintext aggregators drop it, listed in ``info["refused"]``); a finite
update of any size is clipped by its own client to the public bound of the call. Only when no client is
left does a call stop, with :class:`~secagg.errors.ProtocolAborted`. Bad parameters or shapes raise
:class:`secagg.errors.InvalidInput`.

``make(name, **params)`` builds one; an unknown parameter is an error listing the accepted ones.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from secagg.discretize import positive_finite
from secagg.errors import InvalidInput, ProtocolAborted
from rfa.oracle import (IdealOracle, OracleCall, SecureAverageOracle, _check_shape, _col_chunk, _finite_rows,
                        check_weights, pairwise_sq_distances, weighted_sum)
from rfa.weiszfeld import geometric_median, smoothed_weiszfeld

__all__ = ["AggregateOutput", "Revealed", "Aggregator", "AggregatorBase", "FedAvg", "RFA", "RFAPaper", "OneStepRFA",
           "RLR", "NormClipping", "CenteredClipping", "ClipAndNoise", "Bucketing", "CoordinateMedian",
           "UnweightedCoordinateMedian", "TrimmedMean", "UnweightedTrimmedMean", "Krum", "MultiKrum", "Bulyan",
           "make", "NAMES", "REGISTRY", "rlr_plaintext", "pairwise_sq_distances", "krum_scores",
           "weighted_coordinate_median", "weighted_trimmed_mean", "max_effective_weight", "vote_exposure"]


@dataclass(frozen=True)
class Revealed:
    """One quantity the server learned during an aggregation.

    Attributes:
        kind: ``"weighted-average"`` (an average of the clients' vectors), ``"vote-counts"`` (integer
            per-coordinate sums of the clients' signs), ``"plaintext"`` (every update in the clear).
        what: a short description (matches the aggregator's ``reveals``).
        call: the oracle record it came from (``None`` for plaintext).
        effective_weights: *auditor's data*: ``(m,)`` float64, each client's weight in this average as the
            server can read it off (``beta_i / sum_{U3} beta_j`` for a plain oracle output; ``n_k / N`` for
            RLR's derived weighted mean; ``1`` for plaintext); ``None`` for vote counts.
        unanimous_share: *auditor's data*, vote counts only: the share of coordinates whose vote sum is
            ``+-|U3|``, where the server learns every client's sign.
    """

    kind: str
    what: str
    call: OracleCall | None = None
    effective_weights: torch.Tensor | None = None
    unanimous_share: float | None = None


@dataclass
class AggregateOutput:
    """The aggregate ``vector`` (``updates.dtype``/device), the oracle calls made, what the server learned
    (``revealed``), the oracle records (``calls``) and diagnostics (``info``)."""

    vector: torch.Tensor
    oracle_calls: int
    info: dict[str, Any] = field(default_factory=dict)
    revealed: list[Revealed] = field(default_factory=list)
    calls: list[OracleCall] = field(default_factory=list)


def max_effective_weight(out: AggregateOutput) -> float:
    """``s`` of Definition 1 (iv) measured on one aggregation: the largest effective weight of any client
    in any revealed average (1.0 when updates were revealed in plaintext; 0.0 when nothing was)."""
    best = 0.0
    for r in out.revealed:
        if r.effective_weights is not None and r.effective_weights.numel():
            best = max(best, float(r.effective_weights.max()))
    return best


def vote_exposure(out: AggregateOutput) -> float | None:
    """The largest share of coordinates at which a revealed vote count exposes every client's sign
    (``|vote| = |U3|``); ``None`` when no vote counts were revealed."""
    shares = [r.unanimous_share for r in out.revealed if r.unanimous_share is not None]
    return max(shares) if shares else None


def _average_reveal(call: OracleCall, what: str) -> Revealed:
    return Revealed("weighted-average", what, call, call.effective_weights.clone())


@runtime_checkable
class Aggregator(Protocol):
    name: str
    secure_compatible: bool
    calls_per_aggregation: int | None
    reveals: str

    def __call__(self, updates: torch.Tensor, weights: torch.Tensor | None,
                 oracle: SecureAverageOracle | None) -> AggregateOutput: ...


class AggregatorBase:
    """Common declarations: subclasses set ``name``, ``secure_compatible``, ``reveals`` and
    ``calls_per_aggregation`` and may override :meth:`sweep_params`."""

    name: ClassVar[str] = "aggregator"
    secure_compatible: ClassVar[bool] = True
    reveals: ClassVar[str] = ""
    calls_per_aggregation: int | None = 1

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        """Parameters in a study at corruption level ``rho`` with ``m`` clients per round (default: the
        constructor's defaults, i.e. ``{}``)."""
        return {}

    @classmethod
    def accepted_params(cls) -> tuple[str, ...]:
        """The constructor's keyword parameters."""
        sig = inspect.signature(cls.__init__)
        return tuple(n for n, p in sig.parameters.items()
                     if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k, None)!r}' for k in self.accepted_params())})"


def _inputs(updates: Any, weights: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Structural checks only: the rows' finiteness is each client's own business (refusal)."""
    u = _check_shape(updates, name="updates")
    a = check_weights(weights, u.shape[0], device=u.device, default=1.0)
    return u, a


def _plaintext_inputs(updates: Any, weights: Any) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The server sees every update: rows with a NaN/Inf entry are dropped (returned as ``refused``)."""
    u, a = _inputs(updates, weights)
    ok = _finite_rows(u)
    refused = (~ok).nonzero().flatten().tolist()
    if refused:
        if len(refused) == u.shape[0]:
            raise ProtocolAborted("masked-input", f"no client sent a finite update ({len(refused)} refused)")
        keep = ok.nonzero().flatten()
        u, a = u[keep.to(u.device)], a[keep.to(a.device)]
    return u, a, refused


def _need_oracle(oracle: Any) -> SecureAverageOracle:
    if not isinstance(oracle, SecureAverageOracle):
        raise InvalidInput(f"this aggregator needs a SecureAverageOracle, got {type(oracle).__name__}")
    return oracle


def _nonneg_int(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 0:
        raise InvalidInput(f"{name} must be a non-negative integer, got {x!r}")
    return x


def _pos_int(x: Any, name: str) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < 1:
        raise InvalidInput(f"{name} must be a positive integer, got {x!r}")
    return x


def _opt_bound(x: Any, name: str) -> float | None:
    return None if x is None else positive_finite(x, name)


def _client_clip(u: torch.Tensor, bound: float | None) -> tuple[torch.Tensor, int]:
    """Each client's ``u_i <- u_i min(1, bound / ||u_i||)`` (float64 norms; a row with an overflowing norm
    is scaled row-wise so it stays finite); rows with NaN/Inf stay non-finite (their clients refuse)."""
    if bound is None:
        return u, 0
    u64 = u.to(torch.float64)
    norms = torch.linalg.vector_norm(u64, dim=1)
    big = torch.isinf(norms) & torch.isfinite(u64).all(dim=1)
    if bool(big.any()):  # finite rows whose norm overflows: rescale by their max first
        mx = u64[big].abs().amax(dim=1, keepdim=True)
        norms[big] = torch.linalg.vector_norm(u64[big] / mx, dim=1) * mx.squeeze(1)
    factor = torch.clamp(bound / norms.clamp(min=1e-300), max=1.0)
    factor = torch.where(torch.isfinite(factor), factor, torch.ones_like(factor))
    out = (u64 * factor[:, None]).to(u.dtype)
    return out, int((factor < 1).sum())


# ---------------------------------------------------------------------------------- secure-compatible
class FedAvg(AggregatorBase):
    """FedAvg mean (McMahan et al. 2017): ``sum_i alpha_i u_i / sum_i alpha_i``, one oracle call."""

    name = "fedavg"
    reveals = "one weighted average of the updates (weights alpha)"
    calls_per_aggregation = 1

    def __init__(self) -> None:
        pass

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        call = o.average(u, a, weight_bound=float(a.max()))
        v = call.output.to(device=u.device, dtype=u.dtype)
        return AggregateOutput(v, 1, {"survivors": call.survivors, "refused": list(call.refused)},
                               [_average_reveal(call, self.reveals)], [call])


class RFA(AggregatorBase):
    """RFA (Algorithm 1 line 9) with a breakdown-free default: smoothed Weiszfeld (Algorithm 2) from the
    origin, ``budget`` oracle calls, each client clipping to a public L2 bound.

    Why the origin (the paper's configuration, :class:`RFAPaper`, starts at the mean). Write one
    Weiszfeld step from a broadcast ``v`` as ``T(v) = v + sum_i beta_i (w_i - v) / sum_i beta_i`` with
    ``beta_i = alpha_i / max(nu, ||v - w_i||)``. Every term ``beta_i (w_i - v)`` has norm at most
    ``alpha_i``, whatever ``w_i``. Split honest clients ``H`` (total weight ``A_H``, their step
    ``T_H(v)``, ``B_H = sum_H beta_i >= A_H / D_H`` with ``D_H = max_H max(nu, ||v - w_i||)``) from one
    attacker ``a`` of weight ``alpha_a`` at distance ``d_a >= D_H``:
    ``||T(v) - T_H(v)|| = beta_a ||(w_a - v) - (T_H(v) - v)|| / (B_H + beta_a)
    <= (alpha_a + beta_a D_H) / B_H <= 2 (alpha_a / A_H) D_H``
    (an attacker nearer than ``D_H`` moves it by at most ``2 D_H`` as well). The error of a step is
    ``O(D_H)``, the honest clients' distance from the broadcast point, and does *not* grow with the
    attacker's magnitude -- provided ``v`` itself does not depend on the attacker. The mean does
    (``||mean - honest mean|| = q V`` for an attacker of norm ``V``), and Proposition 2's error grows with
    ``||v^(0) - v*||^2``: one attacker of norm 1e8 among 20 moves the paper's R = 3 aggregate by ~1e4.
    The origin is public and, for model *updates* (footnote 4 of the paper), ``D_H(0) = max_H ||u_i||``,
    the honest updates' own scale; the later iterates are within ``O(D_H)`` of the honest points by the
    same bound, so after ``R`` steps the aggregate is within a constant (depending on ``R`` and ``q``)
    times the honest spread and norm of the geometric median of the honest updates, for any attacker
    magnitude. NaN/Inf updates are refused by their clients; finite ones of any size are clipped to
    ``clip`` (public; ``None``: the oracle's public value bound per coordinate), which keeps the
    discretization independent of the attacker. This is one-step RFA (Algorithm 3) followed by
    ``budget - 1`` further Weiszfeld steps.

    Args:
        nu: smoothing (paper: 1e-6). budget: oracle calls R (default 3, the paper's call count).
        init: ``"zero"`` (default) or ``"mean"`` (the paper's start, counted as one call).
        tol: optional relative-change stop (``||v^(r+1) - v^(r)|| <= tol ||v^(r)||``).
        clip: public L2 bound each client clips its update to before anything else (``None``: no L2 clip).
    """

    name = "rfa"
    reveals = "budget weighted averages of the updates (weights alpha_i / max(nu, ||v - u_i||))"
    _default_init: ClassVar[str] = "zero"

    def __init__(self, nu: float = 1e-6, budget: int = 3, init: Any = None, tol: float | None = None,
                 clip: float | None = None) -> None:
        self.nu = positive_finite(nu, "nu")
        self.budget = _pos_int(budget, "budget")
        init = self._default_init if init is None else init
        if isinstance(init, str) and init not in ("zero", "mean"):
            raise InvalidInput(f"init must be 'zero', 'mean' or a tensor, got {init!r}")
        if tol is not None and not (math.isfinite(float(tol)) and float(tol) >= 0):
            raise InvalidInput(f"tol must be finite and >= 0, got {tol!r}")
        self.init, self.tol = init, tol
        self.clip = _opt_bound(clip, "clip")
        self.calls_per_aggregation = self.budget

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        """R = 3 oracle calls and nu = 1e-6 (the paper's Section V-A), stated in every results file."""
        return {"budget": 3, "nu": 1e-6}

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        u, n_clipped = _client_clip(u, self.clip)
        bounded = o if self.clip is None else _Bounded(o, self.clip)
        res = smoothed_weiszfeld(u, a, oracle=bounded, nu=self.nu, budget=self.budget, init=self.init, tol=self.tol)
        revealed = [_average_reveal(c, self.reveals) for c in res.oracle_calls]
        return AggregateOutput(res.median, res.calls, {"objective": res.objective, "error_bound": res.error_bound,
                                                       "result": res, "refused": list(res.refused),
                                                       "clipped_clients": n_clipped}, revealed, list(res.oracle_calls))


class _Bounded(SecureAverageOracle):
    """An oracle view that passes a public ``value_bound`` on every call (the clients' clip bound)."""

    def __init__(self, inner: SecureAverageOracle, value_bound: float) -> None:
        self.inner, self.bound = inner, float(value_bound)
        self.name = inner.name

    @property
    def calls(self):  # type: ignore[override]
        return self.inner.calls

    def average(self, vectors, weights, *, weight_bound=None, value_bound=None, deviations=None):
        return self.inner.average(vectors, weights, weight_bound=weight_bound,
                                  value_bound=self.bound if value_bound is None else value_bound, deviations=deviations)

    def weight_floor(self, m, value_bound=None):
        return self.inner.weight_floor(m, self.bound if value_bound is None else value_bound)

    def _average(self, x, beta, **kw):  # pragma: no cover - delegated in average
        raise NotImplementedError


class RFAPaper(RFA):
    """The paper's RFA configuration, kept by name so its numbers stay reproducible: smoothed Weiszfeld
    from the weighted *mean* (counted as the first of ``budget = 3`` calls), ``nu = 1e-6``, no clipping.

    Its breakdown point in magnitude is 0 (documented, see :class:`RFA`): the mean start is controlled by
    an attacker, and ``R = 3`` steps do not undo it (one attacker of norm ``V`` among 20 moves the
    aggregate by about ``q V (q / (1 - q))^2``)."""

    name = "rfa-paper"
    reveals = "budget weighted averages of the updates (the mean, then weights alpha_i / max(nu, ||v - u_i||))"
    _default_init = "mean"


class OneStepRFA(AggregatorBase):
    """One-step RFA (Algorithm 3): ``sum_i beta_i u_i / sum_i beta_i`` with
    ``beta_i = alpha_i / max(nu, ||u_i||)`` (``v^(0) = 0``, ``R = 1``, on updates), one oracle call."""

    name = "one-step-rfa"
    reveals = "one weighted average of the updates (weights alpha_i / max(nu, ||u_i||))"
    calls_per_aggregation = 1

    def __init__(self, nu: float = 1e-6) -> None:
        self.nu = positive_finite(nu, "nu")

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        return {"nu": 1e-6}

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        res = smoothed_weiszfeld(u, a, oracle=_need_oracle(oracle), nu=self.nu, budget=1, init="zero")
        return AggregateOutput(res.median, res.calls, {"objective": res.objective, "result": res,
                                                       "refused": list(res.refused)},
                               [_average_reveal(c, self.reveals) for c in res.oracle_calls], list(res.oracle_calls))


def rlr_plaintext(updates: torch.Tensor, weights: torch.Tensor | None, theta: float, eta: float = 1.0) -> torch.Tensor:
    """Plaintext RLR (Ozdayi et al., AAAI 2021): eq. 5 ``eta_theta,j = eta`` if
    ``|sum_k sgn(u_kj)| >= theta`` else ``-eta``; eq. 6 returns ``eta_theta * sum_k n_k u_k / sum_k n_k``
    (the server adds it to the model)."""
    u, a = _inputs(updates, weights)
    votes = torch.sign(u).sum(dim=0).to(torch.float64)
    lr = torch.where(votes.abs() >= theta, eta, -eta).to(torch.float64)
    mean = weighted_sum(a, u) / float(a.sum())
    return (lr * mean).to(u.dtype)


class RLR(AggregatorBase):
    """Robust learning rate (Ozdayi, Kantarcioglu, Gel, AAAI 2021), eqs. 5-6, in ONE oracle call.

    Plaintext form: :func:`rlr_plaintext`. Secure form: client ``k`` sends the ``(2d + 1)``-vector
    ``z_k = (n_k u_k, sgn(u_k), n_k)`` (``n_k`` normalised by the public ``max n``) with *uniform* oracle
    weight 1, the update part clipped by its client to the public bound ``max(1, c)`` of the oracle (the
    signs and ``n_k`` lie in ``[-1, 1]``, so they are never clipped and the votes stay exact). The oracle
    returns the
    plain mean over the ``m'`` survivors ``(sum n_k u_k / m', S / m', N / m')`` with ``S = sum_k sgn(u_k)``
    the vote sums and ``N = sum n_k``; the server knows ``m' = |U3|``, so ``S = round(m' * mean_S)`` (an
    integer vector: rounding removes the oracle's rounding error as long as ``m' e < 1/2``, checked) and
    the weighted mean is ``mean_1 / mean_N``. Then eq. 5 and 6 as above.

    What the server learns (the accounting): the ``n_k``-weighted mean, i.e. each survivor's effective
    weight is ``n_k / N`` (not ``1 / m'``: the division by ``N`` is the server's), and the vote sums,
    which expose every client's sign wherever ``|S_j| = m'`` (:attr:`Revealed.unanimous_share`).
    """

    name = "rlr"
    reveals = ("one average of (n_k u_k, sgn(u_k), n_k): the n_k-weighted mean of the updates (weights n_k / N), "
               "the per-coordinate sign-vote sums and N")
    calls_per_aggregation = 1

    def __init__(self, theta: float = 4.0, eta: float = 1.0) -> None:
        self.theta = positive_finite(theta, "theta")
        self.eta = positive_finite(eta, "eta")

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        return {"theta": 4.0}

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        m, d = u.shape
        an = a / float(a.max())  # any public normalisation cancels in mean_1 / mean_N; keeps |z| <= max|u|, 1
        z = torch.empty((m, 2 * d + 1), dtype=torch.float64, device=u.device)
        z[:, :d] = u.to(torch.float64) * an[:, None]
        z[:, d:2 * d] = torch.sign(u).to(torch.float64)
        z[:, 2 * d] = an
        c = o.value_bound
        if c is not None:  # each client clips its update part to the public bound; signs and n_k lie in [-1, 1]
            c = max(1.0, float(c))
            z[:, :d].clamp_(-c, c)
        ones = torch.ones(m, dtype=torch.float64, device=u.device)
        call = o.average(z, ones, weight_bound=1.0, value_bound=c)
        avg = call.output.to(device=u.device, dtype=torch.float64)
        mp = len(call.survivors)
        votes = torch.round(avg[d:2 * d] * mp)
        vote_err = mp * call.rounding_bound
        if not vote_err < 0.5:
            raise InvalidInput(f"oracle error {call.rounding_bound} too large to recover integer sign votes "
                               f"from {mp} survivors")
        den = float(avg[2 * d])
        mean = avg[:d] / den
        lr = torch.where(votes.abs() >= self.theta, self.eta, -self.eta).to(torch.float64)
        out = (lr * mean).to(device=u.device, dtype=u.dtype)
        eff = torch.zeros(m, dtype=torch.float64)
        if call.survivors:
            idx = torch.tensor(call.survivors, dtype=torch.long)
            sel = an.cpu()[idx]
            eff[idx] = sel / sel.sum()
        unanimous = float((votes.abs() == mp).double().mean()) if mp else 0.0
        revealed = [Revealed("weighted-average", "the n_k-weighted mean of the updates", call, eff),
                    Revealed("vote-counts", "per-coordinate sign-vote sums", call, None, unanimous)]
        return AggregateOutput(out, 1, {"votes": votes, "flipped": int((lr < 0).sum()), "survivors": call.survivors,
                                        "refused": list(call.refused)}, revealed, [call])


class NormClipping(AggregatorBase):
    """Client-side L2 norm clipping then mean (Sun et al. 2019, the paper's [84]):
    ``u_i <- u_i min(1, bound / ||u_i||)`` on the client, then ``sum alpha_i u_i / sum alpha_i`` (1 call,
    public value bound ``bound``)."""

    name = "norm-clipping"
    reveals = "one weighted average of the clipped updates"
    calls_per_aggregation = 1

    def __init__(self, bound: float = 1.0) -> None:
        self.bound = positive_finite(bound, "bound")

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        return {"bound": CLIP_BOUND}

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        clipped, n = _client_clip(u, self.bound)
        call = o.average(clipped, a, weight_bound=float(a.max()), value_bound=self.bound)
        v = call.output.to(device=u.device, dtype=u.dtype)
        return AggregateOutput(v, 1, {"clipped_clients": n, "refused": list(call.refused)},
                               [_average_reveal(call, self.reveals)], [call])


CLIP_BOUND = 0.5
"""The public L2 bound of the clipping aggregators in a study (``sweep_params``)."""


class CenteredClipping(AggregatorBase):
    """Centered clipping (Karimireddy, He, Jaggi, "Learning from History for Byzantine Robust
    Optimization", ICML 2021): ``v <- v + sum_i alpha_i clip_tau(u_i - v) / sum_i alpha_i``, ``iters``
    times, with ``clip_tau(x) = x min(1, tau / ||x||)``.

    Secure form: the server broadcasts ``v``; each client clips ``u_i - v`` locally against it and the
    oracle averages the clipped differences (one secure average per iteration, public value bound
    ``tau``). Start ``v^(0)``: ``"previous"`` (default; the previous aggregation's output, public, as
    the paper's momentum; the origin in the first round) or ``"zero"``. Each step moves ``v`` by at most
    ``tau``, and one client by at most ``tau alpha_a / A`` whatever its update: bounded influence for any
    attacker magnitude.
    """

    name = "centered-clipping"
    reveals = "iters weighted averages (weights alpha) of the clipped differences clip_tau(u_i - v)"

    def __init__(self, tau: float = CLIP_BOUND, iters: int = 3, init: str = "previous") -> None:
        self.tau = positive_finite(tau, "tau")
        self.iters = _pos_int(iters, "iters")
        if init not in ("previous", "zero"):
            raise InvalidInput(f"init must be 'previous' or 'zero', got {init!r}")
        self.init = init
        self.calls_per_aggregation = self.iters
        self._previous: torch.Tensor | None = None

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        d = u.shape[1]
        prev = self._previous if self.init == "previous" else None
        v = torch.zeros(d, dtype=torch.float64, device=u.device) if prev is None or prev.shape != (d,) else \
            prev.to(device=u.device, dtype=torch.float64).clone()
        calls, revealed = [], []
        for _ in range(self.iters):
            diff, _n = _client_clip(u.to(torch.float64) - v, self.tau)
            call = o.average(diff, a, weight_bound=float(a.max()), value_bound=self.tau)
            calls.append(call)
            revealed.append(_average_reveal(call, self.reveals))
            v = v + call.output.to(device=u.device, dtype=torch.float64)
        self._previous = v.detach().clone()
        refused = sorted({i for c in calls for i in c.refused})
        return AggregateOutput(v.to(u.dtype), len(calls), {"refused": refused}, revealed, calls)

    def reset(self) -> None:
        """Forget the previous aggregate (a new run)."""
        self._previous = None


class ClipAndNoise(AggregatorBase):
    """Client clipping then the mean plus Gaussian noise: the baseline Ozdayi, Kantarcioglu, Gel ("Defending
    against Backdoors in Federated Learning with Robust Learning Rate", AAAI 2021) compare RLR with (after
    Sun et al., "Can You Really Backdoor Federated Learning?", 2019). Each client clips its update to the
    public L2 ``bound``; one secure average; the server adds ``N(0, sigma^2 I)`` to the released mean
    (seeded: ``seed`` and the aggregation count).
    """

    name = "clip-and-noise"
    reveals = "one weighted average of the clipped updates (before the server's noise)"
    calls_per_aggregation = 1

    def __init__(self, bound: float = CLIP_BOUND, sigma: float = 1e-3, seed: int = 0) -> None:
        self.bound = positive_finite(bound, "bound")
        s = float(sigma)
        if not (math.isfinite(s) and s >= 0):
            raise InvalidInput(f"sigma must be finite and >= 0, got {sigma!r}")
        self.sigma = s
        self.seed = _nonneg_int(seed, "seed")
        self._count = 0

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        clipped, n = _client_clip(u, self.bound)
        call = o.average(clipped, a, weight_bound=float(a.max()), value_bound=self.bound)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._count)
        self._count += 1
        noise = torch.randn(u.shape[1], generator=gen, dtype=torch.float64) * self.sigma
        v = (call.output + noise).to(device=u.device, dtype=u.dtype)
        return AggregateOutput(v, 1, {"clipped_clients": n, "refused": list(call.refused)},
                               [_average_reveal(call, self.reveals)], [call])


class Bucketing(AggregatorBase):
    """Bucketing (Karimireddy, He, Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets via
    Bucketing", ICLR 2022) at bucket level: a seeded random permutation splits the clients into buckets of
    ``bucket_size``; each bucket mean is one secure average over that bucket's clients (the calls run in
    parallel: every client takes part in one secure aggregation, ``calls_per_aggregation = 1``; the oracle
    records ``ceil(m / bucket_size)`` calls); then ``base`` (a plaintext rule: ``coordinate-median``,
    ``trimmed-mean``, ``krum`` or ``geometric-median``) combines the revealed bucket means, weighted by the
    buckets' total weights. Each client's effective weight in a revealed mean is ``alpha_i / (its bucket's
    total weight)``: ``1 / bucket_size`` for equal weights, more for a large client paired with small ones
    (measured 0.85 with bucket_size 2 on the Dirichlet-partitioned quick study): the privacy cost the bucket
    size buys robustness with."""

    name = "bucketing"
    reveals = "one weighted average of the updates per bucket of bucket_size clients"
    calls_per_aggregation = 1
    BASES = ("coordinate-median", "trimmed-mean", "krum", "geometric-median")

    def __init__(self, bucket_size: int = 2, base: str = "geometric-median", rho: float = 0.1, f: int = 1,
                 seed: int = 0) -> None:
        self.bucket_size = _pos_int(bucket_size, "bucket_size")
        if base not in self.BASES:
            raise InvalidInput(f"base must be one of {', '.join(self.BASES)}, got {base!r}")
        self.base = base
        self.rho, self.f = float(rho), _nonneg_int(f, "f")
        if not 0.0 <= self.rho < 0.5:
            raise InvalidInput(f"rho must be in [0, 0.5), got {rho!r}")
        self.seed = _nonneg_int(seed, "seed")
        self._count = 0

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        return {"bucket_size": 2, "base": "geometric-median"}

    def __call__(self, updates, weights, oracle):
        u, a = _inputs(updates, weights)
        o = _need_oracle(oracle)
        m, d = u.shape
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self._count)
        self._count += 1
        perm = torch.randperm(m, generator=gen)
        means, totals, calls, revealed = [], [], [], []
        refused_ids: set[int] = set()
        starts = list(range(0, m, self.bucket_size))
        if len(starts) > 1 and m - starts[-1] < self.bucket_size:
            starts.pop()  # a short last bucket joins the one before (no bucket smaller than bucket_size)
        for j, lo in enumerate(starts):
            hi = starts[j + 1] if j + 1 < len(starts) else m
            idx = torch.sort(perm[lo:hi]).values
            try:
                call = o.average(u[idx.to(u.device)], a[idx.to(a.device)], weight_bound=float(a.max()))
            except ProtocolAborted:
                continue  # a bucket whose clients all refused (or dropped) contributes nothing
            calls.append(call)
            refused_ids.update(int(idx[k]) for k in call.refused)
            eff = torch.zeros(m, dtype=torch.float64)
            eff[idx] = call.effective_weights
            revealed.append(Revealed("weighted-average", self.reveals, call, eff))
            means.append(call.output)
            surv = idx[list(call.survivors)]
            totals.append(float(a.cpu()[surv].sum()))
        if not means:
            raise ProtocolAborted("masked-input", "every bucket's secure average failed")
        bm = torch.stack(means).to(torch.float64)
        bw = torch.tensor(totals, dtype=torch.float64)
        if self.base == "geometric-median":
            v = geometric_median(bm, bw, tol=1e-8, max_iter=1000)  # the server's plaintext step on k means
        elif self.base == "coordinate-median":
            v = weighted_coordinate_median(bm, bw)
        elif self.base == "trimmed-mean":
            v = weighted_trimmed_mean(bm, bw, self.rho)
        else:
            f = min(self.f, max(0, (bm.shape[0] - 3) // 2))
            v = bm[int(torch.argmin(krum_scores(bm, f)))] if bm.shape[0] > 2 * f + 2 else bm.mean(0)
        refused = sorted(refused_ids)
        return AggregateOutput(v.to(device=u.device, dtype=u.dtype), len(calls),
                               {"buckets": len(means), "refused": refused}, revealed, calls)


# --------------------------------------------------------------------------------- plaintext-only
class _Plaintext(AggregatorBase):
    secure_compatible = False
    calls_per_aggregation = None
    reveals = "every client's update in plaintext (not computable on masked inputs; the oracle is ignored)"

    def _out(self, vector: torch.Tensor, info: dict[str, Any], m: int, refused: list[int]) -> AggregateOutput:
        info["refused"] = refused
        return AggregateOutput(vector, 0, info, [Revealed("plaintext", self.reveals, None,
                                                          torch.ones(m, dtype=torch.float64))], [])


def weighted_coordinate_median(u: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    """Per coordinate, the weighted median of ``u_ij`` with weights ``alpha_i`` (float64 ``(d,)``): the
    smallest sorted value whose cumulative weight reaches half the total; where the cumulative weight
    equals exactly half (to ``1e-12`` relative), the mean of that value and the next (so equal weights
    give the usual median, the mean of the two middle values for even ``m``)."""
    m, d = u.shape
    w = a.to(device=u.device, dtype=torch.float64)
    total = float(w.sum())
    half = total / 2
    tol = 1e-12 * total
    out = torch.empty(d, dtype=torch.float64, device=u.device)
    step = _col_chunk(m)
    for lo in range(0, d, step):
        srt, order = torch.sort(u[:, lo:lo + step].to(torch.float64), dim=0)
        cum = torch.cumsum(w[order], dim=0)
        k = torch.searchsorted(cum.T.contiguous(), torch.full((cum.shape[1], 1), half - tol, dtype=torch.float64,
                                                             device=u.device)).squeeze(1).clamp(max=m - 1)
        cols = torch.arange(cum.shape[1], device=u.device)
        lower = srt[k, cols]
        exact = (cum[k, cols] - half).abs() <= tol
        upper = srt[(k + 1).clamp(max=m - 1), cols]
        out[lo:lo + step] = torch.where(exact & (k + 1 < m), (lower + upper) / 2, lower)
    return out


def weighted_trimmed_mean(u: torch.Tensor, a: torch.Tensor, rho: float) -> torch.Tensor:
    """Per coordinate, trim weight ``rho * sum(alpha)`` from each end of the sorted values (a value on the
    boundary is trimmed fractionally) and average the remaining weight (float64 ``(d,)``). With equal
    weights and ``rho m`` an integer this is the usual trimmed mean. Needs ``rho < 1/2``."""
    m, d = u.shape
    w = a.to(device=u.device, dtype=torch.float64)
    total = float(w.sum())
    t = rho * total
    out = torch.empty(d, dtype=torch.float64, device=u.device)
    step = _col_chunk(m)
    for lo in range(0, d, step):
        srt, order = torch.sort(u[:, lo:lo + step].to(torch.float64), dim=0)
        ws = w[order]
        hi = torch.cumsum(ws, dim=0)
        low = hi - ws
        kept = (torch.minimum(hi, torch.full_like(hi, total - t)) - torch.maximum(low, torch.full_like(low, t))).clamp(min=0)
        out[lo:lo + step] = (kept * srt).sum(0) / kept.sum(0)
    return out


class CoordinateMedian(_Plaintext):
    """Weighted coordinate-wise median (Yin et al. 2018, the paper's [52], weighted by client weight as
    ``rho`` is a share of weight, eq. 5): :func:`weighted_coordinate_median`. Plaintext-only."""

    name = "coordinate-median"

    def __init__(self) -> None:
        pass

    def __call__(self, updates, weights=None, oracle=None):
        u, a, refused = _plaintext_inputs(updates, weights)
        return self._out(weighted_coordinate_median(u, a).to(u.dtype), {}, u.shape[0], refused)


class UnweightedCoordinateMedian(_Plaintext):
    """Coordinate-wise median ignoring client weights: ``v_j = median_i u_ij`` (the mean of the two middle
    values for even ``m``). Plaintext-only."""

    name = "coordinate-median-unweighted"

    def __init__(self) -> None:
        pass

    def __call__(self, updates, weights=None, oracle=None):
        u, _, refused = _plaintext_inputs(updates, weights)
        m, d = u.shape
        out = torch.empty(d, dtype=torch.float64, device=u.device)
        step = _col_chunk(m)
        for lo in range(0, d, step):
            srt = torch.sort(u[:, lo:lo + step].to(torch.float64), dim=0).values
            out[lo:lo + step] = (srt[(m - 1) // 2] + srt[m // 2]) / 2
        return self._out(out.to(u.dtype), {}, m, refused)


def _check_rho(rho: Any) -> float:
    r = float(rho)
    if not (0.0 <= r < 0.5):
        raise InvalidInput(f"rho must be in [0, 0.5), got {rho!r}")
    return r


class TrimmedMean(_Plaintext):
    """Weighted coordinate-wise trimmed mean (Yin et al. 2018, trimmed by weight): trim weight
    ``rho * sum(alpha)`` from each end of every coordinate (:func:`weighted_trimmed_mean`). ``rho`` is the
    known corruption level (a share of weight, eq. 5). Plaintext-only."""

    name = "trimmed-mean"

    def __init__(self, rho: float = 0.1) -> None:
        self.rho = _check_rho(rho)

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        return {"rho": float(rho)}

    def __call__(self, updates, weights=None, oracle=None):
        u, a, refused = _plaintext_inputs(updates, weights)
        return self._out(weighted_trimmed_mean(u, a, self.rho).to(u.dtype), {"trimmed_weight_each_side": self.rho},
                         u.shape[0], refused)


class UnweightedTrimmedMean(_Plaintext):
    """Coordinate-wise trimmed mean ignoring weights: drop the ``k = ceil(rho m)`` largest and ``k``
    smallest values of every coordinate, average the remaining ``m - 2k``; needs ``2k < m``."""

    name = "trimmed-mean-unweighted"

    def __init__(self, rho: float = 0.1) -> None:
        self.rho = _check_rho(rho)

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        return {"rho": float(rho)}

    def __call__(self, updates, weights=None, oracle=None):
        u, _, refused = _plaintext_inputs(updates, weights)
        m, d = u.shape
        k = math.ceil(self.rho * m - 1e-9)
        if 2 * k >= m:
            raise InvalidInput(f"trimming {k} from each side of {m} values leaves nothing")
        out = torch.empty(d, dtype=torch.float64, device=u.device)
        step = _col_chunk(m)
        for lo in range(0, d, step):
            srt = torch.sort(u[:, lo:lo + step].to(torch.float64), dim=0).values
            out[lo:lo + step] = srt[k:m - k].mean(dim=0)
        return self._out(out.to(u.dtype), {"trimmed_each_side": k}, m, refused)


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


def _f_left(f: int, m: int, refused: list[int], k: int) -> int:
    """The known corruption count once ``refused`` clients dropped out: unchanged when none did; else at
    most what the ``m`` finite updates left allow (``m >= k f + 3``), so a run never stops because the
    clients that sent NaN/Inf are gone (they were the likeliest corrupted ones)."""
    return f if not refused else max(0, min(f, (m - 3) // k))


def _krum_f(rho: float, m: int) -> int:
    # Krum needs m > 2 f + 2: with few clients per round f is capped there (and said in the docs)
    return max(0, min(int(math.ceil(rho * m - 1e-9)), (m - 3) // 2))


class Krum(_Plaintext):
    """Krum (Blanchard et al. 2017): the update with the smallest score (:func:`krum_scores`), ties to the
    lowest index. ``f`` = known number of corrupt clients. Plaintext-only."""

    name = "krum"

    def __init__(self, f: int = 1) -> None:
        self.f = _nonneg_int(f, "f")

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        return {"f": _krum_f(rho, m)}

    def __call__(self, updates, weights=None, oracle=None):
        u, _, refused = _plaintext_inputs(updates, weights)
        scores = krum_scores(u, _f_left(self.f, u.shape[0], refused, 2))
        i = int(torch.argmin(scores))
        return self._out(u[i].clone(), {"selected": [i], "scores": scores}, u.shape[0], refused)


class MultiKrum(_Plaintext):
    """Multi-Krum (Blanchard et al. 2017): the ``q`` updates with the smallest Krum scores (default
    ``q = m - f``), averaged with their weights ``alpha``. Plaintext-only."""

    name = "multi-krum"

    def __init__(self, f: int = 1, q: int | None = None) -> None:
        self.f = _nonneg_int(f, "f")
        self.q = None if q is None else _nonneg_int(q, "q")

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        return {"f": _krum_f(rho, m)}

    def __call__(self, updates, weights=None, oracle=None):
        u, a, refused = _plaintext_inputs(updates, weights)
        m = u.shape[0]
        f = _f_left(self.f, m, refused, 2)
        q = m - f if self.q is None else min(self.q, m) if refused else self.q
        if not 1 <= q <= m:
            raise InvalidInput(f"multi-krum must select between 1 and m={m} updates, got {q}")
        scores = krum_scores(u, f)
        sel = torch.sort(torch.argsort(scores, stable=True)[:q]).values
        a_sel = torch.zeros_like(a)
        a_sel[sel] = a[sel]  # zero weight for the others: no copy of the selected rows
        out = weighted_sum(a_sel, u) / float(a[sel].sum())
        return self._out(out.to(u.dtype), {"selected": sel.tolist(), "scores": scores}, m, refused)


class Bulyan(_Plaintext):
    """Bulyan (El Mhamdi, Guerraoui, Rouault, "The Hidden Vulnerability of Distributed Learning in
    Byzantium", ICML 2018) over Krum: select ``theta = m - 2f`` updates by repeatedly taking the Krum
    winner among those left (scores recomputed each time, ``f`` known corruptions), then per coordinate
    average the ``beta = theta - 2f`` selected values closest to their median. Needs ``m >= 4f + 3``.
    Plaintext-only, unweighted (as in the paper)."""

    name = "bulyan"

    def __init__(self, f: int = 1) -> None:
        self.f = _nonneg_int(f, "f")

    @classmethod
    def sweep_params(cls, rho: float, m: int) -> dict[str, Any]:
        return {"f": max(0, min(int(math.ceil(rho * m - 1e-9)), (m - 3) // 4))}

    def __call__(self, updates, weights=None, oracle=None):
        u, _, refused = _plaintext_inputs(updates, weights)
        m, d = u.shape
        f = _f_left(self.f, m, refused, 4)
        if m < 4 * f + 3:
            raise InvalidInput(f"Bulyan needs m >= 4f + 3, got m={m}, f={f}")
        theta = m - 2 * f
        left = list(range(m))
        chosen: list[int] = []
        u64 = u.to(torch.float64)
        while len(chosen) < theta:
            rest = u64[left]
            if len(left) > 2 * f + 2:
                k = int(torch.argmin(krum_scores(rest, f)))
            else:  # too few left for Krum's condition: the one nearest the others
                k = int(torch.argmin(pairwise_sq_distances(rest).sum(1)))
            chosen.append(left.pop(k))
        sel = u64[sorted(chosen)]
        beta = theta - 2 * f
        med = sel.median(dim=0).values
        closest = torch.argsort((sel - med).abs(), dim=0, stable=True)[:beta]
        out = torch.gather(sel, 0, closest).mean(0)
        return self._out(out.to(u.dtype), {"selected": sorted(chosen)}, m, refused)


REGISTRY: dict[str, type] = {cls.name: cls for cls in (
    FedAvg, RFA, RFAPaper, OneStepRFA, RLR, NormClipping, CenteredClipping, ClipAndNoise, Bucketing,
    CoordinateMedian, UnweightedCoordinateMedian, TrimmedMean, UnweightedTrimmedMean, Krum, MultiKrum, Bulyan)}
NAMES: tuple[str, ...] = tuple(REGISTRY)


def make(name: str, **params: Any) -> Aggregator:
    """Build the aggregator ``name`` (one of :data:`NAMES`) with its parameters, e.g.
    ``make("rfa", nu=1e-6, budget=3)``, ``make("rlr", theta=4)``, ``make("trimmed-mean", rho=0.1)``,
    ``make("krum", f=2)``, ``make("centered-clipping", tau=0.5, iters=3)``, ``make("bucketing",
    bucket_size=2, base="coordinate-median")``. An unknown parameter raises :class:`InvalidInput` naming
    the accepted ones."""
    cls = REGISTRY.get(name)
    if cls is None:
        raise InvalidInput(f"unknown aggregator {name!r}; choose one of {', '.join(NAMES)}")
    accepted = cls.accepted_params()
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise InvalidInput(f"unknown parameter(s) {', '.join(unknown)} for {name!r}; accepted: "
                           f"{', '.join(accepted) if accepted else 'none'}")
    return cls(**params)
