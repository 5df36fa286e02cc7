"""Shamir t-of-n secret sharing over the prime field F_p, p = 2**256 + 297 (Shamir 1979).

Bonawitz et al. (CCS 2017, Section 3.1) share the seed ``b_u`` and the key ``s_sk_u`` of every user.
A 32-byte secret is a single field element because ``p`` is the smallest prime above ``2**256``
(primality checked by Miller-Rabin in the tests), so a share is one field element of
:data:`SHARE_SIZE` = 33 bytes, big-endian.

``split``: ``f(X) = s + a_1 X + ... + a_{t-1} X^{t-1}`` with ``a_i`` uniform in F_p (drawn with
:meth:`Drbg.randbelow`), and party ``i`` gets ``f(i + 1)`` (x = 0 is the secret, so ids are shifted).

``reconstruct``: takes exactly the ``t`` shares with the smallest ids and computes
``s = f(0) = sum_j y_j * lambda_j``, ``lambda_j = prod_{m != j} x_m / (x_m - x_j)`` (Lagrange at 0).
The coefficients depend only on the set of ids, so they are cached per tuple of ids: the server
reconstructs many secrets from the same responders.
"""

from __future__ import annotations

import math

import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from secagg.drbg import Drbg
from secagg.errors import InvalidInput, MalformedMessage

__all__ = ["PRIME", "SHARE_SIZE", "split", "reconstruct", "lagrange_at_zero", "batch_inverse"]

PRIME: int = (1 << 256) + 297
SHARE_SIZE: int = (PRIME.bit_length() + 7) // 8  # 33
_REDUCE_EVERY = 16


def _check_threshold(threshold: int, n: int) -> int:
    if isinstance(threshold, bool) or not isinstance(threshold, int):
        raise InvalidInput(f"threshold must be an int, got {threshold!r}")
    if not 1 <= threshold <= n:
        raise InvalidInput(f"threshold must satisfy 1 <= t <= {n} (number of parties), got {threshold}")
    return threshold


def _check_ids(party_ids: Sequence[int], prime: int) -> list[int]:
    ids = list(party_ids)
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < prime - 1:
            raise InvalidInput(f"party ids must be ints in [0, p - 1), got {i!r}")
    if len(set(ids)) != len(ids):
        raise InvalidInput("party ids must be distinct")
    return ids


def _split_int(
    secret: int, threshold: int, party_ids: Sequence[int], randbelow: Callable[[int], int], prime: int
) -> dict[int, int]:
    """Field-level split over F_prime (``prime`` is a parameter so tests can use a tiny field)."""
    ids = _check_ids(party_ids, prime)
    t = _check_threshold(threshold, len(ids))
    if not 0 <= secret < prime:
        raise InvalidInput("secret is not a field element")
    coeffs = [secret] + [randbelow(prime) for _ in range(t - 1)]
    if len(ids) < 32:
        out: dict[int, int] = {}
        for i in ids:
            y = 0
            for c in reversed(coeffs):  # Horner
                y = (y * (i + 1) + c) % prime
            out[i] = y
        return out
    # Horner's rule for all parties at once (numpy object arrays of Python ints); the reduction mod p
    # is applied every _REDUCE_EVERY steps only (x = id + 1 is small, so the values grow slowly).
    xs = np.array([i + 1 for i in ids], dtype=object)
    y = np.zeros(len(ids), dtype=object)
    for j, c in enumerate(reversed(coeffs)):
        y = y * xs + c
        if j % _REDUCE_EVERY == _REDUCE_EVERY - 1:
            y %= prime
    return {i: int(v) % prime for i, v in zip(ids, y.tolist())}


def batch_inverse(values: Sequence[int], prime: int = PRIME) -> list[int]:
    """``[1 / v mod prime for v in values]`` (all nonzero mod prime) with one modular inversion in total
    (Montgomery's batch-inversion trick: prefix products, one inverse, unwound from the end)."""
    r = len(values)
    prefix = [1] * (r + 1)
    for i, v in enumerate(values):
        prefix[i + 1] = prefix[i] * v % prime
    inv = pow(prefix[r], -1, prime)
    out = [0] * r
    for i in range(r - 1, -1, -1):
        out[i] = inv * prefix[i] % prime
        inv = inv * values[i] % prime
    return out


@functools.lru_cache(maxsize=256)
def lagrange_at_zero(xs: tuple[int, ...], prime: int = PRIME) -> tuple[int, ...]:
    """``lambda_j = prod_{m != j} x_m / (x_m - x_j) mod p`` for distinct nonzero ``xs``.

    One modular inversion in total (:func:`batch_inverse` over the denominators).
    """
    num_all = 1
    for x in xs:
        num_all = num_all * x % prime
    # numerator of lambda_j is num_all / x_j: fold x_j into the denominator; the points are small
    # integers (client id + 1), so each product is formed exactly and reduced once
    dens = [xj * math.prod([xm - xj for m, xm in enumerate(xs) if m != j]) % prime for j, xj in enumerate(xs)]
    return tuple(num_all * inv % prime for inv in batch_inverse(dens, prime))


def _reconstruct_int(points: Mapping[int, int], threshold: int, prime: int) -> int:
    """Field-level reconstruction from ``{party id: y}`` using the ``threshold`` smallest ids."""
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise InvalidInput(f"threshold must be a positive int, got {threshold!r}")
    if len(points) < threshold:
        raise InvalidInput(f"need at least {threshold} shares, got {len(points)}")
    ids = sorted(_check_ids(list(points), prime))[:threshold]
    lam = lagrange_at_zero(tuple(i + 1 for i in ids), prime)
    s = 0
    for i, li in zip(ids, lam):
        s += points[i] * li
    return s % prime


def split(secret: bytes, threshold: int, party_ids: Sequence[int], drbg: Drbg) -> dict[int, bytes]:
    """t-of-n shares of ``secret`` (big-endian integer < PRIME, at most SHARE_SIZE bytes).

    Returns ``{party id: f(id + 1) as SHARE_SIZE big-endian bytes}``. InvalidInput if
    ``t < 1``, ``t > len(party_ids)``, ids are not distinct non-negative ints, or the secret is too big.
    """
    if not isinstance(secret, (bytes, bytearray)):
        raise InvalidInput("secret must be bytes")
    if len(secret) > SHARE_SIZE:
        raise InvalidInput(f"secret of {len(secret)} bytes does not fit in one field element")
    s = int.from_bytes(secret, "big")
    if s >= PRIME:
        raise InvalidInput("secret is not smaller than the field prime")
    ys = _split_int(s, threshold, party_ids, drbg.randbelow, PRIME)
    return {i: y.to_bytes(SHARE_SIZE, "big") for i, y in ys.items()}


def reconstruct(shares: Mapping[int, bytes], threshold: int, secret_size: int = 32) -> bytes:
    """Recover the secret from ``{party id: share}`` using exactly the ``threshold`` smallest ids.

    InvalidInput if fewer than ``threshold`` shares are given; MalformedMessage if a share is not a
    SHARE_SIZE encoding of a field element, or if the recovered value does not fit ``secret_size``
    bytes (inconsistent shares).
    """
    points: dict[int, int] = {}
    for i, sh in shares.items():
        if not isinstance(sh, (bytes, bytearray)) or len(sh) != SHARE_SIZE:
            raise MalformedMessage(f"a share is {SHARE_SIZE} bytes")
        y = int.from_bytes(sh, "big")
        if y >= PRIME:
            raise MalformedMessage("share is not a field element")
        points[i] = y
    s = _reconstruct_int(points, threshold, PRIME)
    if isinstance(secret_size, bool) or not isinstance(secret_size, int) or secret_size < 0:
        raise InvalidInput(f"secret_size must be a non-negative int, got {secret_size!r}")
    try:
        return s.to_bytes(secret_size, "big")
    except OverflowError:
        raise MalformedMessage("reconstructed value does not fit the secret size (inconsistent shares)") from None
