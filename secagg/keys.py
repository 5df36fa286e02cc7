"""Typed wrappers over ``cryptography`` for the primitives of Bonawitz et al. (CCS 2017, Section 3).

* KA (key agreement, Sec. 3.4): X25519. ``agree`` returns the raw 32-byte shared secret and refuses
  peer keys that are malformed or of low order (all-zero shared secret) with ProtocolViolation.
* KDF: HKDF-SHA256 with an ``info`` that binds a protocol label, the purpose, the session id and the
  ordered pair ``(u, v)``, each field length-prefixed (injective encoding).
* AE (authenticated encryption, Sec. 3.5): AES-256-GCM; sealed = nonce || ciphertext || tag.
* SIG (active variant, Sec. 3.7): Ed25519.

Private keys are produced deterministically from a :class:`~secagg.drbg.Drbg` via
``from_private_bytes(drbg.bytes(32))`` so a whole protocol run is reproducible from one seed.
"""

from __future__ import annotations

import functools
import struct

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secagg.drbg import Drbg
from secagg.errors import DecryptionFailed, InvalidInput, ProtocolViolation, SignatureInvalid

__all__ = [
    "Drbg",
    "KEY_SIZE",
    "SIGNATURE_SIZE",
    "NONCE_SIZE",
    "TAG_SIZE",
    "AgreementKey",
    "SigningKey",
    "check_agreement_public",
    "verify_signature",
    "derive_key",
    "seal",
    "open_sealed",
]

KEY_SIZE = 32
SIGNATURE_SIZE = 64
NONCE_SIZE = 12
TAG_SIZE = 16
_KDF_LABEL = b"secagg/kdf/v1"
_RAW = serialization.Encoding.Raw
_RAW_PUB = serialization.PublicFormat.Raw
_RAW_PRIV = serialization.PrivateFormat.Raw
_NOENC = serialization.NoEncryption()
_SHA256 = hashes.SHA256()


def _lp(data: bytes) -> bytes:
    return struct.pack(">Q", len(data)) + data


def _is_bytes(x: object) -> bool:
    return isinstance(x, (bytes, bytearray))


@functools.lru_cache(maxsize=1 << 14)
def _parse_public(public: bytes) -> X25519PublicKey:
    """Parsed public keys, memoised: a server regenerating the masks of dropped clients agrees with
    the same survivors' public keys again and again (public values only; nothing secret is cached)."""
    return X25519PublicKey.from_public_bytes(public)


def check_agreement_public(public: bytes) -> X25519PublicKey:
    """Parse a 32-byte X25519 public key; ProtocolViolation if it is not one."""
    if type(public) is bytes and len(public) == KEY_SIZE:
        try:
            return _parse_public(public)
        except ValueError as exc:  # pragma: no cover - every 32-byte string parses
            raise ProtocolViolation(f"invalid X25519 public key: {exc}") from None
    if not _is_bytes(public) or len(public) != KEY_SIZE:
        raise ProtocolViolation(f"an X25519 public key is {KEY_SIZE} bytes")
    try:
        return X25519PublicKey.from_public_bytes(bytes(public))
    except ValueError as exc:  # pragma: no cover - every 32-byte string parses
        raise ProtocolViolation(f"invalid X25519 public key: {exc}") from None


class AgreementKey:
    """An X25519 key pair (KA.gen / KA.agree of the paper)."""

    __slots__ = ("_sk", "public_bytes")

    def __init__(self, private: X25519PrivateKey) -> None:
        self._sk = private
        self.public_bytes: bytes = private.public_key().public_bytes(_RAW, _RAW_PUB)

    @classmethod
    def generate(cls, drbg: Drbg) -> "AgreementKey":
        """Deterministic key pair from 32 bytes of ``drbg``."""
        return cls.from_private_bytes(drbg.bytes(KEY_SIZE))

    @classmethod
    def from_private_bytes(cls, private: bytes) -> "AgreementKey":
        """Rebuild a key pair from its 32-byte private scalar (e.g. after Shamir reconstruction)."""
        if not _is_bytes(private) or len(private) != KEY_SIZE:
            raise InvalidInput(f"an X25519 private key is {KEY_SIZE} bytes")
        return cls(X25519PrivateKey.from_private_bytes(bytes(private)))

    @property
    def private_bytes(self) -> bytes:
        """The raw 32-byte private key (what the protocol secret-shares as ``s_sk``)."""
        return self._sk.private_bytes(_RAW, _RAW_PRIV, _NOENC)

    def agree(self, peer_public: bytes) -> bytes:
        """Raw 32-byte X25519 shared secret with ``peer_public``.

        Raises ProtocolViolation for a malformed key or a low-order point (all-zero secret, which
        ``cryptography`` reports as ValueError).
        """
        peer = check_agreement_public(peer_public)
        try:
            shared = self._sk.exchange(peer)
        except ValueError as exc:
            raise ProtocolViolation(f"X25519 agreement failed (low-order peer key?): {exc}") from None
        if shared == bytes(len(shared)):
            raise ProtocolViolation("X25519 agreement produced the all-zero secret (low-order peer key)")
        return shared

    def __repr__(self) -> str:
        return f"AgreementKey(public={self.public_bytes.hex()[:16]}...)"


class SigningKey:
    """An Ed25519 key pair (SIG.gen / SIG.sign of the paper, active variant)."""

    __slots__ = ("_sk", "public_bytes")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._sk = private
        self.public_bytes: bytes = private.public_key().public_bytes(_RAW, _RAW_PUB)

    @classmethod
    def generate(cls, drbg: Drbg) -> "SigningKey":
        """Deterministic key pair from 32 bytes of ``drbg``."""
        return cls.from_private_bytes(drbg.bytes(KEY_SIZE))

    @classmethod
    def from_private_bytes(cls, private: bytes) -> "SigningKey":
        """Rebuild a key pair from its 32-byte seed."""
        if not _is_bytes(private) or len(private) != KEY_SIZE:
            raise InvalidInput(f"an Ed25519 private key is {KEY_SIZE} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(bytes(private)))

    def sign(self, message: bytes) -> bytes:
        """64-byte Ed25519 signature of ``message``."""
        if not _is_bytes(message):
            raise InvalidInput("message must be bytes")
        return self._sk.sign(bytes(message))

    def __repr__(self) -> str:
        return f"SigningKey(public={self.public_bytes.hex()[:16]}...)"


def verify_signature(public: bytes, signature: bytes, message: bytes) -> None:
    """Check an Ed25519 signature; raise SignatureInvalid on any failure (bad key, length, forgery)."""
    if not _is_bytes(public) or len(public) != KEY_SIZE:
        raise SignatureInvalid(f"an Ed25519 public key is {KEY_SIZE} bytes")
    if not _is_bytes(signature) or len(signature) != SIGNATURE_SIZE:
        raise SignatureInvalid(f"an Ed25519 signature is {SIGNATURE_SIZE} bytes")
    if not _is_bytes(message):
        raise InvalidInput("message must be bytes")
    try:
        Ed25519PublicKey.from_public_bytes(bytes(public)).verify(bytes(signature), bytes(message))
    except (InvalidSignature, ValueError):
        raise SignatureInvalid("Ed25519 signature does not verify") from None


def derive_key(shared: bytes, *, session: bytes, purpose: str, u: int, v: int, length: int = 32) -> bytes:
    """HKDF-SHA256(ikm = shared, info = lp(label) || lp(purpose) || lp(session) || u64(u) || u64(v)).

    ``(u, v)`` is ordered by the caller: pairwise mask seeds and share-channel keys both use
    ``(min, max)`` so both ends agree (the channel derives 64 bytes and uses one half per direction,
    :func:`secagg.client.channel_keys`). ``lp(x) = u64_be(len(x)) || x``.
    """
    if not _is_bytes(shared) or len(shared) == 0:
        raise InvalidInput("shared secret must be non-empty bytes")
    if not _is_bytes(session):
        raise InvalidInput("session must be bytes")
    if not isinstance(purpose, str):
        raise InvalidInput("purpose must be a str")
    for name, val in (("u", u), ("v", v)):
        if isinstance(val, bool) or not isinstance(val, int) or not 0 <= val < 1 << 64:
            raise InvalidInput(f"{name} must be an int in [0, 2**64), got {val!r}")
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= 255 * 32:
        raise InvalidInput(f"length must be in [1, 8160], got {length!r}")
    info = _kdf_prefix(purpose, bytes(session)) + _QQ.pack(u, v)
    return HKDF(algorithm=_SHA256, length=length, salt=None, info=info).derive(bytes(shared))


_QQ = struct.Struct(">QQ")


@functools.lru_cache(maxsize=1024)
def _kdf_prefix(purpose: str, session: bytes) -> bytes:
    """``lp(label) || lp(purpose) || lp(session)``: the part of :func:`derive_key`'s info shared by a round."""
    return _lp(_KDF_LABEL) + _lp(purpose.encode("utf-8")) + _lp(session)


def _aead(key: bytes) -> AESGCM:
    if not _is_bytes(key) or len(key) != KEY_SIZE:
        raise InvalidInput(f"an AES-256-GCM key is {KEY_SIZE} bytes")
    return AESGCM(bytes(key))


def seal(key: bytes, plaintext: bytes, *, aad: bytes, nonce: bytes) -> bytes:
    """AES-256-GCM encryption; returns ``nonce || ciphertext || tag`` (len(plaintext) + 28 bytes).

    The caller supplies a nonce that is unique per key (e.g. a counter, or the (u, v) pair when each
    channel key encrypts one message).
    """
    aead = _aead(key)
    if not _is_bytes(nonce) or len(nonce) != NONCE_SIZE:
        raise InvalidInput(f"nonce must be {NONCE_SIZE} bytes")
    if not _is_bytes(plaintext) or not _is_bytes(aad):
        raise InvalidInput("plaintext and aad must be bytes")
    return bytes(nonce) + aead.encrypt(bytes(nonce), bytes(plaintext), bytes(aad))


def open_sealed(key: bytes, sealed: bytes, *, aad: bytes) -> bytes:
    """Inverse of :func:`seal`; DecryptionFailed on any failure (truncation, tampering, wrong aad)."""
    aead = _aead(key)
    if not _is_bytes(sealed) or len(sealed) < NONCE_SIZE + TAG_SIZE:
        raise DecryptionFailed("sealed message too short")
    if not _is_bytes(aad):
        raise DecryptionFailed("aad must be bytes")
    sealed = bytes(sealed)
    try:
        return aead.decrypt(sealed[:NONCE_SIZE], sealed[NONCE_SIZE:], bytes(aad))
    except (InvalidTag, ValueError, OverflowError):
        raise DecryptionFailed("AES-GCM authentication failed") from None
