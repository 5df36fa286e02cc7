"""Corruption models (the RFA paper's Section V-A, the RLR paper's backdoors, the counter-gradient attack, Shen, Li and Zheng's IPM, ALIE)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rfa.fl.attacks import make_corruption, omniscient, plus_pattern, select_corrupted
from rfa.fl.data import FederatedData
from secagg.errors import InvalidInput


def _images(n_clients=4, per=10, seed=0) -> FederatedData:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n_clients * per, 1, 8, 8, generator=g)
    y = torch.arange(n_clients * per) % 3
    return FederatedData(name="img", x=x, y=y, offsets=torch.arange(0, n_clients * per + 1, per), test_x=x[:12].clone(),
                         test_y=y[:12].clone(), kind="image", num_classes=3, input_shape=(1, 8, 8))


@settings(max_examples=50)
@given(sizes=st.lists(st.integers(1, 100), min_size=2, max_size=30), rho=st.floats(0.0, 0.45), seed=st.integers(0, 2**31 - 1))
def test_corrupted_set_is_the_minimal_prefix_reaching_rho(sizes, rho, seed):
    """eq. (5): the realised share is >= rho and dropping the last chosen client falls below rho."""
    sizes = np.array(sizes)
    if rho > 0 and sizes.sum() - sizes.min() < rho * sizes.sum():
        return
    try:
        mask, share = select_corrupted(sizes, rho, np.random.default_rng(seed))
    except InvalidInput:
        assert rho > 0
        return
    assert math.isclose(share, sizes[mask].sum() / sizes.sum(), rel_tol=1e-12)
    if rho == 0:
        assert not mask.any()
        return
    assert share >= rho - 1e-12
    order = np.random.default_rng(seed).permutation(len(sizes))
    chosen = [i for i in order if mask[i]]
    assert chosen == list(order[: len(chosen)])  # a prefix of the shuffled clients
    assert (share - sizes[chosen[-1]] / sizes.sum()) < rho


@settings(max_examples=50)
@given(m=st.integers(2, 12), d=st.integers(1, 40), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_omniscient_weighted_mean_becomes_negated(m, d, seed, data):
    """Reference-code formula: sum_i N_i D'_i / N = -sum_i N_i D_i / N for any non-empty corrupted set
    (float64, exact up to rounding)."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(m, d, generator=g, dtype=torch.float64)
    w = torch.rand(m, generator=g, dtype=torch.float64) + 0.1
    mask = torch.tensor(data.draw(st.lists(st.booleans(), min_size=m, max_size=m)))
    if not mask.any():
        mask[0] = True
    out = omniscient(u, w, mask)
    before = (w[:, None] * u).sum(0) / w.sum()
    after = (w[:, None] * out).sum(0) / w.sum()
    torch.testing.assert_close(after, -before, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(out[~mask], u[~mask], rtol=0, atol=0)


def test_data_poisoning_changes_only_corrupted_clients_and_never_test():
    data = _images()
    mask = np.array([True, False, True, False])
    neg = make_corruption("data-poisoning").poison_data(data, mask, np.random.default_rng(0))
    for i in range(4):
        xa, ya = data.client(i)
        xb, yb = neg.client(i)
        if mask[i]:
            torch.testing.assert_close(xb, 1.0 - xa)  # image negation, labels unchanged (the RFA paper's Section V-A(a))
        else:
            assert torch.equal(xb, xa)
        assert torch.equal(ya, yb)
    assert torch.equal(neg.test_x, data.test_x) and torch.equal(neg.test_y, data.test_y)
    flip = make_corruption("label-flip").poison_data(data, mask, np.random.default_rng(0))
    assert torch.equal(flip.client(0)[1], 2 - data.client(0)[1])
    assert torch.equal(flip.client(1)[1], data.client(1)[1])


def test_text_reversal_reverses_the_21_characters():
    x = torch.arange(1, 21).repeat(2, 1)
    y = torch.tensor([21, 21])
    data = FederatedData(name="t", x=x, y=y, offsets=torch.tensor([0, 1, 2]), test_x=x, test_y=y, kind="text",
                         num_classes=30, input_shape=(20,))
    out = make_corruption("text-reversal").poison_data(data, np.array([True, False]), np.random.default_rng(0))
    assert out.x[0].tolist() == list(range(21, 1, -1)) and int(out.y[0]) == 1
    assert out.x[1].tolist() == list(range(1, 21)) and int(out.y[1]) == 21
    with pytest.raises(InvalidInput):
        make_corruption("image-negation").poison_data(data, np.array([True, False]), np.random.default_rng(0))


def test_plus_pattern_and_distributed_parts():
    full = plus_pattern(28, 28, size=5, offset=1)[0]
    assert int(full.sum()) == 9 and bool(full[3, 3]) and bool(full[1, 3]) and bool(full[3, 1])
    parts = plus_pattern(28, 28, size=5, offset=1, parts=4)
    union = torch.zeros_like(full)
    for p in parts:
        assert not (union & p).any()  # disjoint
        union |= p
    assert torch.equal(union, full)  # the four arms together are the plus


def test_backdoor_poisons_base_class_and_metric():
    data = _images(per=30)
    c = make_corruption("backdoor", base_class=1, target_class=2, fraction=0.5, pattern_size=3, offset=0)
    mask = np.array([True, False, False, False])
    out = c.poison_data(data, mask, np.random.default_rng(0))
    x0, y0 = data.client(0)
    x1, y1 = out.client(0)
    changed = (y1 != y0).nonzero().flatten()
    assert len(changed) == 5  # half of the 10 base-class samples of client 0
    assert bool((y0[changed] == 1).all()) and bool((y1[changed] == 2).all())
    pat = plus_pattern(8, 8, 3, 0)[0]
    assert bool((x1[changed][:, 0, pat] == 1.0).all())
    assert torch.equal(out.client(1)[0], data.client(1)[0])
    # backdoor accuracy: a predictor that always answers the target class scores 1, one that never does 0
    assert c.backdoor_accuracy(lambda x: torch.full((x.shape[0],), 2), data) == 1.0
    assert c.backdoor_accuracy(lambda x: torch.full((x.shape[0],), 1), data) == 0.0


def test_distributed_backdoor_gives_each_client_one_part():
    data = _images(per=30)
    c = make_corruption("distributed-backdoor", base_class=1, target_class=2, fraction=1.0, pattern_size=3, offset=0)
    out = c.poison_data(data, np.array([True, True, False, False]), np.random.default_rng(0))
    parts = plus_pattern(8, 8, 3, 0, parts=4)
    for i in (0, 1):
        x, y = out.client(i)
        sel = y == 2
        sel &= data.client(i)[1] == 1
        assert bool((x[sel][:, 0, parts[i]] == 1.0).all())


def _upd(m=10, d=20000, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(m, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2, m, dtype=torch.float64)[:, None]
    return u, torch.ones(m, dtype=torch.float64), torch.tensor([True, True, True] + [False] * (m - 3))


def test_gaussian_noise_has_the_updates_component_variance():
    """V-A(b): noise variance equals the variance across the components of the client's update.
    With d = 20000 the sample-variance ratio has standard deviation sqrt(2/d) = 0.01; the 6% band is a
    6-sigma event (false alarm < 1e-8)."""
    u, w, mask = _upd()
    out = make_corruption("gaussian").corrupt_updates(u, w, mask, w=torch.zeros(20000), generator=torch.Generator().manual_seed(1))
    for i in range(3):
        ratio = float((out[i] - u[i]).var() / u[i].var())
        assert abs(ratio - 1) < 0.06
    assert torch.equal(out[3:], u[3:])


def test_ipm_alie_random_formulas():
    u, w, mask = _upd(d=50)
    gen = torch.Generator().manual_seed(0)
    ipm = make_corruption("ipm", eps=0.3).corrupt_updates(u, w, mask, w=torch.zeros(50), generator=gen)
    torch.testing.assert_close(ipm[0], -0.3 * u[~mask].mean(0))
    alie = make_corruption("alie").corrupt_updates(u, w, mask, w=torch.zeros(50), generator=gen)
    m, f = 10, 3
    s = math.floor(m / 2 + 1) - f
    from statistics import NormalDist

    z = NormalDist().inv_cdf((m - s) / m)
    torch.testing.assert_close(alie[1], u[~mask].mean(0) - z * u[~mask].std(0))
    rnd = make_corruption("random", scale=2.0).corrupt_updates(u, w, mask, w=torch.zeros(50), generator=gen)
    assert not torch.equal(rnd[:3], u[:3]) and torch.equal(rnd[3:], u[3:])


def test_cga_reaches_its_target_once_it_has_one_observation():
    """Seed 003 eqs. 5-6 on FedAvg with a constant honest update g: round 1 has no estimate of the
    others (g_hat = 0); from round 2 on the estimate is exact and the global model lands exactly on
    the target (the current model with its output classes shifted k -> k + 1)."""
    d_in, k = 3, 4
    dim = k * d_in + k
    head = (0, k, d_in)
    g = torch.Generator().manual_seed(0)
    honest = torch.randn(dim, generator=g, dtype=torch.float64)
    c = make_corruption("cga", target="moving")  # re-derives the shifted target every round
    w = torch.randn(dim, generator=g, dtype=torch.float64)
    weights = torch.tensor([1.0, 1.0, 2.0], dtype=torch.float64)
    mask = torch.tensor([False, False, True])
    for t in range(3):
        ups = honest.repeat(3, 1)
        out = c.corrupt_updates(ups, weights, mask, w=w, generator=g, head=head)
        w_next = w + (weights[:, None] * out).sum(0) / weights.sum()
        if t >= 1:
            target = w.clone()
            target[: k * d_in] = torch.roll(w[: k * d_in].reshape(k, d_in), 1, dims=0).reshape(-1)
            target[k * d_in:] = torch.roll(w[k * d_in:], 1)
            torch.testing.assert_close(w_next, target, rtol=1e-9, atol=1e-9)
        w = w_next
    # the l2 variant (Proposition 1) projects the report on the ball of radius lambda
    c2 = make_corruption("cga", target="fixed", radius=0.5)
    out = c2.corrupt_updates(honest.repeat(3, 1), weights, mask, w=w, generator=g, head=head)
    assert float(out[2].norm()) <= 0.5 + 1e-9


def test_unknown_corruption_is_typed_error():
    with pytest.raises(InvalidInput):
        make_corruption("meteor")
    with pytest.raises(InvalidInput):
        select_corrupted(np.array([1, 1]), 0.99, np.random.default_rng(0))
