"""Vectors over the ring Z_M and their wire encoding.

The protocol of Bonawitz et al. (CCS 2017, Section 4: inputs ``x_u in Z_R^m``) works on vectors of
residues modulo ``M``. Here a vector over Z_M is a 1-D numpy array of the smallest unsigned dtype that
holds ``M - 1`` (:func:`dtype_for`), every element in ``[0, M)``. ``2 <= M <= 2**64``.

Modular arithmetic is done in place without wider temporaries:

* ``M == 2**w`` (``w`` the dtype width): the natural wrap-around of unsigned numpy arithmetic.
* ``M`` a smaller power of two: wrap, then mask with ``M - 1`` (``M`` divides ``2**w``).
* ``M <= 2**(w-1)``: ``s = a + b`` cannot overflow the dtype, and ``(a + b) mod M = min(s, s - M)``
  in unsigned arithmetic (``s - M`` wraps to a huge value exactly when ``s < M``). Subtraction
  likewise: ``(a - b) mod M = min(a - b, a - b + M)`` computed with wrap-around.
* ``2**(w-1) < M < 2**w`` (e.g. ``M = 2**32 - 5`` in uint32): overflow detection by comparison:
  ``a + b >= M  <=>  a >= M - b`` (``M - b`` in ``[1, M]`` never wraps), then subtract ``M`` where
  that holds; the wrapped sum minus ``M`` (mod ``2**w``) is the exact residue.

Packing (:func:`pack`, :func:`unpack`): each element takes ``bit_width(M) = bit_length(M - 1)`` bits,
least significant bit first, elements concatenated little-endian, the final byte zero-padded; so the
packed size is ``ceil(d * bit_width / 8)`` bytes (known answers in ``shared/reference/vectors.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from secagg.errors import InvalidInput, MalformedMessage

__all__ = [
    "MAX_MODULUS",
    "dtype_for",
    "bit_width",
    "is_power_of_two",
    "check_modulus",
    "as_ring_vector",
    "zeros",
    "add_into",
    "sub_into",
    "packed_size",
    "pack",
    "unpack",
    "pack_view",
]

MAX_MODULUS = 1 << 64



def check_modulus(modulus: int) -> int:
    """Return ``modulus`` as a Python int after checking ``2 <= M <= 2**64`` (else InvalidInput)."""
    if isinstance(modulus, bool):
        raise InvalidInput(f"modulus must be an integer, got {modulus!r}")
    try:
        m = int(modulus) if isinstance(modulus, (int, np.integer)) else None
    except (TypeError, ValueError):  # pragma: no cover - defensive
        m = None
    if m is None:
        raise InvalidInput(f"modulus must be an integer, got {type(modulus).__name__}")
    if not 2 <= m <= MAX_MODULUS:
        raise InvalidInput(f"modulus must satisfy 2 <= M <= 2**64, got {m}")
    return m


def is_power_of_two(modulus: int) -> bool:
    """True iff ``M`` is a power of two (then Z_M arithmetic is a bit mask)."""
    m = int(modulus)
    return m > 0 and m & (m - 1) == 0


def bit_width(modulus: int) -> int:
    """Bits per element on the wire: ``bit_length(M - 1)`` (1 for M = 2, 64 for M = 2**64)."""
    return (check_modulus(modulus) - 1).bit_length()


def dtype_for(modulus: int) -> np.dtype:
    """Smallest of uint8/16/32/64 holding ``M - 1``; InvalidInput unless ``2 <= M <= 2**64``."""
    b = bit_width(modulus)
    if b <= 8:
        return np.dtype(np.uint8)
    if b <= 16:
        return np.dtype(np.uint16)
    if b <= 32:
        return np.dtype(np.uint32)
    return np.dtype(np.uint64)


def _check_dim(dim: Any) -> int:
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or int(dim) < 0:
        raise InvalidInput(f"dimension must be a non-negative integer, got {dim!r}")
    return int(dim)


def as_ring_vector(x: Any, modulus: int, dim: int | None = None, *, copy: bool = True) -> np.ndarray:
    """Validate ``x`` as an element of ``Z_M^d`` and return a fresh ``dtype_for(M)`` copy.

    ``x`` must be 1-D, of an integer dtype (numpy integer array or a sequence of Python ints; floats
    and booleans are rejected even when integral), every element in ``[0, M)``, and of length ``dim``
    when given. Anything else raises :class:`~secagg.errors.InvalidInput`.

    ``copy=False``: when ``x`` already is a numpy array of dtype ``dtype_for(M)`` (native byte order)
    it is returned itself after validation, not copied (the caller must then not modify it while the
    result is in use); other inputs are still converted into a fresh array.
    """
    m = check_modulus(modulus)
    dt = dtype_for(m)
    if dim is not None:
        dim = _check_dim(dim)
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
            if arr.dtype.kind in "iu" and arr.ndim == 1 and any(isinstance(v, (bool, np.bool_)) for v in x):
                raise InvalidInput("ring vector elements must be integers, got bool")  # [1, True] reads as ints
            if arr.dtype.kind not in "iu":
                # numpy turns e.g. [0, 2**64 - 1] into float64 (lossy): re-read as Python objects
                arr = np.array(x, dtype=object)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidInput(f"not convertible to an integer vector: {exc}") from None
    if arr.ndim != 1:
        raise InvalidInput(f"ring vector must be 1-D, got shape {arr.shape}")
    if dim is not None and arr.shape[0] != dim:
        raise InvalidInput(f"ring vector must have length {dim}, got {arr.shape[0]}")
    if arr.dtype == object:
        # Python ints too large for int64 (e.g. near 2**64 mixed with negatives): check one by one.
        vals = arr.tolist()
        for v in vals:
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise InvalidInput(f"ring vector elements must be integers, got {type(v).__name__}")
            if not 0 <= int(v) < m:
                raise InvalidInput(f"ring vector element {int(v)} outside [0, {m})")
        return np.array([int(v) for v in vals], dtype=dt)
    if arr.dtype.kind not in "iu":
        raise InvalidInput(f"ring vector must have an integer dtype, got {arr.dtype}")
    if arr.size:
        lo = int(arr.min())
        hi = int(arr.max())
        if lo < 0 or hi >= m:
            bad = lo if lo < 0 else hi
            raise InvalidInput(f"ring vector element {bad} outside [0, {m})")
    if not copy and arr is x and arr.dtype == dt:
        return arr
    return np.array(arr, dtype=dt, copy=True)


def zeros(dim: int, modulus: int) -> np.ndarray:
    """The zero vector of ``Z_M^dim`` (dtype ``dtype_for(M)``)."""
    return np.zeros(_check_dim(dim), dtype=dtype_for(modulus))


def _check_operands(acc: np.ndarray, x: np.ndarray, modulus: int) -> tuple[int, np.dtype]:
    m = check_modulus(modulus)
    dt = dtype_for(m)
    if not isinstance(acc, np.ndarray) or not isinstance(x, np.ndarray):
        raise InvalidInput("add_into/sub_into take numpy arrays")
    if acc.dtype != dt or x.dtype != dt:
        raise InvalidInput(f"operands must have dtype {dt} for M = {m}, got {acc.dtype} and {x.dtype}")
    if acc.shape != x.shape or acc.ndim != 1:
        raise InvalidInput(f"operands must be 1-D of equal length, got {acc.shape} and {x.shape}")
    if not acc.flags.writeable:
        raise InvalidInput("accumulator is read-only")
    return m, dt


def _add_unchecked(acc: np.ndarray, x: np.ndarray, m: int, dt: np.dtype) -> None:
    """acc <- (acc + x) mod m; operands already validated (same dtype dt = dtype_for(m))."""
    w = dt.itemsize * 8
    if m == 1 << w:
        np.add(acc, x, out=acc)
    elif m & (m - 1) == 0:
        np.add(acc, x, out=acc)
        np.bitwise_and(acc, dt.type(m - 1), out=acc)
    elif m <= 1 << (w - 1):
        mm = dt.type(m)
        np.add(acc, x, out=acc)  # < 2M <= 2**w: no overflow
        tmp = np.subtract(acc, mm)  # wraps to >= 2**w - M >= M exactly when acc < M
        np.minimum(acc, tmp, out=acc)
    else:
        mm = dt.type(m)
        room = np.subtract(mm, x)  # M - x in [1, M], no wrap
        wrap = np.greater_equal(acc, room)  # acc + x >= M
        np.add(acc, x, out=acc)  # may wrap mod 2**w
        # subtract M where needed: exact residue mod 2**w. (A `where=` ufunc is ~10x slower.)
        np.subtract(acc, np.multiply(wrap, mm, dtype=dt), out=acc)


def _sub_unchecked(acc: np.ndarray, x: np.ndarray, m: int, dt: np.dtype) -> None:
    """acc <- (acc - x) mod m; operands already validated."""
    w = dt.itemsize * 8
    if m == 1 << w:
        np.subtract(acc, x, out=acc)
    elif m & (m - 1) == 0:
        np.subtract(acc, x, out=acc)
        np.bitwise_and(acc, dt.type(m - 1), out=acc)
    elif m <= 1 << (w - 1):
        mm = dt.type(m)
        np.subtract(acc, x, out=acc)  # wraps to >= 2**w - M + 1 > M exactly when acc < x
        tmp = np.add(acc, mm)  # < 2M when no wrap; the true residue when acc wrapped
        np.minimum(acc, tmp, out=acc)
    else:
        mm = dt.type(m)
        borrow = np.less(acc, x)
        np.subtract(acc, x, out=acc)
        np.add(acc, np.multiply(borrow, mm, dtype=dt), out=acc)


def add_into(acc: np.ndarray, x: np.ndarray, modulus: int) -> None:
    """In place ``acc <- (acc + x) mod M``.

    Both operands must be 1-D arrays of dtype ``dtype_for(M)`` and equal length with elements in
    ``[0, M)`` (not re-checked, for speed); correct for every ``2 <= M <= 2**64``, see module doc.
    """
    m, dt = _check_operands(acc, x, modulus)
    _add_unchecked(acc, x, m, dt)


def sub_into(acc: np.ndarray, x: np.ndarray, modulus: int) -> None:
    """In place ``acc <- (acc - x) mod M`` (same conventions as :func:`add_into`)."""
    m, dt = _check_operands(acc, x, modulus)
    _sub_unchecked(acc, x, m, dt)


def packed_size(dim: int, modulus: int) -> int:
    """Bytes of a packed vector: ``ceil(dim * bit_width(M) / 8)``."""
    return (_check_dim(dim) * bit_width(modulus) + 7) // 8


def _group_layout(b: int) -> tuple[int, int, int]:
    """Groups of ``g = 8 / gcd(b, 8)`` elements fill exactly ``G = g b / 8`` bytes (``W`` uint64 words)."""
    g = 8 // math.gcd(b, 8)
    nbytes = g * b // 8
    return g, nbytes, (nbytes + 7) // 8


def _pack_groups(le: np.ndarray, b: int) -> bytes:
    """Vectorised bit packing for any width ``b`` (1..64): element ``j`` of each group is shifted to
    bit offset ``j b`` of the group's little-endian uint64 words (spilling into the next word when it
    straddles one), then each group's first ``G`` bytes are kept. ``g <= 8`` passes over the data."""
    d = le.shape[0]
    g, nbytes, nwords = _group_layout(b)
    ngroups = -(-d // g)
    words = np.zeros((ngroups, nwords), dtype="<u8")
    for j in range(g):
        col = le[j::g].astype(np.uint64)
        rows = col.shape[0]
        off = j * b
        wi, sh = divmod(off, 64)
        if sh:
            words[:rows, wi] |= col << np.uint64(sh)
        else:
            words[:rows, wi] |= col
        if sh + b > 64:
            words[:rows, wi + 1] |= col >> np.uint64(64 - sh)
    packed = words.view(np.uint8).reshape(ngroups, nwords * 8)[:, :nbytes]
    return packed.tobytes()[: (d * b + 7) // 8]


def _unpack_groups(raw: np.ndarray, b: int, dim: int) -> np.ndarray:
    """Inverse of :func:`_pack_groups` (no validation): uint64 vector of length ``dim``."""
    g, nbytes, nwords = _group_layout(b)
    ngroups = -(-dim // g)
    buf = np.zeros((ngroups, nwords * 8), dtype=np.uint8)
    flat = buf[:, :nbytes]
    full = raw.shape[0] // nbytes
    flat[:full] = raw[: full * nbytes].reshape(full, nbytes)
    if full < ngroups:
        tail = raw[full * nbytes :]
        flat[full, : tail.shape[0]] = tail
    words = buf.view("<u8").astype(np.uint64, copy=False)
    mask = np.uint64((1 << b) - 1) if b < 64 else None
    out = np.empty(ngroups * g, dtype=np.uint64)
    for j in range(g):
        wi, sh = divmod(j * b, 64)
        col = words[:, wi] >> np.uint64(sh) if sh else words[:, wi].copy()
        if sh + b > 64:
            col |= words[:, wi + 1] << np.uint64(64 - sh)
        if mask is not None:
            col &= mask
        out[j::g] = col
    return out[:dim]


def pack(x: np.ndarray, modulus: int) -> bytes:
    """Encode ``x in Z_M^d`` as ``bit_width(M)`` bits per element, LSB first, little-endian.

    Byte-aligned widths (8/16/24/.../64) are byte slices of the little-endian representation; other
    widths are packed group-wise: ``8 / gcd(b, 8)`` consecutive elements fill a whole number of bytes
    and are assembled with vectorised shifts into uint64 words (:func:`_pack_groups`). Elements are
    assumed valid (use :func:`as_ring_vector` on untrusted input); padding bits of the last byte are 0.
    """
    m = check_modulus(modulus)
    dt = dtype_for(m)
    b = (m - 1).bit_length()
    arr = np.asarray(x)
    if arr.ndim != 1 or arr.dtype != dt:
        raise InvalidInput(f"pack expects a 1-D {dt} vector, got {arr.dtype} of shape {arr.shape}")
    le = np.ascontiguousarray(arr, dtype=dt.newbyteorder("<"))
    w = dt.itemsize * 8
    if b == w:
        return le.tobytes()
    if b % 8 == 0:
        nb = b // 8
        return le.view(np.uint8).reshape(-1, dt.itemsize)[:, :nb].tobytes()
    return _pack_groups(le, b)


def pack_view(x: np.ndarray, modulus: int) -> bytes | memoryview:
    """:func:`pack` without a copy where possible: the same bytes, as a read-only byte ``memoryview``
    of ``x`` itself when ``bit_width(M)`` is the dtype's width (8/16/32/64 bits) and ``x`` is
    C-contiguous little-endian; otherwise ``pack(x, modulus)``. The view aliases ``x``: do not
    modify ``x`` while the view is in use.
    """
    m = check_modulus(modulus)
    dt = dtype_for(m)
    if (
        isinstance(x, np.ndarray)
        and x.ndim == 1
        and x.dtype == dt
        and x.dtype.byteorder in "<=|"
        and np.little_endian
        and x.flags.c_contiguous
        and (m - 1).bit_length() == dt.itemsize * 8
    ):
        return memoryview(x.view(np.uint8)).toreadonly()
    return pack(x, m)


def unpack(data: bytes, dim: int, modulus: int, *, copy: bool = True) -> np.ndarray:
    """Inverse of :func:`pack`: returns a fresh ``dtype_for(M)`` vector of length ``dim``.

    With ``copy=False`` and a width of exactly 8/16/32/64 bits (``bit_width(M)`` equal to the dtype's
    width) the result may instead be a read-only view of ``data`` (no copy; it keeps ``data`` alive).
    Raises :class:`~secagg.errors.MalformedMessage` if ``len(data) != packed_size(dim, M)``, if any
    padding bit is set, or if an element is ``>= M``.
    """
    m = check_modulus(modulus)
    dim = _check_dim(dim)
    dt = dtype_for(m)
    b = (m - 1).bit_length()
    try:
        buf = memoryview(data).cast("B")
    except TypeError:
        raise MalformedMessage("packed vector must be a bytes-like object") from None
    expected = (dim * b + 7) // 8
    if len(buf) != expected:
        raise MalformedMessage(f"packed vector of {dim} x {b} bits needs {expected} bytes, got {len(buf)}")
    raw = np.frombuffer(buf, dtype=np.uint8)
    w = dt.itemsize * 8
    le_dt = dt.newbyteorder("<")
    if b == w:
        view = raw.view(le_dt)
        out = view.astype(dt) if copy or view.dtype != dt else view
    elif b % 8 == 0:
        nb = b // 8
        tmp = np.zeros((dim, dt.itemsize), dtype=np.uint8)
        tmp[:, :nb] = raw.reshape(dim, nb)
        out = tmp.reshape(-1).view(le_dt).astype(dt)
    else:
        pad = expected * 8 - dim * b
        if pad and int(raw[-1]) >> (8 - pad):
            raise MalformedMessage("nonzero padding bits in packed vector")
        out = _unpack_groups(raw, b, dim).astype(dt)
    if m != 1 << b and dim and int(out.max()) >= m:
        raise MalformedMessage(f"packed element {int(out.max())} is not in Z_{m}")
    return out
