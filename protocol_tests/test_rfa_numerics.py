"""Numerics of the fast paths of the RFA layer (rfa.oracle.row_distances, IdealOracle, smoothed Weiszfeld).

The fast paths work in the points' dtype (float32 stays float32) without copying the (m, d) matrix. These
properties check that they agree with a float64 direct computation on the same (exactly representable)
data within float32-level tolerances that follow from the error analysis in the docstrings, including
the hard cases: rows coincident with v, large common offsets (||w|| >> ||w - v||), entries whose squares
underflow or overflow in float32, weights spanning many orders of magnitude; that NaN/Inf inputs are
still rejected by the fused checks (nothing recorded); and, by intercepting every ATen operation, that a
Weiszfeld run never creates an intermediate the size of the matrix.

All checks are deterministic (seeded data, derandomized hypothesis): no false alarms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import rfa
import rfa.oracle as oracle_mod
from secagg.errors import InvalidInput

U32 = 2.0 ** -24  # unit roundoff of float32


def _ref_dist(w: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Exact-as-float64 distances of the given (float32-representable) values."""
    return torch.linalg.vector_norm(w.double() - v.double(), dim=1)


def _cloud(seed: int, m: int, d: int, offset: float, spread: float, n_coincide: int):
    rng = np.random.default_rng(seed)
    center = rng.normal(size=d) * offset
    w = torch.from_numpy(center + rng.normal(size=(m, d)) * spread).float()
    v = torch.from_numpy(center + rng.normal(size=d) * spread).float()
    for i in range(min(n_coincide, m)):
        w[i] = v  # rows exactly at v: distance exactly 0
    return w, v


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 40), d=st.integers(1, 2000),
       offset=st.sampled_from([0.0, 1.0, 1e3, 1e6]), spread=st.sampled_from([1e-6, 1e-3, 1.0, 1e3]),
       n_coincide=st.integers(0, 3), block=st.sampled_from([None, 16, 300, 4096]))
def test_fast_distances_match_float64_direct(seed, m, d, offset, spread, n_coincide, block):
    """float32 row_distances == float64 direct ||w_i - v|| within (8 + 2 log2 d) u_32 relative (the first-
    order bound of the docstring with slack 2x); exact 0 for coincident rows; any tile shape (block)."""
    w, v = _cloud(seed, m, d, offset, spread, n_coincide)
    with pytest.MonkeyPatch.context() as mp:
        if block is not None:
            mp.setattr(oracle_mod, "BLOCK_ELEMENTS", block)
        got = oracle_mod.row_distances(w, v)
    ref = _ref_dist(w, v)
    assert got.dtype == torch.float64 and got.shape == (m,)
    tol = (8 + 2 * math.log2(d + 1)) * U32
    assert bool(((got - ref).abs() <= tol * ref).all()), float(((got - ref).abs() / ref.clamp(min=1e-300)).max())
    assert bool((got[:min(n_coincide, m)] == 0).all())
    # float64 points: float64-level agreement
    got64 = oracle_mod.row_distances(w.double(), v.double())
    assert torch.allclose(got64, ref, rtol=1e-13, atol=0)


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 12), d=st.integers(1, 500),
       scale=st.sampled_from([1e-25, 1e-21, 1e18, 1e25, 1e37]))
def test_fast_distances_fall_back_on_underflow_and_overflow(seed, m, d, scale):
    """Squares that underflow (|w - v| ~ 1e-21..1e-25) or overflow (~1e18..1e37) in float32 are detected and
    recomputed in float64: the result is still float32-accurate (no zero, no inf)."""
    rng = np.random.default_rng(seed)
    w = torch.from_numpy(rng.normal(size=(m, d)) * scale).float()
    v = torch.from_numpy(rng.normal(size=d) * scale).float()
    got = oracle_mod.row_distances(w, v)
    ref = _ref_dist(w, v)
    assert bool(torch.isfinite(got).all()) and bool((got > 0).all())
    assert torch.allclose(got, ref, rtol=(8 + 2 * math.log2(d + 1)) * U32, atol=0)


def test_fast_distances_with_a_float64_v():
    """A float64 v that float32 cannot represent is not rounded: the float64 path is used."""
    w = torch.randn(5, 9, generator=torch.Generator().manual_seed(1))
    v = torch.full((9,), 1.0 / 3.0, dtype=torch.float64)
    assert torch.allclose(oracle_mod.row_distances(w, v), _ref_dist(w, v), rtol=1e-14, atol=0)


@settings(max_examples=50)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 30), d=st.integers(1, 400),
       offset=st.sampled_from([0.0, 1.0, 1e4]), span=st.sampled_from([1.0, 1e3, 1e6, 1e12]))
def test_ideal_oracle_float32_within_stated_bound(seed, m, d, offset, span):
    """IdealOracle on float32: |out_j - avg_j| <= gamma_{m+1} sum_i p_i |w_ij| + u |avg_j| (docstring bound
    plus the output rounding) against the float64 average of the same data, with weights spanning `span`."""
    rng = np.random.default_rng(seed)
    x = torch.from_numpy(offset + rng.normal(size=(m, d))).float()
    b = torch.from_numpy(np.exp(rng.uniform(0.0, math.log(span), size=m)))
    o = rfa.IdealOracle()
    out = o(x, b)
    assert out.dtype == torch.float32 and len(o.calls) == 1
    p = b / b.sum()
    exact = p @ x.double()
    k = (m + 1) * U32
    bound = k / (1 - k) * (p @ x.double().abs()) + U32 * exact.abs()
    assert bool(((out.double() - exact).abs() <= bound * (1 + 1e-9)).all())
    assert torch.equal(o.calls[0].weights, b) and torch.allclose(o.calls[0].effective_weights, p, rtol=1e-15)


def test_ideal_oracle_float32_top_of_range_and_tiny_weights():
    """Entries at the float32 maximum (a float32 sum may round past it: then the float64 path) give the
    finite exact average; a weight that underflows in float32 after normalisation takes the float64 path:
    the exact average rounded once."""
    big = torch.finfo(torch.float32).max
    x = torch.tensor([[big, -1.0], [big, 2.0], [big, 4.0]], dtype=torch.float32)
    out = rfa.IdealOracle()(x, torch.ones(3, dtype=torch.float64))
    assert float(out[0]) == big and float(out[1]) == pytest.approx(5.0 / 3.0, rel=4 * U32)
    b2 = torch.tensor([1.0, 1e-50, 1.0], dtype=torch.float64)
    x2 = torch.randn(3, 5, generator=torch.Generator().manual_seed(0))
    out2 = rfa.IdealOracle()(x2, b2)
    # "rounded once": within half a float32 ulp of the exact average, plus the float64 accumulation error
    # (3 terms: <= 3 u_64 |sum|, well below 1e-15 relative). Not bit-equality with one particular float64
    # formula: a different BLAS may sum the 3 products in another order and, rarely, round across a tie.
    exact = b2 @ x2.double() / b2.sum()
    half_ulp = torch.from_numpy(np.spacing(exact.float().abs().numpy()).astype(np.float64)) / 2
    assert out2.dtype == torch.float32
    assert bool(((out2.double() - exact).abs() <= half_ulp + 1e-15 * exact.abs()).all())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("init", [None, "zero", "tensor"])
def test_fused_checks_find_non_finite_rows_and_their_clients_refuse(dtype, bad, init):
    """The finiteness checks fused into the first pass (oracle or distances) find a row with a NaN/Inf
    entry, with weights spanning 1e6 (the 1/nu regime); its client refuses every call (never in an
    average, never an error) and the run equals the run on the other rows (same float path)."""
    w = torch.randn(6, 40, generator=torch.Generator().manual_seed(2)).to(dtype)
    w[4, 33] = bad
    keep = [0, 1, 2, 3, 5]
    o = rfa.IdealOracle()
    b = torch.tensor([1e6, 1, 1, 1, 1, 1], dtype=torch.float64)
    call = o.average(w, b)
    assert call.refused == (4,) and call.survivors == tuple(keep)
    assert torch.allclose(call.output, b[keep] @ w[keep].double() / b[keep].sum(), rtol=1e-6)
    start = torch.zeros(40, dtype=dtype) if init == "tensor" else init
    res = rfa.smoothed_weiszfeld(w, oracle=o, budget=2, init=start)
    ref = rfa.smoothed_weiszfeld(w[keep], torch.full((5,), 1 / 6, dtype=torch.float64), oracle=rfa.IdealOracle(),
                                 budget=2, init=start)
    assert res.refused == (4,) and all(c.refused == (4,) for c in res.oracle_calls)
    assert torch.allclose(res.median, ref.median, rtol=1e-5, atol=1e-6)
    one = rfa.one_step_rfa(w, oracle=o)
    assert one.refused == (4,) and bool(torch.isfinite(one.median).all())


@settings(max_examples=25)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(3, 15), d=st.integers(1, 60), budget=st.integers(1, 4),
       offset=st.sampled_from([0.0, 10.0]), mean_init=st.booleans())
@example(seed=0, m=4, d=1, budget=4, offset=10.0, mean_init=False)  # found by the thorough profile
def test_float32_weiszfeld_matches_float64_run(seed, m, d, budget, offset, mean_init):
    """A float32 run (fast paths) and a float64 run on the same values (float64 paths) agree to float32
    level: medians within 1e-4 (1 + max |w|), objectives within 1e-5 relative (each call's rounding ~1e-7
    relative, amplified at most ~1/(distance gap) by the next weights; data in general position).

    Betas: beta_i = alpha_i / ||w_i - v||. The float32 run rounds the iterate and the differences w_i - v
    at ~u_32 * scale per coordinate, i.e. up to ~sqrt(d) u_32 scale on a distance, which is a relative
    error of sqrt(d) u_32 scale / ||w_i - v|| on beta_i: large for a point close to the iterate. So each
    beta is checked within 1e-4 + 8 (1 + sqrt(d)) u_32 scale / dist_i relative (dist_i from the float64
    run, slack 8x). A flat 1e-4 failed under the thorough profile: m=4, d=1, offset 10, a point 4e-3
    from the iterate, betas 225.43 vs 225.46 (1.3e-4 relative, inside the derived 1.3e-3)."""
    rng = np.random.default_rng(seed)
    w32 = torch.from_numpy(offset + rng.normal(size=(m, d))).float()
    alpha = torch.from_numpy(rng.uniform(0.5, 2.0, size=m))
    init = None if mean_init else w32.mean(0)
    r32 = rfa.smoothed_weiszfeld(w32, alpha, oracle=rfa.IdealOracle(), budget=budget, init=init)
    r64 = rfa.smoothed_weiszfeld(w32.double(), alpha, oracle=rfa.IdealOracle(), budget=budget,
                                 init=None if init is None else init.double())
    scale = 1 + float(w32.abs().max())
    assert float((r32.median.double() - r64.median).abs().max()) <= 1e-4 * scale
    for a, b in zip(r32.objective, r64.objective):
        assert abs(a - b) <= 1e-5 * abs(b)
    assert r32.kinds == r64.kinds
    shift = 1 if r64.kinds[0] == "mean" else 0  # the iterate before call k is v^(k - shift)
    for k, (a, b) in enumerate(zip(r32.betas, r64.betas)):
        if r64.kinds[k] == "mean":
            assert torch.equal(a, b)  # alpha itself
            continue
        dist = r64.distances[k - shift].clamp(min=r64.nu)
        rtol = 1e-4 + 8 * (1 + math.sqrt(d)) * U32 * scale / dist
        assert bool(((a - b).abs() <= rtol * b.abs()).all()), float(((a - b).abs() / (rtol * b.abs())).max())


class _Sizes(TorchDispatchMode):
    """Records (op, numel, dtype) of every non-view tensor produced by an ATen operation."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, int, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            # outputs sharing an input's storage (slices, views, out= buffers) allocate nothing new
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in inputs:
                self.seen.append((str(func), t.numel(), t.dtype))
        return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_weiszfeld_never_creates_a_matrix_sized_intermediate(dtype):
    """Every tensor created by any ATen op during RFA (mean + 2 Weiszfeld steps), one-step RFA and a bare
    ideal-oracle call holds at most max(d, BLOCK_ELEMENTS) elements (float32) -- no (m, d) copy, no
    float64 conversion of the matrix; float64 points are never converted either (row blocks of at most
    CHUNK_ELEMENTS for the oracle's float64 accumulation). Can fail: the previous float64 conversion
    created (m, d)-sized float64 blocks here (m d < CHUNK_ELEMENTS)."""
    m, d = 48, 40_000
    w = torch.randn(m, d, generator=torch.Generator().manual_seed(3)).to(dtype)
    limit = max(d, oracle_mod.BLOCK_ELEMENTS)
    with _Sizes() as rec:
        res = rfa.smoothed_weiszfeld(w, oracle=rfa.IdealOracle(), budget=3)
        rfa.one_step_rfa(w, oracle=rfa.IdealOracle())
        rfa.IdealOracle()(w, torch.ones(m, dtype=torch.float64))
    assert res.calls == 3 and rec.seen
    big = [(op, n, dt) for op, n, dt in rec.seen if n > limit]
    assert not big, big[:5]
    # float32 points: nothing of the matrix's size in float64 (d-sized float64 vectors only)
    if dtype == torch.float32:
        assert max(n for _, n, dt in rec.seen if dt == torch.float64) <= d


@settings(max_examples=5)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(16, 40), offset=st.sampled_from([0.0, 1e3]),
       n_dup=st.integers(0, 3), dtype=st.sampled_from([torch.float32, torch.float64]))
def test_pairwise_sq_distances_gram_path_matches_exact(seed, m, offset, n_dup, dtype):
    """The tiled, row-0-centred float64 Gram path (m^2 d > 2^25) equals exact float64 differences within
    1e-9 relative (its error is ~1e-16 (|x_i|^2 + |x_j|^2) and pairs closer than 1e-6 of that are
    recomputed exactly), with a large common offset and exact / near duplicate rows (distance exactly 0 /
    exactly the float64 value); symmetric, zero diagonal."""
    d = (1 << 25) // (m * m) + 1
    rng = np.random.default_rng(seed)
    w = torch.from_numpy(offset + rng.normal(size=(m, d))).to(dtype)
    for k in range(n_dup):
        w[m - 1 - k] = w[k]  # exact duplicate
        w[m - 1 - k, 0] += 1e-3 * (k + 1) if k else 0.0  # and near duplicates
    got = oracle_mod.pairwise_sq_distances(w)
    w64 = w.double()
    ref = torch.stack([((w64[j] - w64[i]) ** 2).sum() for i in range(m) for j in range(m)]).view(m, m)
    assert torch.equal(got, got.T) and bool((got.diagonal() == 0).all())
    assert bool(((got - ref).abs() <= 1e-9 * ref).all())
    for k in range(n_dup):
        assert float(got[k, m - 1 - k]) == float(ref[k, m - 1 - k])
