"""The fast paths behind the modular oracle give the same bits as the straightforward code they replace.

- ``quantize_rows`` (tiled, all clients at once) == ``quantize`` client by client with the same generators,
  and leaves every generator at the same stream position;
- ``Quantizer.prepare_rows`` == ``Quantizer.prepare`` row by row (coordinate / norm clip, rotation);
- ``encode_clients`` == the per-client reference pipeline (prepare, ``[omega v, omega c]``, quantize with
  ``SeedSequence(H(seed), spawn_key=(i,))``) for every clipping mode, rotation and ring;
- ``modular_run``'s one-pass column sums == the modular sum of ``secagg.ring`` for every kind of modulus,
  and a matrix or a list of rows give the same outcome (and the same errors);
- ``simulate_run``'s memo returns what an uncached replay returns, and what it returns is the caller's;
- the oracle hands float32/float16/bfloat16 tensors over without widening, with the same outputs as a
  float64 copy, and its byte totals are the ledger's.

Every check is deterministic given the seeds (no false alarms); no timing is asserted here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rfa
from secagg import ring
from secagg.average import encode_clients, secure_average
from secagg.cost import modular_run, simulate_run
from secagg.discretize import Quantizer, choose_modulus, quantize, quantize_rows, seed_entropy
from secagg.errors import InvalidInput
from secagg.graph import complete_graph


def _gens(seed: int, m: int) -> list[np.random.Generator]:
    return [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,))) for i in range(m)]


# ------------------------------------------------------------------------------------------ quantize_rows
@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 6), width=st.integers(1, 40),
       bits=st.sampled_from([8, 16, 31, 32, 48, 64]), clip=st.sampled_from([1e-3, 1.0, 7.5]),
       tile=st.sampled_from([3, 16, 1 << 13]), noise=st.booleans())
def test_quantize_rows_equals_quantize_row_by_row(seed, m, width, bits, clip, tile, noise):
    """Tiles of part of a row, of whole rows, and of several rows all give quantize's bits and consume the
    same draws; inputs slightly outside [-c, c] (noise) are clipped as quantize clips them."""
    import secagg.discretize as disc

    rng = np.random.default_rng(seed)
    z = rng.uniform(-clip, clip, size=(m, width)) * (1 + 1e-9 if noise else 1.0)
    mod, s = choose_modulus(m, clip, bits=bits)
    got_g, ref_g = _gens(seed, m), _gens(seed, m)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(disc, "QUANTIZE_TILE", tile)
        got = quantize_rows(z, clip=clip, scale=s, modulus=mod, rngs=got_g)
    ref = np.stack([quantize(z[i], clip=clip, scale=s, modulus=mod, rng=ref_g[i]) for i in range(m)])
    assert got.dtype == ref.dtype and np.array_equal(got, ref)
    assert all(np.array_equal(a.random(3), b.random(3)) for a, b in zip(got_g, ref_g))


def test_quantize_rows_forced_scale_and_non_power_of_two_modulus():
    rng = np.random.default_rng(1)
    z = rng.uniform(-2, 2, size=(4, 11))
    for mod, s in ((1_000_003, 1000.0), (2**61 - 1, 2.0**40), (2**64, 2.0**61)):
        got = quantize_rows(z, clip=2.0, scale=s, modulus=mod, rngs=_gens(5, 4))
        ref = np.stack([quantize(z[i], clip=2.0, scale=s, modulus=mod, rng=g) for i, g in enumerate(_gens(5, 4))])
        assert np.array_equal(got, ref)


def test_quantize_rows_rejects_bad_arguments():
    with pytest.raises(InvalidInput):
        quantize_rows(np.zeros(3), clip=1.0, scale=1.0, modulus=2**16, rngs=_gens(0, 1))
    with pytest.raises(InvalidInput):
        quantize_rows(np.zeros((2, 3)), clip=1.0, scale=1.0, modulus=2**16, rngs=_gens(0, 1))
    with pytest.raises(InvalidInput):  # quantize would round float32 in float32: no silent widening here
        quantize_rows(np.zeros((2, 3), dtype=np.float32), clip=1.0, scale=1.0, modulus=2**16, rngs=_gens(0, 2))


# ------------------------------------------------------------------------------------------ prepare_rows
@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 5), d=st.integers(1, 20),
       mode=st.sampled_from(["coordinate", "norm"]), rotate=st.booleans(), clip=st.sampled_from([0.3, 1.0, 50.0]))
def test_prepare_rows_equals_prepare(seed, m, d, mode, rotate, clip):
    x = np.random.default_rng(seed).normal(size=(m, d))
    q = Quantizer(mode, clip, 1000.0, 2**32, m, d, rotate, seed)
    v, k = q.prepare_rows(x)
    for i in range(m):
        vi, ki = q.prepare(x[i])
        assert np.array_equal(v[i], vi) and k[i] == ki
    with pytest.raises(InvalidInput):
        q.prepare_rows(np.where(np.arange(d) == 0, np.nan, x))


# ------------------------------------------------------------------------------------------ encode_clients
def _reference_encodings(x, w, *, seed, clip=None, clip_norm=None, rotate=False, bits=None, modulus=None,
                         scale=None, max_weight=None):
    """The per-client pipeline: prepare, z = [omega v, omega c], quantize with the client's own stream."""
    plan = encode_clients(x, w, seed=seed, clip=clip, clip_norm=clip_norm, rotate=rotate, bits=bits,
                          modulus=modulus, scale=scale, max_weight=max_weight)
    vq = plan.quantizer
    c = vq.clip
    omega = plan.weights / plan.weight_bound
    ent = seed_entropy(seed, "stochastic-rounding")
    rows, clipped = [], []
    for i in range(x.shape[0]):
        v, k = vq.prepare(x[i])
        z = np.empty(v.shape[0] + 1)
        z[:-1] = omega[i] * v
        z[-1] = omega[i] * c
        g = np.random.default_rng(np.random.SeedSequence(ent, spawn_key=(i,)))
        rows.append(quantize(z, clip=c, scale=vq.scale, modulus=vq.modulus, rng=g))
        clipped.append(k)
    return plan, np.stack(rows), tuple(clipped)


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 6), d=st.integers(1, 24),
       kind=st.sampled_from(["none", "clip", "norm"]), rotate=st.booleans(),
       bits=st.sampled_from([None, 24, 64]), spread=st.sampled_from([0, 3, 6]), float32=st.booleans())
def test_encode_clients_equals_per_client_reference(seed, m, d, kind, rotate, bits, spread, float32):
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=rng.choice([1e-3, 1.0, 1e3]), size=(m, d))
    if float32:
        x = x.astype(np.float32)
    w = 10.0 ** rng.uniform(-spread, 0, size=m)
    kw: dict = {"rotate": rotate, "bits": bits}
    if kind == "clip":
        kw["clip"] = float(np.quantile(np.abs(x), 0.6)) + 1e-12
    elif kind == "norm":
        kw["clip_norm"] = float(np.median(np.linalg.norm(x.astype(np.float64), axis=1))) + 1e-12
    plan, ref, clipped = _reference_encodings(x, w, seed=seed, max_weight=float(w.max()) * 2, **kw)
    assert plan.encodings.dtype == ref.dtype and np.array_equal(plan.encodings, ref)
    assert plan.clipped == clipped


@pytest.mark.parametrize("tile", [4, 7, 14, 40])
@pytest.mark.parametrize("float32", [False, True])
def test_encode_clients_any_tiling_gives_the_reference(monkeypatch, tile, float32):
    """Tiles of part of a row (the weight column alone in the last tile, or beside a row's tail), of one
    whole row and of several rows all give the per-client reference encodings; the input is not modified."""
    import secagg.discretize as disc

    x = np.random.default_rng(3).normal(size=(9, 13))
    x = x.astype(np.float32) if float32 else x
    w = np.random.default_rng(4).uniform(0.1, 1.0, size=9)
    before = x.copy()
    monkeypatch.setattr(disc, "QUANTIZE_TILE", tile)
    for kw in ({}, {"clip": 1.0}, {"clip": 1.0, "rotate": True}):
        plan, ref, clipped = _reference_encodings(x, w, seed=7, **kw)
        assert np.array_equal(plan.encodings, ref) and plan.clipped == clipped
    assert np.array_equal(x, before)


# ------------------------------------------------------------------------------------------ modular_run
@pytest.mark.parametrize("modulus", [2**64, 2**56, 2**32, 2**16, 2**61 - 1, 1_000_003, 2**33 + 1])
@pytest.mark.parametrize("drops", [None, {1: "share-keys", 3: "masked-input"}])
def test_modular_run_sum_equals_ring_sum(modulus, drops):
    n, dim = 6, 17
    dt = ring.dtype_for(modulus)
    rng = np.random.default_rng(modulus % 1000)
    mat = np.stack([rng.integers(0, modulus, size=dim, dtype=np.uint64).astype(dt) for _ in range(n)])
    mat[0, :3] = modulus - 1  # wraps
    total, included, ledger = modular_run(mat, dim=dim, modulus=modulus, seed=1, threshold=2, dropouts=drops)
    ref = ring.zeros(dim, modulus)
    for u in included:
        ring.add_into(ref, mat[u], modulus)
    assert total.dtype == ref.dtype and np.array_equal(total, ref)
    t2, i2, l2 = modular_run(list(mat), dim=dim, modulus=modulus, seed=1, threshold=2, dropouts=drops)
    assert np.array_equal(t2, total) and i2 == included and l2 == ledger


def test_modular_run_matrix_errors_match_list_errors():
    mat = np.full((3, 4), 70000, dtype=np.uint64)
    errs = []
    for enc in (mat, list(mat)):
        with pytest.raises(InvalidInput) as exc:
            modular_run(enc, dim=4, modulus=2**16, seed=1)
        errs.append(str(exc.value))
    assert errs[0] == errs[1]
    with pytest.raises(InvalidInput):
        modular_run(np.zeros((3, 4), dtype=np.int64) - 1, dim=4, modulus=2**16, seed=1)
    with pytest.raises(InvalidInput):
        modular_run(np.zeros((3, 4), dtype=np.uint16), dim=5, modulus=2**16, seed=1)


# ------------------------------------------------------------------------------------------ simulate_run memo
@pytest.mark.parametrize("drops", [None, {0: "masked-input", 2: "unmasking"}])
@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_simulate_run_memo_returns_fresh_copies_of_the_uncached_run(drops, variant):
    g = complete_graph(7)
    args = (7, 33, 2**40)
    ref = simulate_run(*args, graph=g, threshold=4, variant=variant, dropouts=drops, cache=False)
    first = simulate_run(*args, graph=g, threshold=4, variant=variant, dropouts=drops)
    first.ledger.record("unmasking", "up", 0, "junk", 1)  # the caller's copy: the memo must not see it
    first.sets["U1"] = frozenset()
    second = simulate_run(*args, graph=g, threshold=4, variant=variant, dropouts=drops)
    assert second.ledger == ref.ledger and second.sets == ref.sets and second.client_aborts == ref.client_aborts
    assert second.aborted is None and second.ledger is not first.ledger


# ------------------------------------------------------------------------------------------ the oracle
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_oracle_narrow_inputs_same_bits_as_a_float64_copy(dtype):
    """The oracle no longer widens its input itself; every float32/16 and bfloat16 value is exact in float64,
    so the float64 output equals the one for the widened tensor (same seed), and the call's byte totals
    are the ledger's sums."""
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.normal(size=(6, 9))).to(dtype)
    b = torch.from_numpy(rng.uniform(0.5, 2.0, size=6))
    narrow = rfa.ModularOracle(seed=3)
    wide = rfa.ModularOracle(seed=3)
    v = narrow(x, b, weight_bound=4.0)
    ref = wide(x.to(torch.float64), b, weight_bound=4.0)
    assert v.dtype == dtype and torch.equal(v, ref.to(dtype))
    call = narrow.calls[-1]
    res = secure_average(x.to(torch.float64).numpy(), b.numpy(), seed=call.seed, max_weight=4.0, bits=64,
                         threshold=None, graph="complete", variant="honest-but-curious", rotate=False,
                         backend="modular")
    up = sum(e.nbytes for e in res.ledger if e.direction == "up")
    down = sum(e.nbytes for e in res.ledger if e.direction == "down")
    senders = {e.client for e in res.ledger}
    assert (call.bytes_up, call.bytes_down) == (up, down)
    assert call.bytes_per_client == (up + down) / len(senders)


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 40), spread=st.sampled_from([0, 3, 9]))
def test_effective_weights_shortcut_equals_the_gathered_form(seed, m, spread):
    """All clients surviving: beta / sum(beta) directly gives the bits of the gather-and-normalise form."""
    from rfa.oracle import _effective

    rng = np.random.default_rng(seed)
    beta = torch.from_numpy(10.0 ** rng.uniform(-spread, 0, size=m))
    idx = torch.arange(m)
    ref = torch.zeros_like(beta)
    sel = beta[idx]
    ref[idx] = sel / sel.sum()
    assert torch.equal(_effective(beta, tuple(range(m))), ref)
    if m > 1:  # a dropped client: zero weight, the others renormalised over the survivors
        part = _effective(beta, tuple(range(1, m)))
        assert float(part[0]) == 0.0 and abs(float(part.sum()) - 1.0) <= 1e-12
