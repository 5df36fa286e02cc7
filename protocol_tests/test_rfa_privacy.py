"""s-privacy audit (Definition 1 (iv)) and Proposition 3, extended to unequal weights.

Deterministic properties over hypothesis-drawn seeds (no false alarms).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rfa
from rfa.privacy import AuditedOracle, PrivacyViolation, max_pairwise_distance
from secagg.errors import InvalidInput


def _data(seed: int, m: int, d: int, equal: bool):
    rng = np.random.default_rng(seed)
    w = torch.from_numpy(rng.normal(size=(m, d)) * rng.choice([1e-3, 1.0, 1e3]))
    alpha = torch.full((m,), 1.0 / m, dtype=torch.float64) if equal else torch.from_numpy(rng.uniform(0.05, 5.0, size=m))
    if rng.random() < 0.5:  # put one client at the median-ish: its beta reaches alpha / nu
        w[0] = w[1:].median(dim=0).values
    return w, alpha


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(2, 15), d=st.integers(1, 4),
       nu=st.sampled_from([1e-6, 1e-3, 1e-1, 10.0]), budget=st.integers(1, 6), equal=st.booleans(),
       one_step=st.booleans())
def test_proposition3_holds_on_every_call(seed, m, d, nu, budget, equal, one_step):
    """Every Weiszfeld call: each client's effective weight beta_i / sum beta_j is at most
    alpha_i D / (alpha_i D + nu_bar (A - alpha_i)) (per-call D, nu_bar), and the maximum is at most the
    paper-form bound alpha_max max(B, nu) / (alpha_max max(B, nu) + nu_bar (A - alpha_max)) whenever the
    iterate is in the hull. audit_weiszfeld raises PrivacyViolation if any of these fails."""
    w, alpha = _data(seed, m, d, equal)
    auditor = rfa.PrivacyAuditor()
    if one_step:
        res = rfa.one_step_rfa(w, alpha, oracle=rfa.IdealOracle(), nu=nu)
    else:
        res = rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), nu=nu, budget=budget)
    records = auditor.audit_weiszfeld(res, alpha, points=w, init_in_hull=not one_step)
    assert len(records) == res.calls
    B = max_pairwise_distance(w)
    A = float(alpha.sum())
    for k, (rec, kind) in enumerate(zip(records, res.kinds)):
        if kind != "weiszfeld":
            continue
        s = res.distances[k].clamp(min=nu)
        D, nb = float(s.max()), float(s.min())
        per_client = alpha * D / (alpha * D + nb * (A - alpha))
        assert bool((rec.effective_weights <= per_client * (1 + 1e-12)).all())
        assert rec.max_weight <= rec.bound * (1 + 1e-12)
        if rec.bound_paper is not None:
            assert rec.bound <= rec.bound_paper * (1 + 1e-12) or B < nu  # the per-call form is never looser
    if equal and not one_step and res.kinds[-1] == "weiszfeld":
        # alpha = 1/m reduces to the paper's B / (B + (m - 1) nu_bar)
        Bt = max(B, nu)
        assert rfa.proposition3_bound(m, Bt, res.nu_bar) == pytest.approx(Bt / (Bt + (m - 1) * res.nu_bar))
        assert rfa.proposition3_bound(alpha, Bt, res.nu_bar) == pytest.approx(Bt / (Bt + (m - 1) * res.nu_bar))


def test_unequal_alpha_bound_is_attained_in_the_limit():
    """The extension is tight: client 0 at distance nu_bar, all others at distance D gives exactly
    alpha_0 D / (alpha_0 D + nu_bar (A - alpha_0))."""
    alpha = torch.tensor([3.0, 1.0, 0.5, 2.0], dtype=torch.float64)
    D, nb = 4.0, 0.25
    s = torch.tensor([nb, D, D, D], dtype=torch.float64)
    beta = alpha / s
    eff0 = float(beta[0] / beta.sum())
    assert eff0 == pytest.approx(rfa.proposition3_bound(alpha, D, nb), rel=1e-14)


def test_s_check_record_and_raise():
    """With 3 clients the mean gives each weight 1/3: s = 0.3 is violated. 'record' keeps going and lists
    the violation; 'raise' raises PrivacyViolation before the average is returned."""
    w = torch.randn(3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    rec = rfa.PrivacyAuditor(s=0.3, mode="record")
    o = rec.watch(rfa.IdealOracle())
    assert isinstance(o, AuditedOracle)
    res = rfa.smoothed_weiszfeld(w, oracle=o, budget=2)
    assert res.calls == 2 and len(rec.records) == 2 and len(rec.violations) >= 1
    assert rec.records[0].max_weight == pytest.approx(1 / 3)
    strict = rfa.PrivacyAuditor(s=0.3, mode="raise")
    with pytest.raises(PrivacyViolation) as exc:
        rfa.smoothed_weiszfeld(w, oracle=strict.watch(rfa.IdealOracle()), budget=2)
    assert exc.value.call_index == 0 and exc.value.weight == pytest.approx(1 / 3)
    ok = rfa.PrivacyAuditor(s=0.5, mode="raise")
    w10 = torch.randn(10, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    rfa.smoothed_weiszfeld(w10, oracle=ok.watch(rfa.IdealOracle()), budget=3)
    assert ok.violations == [] and 0 < ok.max_weight <= 0.5


def test_audit_oracle_reads_recorded_calls():
    o = rfa.IdealOracle()
    w = torch.randn(5, 2, dtype=torch.float64)
    o(w, torch.tensor([1.0, 1.0, 1.0, 1.0, 4.0], dtype=torch.float64))
    recs = rfa.PrivacyAuditor(s=0.4).audit_oracle(o)
    assert recs[0].max_weight == pytest.approx(0.5) and recs[0].argmax == 4 and not recs[0].ok


@pytest.mark.parametrize("bad", [dict(s=0.0), dict(s=1.5), dict(mode="loud")])
def test_bad_auditor_parameters(bad):
    with pytest.raises(InvalidInput):
        rfa.PrivacyAuditor(**bad)


def test_bad_bound_inputs():
    with pytest.raises(InvalidInput):
        rfa.proposition3_bound(0, 1.0, 0.1)
    with pytest.raises(InvalidInput):
        rfa.proposition3_bound([1.0, -1.0], 1.0, 0.1)
    with pytest.raises(InvalidInput):
        rfa.proposition3_bound(3, 1.0, 0.0)
