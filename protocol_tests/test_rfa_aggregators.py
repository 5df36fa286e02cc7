"""Aggregators: declared properties, hand-checkable cases, RLR secure form == plaintext form, typed errors.

Deterministic checks; hypothesis properties use seeded numpy data (no false alarms).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rfa
from rfa import aggregators as A
from secagg.errors import InvalidInput

T = lambda rows: torch.tensor(rows, dtype=torch.float64)  # noqa: E731


SECURE_CALLS = {"fedavg": 1, "rfa": 3, "rfa-paper": 3, "one-step-rfa": 1, "rlr": 1, "norm-clipping": 1,
                "centered-clipping": 3, "clip-and-noise": 1, "bucketing": 1}


def test_registry_and_declarations():
    assert A.NAMES == ("fedavg", "rfa", "rfa-paper", "one-step-rfa", "rlr", "norm-clipping", "centered-clipping",
                       "clip-and-noise", "bucketing", "coordinate-median", "coordinate-median-unweighted",
                       "trimmed-mean", "trimmed-mean-unweighted", "krum", "multi-krum", "bulyan")
    for name in A.NAMES:
        agg = A.make(name)
        assert agg.name == name and isinstance(agg, A.Aggregator)
        assert isinstance(agg.reveals, str) and agg.reveals
        if name in SECURE_CALLS:
            assert agg.secure_compatible and agg.calls_per_aggregation == SECURE_CALLS[name]
        else:
            assert not agg.secure_compatible and agg.calls_per_aggregation is None
        assert isinstance(type(agg).sweep_params(0.1, 20), dict)
    assert A.make("rfa", budget=5).calls_per_aggregation == 5
    assert A.make("centered-clipping", iters=2).calls_per_aggregation == 2


def test_every_aggregator_counts_its_calls():
    """oracle_calls is the number of oracle records; calls_per_aggregation the secure aggregations each
    client takes part in (equal, except bucketing: one call per bucket, each client in one)."""
    u = torch.randn(12, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name in A.NAMES:
        o = rfa.IdealOracle()
        out = A.make(name)(u, None, o)
        assert out.oracle_calls == len(o.calls) == len(out.calls)
        if name == "bucketing":
            assert len(o.calls) == 6 and all(c.n_clients == 2 for c in o.calls)
        else:
            assert len(o.calls) == (A.make(name).calls_per_aggregation or 0)
        assert out.vector.shape == (5,) and out.vector.dtype == u.dtype


def test_fedavg_is_the_weighted_mean():
    u = T([[1.0, 2.0], [3.0, -2.0], [5.0, 0.0]])
    out = A.make("fedavg")(u, T([1.0, 2.0, 1.0]), rfa.IdealOracle())
    assert torch.allclose(out.vector, T([3.0, -0.5]))


def test_rlr_hand_case():
    """Eq. 5-6: votes (3, -1, 0), theta = 2 -> lr (+1, -1, -1); weighted mean (1, 0, -0.5) -> (1, 0, 0.5)."""
    u = T([[1.0, -1.0, 2.0], [1.0, 1.0, -2.0], [1.0, -1.0, 0.0]])
    n = T([1.0, 2.0, 1.0])
    expect = T([1.0, 0.0, 0.5])
    assert torch.allclose(A.rlr_plaintext(u, n, theta=2), expect)
    out = A.make("rlr", theta=2)(u, n, rfa.IdealOracle())
    assert torch.allclose(out.vector, expect, atol=1e-15)
    assert out.vector[1].abs() < 1e-15
    assert out.info["votes"].tolist() == [3.0, -1.0, 0.0] and out.info["flipped"] == 2
    # theta = 1 accepts |-1| >= 1 and flips only the tied coordinate; eta scales
    assert torch.allclose(A.make("rlr", theta=1, eta=0.5)(u, n, rfa.IdealOracle()).vector, T([0.5, 0.0, 0.25]))


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 20), d=st.integers(1, 30), theta=st.integers(1, 8))
def test_rlr_secure_form_equals_plaintext_form(seed, m, d, theta):
    """One oracle call on (n_k u_k, sgn u_k, n_k) recovers the exact vote sums and the weighted mean."""
    rng = np.random.default_rng(seed)
    u = torch.from_numpy(rng.normal(size=(m, d)) * rng.choice([1e-4, 1.0, 1e4]))
    u[torch.from_numpy(rng.random((m, d)) < 0.1)] = 0.0  # zero coordinates vote 0
    n = torch.from_numpy(rng.integers(1, 500, size=m).astype(np.float64))
    out = A.make("rlr", theta=theta)(u, n, rfa.IdealOracle())
    assert torch.equal(out.info["votes"], torch.sign(u).sum(0))
    assert torch.allclose(out.vector, A.rlr_plaintext(u, n, theta=theta), rtol=1e-12, atol=1e-300)


def test_norm_clipping_hand_case():
    u = T([[3.0, 4.0], [0.3, 0.4], [0.0, -10.0]])
    out = A.make("norm-clipping", bound=1.0)(u, None, rfa.IdealOracle())
    assert torch.allclose(out.vector, (T([0.6, 0.8]) + T([0.3, 0.4]) + T([0.0, -1.0])) / 3)
    assert out.info["clipped_clients"] == 2


def test_coordinate_median_and_trimmed_mean_hand_cases():
    u = T([[1.0, 10.0], [2.0, -5.0], [3.0, 0.0], [100.0, 1.0], [-50.0, 2.0]])
    for med in ("coordinate-median", "coordinate-median-unweighted"):  # equal weights: the same numbers
        assert torch.equal(A.make(med)(u, None, None).vector, T([2.0, 1.0]))
        assert torch.equal(A.make(med)(u[:4], None, None).vector, T([2.5, 0.5]))
    # rho = 0.2 of 5 -> trim 1 each side: (1+2+3)/3 and (0+1+2)/3
    out = A.make("trimmed-mean-unweighted", rho=0.2)(u, None, None)
    assert torch.allclose(out.vector, T([2.0, 1.0])) and out.info["trimmed_each_side"] == 1
    assert torch.allclose(A.make("trimmed-mean", rho=0.2)(u, None, None).vector, T([2.0, 1.0]))
    for tm in ("trimmed-mean", "trimmed-mean-unweighted"):
        assert torch.allclose(A.make(tm, rho=0.0)(u, None, None).vector, u.mean(0))


def test_krum_and_multikrum_hand_cases():
    """Four clustered points and one outlier, f = 1: each score sums the m - f - 2 = 2 nearest squared
    distances. Point (0,0): neighbours (1,0), (0,1) -> 2; (1,0): (0,0), (1,1) -> 2; (0,1): 2; (1,1): 2;
    (10,10): 81+81 + 81+100 ... -> large. Krum picks the lowest index among ties: (0,0)."""
    u = T([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 10.0]])
    out = A.make("krum", f=1)(u, None, None)
    assert torch.equal(out.vector, T([0.0, 0.0])) and out.info["selected"] == [0]
    assert out.info["scores"][:4].tolist() == [2.0, 2.0, 2.0, 2.0]
    mk = A.make("multi-krum", f=1)(u, None, None)  # q = m - f = 4: the four cluster points
    assert mk.info["selected"] == [0, 1, 2, 3] and torch.allclose(mk.vector, T([0.5, 0.5]))
    mk2 = A.make("multi-krum", f=1, q=2)(u, T([1.0, 3.0, 1.0, 1.0, 1.0]), None)
    assert mk2.info["selected"] == [0, 1] and torch.allclose(mk2.vector, T([0.75, 0.0]))


def test_rfa_resists_an_omniscient_attack_that_breaks_the_mean():
    """Omniscient corruption (Section V-A c): corrupted clients make the weighted mean equal -mean."""
    g = torch.Generator().manual_seed(3)
    honest = torch.randn(30, 8, dtype=torch.float64, generator=g) * 0.1 + 1.0
    n_bad = 7  # rho ~ 0.19
    true_mean = honest.mean(0)
    bad = (-true_mean * 30 - honest[n_bad:].sum(0)) / n_bad  # mean of all 30 rows becomes -mean
    u = torch.cat([bad.expand(n_bad, 8), honest[n_bad:]])
    fed = A.make("fedavg")(u, None, rfa.IdealOracle()).vector
    rob = A.make("rfa")(u, None, rfa.IdealOracle()).vector
    assert float((fed - true_mean).norm()) > 1.0
    assert float((rob - true_mean).norm()) < 0.5 * float((fed - true_mean).norm())


@pytest.mark.parametrize("name,params", [("rfa", dict(nu=0)), ("rfa", dict(budget=0)), ("rlr", dict(theta=-1)),
                                         ("trimmed-mean", dict(rho=0.5)), ("krum", dict(f=-1)),
                                         ("multi-krum", dict(q=-2)), ("norm-clipping", dict(bound=0.0)),
                                         ("nope", {}), ("fedavg", dict(unknown=1))])
def test_bad_parameters_raise(name, params):
    with pytest.raises(InvalidInput):
        A.make(name, **params)


def test_bad_inputs_raise():
    u = torch.randn(7, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    for name in A.NAMES:
        agg = A.make(name)
        with pytest.raises(InvalidInput):
            agg(u, torch.tensor([1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]), rfa.IdealOracle())
        with pytest.raises(InvalidInput):
            agg(u, torch.ones(5), rfa.IdealOracle())
        with pytest.raises(InvalidInput):
            agg(u[0], None, rfa.IdealOracle())
    with pytest.raises(InvalidInput):
        A.make("fedavg")(u, None, None)  # secure-compatible aggregators need an oracle
    with pytest.raises(InvalidInput):
        A.make("krum", f=3)(u, None, None)  # m = 7 <= 2f + 2
    with pytest.raises(InvalidInput):
        A.make("trimmed-mean-unweighted", rho=0.45)(u, None, None)  # trims 4 of 7 from each side
    with pytest.raises(InvalidInput):
        A.make("bulyan", f=2)(u, None, None)  # m = 7 < 4f + 3
