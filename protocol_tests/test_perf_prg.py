"""Fast paths of the masking pipeline are bit-identical to straightforward references.

Covers the optimised hot paths of ``secagg.prg`` (cached domain encoding, single-pass power-of-two
path, :func:`secagg.prg.add_masks` interleaving), the zero-copy encoding/decoding of the masked input
(``ring.pack_view``, ``ring.unpack(copy=False)``, ``MaskedInput`` memoryview payloads,
``as_ring_vector(copy=False)``), and the client/server using them: every output is compared with an
independent reference written from the specification (HKDF-SHA256 -> AES-256-CTR keystream ->
little-endian words -> low ``b`` bits -> rejection ``< M``; Python-int modular arithmetic; the old
``header || body`` concatenation encoding). No timing is asserted here (speed lives in bench/).
All tests are deterministic (hypothesis profile "ci" is derandomized; seeds fixed), so none can
fail by chance: a failure is a bit-level difference.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import keys, prg, ring
from secagg.client import mask_sign, pairwise_seed
from secagg.drbg import Drbg
from secagg.errors import InvalidInput, MalformedMessage, ProtocolViolation
from secagg.messages import ROUNDS, MaskedInput
from secagg.protocol import Session, run_secure_aggregation

SESSION = bytes(range(16))

moduli = st.one_of(
    st.integers(1, 64).map(lambda b: 1 << b),
    st.sampled_from([3, 5, 7, 251, 257, 65521, 2**31 - 1, 2**32 - 5, 2**61 - 1, 2**63 + 1, 2**64 - 59]),
    st.integers(2, 2**64),
)


# ------------------------------------------------------------------------------------------------
# references, written from the module docstrings (no code shared with secagg.prg)
# ------------------------------------------------------------------------------------------------
def ref_domain(session: bytes, purpose: str, dim: int, m: int) -> bytes:
    def lp(x: bytes) -> bytes:
        return struct.pack(">Q", len(x)) + x

    mb = m.to_bytes((m.bit_length() + 7) // 8, "big")
    return b"secagg/prg/v1" + lp(session) + lp(purpose.encode()) + struct.pack(">Q", dim) + lp(mb)


def ref_expand(seed: bytes, session: bytes, purpose: str, dim: int, m: int) -> list[int]:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=ref_domain(session, purpose, dim, m)).derive(seed)
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    b = (m - 1).bit_length()
    w = 8 if b <= 8 else 16 if b <= 16 else 32 if b <= 32 else 64
    out: list[int] = []
    while len(out) < dim:
        ks = enc.update(bytes(w // 8 * 256))
        for i in range(0, len(ks), w // 8):
            c = int.from_bytes(ks[i : i + w // 8], "little") & ((1 << b) - 1)
            if c < m:
                out.append(c)
                if len(out) == dim:
                    break
    return out


def ref_add(acc: list[int], masks: list[tuple[bytes, str, int]], m: int) -> list[int]:
    out = list(acc)
    for seed, purpose, sign in masks:
        r = ref_expand(seed, SESSION, purpose, len(acc), m)
        out = [(a + sign * x) % m for a, x in zip(out, r)]
    return out


def ref_masked_input_bytes(round_: str, session: bytes, party: int, y: np.ndarray, m: int) -> bytes:
    """The encoding before the zero-copy change: header + (u32 dim + u8 width + ring.pack(y))."""
    b = (m - 1).bit_length()
    body = struct.pack(">I", y.shape[0]) + bytes([b]) + ring.pack(y, m)
    return struct.pack(">BB16sI", MaskedInput.CODE, ROUNDS.index(round_), session, party) + body


def seeds_of(draw_seed: int, count: int) -> list[bytes]:
    d = Drbg(draw_seed, b"test-perf-prg")
    return [d.bytes(32) for _ in range(count)]


# ------------------------------------------------------------------------------------------------
# prg
# ------------------------------------------------------------------------------------------------
@settings(max_examples=40)
@given(moduli, st.integers(0, 70), st.sampled_from([1, -1]), st.integers(0, 2**32), st.sampled_from([prg.PURPOSE_SELF, prg.PURPOSE_PAIRWISE]))
def test_add_mask_equals_reference(m: int, dim: int, sign: int, s: int, purpose: str) -> None:
    """add_mask (cached domain, single-pass power-of-two path or rejection path) == spec reference."""
    seed = seeds_of(s, 1)[0]
    start = [int(v) for v in Drbg(s, b"acc").bytes(8 * dim)[::8]]
    start = [v % m for v in start]
    acc = np.array(start, dtype=ring.dtype_for(m))
    prg.add_mask(acc, seed, session=SESSION, purpose=purpose, modulus=m, sign=sign, scratch=prg.new_scratch())
    assert [int(v) for v in acc] == ref_add(start, [(seed, purpose, sign)], m)
    assert prg.domain(SESSION, purpose, dim, m) == ref_domain(SESSION, purpose, dim, m)
    assert prg._info(SESSION, purpose, dim, m) == ref_domain(SESSION, purpose, dim, m)
    out = prg.expand(seed, session=SESSION, purpose=purpose, dim=dim, modulus=m)
    assert [int(v) for v in out] == ref_expand(seed, SESSION, purpose, dim, m)


@settings(max_examples=25)
@given(moduli, st.integers(0, 40), st.lists(st.sampled_from([1, -1]), min_size=0, max_size=7), st.integers(0, 2**32), st.integers(1, 3))
def test_add_masks_equals_sequential_and_reference(m: int, dim: int, signs: list[int], s: int, group: int) -> None:
    """add_masks (grouped, interleaved) == add_mask one by one == reference, for any group size."""
    seeds = seeds_of(s, len(signs))
    masks = [(sd, prg.PURPOSE_PAIRWISE if i % 2 else prg.PURPOSE_SELF, sg) for i, (sd, sg) in enumerate(zip(seeds, signs))]
    dt = ring.dtype_for(m)
    start = np.array([v % m for v in range(dim)], dtype=dt)
    a = start.copy()
    saved, prg.GROUP_MASKS = prg.GROUP_MASKS, group
    try:
        prg.add_masks(a, list(masks), session=SESSION, modulus=m)
    finally:
        prg.GROUP_MASKS = saved
    b = start.copy()
    for sd, p, sg in masks:
        prg.add_mask(b, sd, session=SESSION, purpose=p, modulus=m, sign=sg)
    assert np.array_equal(a, b)
    assert [int(v) for v in a] == ref_add([int(v) for v in start], masks, m)
    # base=: acc <- base + masks whatever acc held; base untouched
    keep = start.copy()
    c = np.full(dim, m - 1, dtype=dt)
    saved, prg.GROUP_MASKS = prg.GROUP_MASKS, group
    try:
        prg.add_masks(c, masks, session=SESSION, modulus=m, base=start)
    finally:
        prg.GROUP_MASKS = saved
    assert np.array_equal(c, a) and np.array_equal(start, keep)


@pytest.mark.parametrize("m", [2**8, 2**6, 2**16, 2**32, 2**64, 251, 65336, 2**32 - 5])
def test_multi_chunk_fast_paths_equal_vectorised_reference(m: int) -> None:
    """Vectors longer than one keystream chunk (CHUNK_BYTES), several mask groups: add_masks and
    add_mask agree with a vectorised reference (keystream of the whole stream, then reduce). The
    moduli reach every branch of the rejection path: no rejection in a chunk (2**32 - 5), a few
    (gap closing), ~0.3% (65336: boolean indexing) and ~2% (251: np.compress)."""
    dt = ring.dtype_for(m)
    per_chunk = prg.CHUNK_BYTES // dt.itemsize
    dim = per_chunk + per_chunk // 3 + 5 if dt.itemsize <= 2 else per_chunk // 2 * 3 + 7
    seeds = seeds_of(m % 1000, 3)
    masks = [(seeds[0], prg.PURPOSE_SELF, 1), (seeds[1], prg.PURPOSE_PAIRWISE, -1), (seeds[2], prg.PURPOSE_PAIRWISE, 1)]
    start = (np.arange(dim, dtype=np.uint64) * np.uint64(2654435761) % np.uint64(min(m, 2**63))).astype(dt)
    expected = [int(v) for v in start]
    b = (m - 1).bit_length()
    for sd, p, sg in masks:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=ref_domain(SESSION, p, dim, m)).derive(sd)
        nwords = dim if m & (m - 1) == 0 else 3 * dim + 64
        ks = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(nwords * dt.itemsize))
        words = np.frombuffer(ks, dtype=dt.newbyteorder("<")).astype(np.uint64)
        if b < 64:
            words &= np.uint64((1 << b) - 1)
        words = words[words < np.uint64(m)] if m < 2**64 else words
        assert words.shape[0] >= dim
        r = words[:dim].tolist()
        expected = [(x + sg * y) % m for x, y in zip(expected, r)]
    a = start.copy()
    saved, prg.GROUP_MASKS = prg.GROUP_MASKS, 2  # two groups over three masks
    try:
        prg.add_masks(a, masks, session=SESSION, modulus=m, scratch=prg.new_scratch())
    finally:
        prg.GROUP_MASKS = saved
    assert a.tolist() == expected
    c = start.copy()
    for sd, p, sg in masks:
        prg.add_mask(c, sd, session=SESSION, purpose=p, modulus=m, sign=sg)
    assert c.tolist() == expected
    keep = start.copy()
    for group in (1, 2, 64):
        e = np.empty(dim, dtype=dt)
        saved, prg.GROUP_MASKS = prg.GROUP_MASKS, group
        try:
            prg.add_masks(e, masks, session=SESSION, modulus=m, base=start)
        finally:
            prg.GROUP_MASKS = saved
        assert e.tolist() == expected and np.array_equal(start, keep)


def test_add_masks_base_validation() -> None:
    acc = np.zeros(400_000, np.uint32)
    masks = [(b"\x01" * 32, prg.PURPOSE_SELF, 1)]
    for bad in (acc, acc[::-1], np.zeros(400_000, np.uint64), np.zeros(5, np.uint32), [0] * 400_000):
        with pytest.raises(InvalidInput):
            prg.add_masks(acc, masks, session=SESSION, modulus=2**32, base=bad)
    assert not acc.any()
    out = np.empty(3, np.uint8)
    prg.add_masks(out, [], session=SESSION, modulus=256, base=np.array([1, 2, 3], np.uint8))
    assert out.tolist() == [1, 2, 3]


@pytest.mark.parametrize(
    "masks",
    [
        [(b"\x01" * 32, prg.PURPOSE_SELF, 1), (b"\x02" * 32, prg.PURPOSE_SELF, 0)],
        [(b"\x01" * 32, prg.PURPOSE_SELF, 1), (b"\x02" * 32, prg.PURPOSE_SELF, True)],
        [(b"\x01" * 32, prg.PURPOSE_SELF, 1), (b"", prg.PURPOSE_SELF, 1)],
        [(b"\x01" * 32, prg.PURPOSE_SELF, 1), ("seed", prg.PURPOSE_SELF, 1)],
        [(b"\x01" * 32, prg.PURPOSE_SELF, 1), (b"\x02" * 32, 7, 1)],
        [(b"\x01" * 32, prg.PURPOSE_SELF)],
        5,
    ],
)
@pytest.mark.parametrize("dim", [10, 300_000])
def test_add_masks_validates_everything_before_touching_acc(masks, dim: int) -> None:  # noqa: ANN001
    """A bad entry anywhere raises InvalidInput and leaves acc untouched (nothing half-done)."""
    acc = np.arange(dim, dtype=np.uint32)
    with pytest.raises(InvalidInput):
        prg.add_masks(acc, masks, session=SESSION, modulus=2**32)
    assert np.array_equal(acc, np.arange(dim, dtype=np.uint32))


def test_add_mask_rejects_like_before() -> None:
    acc = np.zeros(5, dtype=np.uint32)
    for kw in (dict(sign=2), dict(sign=True), dict(modulus=1), dict(modulus=2**64 + 1), dict(session="s"), dict(purpose=3)):
        args = dict(session=SESSION, purpose=prg.PURPOSE_SELF, modulus=2**32, sign=1) | kw
        with pytest.raises(InvalidInput):
            prg.add_mask(acc, b"\x01" * 32, **args)
    with pytest.raises(InvalidInput):
        prg.add_mask(acc.astype(np.uint64), b"\x01" * 32, session=SESSION, purpose="p", modulus=2**32, sign=1)
    with pytest.raises(InvalidInput):
        prg.add_mask(acc, b"", session=SESSION, purpose="p", modulus=2**32, sign=1)
    assert not acc.any()
    # bytearray session / seed and numpy-int modulus take the uncached path and give the same mask
    a, b = np.zeros(9, np.uint16), np.zeros(9, np.uint16)
    prg.add_mask(a, b"\x03" * 32, session=SESSION, purpose="p", modulus=65521, sign=-1)
    prg.add_mask(b, bytearray(b"\x03" * 32), session=bytearray(SESSION), purpose="p", modulus=np.uint64(65521), sign=np.int64(-1))
    assert np.array_equal(a, b)


# ------------------------------------------------------------------------------------------------
# ring / messages: zero-copy encode and decode, same bytes
# ------------------------------------------------------------------------------------------------
@settings(max_examples=40)
@given(moduli, st.integers(0, 50), st.integers(0, 2**32))
def test_pack_view_and_unpack_view_match_copies(m: int, dim: int, s: int) -> None:
    dt = ring.dtype_for(m)
    raw = Drbg(s, b"vec").bytes(8 * dim)
    x = np.array([int.from_bytes(raw[8 * i : 8 * i + 8], "little") % m for i in range(dim)], dtype=dt)
    keep = x.copy()
    view = ring.pack_view(x, m)
    assert bytes(view) == ring.pack(x, m)
    data = ring.pack(x, m)
    fast = ring.unpack(data, dim, m, copy=False)
    assert np.array_equal(fast, x) and fast.dtype == dt
    assert np.array_equal(ring.unpack(data, dim, m), x)
    assert np.array_equal(x, keep)
    if isinstance(view, memoryview):
        assert view.readonly and (m - 1).bit_length() == dt.itemsize * 8
    msg = MaskedInput("masked-input", SESSION, 3, dim, (m - 1).bit_length(), view)
    wire = msg.to_bytes()
    assert wire == ref_masked_input_bytes("masked-input", SESSION, 3, x, m)
    assert wire == MaskedInput("masked-input", SESSION, 3, dim, (m - 1).bit_length(), data).to_bytes()
    back = MaskedInput.from_bytes(wire)
    assert back == msg and back.to_bytes() == wire
    assert np.array_equal(back.vector(m), x) and np.array_equal(back.vector(m, copy=False), x)


def test_unpack_view_is_read_only_and_copy_is_fresh() -> None:
    x = np.arange(10, dtype=np.uint32)
    data = ring.pack(x, 2**32)
    v = ring.unpack(data, 10, 2**32, copy=False)
    assert not v.flags.writeable
    c = ring.unpack(data, 10, 2**32)
    c[0] = 7  # a fresh, writable copy
    assert ring.unpack(data, 10, 2**32)[0] == 0
    with pytest.raises(MalformedMessage):
        ring.unpack(data[:-1], 10, 2**32, copy=False)
    with pytest.raises(MalformedMessage):
        ring.unpack(ring.pack(np.array([252], np.uint8), 256), 1, 251, copy=False)


def test_memoryview_payload_validation() -> None:
    good = memoryview(bytes(8))
    assert MaskedInput("masked-input", SESSION, 0, 2, 32, good).payload == bytes(8)
    for bad in (memoryview(bytearray(8)), memoryview(np.zeros(2, np.uint32)).toreadonly(), memoryview(bytes(7)), bytearray(8)):
        with pytest.raises(InvalidInput):
            MaskedInput("masked-input", SESSION, 0, 2, 32, bad)


def test_as_ring_vector_copy_flag() -> None:
    x = np.arange(6, dtype=np.uint32)
    assert ring.as_ring_vector(x, 2**32, copy=False) is x
    assert ring.as_ring_vector(x, 2**32) is not x
    y = x.astype(np.int64)
    out = ring.as_ring_vector(y, 2**32, copy=False)
    assert out is not y and out.dtype == np.uint32 and np.array_equal(out, x)
    with pytest.raises(InvalidInput):
        ring.as_ring_vector(np.array([2**32], np.uint64), 2**32, copy=False)


# ------------------------------------------------------------------------------------------------
# client and server: same wire bytes as the reference, inputs never mutated
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("m,d,graph", [(2**32, 33, "complete"), (2**12, 20, "secagg+"), (65521, 17, "complete"), (2**64, 9, "secagg+")])
def test_client_upload_equals_reference_and_inputs_untouched(m: int, d: int, graph: str) -> None:
    """Each masked-input upload == old encoding of x_u + PRG_ref(b_u) + sum sigma PRG_ref(s_uv); with
    dropouts the server's sum is exact; no caller input is modified."""
    n = 8
    rng = np.random.default_rng(5)
    xs = [np.array([int(v) % m for v in rng.integers(0, 2**63, d)], dtype=ring.dtype_for(m)) for _ in range(n)]
    keep = [x.copy() for x in xs]
    ups: dict[int, bytes] = {}

    def hook(rnd: str, direction: str, client: int, data: bytes) -> bytes:
        if rnd == "masked-input" and direction == "up":
            ups[client] = data
        return data

    kw = dict(graph="secagg+", neighbours=4, dropout_fraction=0.25) if graph == "secagg+" else {}  # designed for 2 of 8
    session = Session(xs, modulus=m, threshold=3, seed=9, interceptor=hook, dropouts={2: "masked-input", 5: "masked-input"}, **kw)
    res = session.run()
    assert all(np.array_equal(a, b) for a, b in zip(xs, keep))
    for u, data in ups.items():
        c = session.clients[u]
        b_u = c._drbg.child(b"self-mask-seed").bytes(32)
        masks = [(b_u, prg.PURPOSE_SELF, 1)]
        for v in sorted(c.views["U2"] - {u}):
            masks.append((pairwise_seed(c._s, c._peers[v][1], session=c.session, u=u, v=v), prg.PURPOSE_PAIRWISE, mask_sign(u, v)))
        y = np.array(ref_add_session([int(v) for v in keep[u]], masks, m, c.session), dtype=ring.dtype_for(m))
        assert data == ref_masked_input_bytes("masked-input", c.session, u, y, m)
    total = [0] * d
    for u in res.included:
        total = [(a + int(b)) % m for a, b in zip(total, keep[u])]
    assert [int(v) for v in res.sum] == total and set(res.included) == set(range(n)) - {2, 5}


def ref_add_session(acc: list[int], masks: list[tuple[bytes, str, int]], m: int, session: bytes) -> list[int]:
    out = list(acc)
    for seed, purpose, sign in masks:
        r = ref_expand(seed, session, purpose, len(acc), m)
        out = [(a + sign * x) % m for a, x in zip(out, r)]
    return out


def test_run_secure_aggregation_does_not_mutate_inputs_and_cached_keys_are_public() -> None:
    xs = np.arange(40, dtype=np.uint32).reshape(4, 10)
    keep = xs.copy()
    res = run_secure_aggregation(xs, modulus=2**32, seed=1, dropouts={1: "masked-input"})
    assert np.array_equal(xs, keep)
    assert np.array_equal(res.sum, keep[[0, 2, 3]].sum(axis=0, dtype=np.uint32))
    # keys: the memoised public-key parse gives the same agreement as a fresh parse
    a = keys.AgreementKey.generate(Drbg(1))
    pk = keys.AgreementKey.generate(Drbg(2)).public_bytes
    assert a.agree(pk) == a.agree(bytearray(pk)) == a.agree(pk)
    with pytest.raises(ProtocolViolation):
        a.agree(pk[:31])
