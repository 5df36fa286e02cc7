"""Robust reconstruction of Shamir secrets: a consistency check, then Reed-Solomon decoding (Gao).

Shamir shares of one secret with threshold ``t`` held at the points ``x_1 .. x_r`` (``x = id + 1``,
:mod:`secagg.shamir`) form a codeword of the Reed-Solomon code
``RS = {(f(x_1), ..., f(x_r)) : deg f < t}`` over F_p, ``p = 2**256 + 297``: a code of length ``r``,
dimension ``t`` and minimum distance ``r - t + 1`` (McEliece and Sarwate, *On sharing secrets and
Reed-Solomon codes*, CACM 1981). When the server receives ``r > t`` shares it can therefore

* **detect** any set of wrong shares that does not turn the word into another codeword, and
* **correct** up to ``e_max = floor((r - t) / 2)`` wrong shares, learning who sent them.

Fast path (all shares right): one interpolation plus a check of ``O(r)`` field operations per secret.
The dual of ``RS`` is the generalized Reed-Solomon code ``{(v_1 g(x_1), ..., v_r g(x_r)) : deg g < r - t}``
with ``v_i = 1 / prod_{j != i} (x_i - x_j)`` (``sum_i v_i h(x_i)`` is the coefficient of ``X^{r-1}`` of the
interpolant of ``h``, zero when ``deg h <= r - 2``). So ``y`` is a codeword iff its syndrome
``s_j = sum_i v_i x_i^j y_i`` (``j < r - t``) vanishes. Instead of the ``r - t`` syndromes the server
checks one random combination ``sum_j rho^j s_j = sum_i w_i y_i`` with
``w_i = v_i (1 + rho x_i + ... + (rho x_i)^{r-t-1})``; the weights depend only on the set of points and
``rho``, so they are computed once per set of responders (``O(r^2)``) and every secret costs ``O(r)``.

Soundness: ``rho`` is derived by the server *after every share has arrived*, as a hash of all of them
(:func:`challenge`; a Fiat-Shamir challenge, so seeded runs stay reproducible). For a non-codeword
``y`` the syndrome is a nonzero polynomial of degree ``<= r - t - 1`` in ``rho``, so the check passes
with probability ``<= (r - t - 1) / p < 2**-240`` per secret (``r < 2**16``), modelling the hash as a
random oracle; a sender who grinds its shares to change ``rho`` gains nothing per try.

Slow path (the check failed): Gao's decoder (S. Gao, *A new algorithm for decoding Reed-Solomon codes*,
2003): interpolate ``g_1`` through all ``r`` points, run the extended Euclidean algorithm on
``g_0 = prod (X - x_i)`` and ``g_1`` until the remainder ``g`` has degree ``< (r + t) / 2``, and divide
``g`` by its Bezout coefficient ``v``: with at most ``e_max`` errors ``g / v`` is the sharing polynomial
(exact division). The holders whose share disagrees with it are the wrong senders. Any other outcome
(inexact division, degree ``>= t``, more than ``e_max`` disagreements) raises
:class:`~secagg.errors.InconsistentShares`: the shares are inconsistent beyond the decoding radius.

What decoding cannot do: ``r - t + 1 - e_max`` or more *coordinated* wrong shares can form a word
within ``e_max`` of a different codeword, which decodes to a wrong secret without any sign. The
server checks every reconstructed ``s_sk_v`` against the advertised ``s_pk_v``; for ``b_u`` only the
opt-in commitment (:func:`self_mask_commitment`) closes that gap.

The server is the only caller (:meth:`secagg.server.Server.unmasking`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes

from secagg.errors import InconsistentShares, InvalidInput
from secagg.shamir import PRIME, batch_inverse, lagrange_at_zero

__all__ = [
    "WrongShare",
    "Recovered",
    "challenge",
    "check_weights",
    "decode",
    "recover",
    "recover_many",
    "self_mask_commitment",
    "COMMITMENT_SIZE",
]

COMMITMENT_SIZE = 32
_CHALLENGE_DOMAIN = b"secagg/robust-reconstruction/v1"
_COMMITMENT_DOMAIN = b"secagg/self-mask-commitment/v1"


@dataclass(frozen=True)
class WrongShare:
    """One share the server proved wrong by decoding: ``sender`` sent a share of ``owner``'s ``secret``
    (``"b"``: self-mask seed, ``"s_sk"``: mask key) that does not lie on the sharing polynomial decoded
    from the other holders' shares. The server ignores every later share of ``sender``."""

    sender: int
    secret: str
    owner: int


@dataclass(frozen=True)
class Recovered:
    """A recovered secret (a field element) and the holders whose shares disagreed with it."""

    secret: int
    wrong: tuple[int, ...]


# ---------------------------------------------------------------------------------------------------
# hashing: the challenge and the commitment
# ---------------------------------------------------------------------------------------------------
def _sha256(*parts: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    for part in parts:
        h.update(part)
    return h.finalize()


def challenge(session: bytes, shares: Iterable[bytes]) -> int:
    """``rho = SHA-256(domain | session | every share received, in a fixed order) mod p``.

    ``shares`` is the canonical serialisation of everything the check will cover (the server passes
    the unmasking responses it accepted, in id order), so ``rho`` is fixed only once every share is.
    """
    h = hashes.Hash(hashes.SHA256())
    h.update(_CHALLENGE_DOMAIN)
    h.update(bytes(session))
    for part in shares:
        h.update(part)
    return int.from_bytes(h.finalize(), "big") % PRIME


def self_mask_commitment(session: bytes, owner: int, b: bytes) -> bytes:
    """``SHA-256("secagg/self-mask-commitment/v1" | session | owner u32 | b)``: client ``owner``'s
    commitment to its self-mask seed ``b`` (32 uniform bytes, so the hash hides it in the random-oracle
    model; binding by collision resistance). Bound to the session and the owner so it cannot be
    replayed into another session or claimed by another client."""
    if not isinstance(owner, int) or isinstance(owner, bool) or not 0 <= owner < 2**32:
        raise InvalidInput(f"owner must be a client id, got {owner!r}")
    return _sha256(_COMMITMENT_DOMAIN, bytes(session), owner.to_bytes(4, "big"), bytes(b))


# ---------------------------------------------------------------------------------------------------
# the fast check
# ---------------------------------------------------------------------------------------------------
def _dual_multipliers(xs: Sequence[int], p: int) -> list[int]:
    """``v_i = 1 / prod_{j != i} (x_i - x_j) mod p`` (one inversion: batch trick). The points are small
    integers (client id + 1), so each product is formed exactly and reduced once."""
    return batch_inverse([math.prod([xi - xj for xj in xs if xj != xi]) % p for xi in xs], p)


@functools.lru_cache(maxsize=64)
def check_weights(xs: tuple[int, ...], threshold: int, rho: int, prime: int = PRIME) -> tuple[int, ...]:
    """``w_i = v_i * sum_{j < r - t} (rho x_i)^j``: ``sum_i w_i y_i = 0`` for every codeword ``y`` of the
    Reed-Solomon code of dimension ``t`` on the distinct nonzero points ``xs`` (module docstring).
    The geometric sums ``(z^m - 1) / (z - 1)``, ``z = rho x_i``, share one batch inversion."""
    r = len(xs)
    m = r - threshold
    if m <= 0:
        return ()
    v = _dual_multipliers(xs, prime)
    zs = [rho * xi % prime for xi in xs]
    inv = batch_inverse([(z - 1) % prime or 1 for z in zs], prime)  # z = 1: its sum is m (inverse unused)
    return tuple(vi * ((m % prime) if z == 1 else (pow(z, m, prime) - 1) * iz % prime) % prime
                 for vi, z, iz in zip(v, zs, inv))


# ---------------------------------------------------------------------------------------------------
# polynomials over F_p: coefficient lists, lowest degree first, no trailing zeros ([] is 0)
# ---------------------------------------------------------------------------------------------------
def _trim(a: list[int]) -> list[int]:
    while a and a[-1] == 0:
        a.pop()
    return a


def _sub(a: list[int], b: list[int], p: int) -> list[int]:
    n = max(len(a), len(b))
    return _trim([((a[i] if i < len(a) else 0) - (b[i] if i < len(b) else 0)) % p for i in range(n)])


def _mul(a: list[int], b: list[int], p: int) -> list[int]:
    if not a or not b:
        return []
    out = [0] * (len(a) + len(b) - 1)
    for i, ai in enumerate(a):
        if ai:
            for j, bj in enumerate(b):
                out[i + j] += ai * bj
    return _trim([c % p for c in out])


def _divmod(a: list[int], b: list[int], p: int) -> tuple[list[int], list[int]]:
    if not b:
        raise ZeroDivisionError("polynomial division by zero")
    rem = list(a)
    inv_lead = pow(b[-1], -1, p)
    db = len(b) - 1
    q = [0] * max(len(a) - db, 0)
    for k in range(len(a) - 1 - db, -1, -1):
        c = rem[k + db] * inv_lead % p
        q[k] = c
        if c:
            for j, bj in enumerate(b):
                rem[k + j] = (rem[k + j] - c * bj) % p
    return _trim(q), _trim(rem[:db])


def _eval(a: list[int], x: int, p: int) -> int:
    y = 0
    for c in reversed(a):
        y = (y * x + c) % p
    return y


def _interpolate(xs: Sequence[int], ys: Sequence[int], p: int) -> tuple[list[int], list[int]]:
    """``(g0, g1)``: ``g0 = prod (X - x_i)`` and the interpolant ``g1`` of degree ``< r`` (O(r^2))."""
    g0 = [1]
    for x in xs:  # multiply by (X - x)
        nxt = [0] * (len(g0) + 1)
        for i, c in enumerate(g0):
            nxt[i] = (nxt[i] - x * c) % p
            nxt[i + 1] = (nxt[i + 1] + c) % p
        g0 = nxt
    v = _dual_multipliers(xs, p)
    r = len(xs)
    g1 = [0] * r
    for x, y, vi in zip(xs, ys, v):
        c = y * vi % p
        if not c:
            continue
        # g0 / (X - x) by synthetic division, scaled by c
        acc = 0
        for k in range(r, 0, -1):
            acc = (g0[k] + acc * x) % p
            g1[k - 1] += c * acc
    return g0, _trim([c % p for c in g1])


def decode(xs: Sequence[int], ys: Sequence[int], threshold: int, prime: int = PRIME) -> list[int] | None:
    """Gao's Reed-Solomon decoder: the polynomial ``f`` (``deg f < threshold``) with at most
    ``floor((r - t) / 2)`` disagreements with ``(xs, ys)``, or None if there is none."""
    r, t = len(xs), threshold
    g0, g1 = _interpolate(xs, ys, prime)
    r0, r1 = g0, g1
    v0: list[int] = []
    v1: list[int] = [1]
    while len(r1) - 1 >= (r + t) / 2:  # deg r1 >= (r + t) / 2
        q, rem = _divmod(r0, r1, prime)
        r0, r1 = r1, rem
        v0, v1 = v1, _sub(v0, _mul(q, v1, prime), prime)
    if not v1:
        return None
    f, rem = _divmod(r1, v1, prime)
    if rem or len(f) > t:
        return None
    # exact division g = f v forces v(x_i) = 0 wherever f(x_i) != y_i (g0 vanishes there), and
    # deg v <= (r - t) / 2, so this count cannot exceed the radius: a defensive re-check
    wrong = sum(1 for x, y in zip(xs, ys) if _eval(f, x, prime) != y)
    if wrong > (r - t) // 2:
        return None
    return f


# ---------------------------------------------------------------------------------------------------
# the server's entry point
# ---------------------------------------------------------------------------------------------------
def recover(points: Mapping[int, int], threshold: int, rho: int, *, what: str = "secret", prime: int = PRIME) -> Recovered:
    """Recover ``f(0)`` from ``{holder id: share}`` (``r = len(points) >= t`` field elements).

    ``r == t``: plain interpolation (no redundancy, nothing to check). ``r > t``: the dual-code check with
    challenge ``rho``; if it passes, interpolation from the ``t`` smallest ids; otherwise Gao decoding of
    all ``r`` shares, returning the secret and the (sorted) ids whose shares were wrong.

    Raises:
        InvalidInput: fewer than ``t`` points.
        InconsistentShares: the shares are not within ``floor((r - t) / 2)`` of any sharing polynomial.
    """
    t = int(threshold)
    ids = sorted(points)
    r = len(ids)
    if t < 1 or r < t:
        raise InvalidInput(f"need at least t = {t} shares, got {r}")
    xs = tuple(i + 1 for i in ids)
    ys = [points[i] for i in ids]
    if r > t:
        w = check_weights(xs, t, rho, prime)
        if sum(wi * yi for wi, yi in zip(w, ys)) % prime != 0:
            f = decode(xs, ys, t, prime)
            if f is None:
                raise InconsistentShares(
                    "unmasking",
                    f"the {r} shares of {what} are inconsistent beyond the decoding radius floor((r - t) / 2) = {(r - t) // 2}",
                )
            wrong = tuple(i for i, x, y in zip(ids, xs, ys) if _eval(f, x, prime) != y)
            return Recovered(f[0] if f else 0, wrong)
    lam = lagrange_at_zero(xs[:t], prime)
    return Recovered(sum(y * li for y, li in zip(ys[:t], lam)) % prime, ())


def recover_many(
    secrets: Iterable[tuple[str, int, Mapping[int, int]]], threshold: int, rho: int, *, prime: int = PRIME
) -> tuple[list[int], list[WrongShare]]:
    """Recover a batch of secrets ``(kind, owner, {holder id: share})`` in order, as the server does in
    round 4: each with :func:`recover`, and once a holder is caught with a wrong share, its shares of
    every later secret are ignored. Returns the secrets (field elements) and the :class:`WrongShare`
    records in detection order.

    Raises:
        InconsistentShares: a secret's shares are inconsistent beyond the decoding radius, or fewer than
            ``t`` remain once the caught holders are left out.
    """
    t = int(threshold)
    caught: set[int] = set()
    values: list[int] = []
    wrong: list[WrongShare] = []
    for kind, owner, shares in secrets:
        pts = {w: y for w, y in shares.items() if w not in caught}
        if len(pts) < t:
            raise InconsistentShares("unmasking", f"{len(pts)} shares of {kind}_{owner} left after ignoring wrong senders < t = {t}")
        got = recover(pts, t, rho, what=f"{kind}_{owner}", prime=prime)
        for w in got.wrong:
            wrong.append(WrongShare(w, kind, owner))
            caught.add(w)
        values.append(got.secret)
    return values, wrong
