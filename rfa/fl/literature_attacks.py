"""The strongest update attacks of the Byzantine-robust FL literature, each one corruption.

All are model writes in the first threat model of :mod:`rfa.fl.attacks` (the corrupted client
changes its update, then follows the protocol). Unless stated, the attackers are omniscient as in
the papers' strongest settings: they know every selected client's benign update of the round
(``updates`` before corruption, the corrupted clients' own benign updates included) and, for
the aggregator-aware attacks, the server's aggregation rule. Every corrupted client of the round
sends the same vector unless stated. Notation: ``D_1..D_m`` the benign updates of the round,
``mu`` their mean, ``f`` the number of corrupted clients among them.

- ``sign-flip``: ``-scale * D_i`` (each attacker reverses its own update; Allen-Zhu et al.,
  "Byzantine-resilient non-convex SGD", ICLR 2021, and Karimireddy, He, Jaggi, "Learning from
  history for Byzantine robust optimization", ICML 2021 use it as a baseline attack).
- ``min-max`` / ``min-sum``: Shejwalkar and Houmansadr, "Manipulating the Byzantine: Optimizing
  model poisoning attacks and defenses for federated learning" (NDSS 2021), AGR-agnostic attacks
  ``mu + gamma p`` with the largest ``gamma`` that keeps the malicious update inside the benign
  cloud (solved in closed form here, not by the paper's search).
- ``fang-median`` / ``fang-krum``: Fang, Cao, Jia, Gong, "Local model poisoning attacks to
  Byzantine-robust federated learning" (USENIX Security 2020), full-knowledge attacks on the
  coordinate median / trimmed mean and on Krum.
- ``model-replacement``: Bagdasaryan, Veit, Hua, Estrin, Shmatikov, "How to backdoor federated
  learning" (AISTATS 2020): train on trojaned data, boost the update to replace the global model,
  optionally constrained to a norm bound (constrain-and-scale).
- ``opt-ipm`` / ``opt-alie``: IPM and ALIE with their scale chosen every round to maximise the
  damage to the aggregator actually used (an aggregator-aware line search, as the Opt-IPM and
  Opt-ALIE attacks of the ByzFL library do).
- ``protocol-deviation``: the second threat model, a client that deviates from the secure
  aggregation protocol (claims the largest public weight, skips the public clip).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from secagg.errors import InvalidInput

from .attacks import AttackContext, _Trojan, _UpdateCorruption, register

__all__ = ["SignFlip", "MinMax", "MinSum", "FangMedian", "FangKrum", "ModelReplacement", "OptIPM", "OptALIE",
           "ProtocolDeviation", "perturbation", "min_max_gamma", "min_sum_gamma", "krum_choice"]


def _benign(updates: torch.Tensor, mask: torch.Tensor, knowledge: str) -> torch.Tensor:
    """The benign updates the attackers know: every selected client's (``all``) or only the corrupted
    clients' own benign updates (``own``, the partial-knowledge setting)."""
    ref = updates if knowledge == "all" else updates[mask]
    return ref.to(torch.float64)


def _check_knowledge(name: str, knowledge: str) -> None:
    if knowledge not in ("all", "own"):
        raise InvalidInput(f"corruption {name!r}: knowledge must be 'all' or 'own', got {knowledge!r}")


def perturbation(ref: torch.Tensor, kind: str) -> torch.Tensor:
    """Shejwalkar and Houmansadr's perturbation vectors ``p`` (float64): ``unit`` = -mu / ||mu||
    (inverse unit vector), ``std`` = -sigma (inverse coordinate-wise standard deviation), ``sign`` =
    -sign(mu) (inverse sign), with mu, sigma over the rows of ``ref``."""
    mu = ref.mean(0)
    if kind == "unit":
        n = float(mu.norm())
        return -mu / n if n > 0 else torch.zeros_like(mu)
    if kind == "std":
        return -(ref.std(0) if ref.shape[0] >= 2 else torch.zeros_like(mu))
    if kind == "sign":
        return -torch.sign(mu)
    raise InvalidInput(f"perturbation must be 'unit', 'std' or 'sign', got {kind!r}")


def _sq_dists(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared distances of the rows of a float64 matrix, exact to float64 rounding."""
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist").pow(2)


def min_max_gamma(ref: torch.Tensor, p: torch.Tensor) -> float:
    """The largest ``gamma >= 0`` with ``max_i ||mu + gamma p - D_i|| <= max_{i,j} ||D_i - D_j||``.

    With ``a_i = mu - D_i`` each constraint is the quadratic ``gamma^2 |p|^2 + 2 gamma <a_i, p> +
    |a_i|^2 - R^2 <= 0``; ``gamma = 0`` satisfies all of them (``|a_i| <= R``: the mean lies in the
    convex hull), so the feasible set is ``[0, min_i gamma_i]`` with ``gamma_i`` the positive root."""
    pp = float(p.pow(2).sum())
    if pp == 0.0 or ref.shape[0] < 2:
        return 0.0
    r2 = float(_sq_dists(ref).max())
    a = ref.mean(0) - ref
    b = a @ p
    c = a.pow(2).sum(1) - r2
    disc = (b * b - pp * c).clamp_min(0.0)
    return max(0.0, float(((-b + disc.sqrt()) / pp).min()))


def min_sum_gamma(ref: torch.Tensor, p: torch.Tensor) -> float:
    """The largest ``gamma >= 0`` with ``sum_i ||mu + gamma p - D_i||^2 <= max_i sum_j ||D_i - D_j||^2``.

    The cross term vanishes (``sum_i (mu - D_i) = 0``), so the left side is ``S_0 + n gamma^2 |p|^2``
    with ``S_0 = sum_i ||mu - D_i||^2 <= sum_j ||D_i - D_j||^2`` for every ``i``: ``gamma =
    sqrt((max_i sum_j ||D_i - D_j||^2 - S_0) / (n |p|^2))``."""
    pp = float(p.pow(2).sum())
    n = ref.shape[0]
    if pp == 0.0 or n < 2:
        return 0.0
    bound = float(_sq_dists(ref).sum(1).max())
    s0 = float((ref - ref.mean(0)).pow(2).sum())
    return math.sqrt(max(bound - s0, 0.0) / (n * pp))


@register
@dataclass
class SignFlip(_UpdateCorruption):
    """Sign flipping: every corrupted client sends ``-scale * D_i``, its own benign update reversed
    (Allen-Zhu et al., ICLR 2021; Karimireddy, He, Jaggi, ICML 2021)."""

    name: ClassVar[str] = "sign-flip"
    scale: float = 1.0

    def _corrupt(self, updates, weights, mask, generator):
        out = updates.clone()
        out[mask] = -self.scale * updates[mask]
        return out


@dataclass
class _ShejwalkarAttack(_UpdateCorruption):
    perturbation: str = "std"
    knowledge: str = "all"

    def validate(self) -> None:
        _check_knowledge(self.name, self.knowledge)
        if self.perturbation not in ("unit", "std", "sign"):
            raise InvalidInput(f"corruption {self.name!r}: perturbation must be 'unit', 'std' or 'sign', got {self.perturbation!r}")

    def _gamma(self, ref: torch.Tensor, p: torch.Tensor) -> float:
        raise NotImplementedError

    def _corrupt(self, updates, weights, mask, generator):
        ref = _benign(updates, mask, self.knowledge)
        p = perturbation(ref, self.perturbation)
        mal = ref.mean(0) + self._gamma(ref, p) * p
        out = updates.clone()
        out[mask] = mal.to(updates.dtype)
        return out


@register
@dataclass
class MinMax(_ShejwalkarAttack):
    """Min-Max (Shejwalkar and Houmansadr, NDSS 2021, eq. 4): ``mu + gamma p`` with the largest
    ``gamma`` such that the malicious update's largest distance to a benign update stays within
    the largest distance between two benign updates (:func:`min_max_gamma`), so no distance-based
    filter can tell it from the benign ones. ``perturbation``: ``std`` (default), ``unit`` or
    ``sign``; ``knowledge``: ``all`` benign updates of the round (default) or the attackers' ``own``."""

    name: ClassVar[str] = "min-max"

    def _gamma(self, ref, p):
        return min_max_gamma(ref, p)


@register
@dataclass
class MinSum(_ShejwalkarAttack):
    """Min-Sum (Shejwalkar and Houmansadr, NDSS 2021, eq. 5): ``mu + gamma p`` with the largest
    ``gamma`` such that the malicious update's sum of squared distances to the benign updates stays
    within the largest such sum of a benign update (:func:`min_sum_gamma`)."""

    name: ClassVar[str] = "min-sum"

    def _gamma(self, ref, p):
        return min_sum_gamma(ref, p)


@register
@dataclass
class FangMedian(_UpdateCorruption):
    """Fang et al. (USENIX Security 2020, Section 4.3), full knowledge, against the coordinate
    median and trimmed mean. With ``s_j = sign(mu_j)`` the direction the benign updates move
    coordinate ``j``, ``w_max,j`` / ``w_min,j`` the largest / smallest benign value and ``b = 2``,
    each corrupted client draws, independently and uniformly,

        s_j > 0:  in [w_min,j / b, w_min,j] if w_min,j > 0,  else [b w_min,j, w_min,j]
        s_j <= 0: in [w_max,j, b w_max,j]   if w_max,j > 0,  else [w_max,j, w_max,j / b]

    so every malicious value lies beyond the benign extreme opposite to the benign direction, which
    drags the median (and trimmed mean) against it while staying close to the benign range."""

    name: ClassVar[str] = "fang-median"
    b: float = 2.0
    knowledge: str = "all"

    def validate(self) -> None:
        _check_knowledge(self.name, self.knowledge)
        if not self.b > 1.0:
            raise InvalidInput(f"corruption 'fang-median': b must be > 1, got {self.b}")

    def _corrupt(self, updates, weights, mask, generator):
        ref = _benign(updates, mask, self.knowledge)
        s = torch.sign(ref.mean(0))
        wmax, wmin = ref.max(0).values, ref.min(0).values
        b = self.b
        lo_up = torch.where(wmin > 0, wmin / b, b * wmin)  # s_j > 0: go below the minimum
        hi_up = wmin
        lo_dn = wmax  # s_j <= 0: go above the maximum
        hi_dn = torch.where(wmax > 0, b * wmax, wmax / b)
        lo = torch.where(s > 0, lo_up, lo_dn)
        hi = torch.where(s > 0, hi_up, hi_dn)
        f = int(mask.sum())
        u = torch.rand((f, ref.shape[1]), generator=generator, dtype=torch.float64).to(ref.device)
        out = updates.clone()
        out[mask] = (lo + u * (hi - lo)).to(updates.dtype)
        return out


def krum_choice(u: torch.Tensor, f: int) -> int:
    """Krum's choice (Blanchard et al., NeurIPS 2017) among the float64 rows of ``u``: the row with the
    smallest sum of squared distances to its ``m - f - 2`` nearest other rows (ties: lowest index)."""
    m = u.shape[0]
    dist = _sq_dists(u)
    dist.fill_diagonal_(math.inf)
    scores = torch.sort(dist, dim=1).values[:, : max(m - f - 2, 1)].sum(1)
    return int(torch.argmin(scores))


@register
@dataclass
class FangKrum(_UpdateCorruption):
    """Fang et al. (USENIX Security 2020, Section 4.2), full knowledge, against Krum. The attackers
    send ``-lambda s`` with ``s = sign(mu)`` (in update space: the global model minus ``lambda s``);
    ``lambda`` starts at the paper's upper bound

        lambda_0 = min_{i benign} sum_{l in Gamma(i, m - f - 2)} ||D_l - D_i|| / ((m - 2f - 1) sqrt(d))
                   + max_{i benign} ||D_i|| / sqrt(d)

    (``Gamma(i, k)``: the ``k`` benign updates nearest to ``D_i``) and is halved until Krum (with the
    known ``f``, simulated by the attackers in float64: :func:`krum_choice`) selects the crafted
    update, or falls below ``tol``. All corrupted clients send the same vector, which lowers its
    Krum score."""

    name: ClassVar[str] = "fang-krum"
    tol: float = 1e-5

    def validate(self) -> None:
        if not self.tol > 0:
            raise InvalidInput(f"corruption 'fang-krum': tol must be positive, got {self.tol}")

    def _corrupt(self, updates, weights, mask, generator):
        u = updates.to(torch.float64)
        m, d = u.shape
        f = int(mask.sum())
        fk = max(0, min(f, (m - 3) // 2))  # Krum needs m > 2 f + 2
        benign = u[~mask]
        s = torch.sign(u.mean(0))
        nb = benign.shape[0]
        k = max(1, min(m - f - 2, nb - 1))
        if nb >= 2:
            dist = _sq_dists(benign).sqrt()
            dist.fill_diagonal_(math.inf)
            near = torch.sort(dist, dim=1).values[:, :k].sum(1)
            lam = float(near.min()) / (max(m - 2 * f - 1, 1) * math.sqrt(d))
        else:
            lam = 0.0
        lam += float(benign.norm(dim=1).max()) / math.sqrt(d) if nb else 1.0
        out = u.clone()
        while True:
            out[mask] = -lam * s
            if lam < self.tol or bool(mask[krum_choice(out, fk)]):
                break
            lam /= 2
        return out.to(updates.dtype)


@register
@dataclass
class ModelReplacement(_Trojan):
    """Model replacement (Bagdasaryan et al., AISTATS 2020, Section 4): the corrupted clients train on
    trojaned data (the backdoor of :class:`rfa.fl.attacks.Backdoor`: ``base_class`` images with the
    plus pattern relabelled ``target_class``), then scale their update ``X - G`` by ``gamma`` so that
    the server's step ``G + eta sum_i alpha_i D_i`` lands near their backdoored model ``X``:
    ``gamma = boost`` if given, else ``1 / (q eta)`` with ``q`` the attackers' share of the round's
    weight (the paper's ``gamma = n / eta`` for one attacker among ``n`` equal clients).
    Constrain-and-scale: with ``norm_bound`` the boosted update is scaled down to that L2 norm (the
    largest an anomaly detector or norm clip at that bound lets through; the paper's training-time
    anomaly-loss term is not emulated). Backdoor metrics as for ``backdoor``."""

    name: ClassVar[str] = "model-replacement"
    kind: ClassVar[str] = "data+update"
    boost: float | None = None
    norm_bound: float | None = None

    def validate(self) -> None:
        super().validate()
        if self.boost is not None and not self.boost > 0:
            raise InvalidInput(f"corruption 'model-replacement': boost must be positive, got {self.boost}")
        if self.norm_bound is not None and not self.norm_bound > 0:
            raise InvalidInput(f"corruption 'model-replacement': norm_bound must be positive, got {self.norm_bound}")

    def corrupt_updates(self, updates, weights, mask, *, w, generator, server_lr=1.0, head=None):
        if not bool(mask.any()):
            return updates
        wts = weights.to(device=updates.device, dtype=torch.float64)
        mask = mask.to(updates.device)
        q = float(wts[mask].sum() / wts.sum())
        gamma = self.boost if self.boost is not None else 1.0 / (q * server_lr)
        out = updates.clone()
        mal = updates[mask] * gamma
        if self.norm_bound is not None:
            nrm = mal.norm(dim=1, keepdim=True)
            mal = mal * torch.clamp(self.norm_bound / nrm.clamp_min(1e-30), max=1.0)
        out[mask] = mal
        return out


@dataclass
class _AggregatorAware(_UpdateCorruption):
    """Line search over the attack's scale ``tau`` maximising ``J(tau) = ||A(D'(tau)) - mu_h||``, the
    distance between the aggregate of the round's updates with the attackers' rows set to
    ``attack(tau)`` and the honest mean ``mu_h``. ``A`` is the server's own aggregator (told by the
    loop through :meth:`prepare`), simulated by the attackers exactly (plaintext, ideal oracle, on a
    copy so that no state of the server's object changes). ``tau`` is searched on ``grid`` points
    spaced geometrically in ``[tau_min, tau_max]``, then refined by ``refine`` golden-section steps
    (in log tau) around the best grid point; the best tau seen is used."""

    tau_min: float = 1e-2
    tau_max: float = 1e2
    grid: int = 7
    refine: int = 4

    def validate(self) -> None:
        if not (0 < self.tau_min < self.tau_max):
            raise InvalidInput(f"corruption {self.name!r}: need 0 < tau_min < tau_max")
        if self.grid < 2 or self.refine < 0:
            raise InvalidInput(f"corruption {self.name!r}: grid must be >= 2 and refine >= 0")

    def prepare(self, ctx: AttackContext) -> None:
        self._state["aggregator"] = ctx.aggregator

    def _rows(self, honest: torch.Tensor, f: int, m: int, tau: float) -> torch.Tensor:
        raise NotImplementedError

    def search(self, updates: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor, aggregator: Any) -> tuple[float, float]:
        """(best tau, its objective) for these updates against ``aggregator``."""
        from rfa.oracle import IdealOracle

        honest = updates[~mask] if bool((~mask).any()) else updates
        mu = honest.to(torch.float64).mean(0)
        m, f = updates.shape[0], int(mask.sum())

        def objective(log_tau: float) -> float:
            trial = updates.clone()
            trial[mask] = self._rows(honest, f, m, math.exp(log_tau)).to(updates.dtype)
            try:
                v = copy.deepcopy(aggregator)(trial, weights, IdealOracle()).vector
            except InvalidInput:
                return -math.inf
            val = float((v.to(torch.float64) - mu).norm())
            return val if math.isfinite(val) else -math.inf

        lo, hi = math.log(self.tau_min), math.log(self.tau_max)
        xs = [lo + (hi - lo) * i / (self.grid - 1) for i in range(self.grid)]
        ys = [objective(x) for x in xs]
        best = max(range(self.grid), key=lambda i: (ys[i], -i))
        bx, by = xs[best], ys[best]
        a, b = xs[max(best - 1, 0)], xs[min(best + 1, self.grid - 1)]
        gr = (math.sqrt(5) - 1) / 2
        c, d = b - gr * (b - a), a + gr * (b - a)
        fc, fd = objective(c), objective(d)
        for _ in range(self.refine):
            for x, y in ((c, fc), (d, fd)):
                if y > by:
                    bx, by = x, y
            if fc >= fd:
                b, d, fd = d, c, fc
                c = b - gr * (b - a)
                fc = objective(c)
            else:
                a, c, fc = c, d, fd
                d = a + gr * (b - a)
                fd = objective(d)
        for x, y in ((c, fc), (d, fd)):
            if y > by:
                bx, by = x, y
        return math.exp(bx), by

    def _corrupt(self, updates, weights, mask, generator):
        agg = self._state.get("aggregator")
        if agg is None:
            raise InvalidInput(f"corruption {self.name!r} needs the server's aggregator: call prepare() (the loop does)")
        tau, _ = self.search(updates, weights, mask, agg)
        self._state.setdefault("taus", []).append(tau)
        honest = updates[~mask] if bool((~mask).any()) else updates
        out = updates.clone()
        out[mask] = self._rows(honest, int(mask.sum()), updates.shape[0], tau).to(updates.dtype)
        return out


@register
@dataclass
class OptIPM(_AggregatorAware):
    """IPM (Xie, Koyejo, Gupta, UAI 2019), ``-tau * mean(honest)``, with ``tau`` optimised every round
    against the server's aggregator (see :class:`_AggregatorAware`; ByzFL's Opt-IPM)."""

    name: ClassVar[str] = "opt-ipm"

    def _rows(self, honest, f, m, tau):
        return -tau * honest.mean(0)


@register
@dataclass
class OptALIE(_AggregatorAware):
    """ALIE (Baruch et al., NeurIPS 2019), ``mu - tau sigma`` over the honest updates, with ``tau``
    (ALIE's ``z``) optimised every round against the server's aggregator (ByzFL's Opt-ALIE)."""

    name: ClassVar[str] = "opt-alie"

    def _rows(self, honest, f, m, tau):
        sd = honest.std(0) if honest.shape[0] >= 2 else torch.zeros_like(honest[0])
        return honest.mean(0) - tau * sd



@register
@dataclass
class ProtocolDeviation(_UpdateCorruption):
    """The second threat model: corrupted clients deviate from the protocol itself. Their update is
    IPM's ``-scale * mean(honest)`` (a large reversal; ``scale`` default 100) and, in every secure call,
    they send it through :class:`rfa.oracle.Deviation`: ``claim_max_weight`` (the largest weight the
    public bound allows, not their own) and ``skip_clipping`` (encoded without the public clip, so
    coordinates may wrap mod M). The server cannot detect either without input validation (range
    proofs), which is not emulated; the loop applies the :attr:`deviation` in every oracle call of the
    rounds where a corrupted client is selected. Plaintext aggregators see only the update."""

    name: ClassVar[str] = "protocol-deviation"
    scale: float = 100.0
    claim_max_weight: bool = True
    skip_clipping: bool = True

    @property
    def deviation(self):
        from rfa.oracle import Deviation

        return Deviation(claim_max_weight=self.claim_max_weight, skip_clipping=self.skip_clipping)

    def _corrupt(self, updates, weights, mask, generator):
        out = updates.clone()
        honest = updates[~mask] if bool((~mask).any()) else updates
        out[mask] = -self.scale * honest.mean(0)
        return out
