"""Wire format of secagg.messages: exact round trips, exact sizes, and strict parsing.

Properties (hypothesis): every message built from random valid fields round-trips through
``to_bytes``/``from_bytes`` and its length equals the documented size formula; random bytes and
mutations (bit flips, truncation, extension, insertion, deletion) of valid encodings either parse to a
message whose re-encoding is byte-identical (canonical encoding) or raise MalformedMessage -- never a
bare exception. The ledger of a real run matches the size formulas message by message.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import ring
from secagg.errors import InvalidInput, MalformedMessage
from secagg.ledger import Ledger, LedgerEntry
from secagg.messages import (
    CIPHERTEXT_SIZE,
    HEADER_SIZE,
    KINDS,
    MESSAGE_TYPES,
    SESSION_SIZE,
    SHARE_PLAINTEXT_SIZE,
    SHARE_SIZE,
    SIGNATURE_SIZE,
    AdvertiseKeys,
    Ciphertexts,
    ConsistencyRequest,
    ConsistencySignature,
    KeyEntry,
    KeyList,
    MaskedInput,
    SharePlaintext,
    ShareKeys,
    UnmaskingRequest,
    UnmaskingResponse,
    advertise_keys_size,
    ciphertexts_size,
    consistency_request_size,
    consistency_signature_size,
    key_list_size,
    masked_input_size,
    parse,
    share_keys_size,
    unmasking_request_size,
    unmasking_response_size,
)
from secagg.protocol import run_secure_aggregation

sessions = st.binary(min_size=SESSION_SIZE, max_size=SESSION_SIZE)
parties = st.integers(0, 2**32 - 1)
id_lists = st.lists(st.integers(0, 2**32 - 1), max_size=12, unique=True).map(lambda x: tuple(sorted(x)))


def _pairs(size: int):
    return st.dictionaries(st.integers(0, 2**32 - 1), st.binary(min_size=size, max_size=size), max_size=8).map(
        lambda d: tuple(sorted(d.items()))
    )


@st.composite
def key_lists(draw):
    signed = draw(st.booleans())
    ids = draw(id_lists)
    entries = tuple(
        KeyEntry(i, draw(st.binary(min_size=32, max_size=32)), draw(st.binary(min_size=32, max_size=32)),
                 draw(st.binary(min_size=64, max_size=64)) if signed else None)
        for i in ids
    )
    return KeyList("advertise-keys", draw(sessions), draw(parties), entries, signed)


@st.composite
def masked_inputs(draw):
    width = draw(st.integers(1, 64))
    m = 1 << width if draw(st.booleans()) else draw(st.integers((1 << (width - 1)) + 1, 1 << width))
    m = max(m, 2)
    width = ring.bit_width(m)
    dim = draw(st.integers(0, 40))
    vals = draw(st.lists(st.integers(0, m - 1), min_size=dim, max_size=dim))
    vec = ring.as_ring_vector(vals, m, dim)
    return MaskedInput("masked-input", draw(sessions), draw(parties), dim, width, ring.pack(vec, m)), m, vec


@st.composite
def messages(draw):
    kind = draw(st.sampled_from(KINDS))
    s, p = draw(sessions), draw(parties)
    if kind == "advertise-keys":
        sig = draw(st.none() | st.binary(min_size=64, max_size=64))
        return AdvertiseKeys("advertise-keys", s, p, draw(st.binary(min_size=32, max_size=32)), draw(st.binary(min_size=32, max_size=32)), sig)
    if kind == "key-list":
        return draw(key_lists())
    if kind == "share-keys":
        return ShareKeys("share-keys", s, p, draw(_pairs(CIPHERTEXT_SIZE)))
    if kind == "ciphertexts":
        return Ciphertexts("share-keys", s, p, draw(_pairs(CIPHERTEXT_SIZE)))
    if kind == "masked-input":
        return draw(masked_inputs())[0]
    if kind == "consistency-request":
        if draw(st.booleans()):  # SecAgg+: U3 as a bitmap over the n clients
            ids = draw(st.lists(st.integers(0, 300), max_size=12, unique=True).map(lambda x: tuple(sorted(x))))
            universe = draw(st.integers(max(ids, default=0) + 1, 320))
            return ConsistencyRequest("masked-input", s, p, ids, universe)
        return ConsistencyRequest("masked-input", s, p, draw(id_lists))
    if kind == "consistency-signature":
        return ConsistencySignature("consistency-check", s, p, draw(st.binary(min_size=64, max_size=64)))
    if kind == "unmasking-request":
        rnd = draw(st.sampled_from(("masked-input", "consistency-check")))
        return UnmaskingRequest(rnd, s, p, draw(id_lists), draw(id_lists), draw(_pairs(SIGNATURE_SIZE)))
    return UnmaskingResponse("unmasking", s, p, draw(_pairs(SHARE_SIZE)), draw(_pairs(SHARE_SIZE)))


def _expected_size(msg) -> int:  # noqa: ANN001
    if isinstance(msg, AdvertiseKeys):
        return advertise_keys_size(msg.signature is not None)
    if isinstance(msg, KeyList):
        return key_list_size(len(msg.entries), msg.signed)
    if isinstance(msg, ShareKeys):
        return share_keys_size(len(msg.ciphertexts))
    if isinstance(msg, Ciphertexts):
        return ciphertexts_size(len(msg.ciphertexts))
    if isinstance(msg, MaskedInput):
        return HEADER_SIZE + 5 + (msg.dim * msg.width + 7) // 8
    if isinstance(msg, ConsistencyRequest):
        return consistency_request_size(len(msg.survivors), msg.universe)
    if isinstance(msg, ConsistencySignature):
        return consistency_signature_size()
    if isinstance(msg, UnmaskingRequest):
        return unmasking_request_size(len(msg.survivors), len(msg.dropped), len(msg.signatures))
    assert isinstance(msg, UnmaskingResponse)
    return unmasking_response_size(len(msg.b_shares), len(msg.key_shares))


@settings(max_examples=150)
@given(messages())
def test_round_trip_and_exact_size(msg) -> None:  # noqa: ANN001
    data = msg.to_bytes()
    assert len(data) == _expected_size(msg) == msg.nbytes
    back = type(msg).from_bytes(data)
    assert back == msg
    assert back.to_bytes() == data
    assert parse(data) == msg
    # a message is rejected by every other kind's parser
    for other in MESSAGE_TYPES:
        if other is not type(msg):
            with pytest.raises(MalformedMessage):
                other.from_bytes(data)


@settings(max_examples=60)
@given(masked_inputs())
def test_masked_input_vector_round_trip(case) -> None:  # noqa: ANN001
    msg, m, vec = case
    assert msg.nbytes == masked_input_size(msg.dim, m)
    assert np.array_equal(MaskedInput.from_bytes(msg.to_bytes()).vector(m), vec)


@st.composite
def mutations(draw):
    msg = draw(messages())
    data = bytearray(msg.to_bytes())
    op = draw(st.sampled_from(("flip", "truncate", "extend", "insert", "delete", "set-byte")))
    if op == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data[i] ^= 1 << draw(st.integers(0, 7))
    elif op == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif op == "extend":
        data += draw(st.binary(min_size=1, max_size=40))
    elif op == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=8))
    elif op == "delete":
        i = draw(st.integers(0, len(data) - 1))
        del data[i : i + draw(st.integers(1, 8))]
    else:
        i = draw(st.integers(0, min(len(data) - 1, HEADER_SIZE + 16)))
        data[i] = draw(st.integers(0, 255))
    return type(msg), bytes(data)


@settings(max_examples=400)
@given(mutations())
def test_mutated_bytes_raise_only_malformed(case) -> None:  # noqa: ANN001
    cls, data = case
    for parser in (cls.from_bytes, parse):
        try:
            msg = parser(data)
        except MalformedMessage:
            continue
        # accepted: must be the canonical encoding of what was parsed
        assert msg.to_bytes() == data


@settings(max_examples=300)
@given(st.binary(max_size=300), st.sampled_from(MESSAGE_TYPES))
def test_random_bytes_raise_only_malformed(data: bytes, cls) -> None:  # noqa: ANN001
    for parser in (cls.from_bytes, parse, SharePlaintext.from_bytes):
        try:
            msg = parser(data)
        except MalformedMessage:
            continue
        assert msg.to_bytes() == data


@settings(max_examples=100)
@given(st.integers(1, 8), st.binary(min_size=5, max_size=40))
def test_random_prefix_with_valid_header_raises_only_malformed(code: int, body: bytes) -> None:
    data = bytes([code % 9 + 1, body[0] % 6]) + bytes(16) + body[1:]
    try:
        parse(data)
    except MalformedMessage:
        pass


def test_non_bytes_inputs_are_malformed() -> None:
    for cls in MESSAGE_TYPES:
        for bad in (None, 3, "text", [1, 2]):
            with pytest.raises(MalformedMessage):
                cls.from_bytes(bad)  # type: ignore[arg-type]
    with pytest.raises(MalformedMessage):
        parse(b"")


def test_duplicate_ids_cannot_be_encoded_or_parsed() -> None:
    s = bytes(16)
    with pytest.raises(InvalidInput):
        ConsistencyRequest("masked-input", s, 0, (3, 3))
    with pytest.raises(InvalidInput):
        UnmaskingRequest("masked-input", s, 0, (2, 1), (), ())
    good = ConsistencyRequest("masked-input", s, 0, (3, 4)).to_bytes()
    dup = good[:-4] + (3).to_bytes(4, "big")
    with pytest.raises(MalformedMessage):
        ConsistencyRequest.from_bytes(dup)


def test_wrong_round_tag_rejected_at_parse_and_construction() -> None:
    s = bytes(16)
    with pytest.raises(InvalidInput):
        ConsistencySignature("unmasking", s, 1, bytes(64))
    data = bytearray(ConsistencySignature("consistency-check", s, 1, bytes(64)).to_bytes())
    for tag in (0, 1, 2, 4, 5, 255):
        data[1] = tag
        with pytest.raises(MalformedMessage):
            ConsistencySignature.from_bytes(bytes(data))


def test_masked_input_rejects_padding_bits_and_out_of_range_elements() -> None:
    s = bytes(16)
    m = 5  # 3 bits per element
    msg = MaskedInput("masked-input", s, 0, 2, 3, ring.pack(ring.as_ring_vector([1, 4], m), m))
    data = bytearray(msg.to_bytes())
    data[-1] |= 0x80  # padding bit
    with pytest.raises(MalformedMessage):
        MaskedInput.from_bytes(bytes(data))
    bad = MaskedInput("masked-input", s, 0, 1, 3, bytes([7]))  # 7 >= 5
    with pytest.raises(MalformedMessage):
        MaskedInput.from_bytes(bad.to_bytes()).vector(m)
    with pytest.raises(MalformedMessage):
        msg.vector(16)  # width mismatch


def test_share_plaintext_layout() -> None:
    p = SharePlaintext(1, 2, bytes(range(16)), b"\x01" * SHARE_SIZE, b"\x02" * SHARE_SIZE)
    data = p.to_bytes()
    assert len(data) == SHARE_PLAINTEXT_SIZE == 24 + 2 * SHARE_SIZE
    assert data[:8] == bytes([0, 0, 0, 1, 0, 0, 0, 2])
    assert SharePlaintext.from_bytes(data) == p
    with pytest.raises(MalformedMessage):
        SharePlaintext.from_bytes(data[:-1])
    assert CIPHERTEXT_SIZE == 12 + SHARE_PLAINTEXT_SIZE + 16


def test_header_layout_known_answer() -> None:
    msg = ConsistencySignature("consistency-check", bytes(range(16)), 0x01020304, bytes(64))
    data = msg.to_bytes()
    assert data[0] == 7 and data[1] == 3
    assert data[2:18] == bytes(range(16))
    assert data[18:22] == bytes([1, 2, 3, 4])
    assert len(data) == HEADER_SIZE + 64


# ------------------------------------------------------------------------------------------------
# ledger
# ------------------------------------------------------------------------------------------------
def test_ledger_summaries_and_equality() -> None:
    led = Ledger()
    led.record("advertise-keys", "up", 0, "advertise-keys", 10)
    led.record("advertise-keys", "down", 0, "key-list", 30)
    led.record("share-keys", "up", 1, "share-keys", 5)
    assert led.total() == 45
    assert led.by_round() == {"advertise-keys": {"up": 10, "down": 30}, "share-keys": {"up": 5, "down": 0}}
    assert led.upload_per_client() == {0: 10, 1: 5}
    assert led.download_per_client() == {0: 30}
    assert led.expansion_factor(dim=5, input_bits=8) == pytest.approx(7.5 / 5)
    other = Ledger(reversed(led.entries))
    assert other == led
    assert Ledger(led.entries[:2]) != led
    assert isinstance(led[0], LedgerEntry) and len(led) == 3
    with pytest.raises(InvalidInput):
        led.record("x", "sideways", 0, "k", 1)
    with pytest.raises(InvalidInput):
        led.record("x", "up", 0, "k", -1)


@settings(max_examples=6)
@given(st.integers(3, 9), st.integers(1, 30), st.sampled_from([2**8, 2**32, 97, 2**64]), st.sampled_from(["honest-but-curious", "active"]))
def test_ledger_sizes_follow_the_wire_format(n: int, d: int, m: int, variant: str) -> None:
    """With dropouts at every round, each recorded size equals the size formula for its counts."""
    rng = np.random.default_rng(n * d)
    xs = [ring.as_ring_vector(rng.integers(0, min(m, 2**62), d), m) for _ in range(n)]
    drops = {n - 1: "masked-input:after", n - 2: "unmasking"} if n >= 5 else {}
    t = n // 2 + 1 if variant == "active" else 2  # active: 2t > n (secagg.protocol.check_active_threshold)
    res = run_secure_aggregation(xs, modulus=m, threshold=t, variant=variant, dropouts=drops, seed=n)
    U = res.sets
    active = variant == "active"
    for e in res.ledger:
        if e.kind == "advertise-keys":
            assert e.nbytes == advertise_keys_size(active)
        elif e.kind == "key-list":
            assert e.nbytes == key_list_size(len(U["U1"]), active)
        elif e.kind == "share-keys":
            assert e.nbytes == share_keys_size(len(U["U1"]) - 1)
        elif e.kind == "ciphertexts":
            assert e.nbytes == ciphertexts_size(len(U["U2"]) - 1)
        elif e.kind == "masked-input":
            assert e.nbytes == masked_input_size(d, m)
        elif e.kind == "consistency-request":
            assert e.nbytes == consistency_request_size(len(U["U3"]))
        elif e.kind == "consistency-signature":
            assert e.nbytes == consistency_signature_size()
        elif e.kind == "unmasking-request":
            assert e.nbytes == unmasking_request_size(len(U["U3"]), len(U["U2"] - U["U3"]), len(U["U4"]) if active else 0)
        else:
            assert e.kind == "unmasking-response"
            assert e.nbytes == unmasking_response_size(len(U["U3"]), len(U["U2"] - U["U3"]))
    kinds = {e.kind for e in res.ledger}
    assert ("consistency-request" in kinds) == active
