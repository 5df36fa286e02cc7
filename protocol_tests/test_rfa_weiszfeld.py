"""Smoothed Weiszfeld (Algorithm 2), one-step RFA (Algorithm 3) and the geometric-median reference.

Pillutla, Kakade, Harchaoui (IEEE TSP 2022). All properties are deterministic (no false alarms): data come
from seeded numpy generators drawn by hypothesis; tolerances cover float64 rounding only unless stated.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

import rfa
import rfa.oracle as oracle_mod
from rfa.weiszfeld import objective
from secagg.errors import InvalidInput


def _data(seed: int, m: int, d: int, spread: float = 1.0):
    rng = np.random.default_rng(seed)
    w = torch.from_numpy(rng.normal(size=(m, d)) * spread)
    alpha = torch.from_numpy(rng.uniform(0.1, 3.0, size=m))
    lam = rng.dirichlet(np.ones(m))
    init = torch.from_numpy(lam @ w.numpy())  # a point of the convex hull
    return w, alpha, init


def _g(v: torch.Tensor, w: torch.Tensor, alpha: torch.Tensor) -> float:
    return objective(torch.linalg.vector_norm(w - v, dim=1), alpha)


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(2, 12), d=st.integers(1, 5),
       nu=st.sampled_from([1e-6, 1e-3, 1e-1, 1.0]), budget=st.integers(1, 8), mean_init=st.booleans())
def test_smoothed_objective_never_increases(seed, m, d, nu, budget, mean_init):
    """g_nu(v^(r)) is non-increasing (alternating minimisation of G), and g <= g_nu <= g + nu/2 sum alpha."""
    w, alpha, init = _data(seed, m, d)
    res = rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), nu=nu, budget=budget,
                                 init=None if mean_init else init)
    s = res.smoothed_objective
    scale = float(alpha.sum()) * (1.0 + float(w.abs().max()))
    for a, b in zip(s, s[1:]):
        assert b <= a + 1e-12 * scale
    for g, gs in zip(res.objective, s):
        assert g <= gs + 1e-12 * scale
        assert gs <= g + nu / 2 * float(alpha.sum()) + 1e-12 * scale
    assert res.calls == budget == len(res.betas) == len(res.effective_weights)
    assert len(res.objective) == res.calls + (0 if mean_init else 1)


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(3, 10), d=st.integers(1, 4),
       nu=st.sampled_from([1e-6, 1e-4, 1e-2]), budget=st.integers(1, 10))
def test_proposition2_bound_from_the_hull(seed, m, d, nu, budget):
    """Prop. 2: g(v^R) - g(v*) <= (2 ||v0 - v*||^2 / (nu_bar R) + nu / 2) sum alpha for v0 in conv{w_i}."""
    w, alpha, init = _data(seed, m, d)
    res = rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), nu=nu, budget=budget, init=init)
    vstar = rfa.geometric_median(w, alpha, tol=1e-14)
    gap = res.objective[-1] - _g(vstar, w, alpha)
    bound = (2 * float((init - vstar).norm()) ** 2 / (res.nu_bar * budget) + nu / 2) * float(alpha.sum())
    assert gap <= bound * (1 + 1e-6) + 1e-10


def _scipy_gm(w: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    def f(v):
        return float(alpha @ np.linalg.norm(w - v, axis=1))

    def grad(v):
        diff = v - w
        n = np.maximum(np.linalg.norm(diff, axis=1), 1e-300)
        return (alpha / n) @ diff

    x0 = (alpha @ w) / alpha.sum()
    r = minimize(f, x0, jac=grad, method="BFGS", options={"gtol": 1e-12, "maxiter": 10_000})
    r = minimize(f, r.x, method="Nelder-Mead", options={"xatol": 1e-12, "fatol": 1e-14, "maxiter": 4_000})
    return r.x


@settings(max_examples=15)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(5, 12), d=st.integers(2, 3))
def test_converged_result_matches_float64_reference(seed, m, d):
    """After up to 1500 iterations (early stop at relative step 1e-13) smoothed Weiszfeld (nu = 1e-6), the
    Vardi-Zhang/Newton reference and scipy's minimiser of g agree: objectives within 1e-7 relative
    (+ nu sum alpha for Weiszfeld, Prop. 2's smoothing term, relevant when the median sits on a data
    point), points within 1e-4 (scipy's accuracy on a non-smooth g)."""
    w, alpha, _ = _data(seed, m, d)
    nu = 1e-6
    res = rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), nu=nu, budget=1500, tol=1e-13)
    ref = rfa.geometric_median(w, alpha, tol=1e-14)
    sp = torch.from_numpy(_scipy_gm(w.numpy(), alpha.numpy()))
    g_ref, g_sp, g_w = _g(ref, w, alpha), _g(sp, w, alpha), _g(res.median, w, alpha)
    assert g_ref <= g_sp * (1 + 1e-10) + 1e-12  # the reference is at least as good as scipy
    assert abs(g_sp - g_ref) <= 1e-8 * g_ref
    assert abs(g_w - g_ref) <= 1e-7 * g_ref + nu * float(alpha.sum())
    assert float((sp - ref).norm()) <= 1e-4 * (1 + float(w.abs().max()))


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(2, 10), d=st.integers(1, 5), budget=st.integers(1, 6))
def test_translation_and_rotation_equivariance(seed, m, d, budget):
    """A(Q w + t) = Q A(w) + t for orthogonal Q: Algorithm 2 only uses distances and weighted means."""
    w, alpha, init = _data(seed, m, d)
    rng = np.random.default_rng(seed ^ 0x5EED)
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    q = torch.from_numpy(q)
    t = torch.from_numpy(rng.normal(size=d) * 10)
    for start in (None, "init"):
        a = rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), nu=1e-6, budget=budget,
                                   init=None if start is None else init).median
        b = rfa.smoothed_weiszfeld(w @ q.T + t, alpha, oracle=rfa.IdealOracle(), nu=1e-6, budget=budget,
                                   init=None if start is None else init @ q.T + t).median
        assert torch.allclose(b, a @ q.T + t, rtol=1e-7, atol=1e-7 * (1 + float(t.abs().max())))


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), n_in=st.integers(6, 14), d=st.integers(1, 4),
       frac=st.floats(0.05, 0.4), far=st.floats(1e2, 1e6))
def test_breakdown_below_one_half(seed, n_in, d, frac, far):
    """Outliers with total weight fraction rho < 1/2 anywhere: for any v with g(v) <= g(v*) + eps,
    ||v - x|| <= (2 (1 - rho) r + eps / A) / (1 - 2 rho) where x is the inliers' median, r the inliers'
    largest distance to x and A the total weight. The mean moves by ~rho * far instead."""
    rng = np.random.default_rng(seed)
    inl = rng.normal(size=(n_in, d))
    n_out = max(1, int(round(frac * n_in / (1 - frac))))
    out = rng.normal(size=(n_out, d)) * far + far  # arbitrary far points (a cluster far away)
    w = torch.from_numpy(np.vstack([inl, out]))
    alpha = torch.ones(n_in + n_out, dtype=torch.float64)
    rho = n_out / (n_in + n_out)
    if rho >= 0.5:
        return
    x = rfa.geometric_median(w[:n_in], tol=1e-13)
    r = float(torch.linalg.vector_norm(w[:n_in] - x, dim=1).max())
    gstar = _g(rfa.geometric_median(w, alpha, tol=1e-13), w, alpha)
    res = rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), nu=1e-6, budget=60)
    for v in (rfa.geometric_median(w, alpha, tol=1e-13), res.median):
        eps = max(0.0, _g(v, w, alpha) - gstar)
        bound = (2 * (1 - rho) * r + eps / float(alpha.sum())) / (1 - 2 * rho)
        assert float((v - x).norm()) <= bound * (1 + 1e-9) + 1e-9
    # the robust result is within the inlier bound computed without slack; the mean is not
    assert float((res.median - x).norm()) <= 2 * (1 - rho) * r / (1 - 2 * rho) * 1.01 + 1e-6
    mean = alpha @ w / alpha.sum()
    assert float((mean - x).norm()) > 2 * (1 - rho) * r / (1 - 2 * rho)


def test_default_init_is_the_mean_and_is_counted():
    """init=None: call 0 is the weighted mean (beta = alpha) and counts against the budget of 3."""
    w, alpha, init = _data(7, 9, 3)
    o = rfa.IdealOracle()
    res = rfa.smoothed_weiszfeld(w, alpha, oracle=o, budget=3)
    assert res.calls == 3 == len(o.calls)
    assert res.kinds == ["mean", "weiszfeld", "weiszfeld"]
    assert torch.equal(o.calls[0].weights, alpha)
    mean = alpha @ w / alpha.sum()
    assert res.objective[0] == pytest.approx(_g(mean, w, alpha), rel=1e-12)
    res2 = rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), budget=3, init=init)
    assert res2.kinds == ["weiszfeld"] * 3 and len(res2.objective) == 4
    # clients' weights: beta_i = alpha_i / max(nu, ||v - w_i||) from the broadcast iterate
    v0 = init
    assert torch.allclose(res2.betas[0], alpha / torch.linalg.vector_norm(w - v0, dim=1).clamp(min=1e-6))


def test_tol_stops_early_and_counts_honestly():
    w, alpha, _ = _data(3, 8, 2)
    o = rfa.IdealOracle()
    res = rfa.smoothed_weiszfeld(w, alpha, oracle=o, budget=500, tol=1e-6)
    assert res.stopped_early and res.calls == len(o.calls) < 500


def test_one_step_rfa_is_algorithm_3():
    """v = sum beta_i w_i / sum beta_i with beta_i = alpha_i / max(nu, ||w_i||), one call."""
    w, alpha, _ = _data(11, 7, 4)
    w[0] = 0.0  # a client at the origin gets alpha / nu
    o = rfa.IdealOracle()
    res = rfa.one_step_rfa(w, alpha, oracle=o, nu=1e-3)
    beta = alpha / torch.linalg.vector_norm(w, dim=1).clamp(min=1e-3)
    assert res.calls == 1 == len(o.calls)
    assert torch.allclose(res.median, beta @ w / beta.sum(), rtol=1e-12, atol=1e-15)


def test_geometric_median_at_a_data_point():
    """Vardi-Zhang handles the median sitting on (coincident) data points exactly."""
    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    w = torch.stack([x, x, x, torch.tensor([5.0, 5.0]).double(), torch.tensor([-3.0, 0.0]).double()])
    assert torch.allclose(rfa.geometric_median(w, tol=1e-14), x, atol=1e-12)
    # weighted: a point with more than half the weight is the median
    w2 = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=torch.float64)
    assert torch.allclose(rfa.geometric_median(w2, torch.tensor([3.0, 1.0, 1.0]), tol=1e-14), w2[0], atol=1e-12)


def test_dtype_and_device_preserved_float32():
    w = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    res = rfa.smoothed_weiszfeld(w, oracle=rfa.IdealOracle())
    assert res.median.dtype == torch.float32 and res.median.device == w.device
    assert rfa.geometric_median(w, tol=1e-10).dtype == torch.float64


def test_chunked_passes_equal_direct(monkeypatch):
    """Row norms and weights @ W are computed in column chunks (no (m, d) copy); tiny chunks give the same
    numbers as the direct formulas."""
    w, alpha, init = _data(5, 6, 37)
    direct = rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), budget=4, init=init)
    monkeypatch.setattr(oracle_mod, "CHUNK_ELEMENTS", 7)
    chunked = rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), budget=4, init=init)
    assert torch.allclose(direct.median, chunked.median, rtol=1e-13, atol=1e-14)
    dist = oracle_mod.row_distances(w, init)
    assert torch.allclose(dist, torch.linalg.vector_norm(w - init, dim=1), rtol=1e-13)


@pytest.mark.parametrize("case", ["zero_w", "neg_w", "shape_w", "1d", "int", "nu", "budget",
                                  "init_shape", "init_nan", "oracle", "init_str"])
def test_bad_inputs_raise_typed_errors(case):
    w = torch.randn(5, 3, dtype=torch.float64)
    a = torch.ones(5, dtype=torch.float64)
    kw = dict(oracle=rfa.IdealOracle())
    if case == "zero_w":
        a[2] = 0.0
    elif case == "neg_w":
        a[2] = -1.0
    elif case == "shape_w":
        a = torch.ones(4, dtype=torch.float64)
    elif case == "1d":
        w = w[0]
    elif case == "int":
        w = torch.ones(5, 3, dtype=torch.int64)
    elif case == "nu":
        kw["nu"] = 0.0
    elif case == "budget":
        kw["budget"] = 0
    elif case == "init_shape":
        kw["init"] = torch.zeros(4, dtype=torch.float64)
    elif case == "init_nan":
        kw["init"] = torch.full((3,), float("nan"), dtype=torch.float64)
    elif case == "oracle":
        kw["oracle"] = lambda x, b: x.mean(0)
    elif case == "init_str":
        kw["init"] = "median"
    o = kw["oracle"]
    with pytest.raises(InvalidInput):
        rfa.smoothed_weiszfeld(w, a, **kw)
    if isinstance(o, rfa.IdealOracle):
        assert o.calls == []  # nothing half-done
    with pytest.raises(InvalidInput):
        rfa.geometric_median(torch.tensor([[float("nan")]]), tol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inputs_are_never_modified(dtype):
    w, alpha, init = _data(9, 7, 5)
    w = w.to(dtype)
    before = w.clone()
    rfa.smoothed_weiszfeld(w, alpha, oracle=rfa.IdealOracle(), budget=3)
    rfa.one_step_rfa(w, alpha, oracle=rfa.IdealOracle())
    rfa.geometric_median(w, alpha, tol=1e-10)
    assert torch.equal(w, before)
