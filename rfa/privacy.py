"""The s-privacy audit (Definition 1 (iv)) and the Proposition 3 bound, extended to unequal weights.

Pillutla, Kakade, Harchaoui, "Robust Aggregation for Federated Learning" (IEEE TSP 2022). An iterative
secure aggregate is *s-privacy preserving* if every call reveals only averages in which each client's
effective weight ``beta_i / sum_j beta_j <= s``. :class:`PrivacyAuditor` is an **auditor**: a test and
report facility, not the server. It is the only component that reads plaintexts (client weights,
distances); the server never sees them.

Proposition 3, extended to unequal ``alpha``
--------------------------------------------
In Algorithm 2, ``beta_i = alpha_i / s_i`` with ``s_i = max(nu, ||v - w_i||)``. Let ``nu_bar <= s_i`` for
every ``i`` (Prop. 2's ``nu_bar``) and ``D >= s_i`` for every ``i``; when ``v`` lies in the convex hull of
the points, ``D = max(B, nu)`` with ``B = max_{i,j} ||w_i - w_j||`` works. Then
``alpha_i / D <= beta_i <= alpha_i / nu_bar`` and, since ``x / (x + y)`` increases in ``x`` and decreases in
``y``, for the survivors ``S`` of the call (``A_S = sum_{j in S} alpha_j``)

    ``beta_i / sum_{j in S} beta_j <= alpha_i D / (alpha_i D + nu_bar (A_S - alpha_i))``,

which is increasing in ``alpha_i``, so the maximum effective weight is at most
``alpha_max D / (alpha_max D + nu_bar (A_S - alpha_max))``. With ``alpha_i = 1/m`` and ``D = B`` this is
the paper's ``B / (B + (m - 1) nu_bar)``. :func:`proposition3_bound` computes it; the auditor checks it on
every Weiszfeld call with both the paper's ``D = max(B, nu)`` (when ``points`` are given and the iterate
is in the hull) and the per-call ``D_r = max_i s_i^(r)``, ``nu_bar_r = min_i s_i^(r)`` (valid for any
iterate, e.g. one-step RFA's ``v^(0) = 0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from secagg.errors import InvalidInput
from rfa.oracle import OracleCall, SecureAverageOracle, check_points, pairwise_sq_distances

__all__ = ["PrivacyAuditor", "PrivacyViolation", "AuditRecord", "AuditedOracle", "proposition3_bound",
           "max_pairwise_distance", "MODES"]

MODES = ("record", "raise")


class PrivacyViolation(RuntimeError):
    """A call revealed an average in which some client's effective weight exceeds ``s`` (or, a bug,
    exceeded its Proposition 3 bound). Attributes: ``call_index``, ``client``, ``weight``, ``limit``."""

    def __init__(self, call_index: int, client: int, weight: float, limit: float, what: str = "s") -> None:
        self.call_index, self.client, self.weight, self.limit = call_index, client, weight, limit
        super().__init__(f"oracle call {call_index}: client {client} has effective weight {weight:.6g} "
                         f"> {what} = {limit:.6g}")


def proposition3_bound(alphas: torch.Tensor | Sequence[float] | int, B: float, nu_bar: float) -> float:
    """Upper bound on ``max_i beta_i / sum_j beta_j`` for a smoothed-Weiszfeld call (module docstring).

    Args:
        alphas: the weights ``alpha_j`` of the clients in the average, or an int ``m`` for ``alpha = 1/m``.
        B: an upper bound on every ``max(nu, ||v - w_i||)`` (e.g. the diameter of the points when ``v`` is
            in their hull; values below ``nu_bar`` are raised to ``nu_bar``).
        nu_bar: a lower bound on every ``max(nu, ||v - w_i||)``.

    Returns ``alpha_max D / (alpha_max D + nu_bar (A - alpha_max))`` with ``D = max(B, nu_bar)``; for
    ``alpha = 1/m`` this is ``D / (D + (m - 1) nu_bar)`` (Proposition 3).
    """
    if isinstance(alphas, int) and not isinstance(alphas, bool):
        if alphas < 1:
            raise InvalidInput(f"m must be >= 1, got {alphas}")
        a = torch.full((alphas,), 1.0 / alphas, dtype=torch.float64)
    else:
        a = torch.as_tensor(alphas, dtype=torch.float64).flatten()
        if a.numel() < 1 or not bool(torch.isfinite(a).all()) or not bool((a > 0).all()):
            raise InvalidInput("alphas must be finite and > 0")
    B, nu_bar = float(B), float(nu_bar)
    if not (math.isfinite(nu_bar) and nu_bar > 0) or not (math.isfinite(B) and B >= 0):
        raise InvalidInput(f"need finite B >= 0 and nu_bar > 0, got B={B}, nu_bar={nu_bar}")
    d = max(B, nu_bar)
    amax = float(a.max())
    rest = float(a.sum()) - amax
    return amax * d / (amax * d + nu_bar * max(rest, 0.0))


def _finite(points: torch.Tensor) -> torch.Tensor:
    """The rows of ``points`` without NaN/Inf (their clients refused every call)."""
    from rfa.oracle import _check_shape, _finite_rows

    p = _check_shape(points)
    ok = _finite_rows(p)
    return p if bool(ok.all()) else p[ok.to(p.device)]


def max_pairwise_distance(points: torch.Tensor) -> float:
    """``B = max_{i,j} ||w_i - w_j||`` (float64; see :func:`rfa.oracle.pairwise_sq_distances`)."""
    return float(pairwise_sq_distances(check_points(points)).max().sqrt())


@dataclass(frozen=True)
class AuditRecord:
    """The audit of one oracle call.

    Attributes:
        call_index: position in the audited sequence.
        effective_weights: ``beta_i / sum_{j in U3} beta_j`` (0 for dropped clients).
        max_weight: their maximum; ``argmax`` the client attaining it.
        s: the user's limit (or ``None``); ``ok``: ``max_weight <= s`` (True when ``s`` is None).
        bound: the Proposition 3 bound checked for this call (``None`` when not a Weiszfeld call);
        bound_paper: the same with ``D = max(B, nu)`` (when the points were given and the iterate is
            in their hull); paper_ok: whether ``max_weight`` is within it.
        kind: ``"mean"``, ``"weiszfeld"`` or ``"call"``.
    """

    call_index: int
    effective_weights: torch.Tensor
    max_weight: float
    argmax: int
    s: float | None
    ok: bool
    bound: float | None = None
    bound_paper: float | None = None
    kind: str = "call"
    paper_ok: bool = True


class PrivacyAuditor:
    """Audits oracle calls for s-privacy (Definition 1 (iv)) and Proposition 3. Reads plaintexts.

    Args:
        s: the limit on effective weights, ``0 < s <= 1`` (``None``: only record).
        mode: ``"record"`` (keep going, collect :attr:`violations`) or ``"raise"`` (raise
            :class:`PrivacyViolation` at the first violation; through :meth:`watch` this happens before the
            oracle's output is released).
    """

    def __init__(self, s: float | None = None, mode: str = "record") -> None:
        if s is not None and not (0.0 < float(s) <= 1.0):
            raise InvalidInput(f"s must be in (0, 1], got {s!r}")
        if mode not in MODES:
            raise InvalidInput(f"mode must be one of {MODES}, got {mode!r}")
        self.s = None if s is None else float(s)
        self.mode = mode
        self.records: list[AuditRecord] = []

    @property
    def violations(self) -> list[AuditRecord]:
        return [r for r in self.records if not r.ok]

    @property
    def max_weight(self) -> float:
        """Largest effective weight seen so far (0 if nothing audited)."""
        return max((r.max_weight for r in self.records), default=0.0)

    def audit_call(self, call: OracleCall, *, kind: str = "call", bound: float | None = None,
                   bound_paper: float | None = None) -> AuditRecord:
        """Audit one recorded call; raises :class:`PrivacyViolation` in ``"raise"`` mode if it breaks ``s``.

        ``bound`` is the per-call Proposition 3 bound, which holds for every iterate: exceeding it means
        the effective weights were not computed as Algorithm 2 says (raised always, worded as such).
        ``bound_paper`` (the paper's form, ``D = max(B, nu)``) assumes the iterate lies in the convex hull
        of the points; it is recorded (``AuditRecord.paper_ok``), never raised: a run whose start is
        outside the hull (one-step RFA's origin) may legitimately exceed it."""
        eff = call.effective_weights.to(torch.float64).cpu()
        i = int(torch.argmax(eff))
        mw = float(eff[i])
        ok = self.s is None or mw <= self.s
        paper_ok = bound_paper is None or mw <= bound_paper * (1 + 1e-9) + 1e-15
        rec = AuditRecord(len(self.records), eff, mw, i, self.s, ok, bound, bound_paper, kind, paper_ok)
        self.records.append(rec)
        if bound is not None and mw > bound * (1 + 1e-9) + 1e-15:
            raise PrivacyViolation(rec.call_index, i, mw, bound,
                                   "its per-call Proposition 3 bound (the weights were not alpha_i / s_i)")
        if not ok and self.mode == "raise":
            raise PrivacyViolation(rec.call_index, i, mw, float(self.s))
        return rec

    def audit_output(self, out: Any) -> list[AuditRecord]:
        """Audit what one aggregation revealed (:attr:`rfa.aggregators.AggregateOutput.revealed`): every
        revealed weighted average with the effective weights the server can read off it (e.g. RLR's
        ``n_k / N``, not its oracle call's uniform ``1 / m``), and every plaintext reveal as weight 1;
        vote counts have their own metric (:func:`rfa.aggregators.vote_exposure`) and are not audited here.
        The same record the training loop reports ``max_effective_weight`` from."""
        recs = []
        for r in out.revealed:
            if r.effective_weights is None:
                continue
            eff = r.effective_weights.to(torch.float64).cpu()
            i = int(torch.argmax(eff))
            mw = float(eff[i])
            ok = self.s is None or mw <= self.s
            rec = AuditRecord(len(self.records), eff, mw, i, self.s, ok, None, None, r.kind)
            self.records.append(rec)
            recs.append(rec)
            if not ok and self.mode == "raise":
                raise PrivacyViolation(rec.call_index, i, mw, float(self.s))
        return recs

    def audit_oracle(self, oracle: SecureAverageOracle, start: int = 0) -> list[AuditRecord]:
        """Audit ``oracle.calls[start:]`` (generic: effective weights against ``s``)."""
        return [self.audit_call(c) for c in oracle.calls[start:]]

    def audit_weiszfeld(self, result: Any, weights: torch.Tensor | None = None, *,
                        points: torch.Tensor | None = None, init_in_hull: bool | None = None) -> list[AuditRecord]:
        """Audit every call of a :class:`rfa.weiszfeld.WeiszfeldResult` with its Proposition 3 bounds.

        ``weights`` are the ``alpha`` of the run (default ``1/m``). For each Weiszfeld call ``r`` with
        survivors ``S``: ``bound`` uses ``D_r = max_{i in S} s_i``, ``nu_bar_r = min_{i in S} s_i`` with
        ``s_i = alpha_i / beta_i`` read from the weights the clients actually sent (so a weight raised to
        a public floor is accounted as sent); ``bound_paper`` (if ``points`` are given) uses
        ``D = max(B, nu)`` and the run's ``nu_bar`` -- valid when the iterate is in the convex hull of the
        points. ``init_in_hull=None`` (default) takes that from the run: the mean start is in the hull, and
        so is every later iterate; an explicit start (one-step RFA's origin, ``init="zero"``, a tensor) in
        general is not, so its first call gets only the per-call bound.
        """
        calls = result.oracle_calls
        m = calls[0].n_clients if calls else 0
        alpha = (torch.full((m,), 1.0 / m, dtype=torch.float64) if weights is None
                 else torch.as_tensor(weights, dtype=torch.float64).cpu())
        B = max_pairwise_distance(_finite(points)) if points is not None else None
        if init_in_hull is None:
            init_in_hull = getattr(result, "init", "mean") == "mean"
        nu = result.nu
        out = []
        for k, (call, kind) in enumerate(zip(calls, result.kinds)):
            if kind == "weiszfeld" and call.survivors:
                surv = torch.tensor(call.survivors, dtype=torch.long)
                a = alpha[surv]
                s = a / call.weights.to(torch.float64)[surv]
                bound = proposition3_bound(a, float(s.max()), float(s.min()))
                paper = None
                in_hull = init_in_hull or k > 0
                if B is not None and in_hull and math.isfinite(result.nu_bar):
                    paper = proposition3_bound(a, max(B, nu), result.nu_bar)
                out.append(self.audit_call(call, kind=kind, bound=bound, bound_paper=paper))
            else:
                out.append(self.audit_call(call, kind=kind))
        return out

    def watch(self, oracle: SecureAverageOracle) -> "AuditedOracle":
        """An oracle that delegates to ``oracle`` and audits every call before returning its output."""
        return AuditedOracle(oracle, self)


class AuditedOracle(SecureAverageOracle):
    """A :class:`SecureAverageOracle` wrapper: each call is audited by a :class:`PrivacyAuditor` before the
    average is handed back (so in ``"raise"`` mode a violating average is never released). ``calls`` is the
    inner oracle's list."""

    def __init__(self, inner: SecureAverageOracle, auditor: PrivacyAuditor) -> None:
        self.inner = inner
        self.auditor = auditor
        self.name = f"audited-{inner.name}"

    @property
    def calls(self) -> list[OracleCall]:  # type: ignore[override]
        return self.inner.calls

    def average(self, vectors, weights, *, weight_bound=None, value_bound=None, deviations=None):
        call = self.inner.average(vectors, weights, weight_bound=weight_bound, value_bound=value_bound,
                                  deviations=deviations)
        self.auditor.audit_call(call)
        return call

    def weight_floor(self, m, value_bound=None):
        return self.inner.weight_floor(m, value_bound)

    @property
    def value_bound(self):  # type: ignore[override]
        return self.inner.value_bound

    def _average(self, x, beta, **kw):  # pragma: no cover - delegated in average
        raise NotImplementedError

    def reset(self) -> None:
        self.inner.reset()
