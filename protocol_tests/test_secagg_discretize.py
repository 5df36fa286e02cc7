"""Discretization of real vectors into Z_M (secagg.discretize): rounding, bounds, no-wrap, rotation, errors."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import ring
from secagg.discretize import (
    Quantizer,
    RandomizedHadamard,
    _dtype_for,
    as_real_array,
    choose_modulus,
    fwht,
    offset_for,
    stochastic_round,
)
from secagg.errors import InvalidInput, OverflowRisk


def _modsum(encodings: list[np.ndarray], modulus: int) -> tuple[np.ndarray, int]:
    """Sum over Z_M with Python integers; also returns the largest integer (unreduced) sum."""
    tot = [sum(int(e[j]) for e in encodings) for j in range(len(encodings[0]))]
    reduced = np.array([t % modulus for t in tot], dtype=_dtype_for(modulus))
    return reduced, max(tot)


# ----------------------------------------------------------------------------- stochastic rounding
def test_stochastic_rounding_unbiased_error_shrinks_like_inverse_sqrt_trials() -> None:
    """Empirical mean of T roundings of y converges to y at rate sqrt(f(1-f)/T).

    For 2000 coordinates with fractional parts f_j, the statistic
    R_T = mean_j T (mean_err_j)^2 / (f_j (1 - f_j)) has expectation 1 for every T when rounding is unbiased
    with Bernoulli variance (a biased rounding makes R_T grow linearly in T). Its standard deviation is
    about sqrt(2/2000) = 0.032 (plus a small kurtosis term); we accept R_T in [0.8, 1.2] (> 6 sd), so the
    false-alarm rate per T is below 1e-8 (Gaussian approximation of a sum of 2000 independent terms), and
    below 1e-7 for the 3 values of T together. Seeded, so the outcome is reproducible.
    """
    rng = np.random.default_rng(12345)
    base = rng.uniform(-50, 50, size=2000)
    frac = base - np.floor(base)
    keep = (frac > 0.01) & (frac < 0.99)
    y, f = base[keep], frac[keep]
    for trials in (100, 400, 1600):
        acc = np.zeros_like(y)
        for _ in range(trials):
            acc += stochastic_round(y, rng)
        err = acc / trials - y
        stat = float(np.mean(trials * err**2 / (f * (1 - f))))
        assert 0.8 < stat < 1.2, (trials, stat)
        # Hoeffding: P(|err_j| >= t) <= 2 exp(-2 T t^2); with t below, false alarm over all coords < 1e-9
        t = math.sqrt(math.log(2 * len(y) / 1e-9) / (2 * trials))
        assert np.max(np.abs(err)) < t


@given(st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=50), st.integers(0, 2**32))
@settings(max_examples=60)
def test_stochastic_rounding_is_floor_or_ceil(values: list[float], seed: int) -> None:
    y = np.array(values)
    q = stochastic_round(y, np.random.default_rng(seed))
    assert q.dtype == np.int64
    assert np.all((q == np.floor(y)) | (q == np.ceil(y)))
    assert np.all(np.abs(q - y) < 1)


# ----------------------------------------------------------------------------- one client, many clients
@given(
    st.integers(1, 40),
    st.floats(1e-3, 1e3),
    st.floats(1.0, 2.0**20),
    st.integers(0, 2**31),
)
@settings(max_examples=80)
def test_per_coordinate_error_below_one_grid_step(d: int, clip: float, scale: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2 * clip, 2 * clip, size=d)
    qz = Quantizer.auto(1, d, clip, scale=scale)
    enc = qz.encode(x, seed)
    dec = qz.decode(enc.values, 1)
    err = np.abs(dec - np.clip(x, -clip, clip))
    bound = qz.error_bound(1)
    assert bound <= (1 / scale) * (1 + 1e-5)  # float slack 8 c s 2^-53 <= 2^-20 of a step here
    assert np.all(err < bound)
    assert enc.clipped == int(np.count_nonzero(np.abs(x) > clip))


@given(
    n=st.integers(1, 12),
    d=st.integers(1, 20),
    clip=st.floats(1e-2, 1e2),
    bits=st.integers(8, 64),
    mode=st.sampled_from(["coordinate", "norm"]),
    rotate=st.booleans(),
    seed=st.integers(0, 2**31),
)
@settings(max_examples=80)
def test_decoded_sum_within_stated_bound_and_no_wrap(n, d, clip, bits, mode, rotate, seed) -> None:
    """Sum of n encodings, decoded, is within error_bound(n) of the sum of clipped references, and the
    unreduced integer sum never reaches M (no wrap) at the modulus choose_modulus picked."""
    m_needed = 2 * n + 1
    if (1 << bits) < m_needed:
        with pytest.raises(OverflowRisk):
            Quantizer.auto(n, d, clip, bits=bits, clip_mode=mode, rotate=rotate, rotation_seed=seed)
        return
    qz = Quantizer.auto(n, d, clip, bits=bits, clip_mode=mode, rotate=rotate, rotation_seed=seed)
    assert qz.modulus <= 2**bits
    assert qz.modulus > 2 * n * qz.offset
    rng = np.random.default_rng(seed)
    xs = rng.normal(scale=clip, size=(n, d)) * rng.choice([0.1, 1.0, 5.0], size=(n, 1))
    encs = [qz.encode(x, rng) for x in xs]
    for e in encs:
        assert e.values.dtype == ring.dtype_for(qz.modulus)
        assert int(e.values.max()) <= 2 * qz.offset
    total, biggest = _modsum([e.values for e in encs], qz.modulus)
    assert biggest < qz.modulus
    dec = qz.decode(total, n)
    ref = np.sum([qz.clipped_reference(x) for x in xs], axis=0)
    assert np.max(np.abs(dec - ref)) <= qz.error_bound(n)


@given(st.integers(1, 10**4), st.floats(1e-3, 1e3), st.integers(1, 64))
@settings(max_examples=100)
def test_choose_modulus_never_wraps(n: int, clip: float, bits: int) -> None:
    try:
        m, s = choose_modulus(n, clip, bits=bits)
    except OverflowRisk:
        assert (2**bits - 1) // (2 * n) < 1
        return
    k = offset_for(clip, s)
    assert 1 <= k and m > 2 * n * k and m <= 2**bits
    # uses the available bits: doubling the offset would not fit, unless the 2^50 cap was hit
    assert k == (2**50) or 2 * n * (k + 1) >= 2**bits


def test_extreme_inputs_do_not_wrap() -> None:
    """All clients at +c (or -c) exactly: the sum is the extreme of the range and decodes correctly."""
    n, d, c = 7, 5, 2.5
    qz = Quantizer.auto(n, d, c, bits=12)
    for sign in (1.0, -1.0):
        encs = [qz.encode(np.full(d, sign * c), i).values for i in range(n)]
        total, biggest = _modsum(encs, qz.modulus)
        assert biggest < qz.modulus
        assert np.all(np.abs(qz.decode(total, n) - sign * n * c) <= qz.error_bound(n))


def test_forced_small_modulus_raises_overflow_risk() -> None:
    n, c, s = 10, 1.0, 100.0
    k = offset_for(c, s)
    Quantizer("coordinate", c, s, 2 * n * k + 1, n, 4)  # the smallest safe modulus is accepted
    for bad in (2 * n * k, 2 * n * k - 1, 256, 2):
        with pytest.raises(OverflowRisk):
            Quantizer("coordinate", c, s, bad, n, 4)
    with pytest.raises(OverflowRisk):
        choose_modulus(n, c, scale=s, bits=10)  # 2*10*100 = 2000 needs 11 bits
    assert choose_modulus(n, c, scale=s, bits=11)[0] == 2048
    with pytest.raises(OverflowRisk):
        choose_modulus(2**40, 1.0, scale=2.0**30)  # beyond 2^64
    with pytest.raises(OverflowRisk):
        choose_modulus(1000, 1.0, bits=10)


def test_decode_rejects_more_summed_than_clients_and_bad_sums() -> None:
    qz = Quantizer.auto(3, 4, 1.0, bits=16)
    ok = qz.encode(np.zeros(4), 0).values
    with pytest.raises(InvalidInput):
        qz.decode(ok, 4)
    with pytest.raises(InvalidInput):
        qz.decode(ok, 0)
    with pytest.raises(InvalidInput):
        qz.decode(ok[:3], 1)
    with pytest.raises(InvalidInput):
        qz.decode(np.array([70000, 0, 0, 0], dtype=np.uint32), 1)


# ----------------------------------------------------------------------------- rotation
@given(st.integers(1, 300), st.integers(0, 2**31), st.floats(1e-3, 1e3))
@settings(max_examples=60)
def test_rotation_round_trips_and_is_orthonormal(d: int, seed: int, scale: float) -> None:
    rot = RandomizedHadamard(d, seed)
    x = np.random.default_rng(seed).normal(scale=scale, size=d)
    y = rot.forward(x)
    assert y.shape == (rot.padded_dim,)
    assert rot.padded_dim >= d and rot.padded_dim < 2 * d + 1
    norm = np.linalg.norm(x)
    assert abs(np.linalg.norm(y) - norm) <= 1e-12 * max(norm, 1e-300) * 10
    assert np.max(np.abs(rot.inverse(y) - x)) <= 1e-13 * max(norm, 1e-300) * math.log2(rot.padded_dim + 1) + 1e-300


def test_fwht_matches_explicit_hadamard_matrix() -> None:
    from scipy.linalg import hadamard

    rng = np.random.default_rng(1)
    for p in (1, 2, 4, 8, 64):
        a = rng.normal(size=(3, p))
        assert np.allclose(fwht(a), a @ hadamard(p).T / math.sqrt(p), atol=1e-12)
    with pytest.raises(InvalidInput):
        fwht(np.zeros(6))


def test_rotation_needs_a_shared_seed_and_differs_between_seeds() -> None:
    with pytest.raises(InvalidInput):
        Quantizer("norm", 1.0, 10.0, 2**16, 2, 8, rotate=True, rotation_seed=None)
    assert not np.array_equal(RandomizedHadamard(64, 1).signs, RandomizedHadamard(64, 2).signs)
    assert np.array_equal(RandomizedHadamard(64, 7).signs, RandomizedHadamard(64, 7).signs)


def test_norm_clipping_counts_and_bounds() -> None:
    qz = Quantizer.auto(1, 4, 1.0, clip_mode="norm", bits=32)
    v, clipped = qz.prepare([3.0, 4.0, 0.0, 0.0])
    assert clipped == 2 and abs(np.linalg.norm(v) - 1.0) < 1e-12
    v, clipped = qz.prepare([0.3, 0.4, 0.0, 0.0])
    assert clipped == 0 and np.array_equal(v, [0.3, 0.4, 0.0, 0.0])


# ----------------------------------------------------------------------------- typed input errors
class _FakeTensor:
    """Duck-typed stand-in for a torch tensor (detach/cpu/numpy)."""

    def __init__(self, arr: np.ndarray) -> None:
        self._a = arr

    def detach(self) -> "_FakeTensor":
        return self

    def cpu(self) -> "_FakeTensor":
        return self

    def numpy(self) -> np.ndarray:
        return self._a


@pytest.mark.parametrize(
    "bad",
    [
        [1.0, float("nan"), 0.0],
        [1.0, float("inf"), 0.0],
        [1.0, -float("inf"), 0.0],
        [1.0, 2.0],
        [[1.0, 2.0, 3.0]],
        [1.0, 2.0, 3.0, 4.0],
        ["a", "b", "c"],
        np.array([1 + 1j, 0, 0]),
        _FakeTensor(np.array([np.nan, 0.0, 0.0], dtype=np.float32)),
    ],
)
def test_bad_inputs_raise_invalid_input(bad) -> None:
    qz = Quantizer.auto(2, 3, 1.0, bits=16)
    with pytest.raises(InvalidInput):
        qz.encode(bad, 0)


def test_accepts_float32_duck_typed_and_real_torch_tensors() -> None:
    x32 = np.array([0.25, -0.5, 0.75], dtype=np.float32)
    qz = Quantizer.auto(1, 3, 1.0, bits=16)
    a = qz.encode(x32, 3).values
    assert np.array_equal(a, qz.encode(_FakeTensor(x32), 3).values)
    torch = pytest.importorskip("torch")  # torch is a project dependency; this only guards odd installs
    assert np.array_equal(a, qz.encode(torch.tensor(x32), 3).values)
    assert np.array_equal(as_real_array(torch.tensor(x32)), x32.astype(np.float64))


def test_discretize_does_not_import_torch() -> None:
    code = "import sys, secagg.discretize, secagg; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_invalid_parameters() -> None:
    for kwargs in (dict(clip=0.0), dict(clip=float("nan")), dict(clip=-1.0)):
        with pytest.raises(InvalidInput):
            choose_modulus(3, bits=16, **{"clip": 1.0, **kwargs})
    with pytest.raises(InvalidInput):
        choose_modulus(0, 1.0)
    with pytest.raises(InvalidInput):
        choose_modulus(3, 1.0, bits=65)
    with pytest.raises(InvalidInput):
        choose_modulus(3, 1.0, scale=1.0, precision=1.0)
    with pytest.raises(InvalidInput):
        Quantizer("sideways", 1.0, 1.0, 2**16, 1, 1)
    with pytest.raises(InvalidInput):
        Quantizer("coordinate", 1.0, 1.0, 2**65, 1, 1)
    with pytest.raises(InvalidInput):
        Quantizer("coordinate", 1.0, 1.0, 2**16, 1, 0)


def test_dtype_rule_matches_ring() -> None:
    for m in (2, 255, 256, 257, 2**16, 2**16 + 1, 2**32, 2**32 + 1, 2**64):
        assert _dtype_for(m) == ring.dtype_for(m)
