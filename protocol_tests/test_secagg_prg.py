"""PRG seed -> uniform vector over Z_M (secagg.prg): specification, domain separation, uniformity."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from secagg.errors import InvalidInput
from secagg.prg import (
    CHUNK_BYTES,
    PURPOSE_PAIRWISE,
    PURPOSE_SELF,
    add_mask,
    domain,
    expand,
    new_scratch,
)
from secagg.ring import add_into, dtype_for, sub_into, zeros

SESSION = b"session-1"
MODULI = [2, 3, 7, 255, 256, 257, 2**16, 65537, 1000003, 2**24 + 1, 2**31 + 11, 2**32 - 5, 2**32, 2**61 - 1,
          2**63 + 1, 2**64 - 59, 2**64]
moduli = st.one_of(st.sampled_from(MODULI), st.integers(2, 2**64), st.integers(1, 64).map(lambda b: 1 << b))
seeds = st.binary(min_size=32, max_size=32)


def reference_expand(seed: bytes, session: bytes, purpose: str, dim: int, m: int) -> list[int]:
    """The specification, element by element: HKDF key, AES-256-CTR keystream read as little-endian
    words of the dtype width, masked to bit_length(M-1) bits, kept iff < M."""
    key = HKDF(hashes.SHA256(), 32, None, domain(session, purpose, dim, m)).derive(seed)
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    isz = dtype_for(m).itemsize
    mask = (1 << (m - 1).bit_length()) - 1
    out: list[int] = []
    while len(out) < dim:
        v = int.from_bytes(enc.update(bytes(isz)), "little") & mask
        if v < m:
            out.append(v)
    return out


@settings(max_examples=60)
@given(seeds, moduli, st.integers(0, 40), st.sampled_from([PURPOSE_SELF, PURPOSE_PAIRWISE]))
def test_expand_matches_specification(seed, m, dim, purpose):
    got = expand(seed, session=SESSION, purpose=purpose, dim=dim, modulus=m)
    assert got.dtype == dtype_for(m) and got.shape == (dim,)
    assert got.tolist() == reference_expand(seed, SESSION, purpose, dim, m)


@pytest.mark.parametrize("m", [2**24 + 1, 2**32 - 5, 65537, 2**20, 2**64])
def test_expand_matches_specification_across_chunks(m):
    """Long enough to cross several keystream chunks (and, for rejection sampling, several batches)."""
    dim = 3 * CHUNK_BYTES // dtype_for(m).itemsize + 5
    seed = bytes(range(32))
    got = expand(seed, session=SESSION, purpose=PURPOSE_SELF, dim=dim, modulus=m)
    assert got.tolist() == reference_expand(seed, SESSION, PURPOSE_SELF, dim, m)


@settings(max_examples=60)
@given(seeds, moduli, st.integers(0, 300))
def test_deterministic_in_range_and_add_mask_agrees(seed, m, dim):
    a = expand(seed, session=SESSION, purpose=PURPOSE_PAIRWISE, dim=dim, modulus=m)
    out = np.full(dim, 0, dtype=dtype_for(m))
    b = expand(seed, session=SESSION, purpose=PURPOSE_PAIRWISE, dim=dim, modulus=m, out=out)
    assert b is out and np.array_equal(a, b)
    assert all(int(v) < m for v in a.tolist())
    # add_mask(+1) == add_into(expand); add_mask(-1) undoes it
    rng = np.random.default_rng(dim)
    base = (rng.integers(0, 2**63, dim, dtype=np.uint64) % np.uint64(min(m, 2**63))).astype(dtype_for(m))
    acc = base.copy()
    add_mask(acc, seed, session=SESSION, purpose=PURPOSE_PAIRWISE, modulus=m, sign=1)
    ref = base.copy()
    add_into(ref, a, m)
    assert np.array_equal(acc, ref)
    add_mask(acc, seed, session=SESSION, purpose=PURPOSE_PAIRWISE, modulus=m, sign=-1, scratch=new_scratch())
    assert np.array_equal(acc, base)
    ref = base.copy()
    sub_into(ref, a, m)
    add_mask(base, seed, session=SESSION, purpose=PURPOSE_PAIRWISE, modulus=m, sign=-1)
    assert np.array_equal(base, ref)


@pytest.mark.parametrize("m", [2**32, 2**20, 1000003, 2**64 - 59])
def test_add_mask_long_vector_with_caller_scratch(m):
    dim = 2 * CHUNK_BYTES // dtype_for(m).itemsize + 17
    seed = b"\x07" * 32
    mask = expand(seed, session=SESSION, purpose=PURPOSE_SELF, dim=dim, modulus=m)
    for scratch in (new_scratch(), np.empty(10, dtype=np.uint8), None):  # too-small scratch is replaced
        acc = zeros(dim, m)
        add_mask(acc, seed, session=SESSION, purpose=PURPOSE_SELF, modulus=m, sign=1, scratch=scratch)
        assert np.array_equal(acc, mask)


def test_domain_separation():
    seed = b"\x01" * 32
    base = dict(session=SESSION, purpose=PURPOSE_PAIRWISE, dim=64, modulus=2**32)
    ref = expand(seed, **base)
    variants = [
        dict(base, session=b"session-2"),
        dict(base, purpose=PURPOSE_SELF),
        dict(base, modulus=2**32 - 5),
        dict(base, dim=65),
    ]
    for v in variants:
        other = expand(seed, **v)
        # no shared prefix: a different dim or modulus is a different stream, not a truncation
        assert not np.array_equal(other[:16].astype(np.uint64), ref[:16].astype(np.uint64)), v
    assert not np.array_equal(expand(b"\x02" * 32, **base), ref)
    # the domain encoding is injective on the length-prefixed fields
    assert domain(b"ab", "c", 1, 2) != domain(b"a", "bc", 1, 2)
    assert domain(b"", "x", 1, 256) != domain(b"", "x", 256, 1 << 8)


@pytest.mark.parametrize("m", [2, 3, 5, 7, 10, 255, 257])
def test_every_residue_occurs_for_small_modulus(m):
    """Including M - 1 (a mask drawn with an exclusive bound below M - 1 would never produce it).
    P[some residue missing in 4000 draws] <= 257 (1 - 1/257)^4000 < 1e-4; seeds are fixed."""
    v = expand(b"\x03" * 32, session=SESSION, purpose=PURPOSE_SELF, dim=4000, modulus=m)
    assert set(v.tolist()) == set(range(m))


def _chi2_pvalue(values: np.ndarray, m: int, bins: int) -> float:
    """Chi-square goodness of fit of values in Z_M against uniform, binned by floor(bins v / M)."""
    idx = (values.astype(object) * bins // m).astype(np.int64) if m > 2**56 else (
        values.astype(np.uint64) * np.uint64(bins) // np.uint64(m)).astype(np.int64)
    observed = np.bincount(idx, minlength=bins)
    # exact bin masses: bin j holds v in [ceil(j M / bins), ceil((j + 1) M / bins))
    edges = [-(-j * m // bins) for j in range(bins + 1)]
    expected = np.array([(edges[j + 1] - edges[j]) / m for j in range(bins)]) * len(values)
    return float(stats.chisquare(observed, expected).pvalue)


@pytest.mark.parametrize(
    ("m", "bins"),
    [(2**8, 256), (2**20, 256), (2**64, 256), (251, 251), (65537, 256), (2**32 - 5, 256), (2**24 + 1, 128)],
)
def test_chi_square_uniformity(m, bins):
    """Pearson chi-square of 51,200 PRG outputs against the uniform distribution on Z_M (powers of two
    and odd primes / rejection-sampled moduli). False-alarm rate: alpha = 1e-4 per case if the PRG is
    uniform; seeds are fixed so the test is deterministic (it passes or fails the same way each run)."""
    v = expand(b"chi-square-seed-" + m.to_bytes(16, "big"), session=SESSION, purpose=PURPOSE_SELF,
               dim=200 * bins, modulus=m)
    assert _chi2_pvalue(v, m, bins) > 1e-4


def test_chi_square_detects_modulo_bias():
    """Power of the check above: a biased sampler (keystream word mod M with M = 3 * 2**29 in uint32,
    values below 2**30 twice as likely) is rejected with p-value far below alpha."""
    m = 3 * 2**29
    key = b"\x05" * 32
    raw = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(4 * 51200))
    biased = np.frombuffer(raw, dtype="<u4") % np.uint32(m)
    assert _chi2_pvalue(biased, m, 256) < 1e-10


def test_bad_arguments():
    acc = zeros(8, 1000)
    seed = b"s" * 32
    with pytest.raises(InvalidInput):
        add_mask(acc, seed, session=SESSION, purpose=PURPOSE_SELF, modulus=1000, sign=0)
    with pytest.raises(InvalidInput):
        add_mask(acc.astype(np.uint32), seed, session=SESSION, purpose=PURPOSE_SELF, modulus=1000, sign=1)
    with pytest.raises(InvalidInput):
        expand(seed, session=SESSION, purpose=PURPOSE_SELF, dim=8, modulus=1000, out=np.zeros(7, np.uint16))
    with pytest.raises(InvalidInput):
        expand(seed, session="text", purpose=PURPOSE_SELF, dim=8, modulus=1000)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        expand(b"", session=SESSION, purpose=PURPOSE_SELF, dim=8, modulus=1000)
    with pytest.raises(InvalidInput):
        expand(seed, session=SESSION, purpose=PURPOSE_SELF, dim=-1, modulus=1000)
    with pytest.raises(InvalidInput):
        expand(seed, session=SESSION, purpose=PURPOSE_SELF, dim=8, modulus=1)
