"""PRG: a 32-byte seed -> a uniform vector in Z_M^d (the masks of Bonawitz et al., Section 4).

Construction (the same shape as Google fcp's AES-CTR PRG):

1. ``key = HKDF-SHA256(ikm = seed, salt = none, info = domain(session, purpose, dim, modulus))`` where
   :func:`domain` length-prefixes every field, so different sessions, purposes (self mask vs pairwise
   mask), lengths or moduli give independent streams and no two field tuples share an encoding.
2. The keystream ``AES-256-CTR(key, counter block 0)`` is read as little-endian words of ``w`` bits,
   ``w`` the width of ``dtype_for(M)``.
3. ``M = 2**b``: element ``i`` is word ``i`` masked to its low ``b`` bits (all of it for ``M = 2**w``).
   Otherwise rejection sampling: word ``j`` masked to ``b = bit_length(M - 1)`` bits is a candidate,
   accepted iff ``< M``; the output is the first ``d`` accepted candidates in keystream order, so
   every element is exactly uniform on Z_M (no modulo bias). The acceptance rate ``M / 2**b > 1/2``.
   Candidates are drawn in vectorised batches; batching does not change the output.

:func:`add_mask` fuses expansion with the modular addition chunk by chunk (a reusable scratch buffer
of :data:`CHUNK_BYTES` stays in cache), so masking costs about one keystream pass plus one add pass.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import InvalidInput
from secagg.ring import _add_unchecked, _check_dim, _sub_unchecked, check_modulus, dtype_for

__all__ = [
    "PURPOSE_SELF",
    "PURPOSE_PAIRWISE",
    "CHUNK_BYTES",
    "SCRATCH_BYTES",
    "domain",
    "new_scratch",
    "expand",
    "add_mask",
]

PURPOSE_SELF = "self-mask"
PURPOSE_PAIRWISE = "pairwise"

CHUNK_BYTES = 1 << 18  # keystream bytes per AES call (a multiple of 8: whole words)
SCRATCH_BYTES = CHUNK_BYTES + 16  # cryptography < 42 wants len(data) + block_size - 1 bytes of room
_ZEROS = bytes(CHUNK_BYTES)
_LABEL = b"secagg/prg/v1"


def _lp(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def domain(session: bytes, purpose: str, dim: int, modulus: int) -> bytes:
    """HKDF info string ``label || lp(session) || lp(purpose) || u64(dim) || lp(M as bytes)``.

    ``lp(x) = u64_be(len(x)) || x``; every field is length-prefixed so the encoding is injective.
    """
    if not isinstance(session, (bytes, bytearray)):
        raise InvalidInput(f"session must be bytes, got {type(session).__name__}")
    if not isinstance(purpose, str):
        raise InvalidInput(f"purpose must be a str, got {type(purpose).__name__}")
    d = _check_dim(dim)
    m = check_modulus(modulus)
    return (
        _LABEL
        + _lp(bytes(session))
        + _lp(purpose.encode("utf-8"))
        + struct.pack(">Q", d)
        + _lp(m.to_bytes((m.bit_length() + 7) // 8, "big"))
    )


def new_scratch() -> np.ndarray:
    """A scratch buffer for :func:`add_mask` (reuse it across calls to avoid allocations)."""
    return np.empty(SCRATCH_BYTES, dtype=np.uint8)


def _encryptor(seed: bytes, info: bytes):  # noqa: ANN202 - cryptography's CipherContext
    if not isinstance(seed, (bytes, bytearray)) or len(seed) == 0:
        raise InvalidInput("a PRG seed must be non-empty bytes")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(bytes(seed))
    return Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()


def _scratch_buffer(scratch: np.ndarray | None) -> np.ndarray:
    if (
        isinstance(scratch, np.ndarray)
        and scratch.flags.c_contiguous
        and scratch.flags.writeable
        and scratch.nbytes >= SCRATCH_BYTES
    ):
        return scratch.reshape(-1).view(np.uint8)[:SCRATCH_BYTES]
    return new_scratch()


def _chunks(
    enc, dim: int, m: int, dt: np.dtype, scratch: np.ndarray, reduce_later: bool = False  # noqa: ANN001
) -> Iterator[np.ndarray]:
    """Yield consecutive pieces (views into ``scratch`` or fresh arrays) of the PRG output.

    ``reduce_later``: for power-of-two ``M`` skip the bit mask because the consumer reduces mod M
    anyway (``(a + (w mod 2**b)) mod 2**b == (a + w) mod 2**b``); saves one pass in :func:`add_mask`.
    """
    isz = dt.itemsize
    w = isz * 8
    le = dt.newbyteorder("<")
    b = (m - 1).bit_length()
    mask = dt.type((1 << b) - 1) if b < w else None
    per_chunk = CHUNK_BYTES // isz
    mv = memoryview(scratch)
    if m & (m - 1) == 0:
        done = 0
        while done < dim:
            cnt = min(per_chunk, dim - done)
            nbytes = cnt * isz
            enc.update_into(_ZEROS[:nbytes] if nbytes < CHUNK_BYTES else _ZEROS, mv[: nbytes + 16])
            words = scratch[:nbytes].view(le)
            if mask is not None and not reduce_later:
                np.bitwise_and(words, mask, out=words)
            yield words
            done += cnt
        return
    mm = dt.type(m)
    p = m / (1 << b)  # acceptance probability, > 1/2
    done = 0
    while done < dim:
        need = dim - done
        cnt = min(per_chunk, int(need / p * 1.01) + 64)
        nbytes = cnt * isz
        enc.update_into(_ZEROS[:nbytes] if nbytes < CHUNK_BYTES else _ZEROS, mv[: nbytes + 16])
        words = scratch[:nbytes].view(le)
        if mask is not None:
            np.bitwise_and(words, mask, out=words)
        keep = words < mm
        # np.compress is branch-free and much faster than boolean indexing when p ~ 1/2
        acc = words[keep] if p > 0.9 else np.compress(keep, words)
        if acc.shape[0] > need:
            acc = acc[:need]
        if acc.shape[0]:
            yield acc
            done += acc.shape[0]


def expand(
    seed: bytes,
    *,
    session: bytes,
    purpose: str,
    dim: int,
    modulus: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """PRG(seed) in Z_M^dim for the domain (session, purpose, dim, modulus); see module docstring.

    When ``out`` is given (1-D, ``dtype_for(M)``, length ``dim``, writable) the result is written
    into it and ``out`` is returned; otherwise a fresh array is returned.
    """
    info = domain(session, purpose, dim, modulus)
    m = int(modulus)
    dim = int(dim)
    dt = dtype_for(m)
    if out is None:
        out = np.empty(dim, dtype=dt)
    elif (
        not isinstance(out, np.ndarray)
        or out.dtype != dt
        or out.shape != (dim,)
        or not out.flags.writeable
    ):
        raise InvalidInput(f"out must be a writable 1-D {dt} array of length {dim}")
    enc = _encryptor(seed, info)
    pos = 0
    for piece in _chunks(enc, dim, m, dt, new_scratch()):
        out[pos : pos + piece.shape[0]] = piece
        pos += piece.shape[0]
    return out


def add_mask(
    acc: np.ndarray,
    seed: bytes,
    *,
    session: bytes,
    purpose: str,
    modulus: int,
    sign: int,
    scratch: np.ndarray | None = None,
) -> None:
    """In place ``acc <- acc + sign * PRG(seed) mod M`` with ``dim = len(acc)``, ``sign in {+1, -1}``.

    Equal to ``add_into``/``sub_into`` of ``expand(seed, ..., dim=len(acc))`` but streamed in cache-
    sized chunks. ``scratch``: a C-contiguous writable array of at least :data:`SCRATCH_BYTES` bytes
    (e.g. :func:`new_scratch`) reused as the keystream buffer; when absent or too small a temporary
    one is allocated. ``acc`` must be a writable 1-D ``dtype_for(M)`` array.
    """
    m = check_modulus(modulus)
    dt = dtype_for(m)
    if not isinstance(acc, np.ndarray) or acc.dtype != dt or acc.ndim != 1 or not acc.flags.writeable:
        raise InvalidInput(f"acc must be a writable 1-D {dt} array")
    if sign not in (1, -1) or isinstance(sign, bool):
        raise InvalidInput(f"sign must be +1 or -1, got {sign!r}")
    dim = acc.shape[0]
    info = domain(session, purpose, dim, m)
    enc = _encryptor(seed, info)
    op = _add_unchecked if sign == 1 else _sub_unchecked
    pos = 0
    for piece in _chunks(enc, dim, m, dt, _scratch_buffer(scratch), reduce_later=True):
        n = piece.shape[0]
        op(acc[pos : pos + n], piece, m, dt)
        pos += n
