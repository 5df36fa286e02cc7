"""Key agreement, KDF, authenticated encryption, signatures (secagg.keys) and the Drbg (secagg.drbg)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from secagg.drbg import Drbg
from secagg.errors import DecryptionFailed, InvalidInput, ProtocolViolation, SignatureInvalid
from secagg.keys import (
    KEY_SIZE,
    NONCE_SIZE,
    SIGNATURE_SIZE,
    TAG_SIZE,
    AgreementKey,
    SigningKey,
    derive_key,
    open_sealed,
    seal,
    verify_signature,
)
from secagg.keys import Drbg as KeysDrbg

seeds = st.integers(0, 2**256 - 1)

# X25519 points that give an all-zero shared secret for every private key: 0, 1, the two points of
# order 8, p - 1 (order 2) and the non-canonical encodings p, p + 1 (Bernstein's list)
LOW_ORDER = [
    "00" * 32,
    "01" + "00" * 31,
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ec" + "ff" * 30 + "7f",
    "ed" + "ff" * 30 + "7f",
    "ee" + "ff" * 30 + "7f",
]


# ------------------------------------------------------------------------------------------- Drbg


def test_drbg_is_reexported_from_keys():
    assert KeysDrbg is Drbg


def test_drbg_matches_specification():
    """Drbg(bytes seed, label) = AES-256-CTR keystream under HKDF-SHA256(tag || seed, info=label)."""
    import struct

    label = b"clients"
    key = HKDF(hashes.SHA256(), 32, None, b"secagg/drbg/v1" + struct.pack(">Q", len(label)) + label).derive(
        b"\x02" + b"my-seed"
    )
    expected = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor().update(bytes(10000))
    d = Drbg(b"my-seed", label)
    got = b"".join(d.bytes(n) for n in (1, 0, 7, 4095, 3, 5000, 894))  # across internal buffer seams
    assert got == expected


@settings(max_examples=40)
@given(seeds, st.lists(st.integers(0, 5000), max_size=6))
def test_drbg_deterministic_and_stream_consistent(seed, sizes):
    a, b = Drbg(seed), Drbg(seed)
    chunks = b"".join(a.bytes(n) for n in sizes)
    assert chunks == b.bytes(sum(sizes))


def test_drbg_domain_separation():
    outs = {
        Drbg(0).bytes(32),
        Drbg(bytes(32)).bytes(32),  # int 0 and 32 zero bytes are different seeds
        Drbg(0, b"x").bytes(32),
        Drbg(1).bytes(32),
        Drbg(0).child(b"x").bytes(32),  # child(label) != Drbg(seed, label)
        Drbg(0).child(b"y").bytes(32),
    }
    assert len(outs) == 6
    assert Drbg(None).bytes(32) != Drbg(None).bytes(32)


def test_drbg_child_independent_of_position():
    a, b = Drbg(5), Drbg(5)
    a.bytes(1000)
    assert a.child(b"c").bytes(64) == b.child(b"c").bytes(64)


@pytest.mark.parametrize("bad", [-1, 2**256, True, 1.5, "seed"])
def test_drbg_bad_seed(bad):
    with pytest.raises(InvalidInput):
        Drbg(bad)


@settings(max_examples=60)
@given(seeds, st.integers(1, 2**300))
def test_randbelow_in_range(seed, n):
    d = Drbg(seed)
    assert all(0 <= d.randbelow(n) < n for _ in range(5))


def test_randbelow_uniform_chi_square():
    """40,000 draws of randbelow(10) and randbelow(2**16 + 1 binned into 64 bins); Pearson chi-square
    against uniform. False-alarm rate alpha = 1e-4 per case; fixed seeds (deterministic)."""
    d = Drbg(b"randbelow-chi2")
    counts = [0] * 10
    for _ in range(40000):
        counts[d.randbelow(10)] += 1
    assert stats.chisquare(counts).pvalue > 1e-4
    n = 3 * 2**14  # 49152: acceptance 3/4 with 16-bit candidates, low bits and high bits both matter
    counts = [0] * 48
    for _ in range(40000):
        counts[d.randbelow(n) * 48 // n] += 1
    assert stats.chisquare(counts).pvalue > 1e-4
    assert Drbg(1).randbelow(1) == 0
    with pytest.raises(InvalidInput):
        d.randbelow(0)


def test_permutation_uniform():
    """All 24 permutations of 4 elements, 24,000 draws: chi-square with alpha = 1e-4, fixed seed."""
    d = Drbg(b"perm")
    counts: dict[tuple[int, ...], int] = {}
    for _ in range(24000):
        p = tuple(d.permutation(4))
        counts[p] = counts.get(p, 0) + 1
    assert len(counts) == 24
    assert stats.chisquare(list(counts.values())).pvalue > 1e-4
    assert sorted(d.permutation(100)) == list(range(100))
    assert d.permutation(0) == [] and d.permutation(1) == [0]


# ------------------------------------------------------------------------------------ agreement


@settings(max_examples=25)
@given(seeds, seeds)
def test_agreement_symmetric_and_deterministic(s1, s2):
    a = AgreementKey.generate(Drbg(s1))
    b = AgreementKey.generate(Drbg(s2, b"other"))
    assert len(a.public_bytes) == KEY_SIZE
    ab = a.agree(b.public_bytes)
    assert ab == b.agree(a.public_bytes) and len(ab) == 32
    assert AgreementKey.generate(Drbg(s1)).public_bytes == a.public_bytes
    assert AgreementKey.from_private_bytes(a.private_bytes).agree(b.public_bytes) == ab


@pytest.mark.parametrize("point", LOW_ORDER)
def test_low_order_points_rejected(point):
    a = AgreementKey.generate(Drbg(3))
    with pytest.raises(ProtocolViolation):
        a.agree(bytes.fromhex(point))


@pytest.mark.parametrize("bad", [b"", b"\x09" * 31, b"\x09" * 33, "x" * 32])
def test_malformed_public_key_rejected(bad):
    with pytest.raises(ProtocolViolation):
        AgreementKey.generate(Drbg(3)).agree(bad)


# ------------------------------------------------------------------------------------------- KDF


def test_derive_key_binds_every_field():
    shared = b"\x11" * 32
    base = dict(session=b"s", purpose="pairwise", u=1, v=2)
    k = derive_key(shared, **base)
    assert len(k) == 32 and derive_key(shared, **base) == k
    others = [
        derive_key(b"\x12" * 32, **base),
        derive_key(shared, **dict(base, session=b"t")),
        derive_key(shared, **dict(base, purpose="channel")),
        derive_key(shared, **dict(base, u=2, v=1)),
        derive_key(shared, **dict(base, v=3)),
        derive_key(shared, session=b"ab", purpose="c", u=1, v=2),
        derive_key(shared, session=b"a", purpose="bc", u=1, v=2),
    ]
    assert len({k, *others}) == 1 + len(others)
    assert len(derive_key(shared, **base, length=64)) == 64
    for bad in (dict(base, u=-1), dict(base, v=2**64), dict(base, u=True), dict(base, session="s")):
        with pytest.raises(InvalidInput):
            derive_key(shared, **bad)


# ----------------------------------------------------------------------------------------- AEAD

KEY = bytes(range(32))
NONCE = b"\x00" * 11 + b"\x01"


@settings(max_examples=50)
@given(st.binary(max_size=200), st.binary(max_size=40))
def test_seal_open_round_trip(pt, aad):
    sealed = seal(KEY, pt, aad=aad, nonce=NONCE)
    assert len(sealed) == len(pt) + NONCE_SIZE + TAG_SIZE and sealed[:NONCE_SIZE] == NONCE
    assert open_sealed(KEY, sealed, aad=aad) == pt


@settings(max_examples=80)
@given(st.binary(min_size=1, max_size=64), st.data())
def test_tampering_detected(pt, data):
    aad = b"header"
    sealed = seal(KEY, pt, aad=aad, nonce=NONCE)
    i = data.draw(st.integers(0, len(sealed) - 1))  # nonce, ciphertext or tag byte
    bit = data.draw(st.integers(0, 7))
    bad = bytearray(sealed)
    bad[i] ^= 1 << bit
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, bytes(bad), aad=aad)
    cut = data.draw(st.integers(0, len(sealed) - 1))
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, sealed[:cut], aad=aad)
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, sealed, aad=aad + b"x")
    with pytest.raises(DecryptionFailed):
        open_sealed(bytes(32), sealed, aad=aad)


def test_seal_argument_checks():
    with pytest.raises(InvalidInput):
        seal(b"short", b"x", aad=b"", nonce=NONCE)
    with pytest.raises(InvalidInput):
        seal(KEY, b"x", aad=b"", nonce=b"\x00" * 8)
    with pytest.raises(DecryptionFailed):
        open_sealed(KEY, b"", aad=b"")


# ------------------------------------------------------------------------------------ signatures


@settings(max_examples=25)
@given(seeds, st.binary(max_size=100), st.data())
def test_sign_verify(seed, msg, data):
    sk = SigningKey.generate(Drbg(seed))
    sig = sk.sign(msg)
    assert len(sig) == SIGNATURE_SIZE and len(sk.public_bytes) == KEY_SIZE
    verify_signature(sk.public_bytes, sig, msg)
    i = data.draw(st.integers(0, SIGNATURE_SIZE - 1))
    bad = bytearray(sig)
    bad[i] ^= 1 << data.draw(st.integers(0, 7))
    with pytest.raises(SignatureInvalid):
        verify_signature(sk.public_bytes, bytes(bad), msg)
    with pytest.raises(SignatureInvalid):
        verify_signature(sk.public_bytes, sig, msg + b"!")
    other = SigningKey.generate(Drbg(seed, b"other"))
    with pytest.raises(SignatureInvalid):
        verify_signature(other.public_bytes, sig, msg)


def test_signature_malformed_inputs():
    sk = SigningKey.generate(Drbg(9))
    sig = sk.sign(b"m")
    for pub, s in ((sk.public_bytes[:31], sig), (sk.public_bytes, sig[:63]), (sk.public_bytes, sig + b"\x00")):
        with pytest.raises(SignatureInvalid):
            verify_signature(pub, s, b"m")
