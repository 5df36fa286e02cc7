"""Reproducible randomness drawn only from ``cryptography``.

:class:`Drbg` is a deterministic random bit generator: ``key = HKDF-SHA256(ikm = encode(seed),
info = "secagg/drbg/v1" || len(label) || label)`` and the output stream is the AES-256-CTR keystream
under that key (counter block starting at zero), i.e. the encryption of an all-zero plaintext. With
``seed=None`` the input keying material is 32 bytes of ``os.urandom``. Integers seeds and byte-string
seeds are encoded with distinct type tags so that ``Drbg(0)`` and ``Drbg(bytes(32))`` differ.

Everything random in :mod:`secagg` (key pairs, self-mask seeds, Shamir coefficients, graph relabelling)
comes from here, never from :mod:`random` or numpy generators, so a run is reproducible from one seed
and, with ``seed=None``, as strong as the OS generator.
"""

from __future__ import annotations

import os
import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import InvalidInput

__all__ = ["Drbg"]

_INFO = b"secagg/drbg/v1"
_TAG_INT = b"\x01"
_TAG_BYTES = b"\x02"
_TAG_CHILD = b"\x03"
_BUFFER = 4096  # keystream bytes fetched per AES call for small requests


def _lp(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def _encode_seed(seed: bytes | int | None) -> bytes:
    if seed is None:
        return _TAG_BYTES + os.urandom(32)
    if isinstance(seed, bool):
        raise InvalidInput("a Drbg seed must be bytes, a non-negative int, or None (got a bool)")
    if isinstance(seed, (bytes, bytearray, memoryview)):
        return _TAG_BYTES + bytes(seed)
    try:
        value = seed.__index__()  # ints and numpy integers
    except AttributeError:
        raise InvalidInput(f"a Drbg seed must be bytes, int or None, got {type(seed).__name__}") from None
    if not 0 <= value < 1 << 256:
        raise InvalidInput(f"an integer Drbg seed must lie in [0, 2**256), got {value}")
    return _TAG_INT + value.to_bytes(32, "big")


class Drbg:
    """AES-256-CTR keystream keyed by ``HKDF-SHA256(seed, info=label)``; see module docstring.

    Args:
        seed: ``bytes`` (any length), an ``int`` in ``[0, 2**256)``, or ``None`` for OS randomness.
        label: domain-separation label; different labels give independent streams.
    """

    __slots__ = ("_key", "_enc", "_buf", "_pos")

    def __init__(self, seed: bytes | int | None, label: bytes = b"") -> None:
        self._init(_encode_seed(seed), label)

    def _init(self, ikm: bytes, label: bytes) -> None:
        if not isinstance(label, (bytes, bytearray)):
            raise InvalidInput(f"a Drbg label must be bytes, got {type(label).__name__}")
        self._key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_INFO + _lp(bytes(label))).derive(ikm)
        self._enc = Cipher(algorithms.AES(self._key), modes.CTR(bytes(16))).encryptor()
        self._buf = b""
        self._pos = 0

    def child(self, label: bytes) -> "Drbg":
        """An independent generator derived from this one's key and ``label``.

        It does not depend on how much output this generator has produced, so ``child(b"x")``
        is the same stream whenever it is called.
        """
        c = Drbg.__new__(Drbg)
        c._init(_TAG_CHILD + self._key, label)
        return c

    def bytes(self, n: int) -> bytes:
        """The next ``n`` bytes of the keystream."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInput(f"byte count must be a non-negative int, got {n!r}")
        avail = len(self._buf) - self._pos
        if n <= avail:
            out = self._buf[self._pos : self._pos + n]
            self._pos += n
            return out
        head = self._buf[self._pos :]
        need = n - avail
        if need >= _BUFFER:
            self._buf, self._pos = b"", 0
            return head + self._enc.update(bytes(need))
        self._buf = self._enc.update(bytes(_BUFFER))
        self._pos = need
        return head + self._buf[:need]

    def randbelow(self, n: int) -> int:
        """Uniform integer in ``[0, n)`` by rejection sampling (no modulo bias).

        Draws ``ceil(b / 8)`` bytes, keeps the low ``b = bit_length(n - 1)`` bits, retries while the
        value is ``>= n`` (acceptance probability > 1/2).
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise InvalidInput(f"randbelow needs a positive int, got {n!r}")
        b = (n - 1).bit_length()
        if b == 0:
            return 0
        nbytes = (b + 7) // 8
        mask = (1 << b) - 1
        while True:
            v = int.from_bytes(self.bytes(nbytes), "little") & mask
            if v < n:
                return v

    def permutation(self, n: int) -> list[int]:
        """A uniformly random permutation of ``range(n)`` (Fisher-Yates with :meth:`randbelow`)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise InvalidInput(f"permutation size must be a non-negative int, got {n!r}")
        p = list(range(n))
        for i in range(n - 1, 0, -1):
            j = self.randbelow(i + 1)
            p[i], p[j] = p[j], p[i]
        return p

    def __repr__(self) -> str:
        return "Drbg(<AES-256-CTR>)"
