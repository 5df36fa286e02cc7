"""Shamir t-of-n sharing over F_p, p = 2**256 + 297 (secagg.shamir)."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.drbg import Drbg
from secagg.errors import InvalidInput, MalformedMessage
from secagg.shamir import (
    PRIME,
    SHARE_SIZE,
    _reconstruct_int,
    _split_int,
    lagrange_at_zero,
    reconstruct,
    split,
)

# the first 40 primes as Miller-Rabin bases: a composite passes all of them with probability
# < 4**-40 even for adversarially chosen inputs, and PRIME is a fixed public constant
_BASES = [p for p in range(2, 200) if all(p % q for q in range(2, p))][:40]


def is_probable_prime(n: int) -> bool:
    if n < 2:
        return False
    for p in _BASES:
        if n % p == 0:
            return n == p
    d, s = n - 1, 0
    while d % 2 == 0:
        d //= 2
        s += 1
    for a in _BASES:
        x = pow(a, d, n)
        if x in (1, n - 1):
            continue
        for _ in range(s - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def test_prime_is_the_smallest_prime_above_2_256():
    assert is_probable_prime(PRIME)
    assert PRIME > 2**256
    assert not any(is_probable_prime(c) for c in range(2**256 + 1, PRIME, 2))
    assert SHARE_SIZE == 33 == (PRIME.bit_length() + 7) // 8
    assert is_probable_prime(13) and not is_probable_prime(15) and not is_probable_prime(561)  # Carmichael


@st.composite
def sharing_setups(draw):
    n = draw(st.integers(1, 12))
    ids = draw(st.lists(st.integers(0, 1000), min_size=n, max_size=n, unique=True))  # gaps in ids
    t = draw(st.integers(1, n))
    subset = draw(st.permutations(ids).map(lambda p: p[: draw(st.integers(t, n))]))  # any order, >= t
    return ids, t, subset


@settings(max_examples=120)
@given(st.binary(min_size=32, max_size=32), sharing_setups(), st.integers(0, 2**64))
def test_any_t_shares_reconstruct(secret, setup, seed):
    ids, t, subset = setup
    shares = split(secret, t, ids, Drbg(seed))
    assert set(shares) == set(ids) and all(len(s) == SHARE_SIZE for s in shares.values())
    assert reconstruct({i: shares[i] for i in subset}, t) == secret


@settings(max_examples=60)
@given(st.binary(min_size=32, max_size=32), sharing_setups(), st.integers(0, 2**64))
def test_fewer_than_t_shares_rejected(secret, setup, seed):
    ids, t, subset = setup
    shares = split(secret, t, ids, Drbg(seed))
    with pytest.raises(InvalidInput):
        reconstruct({i: shares[i] for i in subset[: t - 1]}, t)


@pytest.mark.parametrize(("p", "t", "n"), [(13, 2, 4), (13, 3, 5), (17, 3, 4), (7, 4, 5)])
def test_t_minus_1_shares_are_consistent_with_every_secret(p, t, n):
    """Perfect secrecy, exhaustively in a small field: for every secret, the map from the t-1 random
    coefficients to the shares of any t-1 parties is a bijection onto F_p^(t-1), so those shares have
    the same (uniform) distribution whatever the secret is."""
    ids = [i for i in range(p - 1) if i != 2][:n]  # ids with a gap, all x = id + 1 nonzero in F_p
    assert len(ids) == n
    for coalition in itertools.combinations(ids, t - 1):
        views: dict[int, Counter] = {}
        for s in range(p):
            c: Counter = Counter()
            for coeffs in itertools.product(range(p), repeat=t - 1):
                it = iter(coeffs)
                ys = _split_int(s, t, ids, lambda _m, it=it: next(it), p)
                c[tuple(ys[i] for i in coalition)] += 1
            assert len(c) == p ** (t - 1) and set(c.values()) == {1}
            views[s] = c
        assert all(views[s] == views[0] for s in range(p))


@pytest.mark.parametrize("p", [13, 17])
def test_small_field_reconstruction_exhaustive(p):
    """Every secret, every coefficient choice (t = 3), every 3-subset of 5 parties, in F_13 / F_17."""
    ids = [0, 3, 4, 7, 9]
    for s in range(p):
        for coeffs in itertools.product(range(p), repeat=2):
            it = iter(coeffs)
            ys = _split_int(s, 3, ids, lambda _m, it=it: next(it), p)
            for sub in itertools.combinations(ids, 3):
                assert _reconstruct_int({i: ys[i] for i in sub}, 3, p) == s


def test_uses_exactly_the_first_t_shares_in_id_order():
    secret = bytes(range(32))
    shares = split(secret, 3, [2, 5, 8, 11, 14], Drbg(1))
    tampered = dict(shares)
    tampered[14] = (int.from_bytes(shares[14], "big") ^ 1).to_bytes(SHARE_SIZE, "big")
    assert reconstruct(tampered, 3) == secret  # id 14 is not among the 3 smallest
    tampered = dict(shares)
    tampered[5] = (int.from_bytes(shares[5], "big") ^ 1).to_bytes(SHARE_SIZE, "big")
    try:
        assert reconstruct(tampered, 3) != secret
    except MalformedMessage:
        pass  # the wrong value may not even fit in 32 bytes


def test_deterministic_and_randomised_by_drbg():
    s = b"\x42" * 32
    assert split(s, 3, [0, 1, 2, 3], Drbg(7)) == split(s, 3, [0, 1, 2, 3], Drbg(7))
    assert split(s, 3, [0, 1, 2, 3], Drbg(7)) != split(s, 3, [0, 1, 2, 3], Drbg(8))
    # t = 1: every share is the secret itself (degree-0 polynomial)
    assert set(split(s, 1, [0, 1], Drbg(7)).values()) == {s.rjust(SHARE_SIZE, b"\x00")}


def test_short_secrets_and_secret_size():
    shares = split(b"\x01\x02", 2, [0, 1, 2], Drbg(0))
    assert reconstruct(shares, 2, secret_size=2) == b"\x01\x02"
    assert reconstruct(shares, 2) == b"\x01\x02".rjust(32, b"\x00")


def test_lagrange_coefficients_cached_and_correct():
    xs = (1, 4, 6, 9)
    lam = lagrange_at_zero(xs)
    # sum of Lagrange coefficients at 0 is 1 (interpolating the constant polynomial 1)
    assert sum(lam) % PRIME == 1
    before = lagrange_at_zero.cache_info().hits
    lagrange_at_zero(xs)
    assert lagrange_at_zero.cache_info().hits == before + 1


@pytest.mark.parametrize(
    ("secret", "t", "ids"),
    [
        (b"\x00" * 32, 0, [0, 1]),
        (b"\x00" * 32, 3, [0, 1]),
        (b"\x00" * 32, 2, [0, 0, 1]),
        (b"\x00" * 32, 2, [0, -1]),
        (b"\x00" * 32, 2, [0, True]),
        (b"\x00" * 34, 2, [0, 1]),
        (b"\xff" * 33, 2, [0, 1]),
        ("text", 2, [0, 1]),
    ],
)
def test_split_rejects_bad_input(secret, t, ids):
    with pytest.raises(InvalidInput):
        split(secret, t, ids, Drbg(0))


def test_reconstruct_rejects_malformed_shares():
    shares = split(b"\x05" * 32, 2, [0, 1, 2], Drbg(0))
    for bad in (shares[0][:-1], shares[0] + b"\x00", b"\xff" * SHARE_SIZE, PRIME.to_bytes(SHARE_SIZE, "big")):
        with pytest.raises(MalformedMessage):
            reconstruct({0: bad, 1: shares[1]}, 2)
    with pytest.raises(InvalidInput):
        reconstruct(shares, 0)


@pytest.mark.parametrize(("n", "t"), [(31, 20), (32, 21), (70, 47)])
def test_many_parties_match_polynomial_definition(n, t):
    """Large party sets (vectorised evaluation path): shares equal f(id + 1) for the polynomial whose
    coefficients are the secret followed by t - 1 draws of Drbg.randbelow(PRIME)."""
    secret = bytes(range(100, 132))
    ids = [3 * i + 1 for i in range(n)]
    shares = split(secret, t, ids, Drbg(99))
    d = Drbg(99)
    coeffs = [int.from_bytes(secret, "big")] + [d.randbelow(PRIME) for _ in range(t - 1)]
    for i in ids:
        expected = sum(c * pow(i + 1, j, PRIME) for j, c in enumerate(coeffs)) % PRIME
        assert int.from_bytes(shares[i], "big") == expected
    picked = ids[::-1][: t + 3]
    assert reconstruct({i: shares[i] for i in picked}, t) == secret
