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
of :data:`CHUNK_BYTES` stays in cache), so masking costs about one keystream pass plus one add pass:
for power-of-two ``M`` exactly one ``update_into`` into the scratch buffer and one in-place
``np.add``/``np.subtract`` of its word view into ``acc`` per chunk (plus an in-place bit mask of ``acc``
only when ``M < 2**w``); otherwise rejection sampling with reused flag/compaction buffers and a fused
in-place modular add/sub (no temporaries). The domain encoding is memoised per
``(session, purpose, dim, M)`` and per-modulus constants per ``M``. :func:`add_masks` applies many
masks at once, interleaved chunk by chunk, so ``acc`` is streamed through memory once per group of
:data:`GROUP_MASKS` masks instead of once per mask (optionally starting from a ``base`` vector, which
fuses a client's copy of ``x_u`` into the first mask's pass). All paths give bit-identical outputs
(``protocol_tests/test_perf_prg.py`` checks them against a reference written from this docstring).
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterator

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.errors import InvalidInput
from secagg.ring import _check_dim, check_modulus, dtype_for

__all__ = [
    "PURPOSE_SELF",
    "PURPOSE_PAIRWISE",
    "CHUNK_BYTES",
    "SCRATCH_BYTES",
    "domain",
    "new_scratch",
    "expand",
    "add_mask",
    "add_masks",
    "GROUP_MASKS",
]

PURPOSE_SELF = "self-mask"
PURPOSE_PAIRWISE = "pairwise"

CHUNK_BYTES = 1 << 18  # keystream bytes per AES call (a multiple of 8: whole words)
SCRATCH_BYTES = CHUNK_BYTES + 16  # cryptography < 42 wants len(data) + block_size - 1 bytes of room
_ZEROS = bytes(CHUNK_BYTES)
_ZEROS_MV = memoryview(_ZEROS)  # slicing a memoryview does not copy (slicing bytes does)
_LABEL = b"secagg/prg/v1"
_SHA256 = hashes.SHA256()
_IV0 = bytes(16)


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
    if type(seed) is not bytes:
        if not isinstance(seed, (bytes, bytearray)):
            raise InvalidInput("a PRG seed must be non-empty bytes")
        seed = bytes(seed)
    if not seed:
        raise InvalidInput("a PRG seed must be non-empty bytes")
    key = HKDF(algorithm=_SHA256, length=32, salt=None, info=info).derive(seed)
    return Cipher(algorithms.AES(key), modes.CTR(_IV0)).encryptor()


@functools.lru_cache(maxsize=4096)
def _domain_cached(session: bytes, purpose: str, dim: int, modulus: int) -> bytes:
    """:func:`domain` memoised on exact-typed arguments (bytes, str, int, int): every mask of a round
    shares one (session, purpose, dim, M), so the encoding is built once per round and purpose."""
    return domain(session, purpose, dim, modulus)


def _info(session: bytes, purpose: str, dim: int, modulus: int) -> bytes:
    """The HKDF info of :func:`domain`, cached when the argument types make the cache key exact."""
    if type(session) is bytes and type(purpose) is str and type(dim) is int and type(modulus) is int:
        return _domain_cached(session, purpose, dim, modulus)
    return domain(session, purpose, dim, modulus)


class _Params:
    """Per-modulus constants of the hot path (see :func:`_params`)."""

    __slots__ = ("m", "dt", "le", "isz", "mask", "pow2", "full", "per_chunk")

    def __init__(self, m: int) -> None:
        dt = dtype_for(m)
        w = dt.itemsize * 8
        b = (m - 1).bit_length()
        self.m = m
        self.dt = dt
        self.le = dt.newbyteorder("<")
        self.isz = dt.itemsize
        self.pow2 = m & (m - 1) == 0
        self.full = m == 1 << w  # M = 2**w: the dtype's own wrap-around is reduction mod M
        self.mask = dt.type((1 << b) - 1) if b < w else None
        self.per_chunk = CHUNK_BYTES // dt.itemsize


@functools.lru_cache(maxsize=256)
def _params_cached(m: int) -> _Params:
    return _Params(check_modulus(m))


def _params(modulus: int) -> _Params:
    if type(modulus) is int:
        return _params_cached(modulus)  # check_modulus raises inside: errors are not cached
    return _Params(check_modulus(modulus))


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
            enc.update_into(_ZEROS_MV[:nbytes], mv[: nbytes + 16])
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
        enc.update_into(_ZEROS_MV[:nbytes], mv[: nbytes + 16])
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
    info = _info(session, purpose, dim, modulus)
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


def _add_rejection(acc: np.ndarray, enc, prm: _Params, sign: int, buf: np.ndarray) -> None:  # noqa: ANN001
    """``acc <- acc + sign * PRG mod M`` for M not a power of two, without temporaries.

    Per keystream chunk (in ``buf``): mask to ``b`` bits, flag candidates ``< M`` into a reused bool
    buffer, compact them into a reused buffer only when some were rejected (for M close to ``2**b``
    almost no chunk has a rejection), then a fused in-place modular add/sub that uses the candidate
    buffer as its workspace (its values are not needed afterwards):

    * ``M <= 2**(w-1)``: ``s = a +- x`` cannot overflow (or wraps recognisably);
      ``(a + x) mod M = min(s, s - M)``, ``(a - x) mod M = min(s, s + M)`` (unsigned wrap-around).
    * ``M > 2**(w-1)``: subtraction ``a - r`` with borrow ``a < r`` corrected by ``+ M``; addition is
      ``a - (M - x)`` with ``M - x in [1, M]`` (no wrap), the same borrow rule giving ``a + x mod M``.

    The accepted candidates are the same words in the same keystream order as :func:`_chunks`
    (chunk sizes do not change which words are accepted), so the output is identical.
    """
    dt, le, isz, mask, per_chunk, m = prm.dt, prm.le, prm.isz, prm.mask, prm.per_chunk, prm.m
    dim = acc.shape[0]
    mm = dt.type(m)
    w = isz * 8
    small = m <= 1 << (w - 1)
    p = m / (1 << (m - 1).bit_length())  # acceptance probability, > 1/2
    flags = np.empty(per_chunk, dtype=np.bool_)
    packed = np.empty(per_chunk, dtype=dt)
    mv = memoryview(buf)
    upd = enc.update_into
    done = 0
    while done < dim:
        need = dim - done
        cnt = min(per_chunk, int(need / p * 1.01) + 64)
        nbytes = cnt * isz
        upd(_ZEROS_MV[:nbytes], mv[: nbytes + 16])
        words = buf[:nbytes].view(le)
        if mask is not None:
            np.bitwise_and(words, mask, out=words)
        rej = flags[:cnt]
        np.greater_equal(words, mm, out=rej)
        nrej = int(np.count_nonzero(rej))
        got = cnt - nrej
        if nrej == 0:
            x = words
        elif nrej <= 64:
            # few rejections (M close to 2**b): close the gaps in place, one segment move per gap
            x = words
            idx = np.flatnonzero(rej).tolist()
            idx.append(cnt)
            for j in range(nrej):
                lo, hi = idx[j] + 1, idx[j + 1]
                if hi > lo:
                    x[lo - j - 1 : hi - j - 1] = x[lo:hi]
            x = x[:got]
        else:
            keep = np.logical_not(rej, out=rej)
            # boolean indexing is fast for rare rejections; beyond ~1.5% its branch mispredictions
            # make the branch-free np.compress faster (measured on numpy 2.4)
            x = words[keep] if nrej * 64 < cnt else np.compress(keep, words, out=packed[:got])
        if got > need:
            x = x[:need]
            got = need
        if not got:
            continue
        t = acc[done : done + got]
        if small:
            if sign == 1:
                np.add(t, x, out=t)  # < 2M <= 2**w: no overflow
                np.subtract(t, mm, out=x)  # wraps to >= 2**w - M >= M exactly when t < M
            else:
                np.subtract(t, x, out=t)  # wraps to > 2**w - M >= M exactly when a < x
                np.add(t, mm, out=x)
            np.minimum(t, x, out=t)
        else:
            if sign == 1:
                np.subtract(mm, x, out=x)  # r = M - x in [1, M]: a + x = a - r (mod M)
            borrow = flags[:got]  # the keep flags are no longer needed
            np.less(t, x, out=borrow)
            np.subtract(t, x, out=t)
            np.multiply(borrow, mm, out=x)
            np.add(t, x, out=t)
        done += got


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
    prm = _params(modulus)
    dt = prm.dt
    if type(acc) is not np.ndarray and not isinstance(acc, np.ndarray):
        raise InvalidInput(f"acc must be a writable 1-D {dt} array")
    if acc.dtype != dt or acc.ndim != 1 or not acc.flags.writeable:
        raise InvalidInput(f"acc must be a writable 1-D {dt} array")
    if sign is True or sign is False or (sign != 1 and sign != -1):
        raise InvalidInput(f"sign must be +1 or -1, got {sign!r}")
    enc = _encryptor(seed, _info(session, purpose, acc.shape[0], prm.m))
    _apply(acc, enc, prm, sign, _scratch_buffer(scratch))


def _apply(acc: np.ndarray, enc, prm: _Params, sign: int, buf: np.ndarray) -> None:  # noqa: ANN001
    """The body of :func:`add_mask` on validated arguments (``enc`` = the mask's AES-CTR context)."""
    if not prm.pow2:
        _add_rejection(acc, enc, prm, sign, buf)
        return
    dim = acc.shape[0]
    # M = 2**b: exactly one keystream pass into the (cache-resident) scratch buffer and one in-place
    # add/sub pass into acc per chunk; the low-b-bit reduction happens on acc afterwards, only when
    # b < w, since (a +- (w mod 2**b)) mod 2**b == (a +- w) mod 2**b.
    ufunc = np.add if sign == 1 else np.subtract
    mask = prm.mask
    isz = prm.isz
    per_chunk = prm.per_chunk
    le = prm.le
    mv = memoryview(buf)
    upd = enc.update_into
    pos = 0
    while pos < dim:
        cnt = dim - pos if dim - pos < per_chunk else per_chunk
        nbytes = cnt * isz
        upd(_ZEROS_MV[:nbytes], mv[: nbytes + 16])
        if cnt == dim:
            target = acc
        else:
            target = acc[pos : pos + cnt]
        ufunc(target, buf[:nbytes].view(le), out=target)
        if mask is not None:
            np.bitwise_and(target, mask, out=target)
        pos += cnt


#: Masks expanded together by :func:`add_masks` (their AES contexts live at the same time).
GROUP_MASKS = 64


def add_masks(
    acc: np.ndarray,
    masks,  # noqa: ANN001 - Iterable[tuple[bytes, str, int]]
    *,
    session: bytes,
    modulus: int,
    scratch: np.ndarray | None = None,
    base: np.ndarray | None = None,
) -> None:
    """In place ``acc <- acc + sum_i sign_i * PRG(seed_i) mod M`` for ``masks = [(seed_i, purpose_i, sign_i)]``.

    With ``base`` (an array of ``acc``'s dtype and shape, elements in ``[0, M)``, not modified):
    ``acc <- base + sum_i sign_i * PRG(seed_i) mod M`` whatever ``acc`` held before (it may come from
    ``np.empty``); the copy of ``base`` is fused into the first mask's pass (a client's
    ``y_u = x_u + masks`` without a separate copy of ``x_u``).

    Exactly equal to calling :func:`add_mask` once per entry (modular addition is commutative), but for
    power-of-two ``M`` the masks are interleaved chunk by chunk: each cache-sized chunk of ``acc`` gets
    the keystream of up to :data:`GROUP_MASKS` masks while it stays in cache, so ``acc`` is streamed
    through memory once per group instead of once per mask (Bonawitz et al., Section 4: a client adds
    its self mask and ``|N(u)|`` pairwise masks; the server removes the self masks and the dropped
    clients' pairwise masks). Other moduli (rejection sampling) fall back to :func:`add_mask` per mask.
    Validation is that of :func:`add_mask`, done for every entry before ``acc`` is touched.
    """
    prm = _params(modulus)
    dt = prm.dt
    if not isinstance(acc, np.ndarray) or acc.dtype != dt or acc.ndim != 1 or not acc.flags.writeable:
        raise InvalidInput(f"acc must be a writable 1-D {dt} array")
    try:
        entries = [tuple(e) for e in masks]
    except TypeError:
        raise InvalidInput("masks must be an iterable of (seed, purpose, sign) triples") from None
    m = prm.m
    dim = acc.shape[0]
    checked = []  # (seed, info, sign), all validated before acc is touched
    for e in entries:
        if len(e) != 3:
            raise InvalidInput("masks must be an iterable of (seed, purpose, sign) triples")
        seed, purpose, sign = e
        if sign is True or sign is False or (sign != 1 and sign != -1):
            raise InvalidInput(f"sign must be +1 or -1, got {sign!r}")
        info = _info(session, purpose, dim, m)  # validates session and purpose (cached)
        if type(seed) is not bytes:
            if not isinstance(seed, (bytes, bytearray)):
                raise InvalidInput("a PRG seed must be non-empty bytes")
            seed = bytes(seed)
        if not seed:
            raise InvalidInput("a PRG seed must be non-empty bytes")
        checked.append((seed, info, sign))
    if base is not None:
        if not isinstance(base, np.ndarray) or base.dtype != dt or base.shape != acc.shape:
            raise InvalidInput(f"base must be a 1-D {dt} array of length {dim}")
        if np.may_share_memory(base, acc):
            raise InvalidInput("base and acc must not overlap")
    buf = _scratch_buffer(scratch)
    if not prm.pow2 or dim <= prm.per_chunk or not checked:
        if base is not None:
            np.copyto(acc, base)
        for seed, info, sign in checked:
            _apply(acc, _encryptor(seed, info), prm, sign, buf)
        return
    mask = prm.mask
    isz = prm.isz
    per_chunk = prm.per_chunk
    le = prm.le
    mv = memoryview(buf)
    for g in range(0, len(checked), GROUP_MASKS):
        group = [
            (_encryptor(seed, info).update_into, np.add if sign == 1 else np.subtract)
            for seed, info, sign in checked[g : g + GROUP_MASKS]
        ]
        src = base if (g == 0 and base is not None) else acc
        pos = 0
        while pos < dim:
            cnt = dim - pos if dim - pos < per_chunk else per_chunk
            nbytes = cnt * isz
            target = acc[pos : pos + cnt]
            words = buf[:nbytes].view(le)
            zeros = _ZEROS_MV[:nbytes]
            out = mv[: nbytes + 16]
            first = src[pos : pos + cnt]  # base's chunk for the first mask of the first group
            for upd, ufunc in group:
                upd(zeros, out)
                ufunc(first, words, out=target)
                first = target
            if mask is not None:
                np.bitwise_and(target, mask, out=target)
            pos += cnt
