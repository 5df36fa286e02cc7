"""Vectors over Z_M: dtype choice, modular add/sub, and the bit-packed wire format (secagg.ring)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.errors import InvalidInput, MalformedMessage
from secagg.ring import (
    add_into,
    as_ring_vector,
    bit_width,
    dtype_for,
    pack,
    packed_size,
    sub_into,
    unpack,
    zeros,
)

SMALL_PRIMES = [2, 3, 5, 7, 13, 251, 257, 65521, 65537, 1000003, 2**31 - 1, 2**61 - 1, 2**64 - 59]

# every regime of the arithmetic: powers of two (incl. full dtype width), small/odd/prime moduli,
# moduli just above a dtype boundary and just below the dtype maximum, and M = 2**64
moduli = st.one_of(
    st.integers(1, 64).map(lambda b: 1 << b),
    st.sampled_from(SMALL_PRIMES),
    st.integers(2, 2**64),
    st.integers(2, 300),
    st.tuples(st.sampled_from([8, 16, 32, 64]), st.integers(1, 7)).map(lambda t: (1 << t[0]) - t[1]),
    st.tuples(st.sampled_from([8, 16, 32]), st.integers(1, 7)).map(lambda t: (1 << t[0]) + t[1]),
    st.tuples(st.sampled_from([8, 16, 32, 64]), st.integers(0, 7)).map(lambda t: (1 << (t[0] - 1)) + t[1]),
)


@st.composite
def ring_vectors(draw, max_len: int = 64):
    m = draw(moduli)
    xs = draw(st.lists(st.integers(0, m - 1), max_size=max_len))
    return m, xs


def ref_pack(xs: list[int], m: int) -> bytes:
    """Reference encoding with Python big ints: element i occupies bits [i b, (i + 1) b)."""
    b = (m - 1).bit_length()
    bits = "".join(format(x, f"0{b}b")[::-1] for x in xs)  # LSB first, element after element
    nbytes = (len(xs) * b + 7) // 8
    return int(bits[::-1] or "0", 2).to_bytes(nbytes, "little")


def test_known_answers_from_vectors_md():
    assert pack(np.array([1, 3, 7, 15], dtype=np.uint8), 32) == bytes.fromhex("619c07")
    assert pack(np.array([13, 17, 19], dtype=np.uint16), 512) == bytes.fromhex("0d224c00")
    assert unpack(bytes.fromhex("619c07"), 4, 32).tolist() == [1, 3, 7, 15]
    assert unpack(bytes.fromhex("0d224c00"), 3, 512).tolist() == [13, 17, 19]
    assert packed_size(4, 32) == 3 and packed_size(3, 512) == 4


@pytest.mark.parametrize(
    ("m", "dt", "bits"),
    [(2, np.uint8, 1), (256, np.uint8, 8), (257, np.uint16, 9), (2**16, np.uint16, 16), (2**16 + 1, np.uint32, 17),
     (2**32, np.uint32, 32), (2**32 + 1, np.uint64, 33), (2**64 - 1, np.uint64, 64), (2**64, np.uint64, 64)],
)
def test_dtype_and_bit_width_boundaries(m, dt, bits):
    assert dtype_for(m) == np.dtype(dt)
    assert bit_width(m) == bits


@pytest.mark.parametrize("m", [0, 1, -5, 2**64 + 1, 2**70, 2.0, "8", True])
def test_bad_modulus_rejected(m):
    with pytest.raises(InvalidInput):
        dtype_for(m)


@settings(max_examples=300)
@given(ring_vectors(max_len=80))
def test_pack_matches_reference_and_round_trips(mx):
    m, xs = mx
    x = as_ring_vector(xs, m)
    data = pack(x, m)
    assert data == ref_pack(xs, m)
    assert len(data) == packed_size(len(xs), m)
    y = unpack(data, len(xs), m)
    assert y.dtype == dtype_for(m)
    assert y.tolist() == xs


@pytest.mark.parametrize("b", range(1, 65))
def test_every_bit_width(b):
    """Each width 1..64 (group sizes 1, 2, 4, 8; words straddling uint64 boundaries), lengths that are
    and are not multiples of the group size, values at both ends of the range."""
    rng = np.random.default_rng(b)
    for m in {1 << b, (1 << b) - 1 if b > 1 else 2, (1 << (b - 1)) + 1 if b > 1 else 2}:
        for d in (0, 1, 7, 8, 9, 33, 1000):
            xs = [int(v) for v in rng.integers(0, 2**63, d, dtype=np.uint64)]
            xs = [v * 2 % m for v in xs]
            if d >= 2:
                xs[0], xs[-1] = m - 1, m - 1
            x = as_ring_vector(xs, m)
            data = pack(x, m)
            assert data == ref_pack(xs, m)
            assert unpack(data, d, m).tolist() == xs


def test_pack_long_vector():
    m, d = 2**20, 200_003
    xs = [int(v) for v in np.random.default_rng(7).integers(0, m, d)]
    data = pack(as_ring_vector(xs, m), m)
    assert data == ref_pack(xs, m)
    assert unpack(data, d, m).tolist() == xs


@settings(max_examples=150)
@given(ring_vectors(max_len=40), st.sampled_from([-1, 1, 2]))
def test_unpack_rejects_wrong_length(mx, delta):
    m, xs = mx
    data = pack(as_ring_vector(xs, m), m)
    bad = data + b"\x00" * delta if delta > 0 else data[:delta]
    if len(bad) == len(data) or (delta < 0 and not data):
        return
    with pytest.raises(MalformedMessage):
        unpack(bad, len(xs), m)


@settings(max_examples=150)
@given(ring_vectors(max_len=40).filter(lambda mx: (len(mx[1]) * ((mx[0] - 1).bit_length())) % 8 != 0))
def test_unpack_rejects_nonzero_padding(mx):
    m, xs = mx
    data = bytearray(pack(as_ring_vector(xs, m), m))
    data[-1] |= 0x80  # the top bit of the last byte is always padding here
    with pytest.raises(MalformedMessage):
        unpack(bytes(data), len(xs), m)


@settings(max_examples=150)
@given(moduli.filter(lambda m: m & (m - 1) != 0), st.integers(0, 20), st.data())
def test_unpack_rejects_out_of_range_element(m, n, data):
    b = (m - 1).bit_length()
    big = data.draw(st.integers(m, (1 << b) - 1))
    pos = data.draw(st.integers(0, n))
    xs = [0] * n
    xs.insert(pos, big)
    with pytest.raises(MalformedMessage):
        unpack(ref_pack(xs, m), n + 1, m)


def test_pack_non_contiguous_view():
    x = as_ring_vector(list(range(40)), 100)
    assert pack(x[::2], 100) == ref_pack(list(range(0, 40, 2)), 100)
    assert pack(as_ring_vector(list(range(40)), 2**16)[::3], 2**16) == ref_pack(list(range(0, 40, 3)), 2**16)


def test_unpack_rejects_non_bytes():
    with pytest.raises(MalformedMessage):
        unpack("abc", 3, 256)  # type: ignore[arg-type]


@settings(max_examples=200)
@given(moduli, st.data())
def test_add_sub_match_python_reference(m, data):
    n = data.draw(st.integers(0, 40))
    # bias towards the extremes where overflow bugs live
    elem = st.one_of(st.integers(0, m - 1), st.integers(max(0, m - 4), m - 1), st.integers(0, min(3, m - 1)))
    a = data.draw(st.lists(elem, min_size=n, max_size=n))
    b = data.draw(st.lists(elem, min_size=n, max_size=n))
    acc = as_ring_vector(a, m)
    add_into(acc, as_ring_vector(b, m), m)
    assert acc.tolist() == [(x + y) % m for x, y in zip(a, b)]
    acc = as_ring_vector(a, m)
    sub_into(acc, as_ring_vector(b, m), m)
    assert acc.tolist() == [(x - y) % m for x, y in zip(a, b)]


@pytest.mark.parametrize("m", [2**32 - 5, 2**64 - 59, 2**16 - 1, 255, 2**64, 2**63 + 1, 2**31 + 11])
def test_add_sub_exhaustive_extremes(m):
    """All pairs from the 6 smallest and 6 largest residues (where wrap-around happens)."""
    vals = [v for v in list(range(6)) + list(range(m - 6, m)) if 0 <= v < m]
    a = [x for x in vals for _ in vals]
    b = [y for _ in vals for y in vals]
    acc = as_ring_vector(a, m)
    add_into(acc, as_ring_vector(b, m), m)
    assert acc.tolist() == [(x + y) % m for x, y in zip(a, b)]
    acc = as_ring_vector(a, m)
    sub_into(acc, as_ring_vector(b, m), m)
    assert acc.tolist() == [(x - y) % m for x, y in zip(a, b)]


def test_add_into_rejects_mismatched_operands():
    m = 1000
    acc = zeros(4, m)
    with pytest.raises(InvalidInput):
        add_into(acc, np.zeros(4, dtype=np.uint32), m)  # wrong dtype
    with pytest.raises(InvalidInput):
        add_into(acc, zeros(5, m), m)  # wrong length
    ro = zeros(4, m)
    ro.flags.writeable = False
    with pytest.raises(InvalidInput):
        sub_into(ro, zeros(4, m), m)


def test_as_ring_vector_validation():
    m = 100
    v = as_ring_vector([1, 2, 99], m)
    assert v.dtype == np.uint8 and v.tolist() == [1, 2, 99]
    src = np.array([1, 2, 3], dtype=np.int64)
    out = as_ring_vector(src, m, dim=3)
    out[0] = 7
    assert src[0] == 1  # a copy
    assert as_ring_vector([2**64 - 1], 2**64).tolist() == [2**64 - 1]
    for bad in ([1.0, 2.0], [[1, 2]], [-1, 2], [100], [True, False], np.array([0.5]), ["a"], [2**64]):
        with pytest.raises(InvalidInput):
            as_ring_vector(bad, m)
    with pytest.raises(InvalidInput):
        as_ring_vector([1, 2], m, dim=3)
    with pytest.raises(InvalidInput):
        as_ring_vector([-1, 2**64 - 1], 2**64)
    assert zeros(5, 2**40).dtype == np.uint64 and not zeros(5, 2**40).any()
