"""Wire format of every message of the protocol (Bonawitz et al., CCS 2017, Figure 4 / Section 4).

Each message is a frozen dataclass with an exact ``to_bytes()`` and a strict ``from_bytes()``:
``from_bytes`` accepts exactly the bytes ``to_bytes`` produces (one canonical encoding per message)
and raises :class:`~secagg.errors.MalformedMessage` on anything else: truncation, trailing bytes,
an unknown kind byte, a round tag the message kind cannot carry, bad flags, id lists that are not
strictly increasing (so duplicates cannot even be encoded), counts that disagree with the length,
nonzero padding bits. No other exception type escapes parsing.

Integers are big-endian (network order); vectors are packed little-endian at ``bit_width(M)`` bits per
element (:func:`secagg.ring.pack`, vectors.md).

Common header, first ``HEADER_SIZE = 22`` bytes of every message::

    kind     u8    message kind code (table below)
    round    u8    index of the round in ROUNDS whose message this is (0..4)
    session  16 B  session id (derived from the run seed)
    party    u32   sender (uplink) or recipient (downlink) client id

Constants: K = ``KEY_SIZE`` = 32 (X25519 / Ed25519 public key), G = ``SIGNATURE_SIZE`` = 64 (Ed25519),
S = ``SHARE_SIZE`` (one Shamir share, :mod:`secagg.shamir`), C = ``CIPHERTEXT_SIZE`` =
NONCE (12) + ``SHARE_PLAINTEXT_SIZE`` (4 + 4 + 16 + 2 S) + TAG (16) = 52 + 2 S,
W = ``bit_width(M)``, ``P(d) = ceil(d W / 8)``, ``a`` = 1 for the active variant else 0, ``c`` = 1 with
self-mask commitments on (opt-in; ``{x}`` present only then) else 0.

Exact layouts (body = what follows the 22-byte header; ``[x]`` present only in the active variant)::

    code kind                   dir   round tag         body                                          size (bytes)
    1    advertise-keys         up    0                 flags u8 (bit0 = signed) | c_pk K | s_pk K    22 + 1 + 2K + aG
                                                        | [sig G]
    2    key-list               down  0                 flags u8 | m u32 | m x (id u32 | c_pk K |     22 + 5 + m (4 + 2K + aG)
                                                        s_pk K | [sig G])
    3    share-keys             up    1                 m u32 | m x (recipient u32 | ciphertext C)    22 + 4 + m (4 + C)
                                                        | {commitment 32 | [sig G]}                      + c (32 + aG)
    4    ciphertexts            down  1                 m u32 | m x (sender u32 | ciphertext C)       22 + 4 + m (4 + C)
    5    masked-input           up    2                 dim u32 | W u8 | packed vector P(dim)         22 + 5 + P(dim)
    6    consistency-request    down  2 (active only)   m u32 | m x id u32   (all of U3)              22 + 4 + 4m
                                                        SecAgg+: n u32 | bitmap ceil(n/8) B            22 + 4 + ceil(n/8)
    7    consistency-signature  up    3 (active only)   sig G over consistency_payload(session, U3)   22 + G
    8    unmasking-request      down  2 (hbc) or        ns u32 | ns x id u32 | nd u32 | nd x id u32   22 + 12 + 4 (ns + nd)
                                      3 (active)        | ng u32 | ng x (id u32 | sig G)                 + ng (4 + G)
    9    unmasking-response     up    4                 nb u32 | nb x (id u32 | share S) | nk u32 |   22 + 8 + (nb + nk)(4 + S)
                                                        nk x (id u32 | share S)
    10   consistency-proof      down  2 (active,        n u32 | c u16 | depth u8 | c x leaf 32 B |    22 + 7 + 32 c (1 + depth)
                                      window view)      c x depth x hash 32 B  (U3 near the recipient)

With K = 32, G = 64, S = 33, C = 118: advertise-keys 87 / 151 bytes, a key-list entry 68 / 132 bytes,
a routed ciphertext 122 bytes, a share in a response 37 bytes, a signature in a request 68 bytes.

Who gets what (so the analytical model can count messages; ``H(u)`` = holders of u's shares, see
:mod:`secagg.client`): the key list sent to u has one entry per member of ``U1 ∩ (N(u) ∪ {u})``;
u's share-keys message has ``|H(u)| - 1`` ciphertexts, ``H(u) = U1 ∩ (N(u) ∪ {u})`` as u saw it; the
ciphertexts message to u has one entry per ``v in U2 ∩ N(u)``; the unmasking request to u lists
``ns = |U3 ∩ (N(u) ∪ {u})|`` survivors (including u), ``nd = |(U2 \\ U3) ∩ N(u)|`` dropped peers and,
in the active variant, ``ng = |U4|`` signatures on the complete graph, ``ng = |U4 ∩ N2[u]|`` on SecAgg+
(``N2[u]`` the two-hop neighbourhood, :func:`secagg.rules.signers_for`), 0 for honest-but-curious; u
answers with ``nb = ns`` self-mask shares and ``nk = nd`` key shares. The consistency request (active
only) carries all of U3: an id list on the complete graph, an ``n``-bit bitmap on SecAgg+
(:class:`ConsistencyRequest`).
Recipients: key lists go to every u in U1, ciphertexts to every u in U2, the consistency request to
every u in U3, the unmasking request to every u in U3 (honest-but-curious) or U4 (active); uploads of
round r come from U_{r+1} (U5 = unmasking responders). A server message is sent (and counted) even
to a client that has just dropped after sending.

The share ciphertext (AES-256-GCM, :func:`secagg.keys.seal`) encrypts ``SharePlaintext`` =
``sender u32 | receiver u32 | session 16 | share of s_sk S | share of b S`` with associated data
``share_aad(sender, receiver, session)`` = ``b"secagg/share/v1" | sender u32 | receiver u32 |
session``; the receiver checks both the tag and the decrypted header (DecryptionFailed otherwise).

Signed payloads (Ed25519, active variant): advertise = ``b"secagg/advertise-keys/v1" | session |
id u32 | c_pk | s_pk``; self-mask commitment (when on) = ``b"secagg/commitment-signature/v1" |
session | id u32 | commitment``; consistency = ``b"secagg/consistency/v1" | session | m u32 | ids of U3``;
with ``consistency_view="window"`` (active SecAgg+) ``b"secagg/consistency-root/v1" | session | n u32 |
root``, the Merkle root of U3's ring bitmap (:mod:`secagg.survivor_tree`; the consistency request is
then a consistency-proof, :class:`ConsistencyProof`).
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

from secagg.errors import InvalidInput, MalformedMessage, SecAggError
from secagg.keys import KEY_SIZE, NONCE_SIZE, SIGNATURE_SIZE, TAG_SIZE
from secagg.rounds import ROUNDS  # the paper's rounds, in order (Bonawitz et al. Figure 4: rounds 0-4)
from secagg.shamir import SHARE_SIZE

__all__ = [
    "ROUNDS",
    "SESSION_SIZE",
    "HEADER_SIZE",
    "KEY_SIZE",
    "SIGNATURE_SIZE",
    "SHARE_SIZE",
    "SHARE_PLAINTEXT_SIZE",
    "CIPHERTEXT_SIZE",
    "MAX_PARTY",
    "Message",
    "KeyEntry",
    "AdvertiseKeys",
    "KeyList",
    "ShareKeys",
    "Ciphertexts",
    "MaskedInput",
    "ConsistencyRequest",
    "ConsistencyProof",
    "ConsistencySignature",
    "UnmaskingRequest",
    "UnmaskingResponse",
    "SharePlaintext",
    "MESSAGE_TYPES",
    "KINDS",
    "parse",
    "share_aad",
    "advertise_payload",
    "consistency_payload",
    "consistency_root_payload",
    "consistency_proof_size",
    "commitment_payload",
    "COMMITMENT_SIZE",
    "advertise_keys_size",
    "key_list_size",
    "share_keys_size",
    "ciphertexts_size",
    "masked_input_size",
    "consistency_request_size",
    "consistency_signature_size",
    "unmasking_request_size",
    "unmasking_response_size",
]

SESSION_SIZE = 16
HEADER_SIZE = 1 + 1 + SESSION_SIZE + 4
SHARE_PLAINTEXT_SIZE = 4 + 4 + SESSION_SIZE + 2 * SHARE_SIZE
CIPHERTEXT_SIZE = NONCE_SIZE + SHARE_PLAINTEXT_SIZE + TAG_SIZE
MAX_PARTY = 0xFFFFFFFF
COMMITMENT_SIZE = 32  # SHA-256 self-mask commitment (secagg.reconstruct.self_mask_commitment)

_U32 = struct.Struct(">I")
_HDR = struct.Struct(">BB16sI")


# ---------------------------------------------------------------------------------------------------
# low-level helpers
# ---------------------------------------------------------------------------------------------------
class _Reader:
    """Cursor over immutable bytes; every read past the end raises MalformedMessage."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise MalformedMessage(f"truncated message: need {n} bytes at offset {self.pos}, have {len(self.data) - self.pos}")
        out = self.data[self.pos : end]
        self.pos = end
        return out

    def take_view(self, n: int) -> memoryview:
        """Like :meth:`take` but a zero-copy read-only view (``data`` is immutable bytes)."""
        end = self.pos + n
        if n < 0 or end > len(self.data):
            raise MalformedMessage(f"truncated message: need {n} bytes at offset {self.pos}, have {len(self.data) - self.pos}")
        out = memoryview(self.data)[self.pos : end]
        self.pos = end
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def count(self, entry_size: int) -> int:
        """A u32 element count, checked against the bytes left before anything is allocated."""
        m = self.u32()
        if m * entry_size > len(self.data) - self.pos:
            raise MalformedMessage(f"count {m} x {entry_size} bytes exceeds the {len(self.data) - self.pos} bytes left")
        return m

    def ids(self) -> tuple[int, ...]:
        m = self.count(4)
        raw = self.take(4 * m)
        out = struct.unpack(f">{m}I", raw) if m else ()
        _check_increasing(out)
        return out

    def end(self) -> None:
        if self.pos != len(self.data):
            raise MalformedMessage(f"{len(self.data) - self.pos} trailing bytes")


def _check_increasing(ids) -> None:  # noqa: ANN001
    for a, b in zip(ids, ids[1:]):
        if b <= a:
            raise MalformedMessage("party ids must be strictly increasing (no duplicates)")


def _check_party(x: object, what: str = "party id") -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= MAX_PARTY:
        raise InvalidInput(f"{what} must be an int in [0, 2**32), got {x!r}")
    return x


def _check_bytes(x: object, size: int, what: str) -> bytes:
    if not isinstance(x, bytes) or len(x) != size:
        raise InvalidInput(f"{what} must be {size} bytes, got {type(x).__name__} of length {len(x) if isinstance(x, (bytes, bytearray)) else '?'}")
    return x


def _check_ids(ids: object, what: str) -> tuple[int, ...]:
    if not isinstance(ids, tuple):
        raise InvalidInput(f"{what} must be a tuple of ids")
    for i in ids:
        _check_party(i, what)
    for a, b in zip(ids, ids[1:]):
        if b <= a:
            raise InvalidInput(f"{what} must be strictly increasing")
    return ids


def _check_pairs(pairs: object, size: int, what: str) -> tuple[tuple[int, bytes], ...]:
    if type(pairs) is not tuple:
        raise InvalidInput(f"{what} must be a tuple of (id, bytes) pairs")
    prev = -1
    for p in pairs:
        if type(p) is not tuple or len(p) != 2:
            raise InvalidInput(f"{what} entries must be (id, bytes) pairs")
        i, blob = p
        if type(i) is not int or not prev < i <= MAX_PARTY:
            raise InvalidInput(f"{what} ids must be strictly increasing ints in [0, 2**32)")
        if type(blob) is not bytes or len(blob) != size:
            raise InvalidInput(f"{what} entries must carry {size} bytes")
        prev = i
    return pairs


def _ids_bytes(ids: tuple[int, ...]) -> bytes:
    return _U32.pack(len(ids)) + (struct.pack(f">{len(ids)}I", *ids) if ids else b"")


def _pairs_bytes(pairs: tuple[tuple[int, bytes], ...]) -> bytes:
    return _U32.pack(len(pairs)) + b"".join(_U32.pack(i) + blob for i, blob in pairs)


def _read_pairs(r: _Reader, size: int) -> tuple[tuple[int, bytes], ...]:
    m = r.count(4 + size)
    out = tuple((r.u32(), r.take(size)) for _ in range(m))
    _check_increasing([p[0] for p in out])
    return out


M = TypeVar("M", bound="Message")


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


# ---------------------------------------------------------------------------------------------------
# messages
# ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Message:
    """Common header of every message: ``round`` (name), ``session`` (16 bytes), ``party`` (id).

    ``party`` is the sender of an uplink message and the recipient of a downlink message.
    Subclasses define ``CODE`` (kind byte), ``KIND`` (name), ``DIRECTION`` and ``ROUND_TAGS`` (the
    rounds whose tag the kind may carry), and implement ``_body()`` / ``_parse_body()``.
    """

    round: str
    session: bytes
    party: int

    CODE: ClassVar[int] = 0
    KIND: ClassVar[str] = ""
    DIRECTION: ClassVar[str] = ""
    ROUND_TAGS: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        if self.round not in self.ROUND_TAGS:
            raise InvalidInput(f"{self.KIND} cannot carry round tag {self.round!r} (allowed: {self.ROUND_TAGS})")
        _check_bytes(self.session, SESSION_SIZE, "session")
        _check_party(self.party)
        self._validate()

    def _validate(self) -> None:  # pragma: no cover - overridden
        pass

    def _body(self) -> bytes:  # pragma: no cover - overridden
        raise NotImplementedError

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int):  # noqa: ANN206
        raise NotImplementedError  # pragma: no cover

    @classmethod
    def _make(cls: type[M], *values: object) -> M:
        """Build an instance from values the parser already validated (skips ``__post_init__``)."""
        obj = object.__new__(cls)
        for name, value in zip(_field_names(cls), values):
            object.__setattr__(obj, name, value)
        return obj

    def to_bytes(self) -> bytes:
        """The canonical encoding (header + body), see the module table."""
        return _HDR.pack(self.CODE, ROUNDS.index(self.round), self.session, self.party) + self._body()

    @property
    def nbytes(self) -> int:
        """``len(self.to_bytes())``."""
        return len(self.to_bytes())

    @classmethod
    def from_bytes(cls: type[M], data: bytes) -> M:
        """Parse ``data``; MalformedMessage on anything but a canonical encoding of this kind."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise MalformedMessage(f"expected bytes, got {type(data).__name__}")
        try:
            r = _Reader(bytes(data))
            code, tag, session, party = _HDR.unpack(r.take(HEADER_SIZE))
            if code != cls.CODE:
                raise MalformedMessage(f"expected a {cls.KIND} message (code {cls.CODE}), got code {code}")
            if tag >= len(ROUNDS) or ROUNDS[tag] not in cls.ROUND_TAGS:
                raise MalformedMessage(f"{cls.KIND} cannot carry round tag {tag}")
            msg = cls._parse_body(r, ROUNDS[tag], session, party)
            r.end()
            return msg
        except MalformedMessage:
            raise
        except (SecAggError, struct.error, ValueError, IndexError, TypeError, OverflowError) as exc:
            raise MalformedMessage(f"malformed {cls.KIND}: {exc}") from None


@dataclass(frozen=True)
class KeyEntry:
    """One advertised key pair in a key list: client ``id``, channel key ``c_pk``, mask key ``s_pk``,
    and (active variant) the client's Ed25519 ``signature`` over :func:`advertise_payload`."""

    id: int
    c_pk: bytes
    s_pk: bytes
    signature: bytes | None = None

    def __post_init__(self) -> None:
        _check_party(self.id)
        _check_bytes(self.c_pk, KEY_SIZE, "c_pk")
        _check_bytes(self.s_pk, KEY_SIZE, "s_pk")
        if self.signature is not None:
            _check_bytes(self.signature, SIGNATURE_SIZE, "signature")


def _make_entry(i: int, c: bytes, s: bytes, sig: bytes | None) -> KeyEntry:
    e = object.__new__(KeyEntry)
    object.__setattr__(e, "id", i)
    object.__setattr__(e, "c_pk", c)
    object.__setattr__(e, "s_pk", s)
    object.__setattr__(e, "signature", sig)
    return e


@dataclass(frozen=True)
class AdvertiseKeys(Message):
    """Round 0 upload: the two public keys of the sender (Figure 4, AdvertiseKeys, user side)."""

    c_pk: bytes = b""
    s_pk: bytes = b""
    signature: bytes | None = None

    CODE: ClassVar[int] = 1
    KIND: ClassVar[str] = "advertise-keys"
    DIRECTION: ClassVar[str] = "up"
    ROUND_TAGS: ClassVar[tuple[str, ...]] = ("advertise-keys",)

    def _validate(self) -> None:
        _check_bytes(self.c_pk, KEY_SIZE, "c_pk")
        _check_bytes(self.s_pk, KEY_SIZE, "s_pk")
        if self.signature is not None:
            _check_bytes(self.signature, SIGNATURE_SIZE, "signature")

    def _body(self) -> bytes:
        signed = self.signature is not None
        return bytes([int(signed)]) + self.c_pk + self.s_pk + (self.signature if signed else b"")

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int) -> "AdvertiseKeys":
        flags = r.u8()
        if flags not in (0, 1):
            raise MalformedMessage(f"bad flags byte {flags}")
        c_pk, s_pk = r.take(KEY_SIZE), r.take(KEY_SIZE)
        sig = r.take(SIGNATURE_SIZE) if flags else None
        return cls._make(round, session, party, c_pk, s_pk, sig)


@dataclass(frozen=True)
class KeyList(Message):
    """Round 0 broadcast: the keys of ``U1`` restricted to the recipient's neighbourhood and itself.

    All entries signed (active) or none (honest-but-curious); ids strictly increasing."""

    entries: tuple[KeyEntry, ...] = ()
    signed: bool = False

    CODE: ClassVar[int] = 2
    KIND: ClassVar[str] = "key-list"
    DIRECTION: ClassVar[str] = "down"
    ROUND_TAGS: ClassVar[tuple[str, ...]] = ("advertise-keys",)

    def _validate(self) -> None:
        if not isinstance(self.entries, tuple) or not all(isinstance(e, KeyEntry) for e in self.entries):
            raise InvalidInput("entries must be a tuple of KeyEntry")
        for e in self.entries:
            if (e.signature is not None) != bool(self.signed):
                raise InvalidInput("either every entry is signed or none is")
        ids = [e.id for e in self.entries]
        for a, b in zip(ids, ids[1:]):
            if b <= a:
                raise InvalidInput("key list ids must be strictly increasing")

    def _body(self) -> bytes:
        parts = [bytes([int(bool(self.signed))]), _U32.pack(len(self.entries))]
        for e in self.entries:
            parts.append(_U32.pack(e.id) + e.c_pk + e.s_pk + (e.signature or b""))
        return b"".join(parts)

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int) -> "KeyList":
        flags = r.u8()
        if flags not in (0, 1):
            raise MalformedMessage(f"bad flags byte {flags}")
        size = 4 + 2 * KEY_SIZE + (SIGNATURE_SIZE if flags else 0)
        m = r.count(size)
        entries = []
        for _ in range(m):
            i = r.u32()
            c, s = r.take(KEY_SIZE), r.take(KEY_SIZE)
            sig = r.take(SIGNATURE_SIZE) if flags else None
            entries.append(_make_entry(i, c, s, sig))
        _check_increasing([e.id for e in entries])
        return cls._make(round, session, party, tuple(entries), bool(flags))


@dataclass(frozen=True)
class _CiphertextList(Message):
    """Body shared by round 1's upload and routing messages: sorted ``(id, e)`` pairs of AES-GCM ciphertexts."""

    ciphertexts: tuple[tuple[int, bytes], ...] = ()

    ROUND_TAGS: ClassVar[tuple[str, ...]] = ("share-keys",)

    def _validate(self) -> None:
        _check_pairs(self.ciphertexts, CIPHERTEXT_SIZE, "ciphertexts")

    def _body(self) -> bytes:
        return _pairs_bytes(self.ciphertexts)

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int):  # noqa: ANN206
        return cls._make(round, session, party, _read_pairs(r, CIPHERTEXT_SIZE))


@dataclass(frozen=True)
class ShareKeys(_CiphertextList):
    """Round 1 upload: ``(v, e_{u,v})`` for every other holder v of the sender's shares.

    With self-mask commitments on (opt-in) the body ends with the sender's ``commitment`` to ``b_u``
    (:func:`secagg.reconstruct.self_mask_commitment`, 32 bytes) and, in the active variant, its Ed25519
    ``commitment_signature`` over :func:`commitment_payload`; with them off the encoding is exactly the
    paper's (no flag byte: the number of bytes after the ciphertexts, 0, 32 or 96, says which).
    """

    commitment: bytes | None = None
    commitment_signature: bytes | None = field(default=None, repr=False)

    CODE: ClassVar[int] = 3
    KIND: ClassVar[str] = "share-keys"
    DIRECTION: ClassVar[str] = "up"

    def _validate(self) -> None:
        super()._validate()
        if self.commitment is not None:
            _check_bytes(self.commitment, COMMITMENT_SIZE, "commitment")
        if self.commitment_signature is not None:
            if self.commitment is None:
                raise InvalidInput("a commitment signature needs a commitment")
            _check_bytes(self.commitment_signature, SIGNATURE_SIZE, "commitment signature")

    def _body(self) -> bytes:
        return _pairs_bytes(self.ciphertexts) + (self.commitment or b"") + (self.commitment_signature or b"")

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int):  # noqa: ANN206
        cts = _read_pairs(r, CIPHERTEXT_SIZE)
        left = len(r.data) - r.pos
        if left not in (0, COMMITMENT_SIZE, COMMITMENT_SIZE + SIGNATURE_SIZE):
            raise MalformedMessage(f"{left} bytes after the ciphertexts: expected 0, {COMMITMENT_SIZE} or {COMMITMENT_SIZE + SIGNATURE_SIZE}")
        com = r.take(COMMITMENT_SIZE) if left else None
        sig = r.take(SIGNATURE_SIZE) if left > COMMITMENT_SIZE else None
        return cls._make(round, session, party, cts, com, sig)


@dataclass(frozen=True)
class Ciphertexts(_CiphertextList):
    """Round 1 routing: ``(u, e_{u,v})`` for every ``u in U2`` that sent one to the recipient v."""

    CODE: ClassVar[int] = 4
    KIND: ClassVar[str] = "ciphertexts"
    DIRECTION: ClassVar[str] = "down"


@dataclass(frozen=True)
class MaskedInput(Message):
    """Round 2 upload: ``y_u`` packed at ``width = bit_width(M)`` bits per element.

    ``payload`` is :func:`secagg.ring.pack` output; :meth:`vector` unpacks it (MalformedMessage if an
    element is ``>= M`` or the width does not match M). To avoid copying multi-megabyte vectors the
    payload may also be a read-only, C-contiguous byte ``memoryview`` (format ``"B"``): a parsed
    message holds a view into the received bytes, and a client may hand over a view of its masked
    vector (:func:`secagg.ring.pack_view`); the encoding is the same bytes either way.
    """

    dim: int = 0
    width: int = 0
    payload: bytes | memoryview = field(default=b"", repr=False)

    CODE: ClassVar[int] = 5
    KIND: ClassVar[str] = "masked-input"
    DIRECTION: ClassVar[str] = "up"
    ROUND_TAGS: ClassVar[tuple[str, ...]] = ("masked-input",)

    def _validate(self) -> None:
        _check_party(self.dim, "dim")
        if isinstance(self.width, bool) or not isinstance(self.width, int) or not 1 <= self.width <= 64:
            raise InvalidInput(f"width must be in [1, 64], got {self.width!r}")
        p = self.payload
        if isinstance(p, memoryview):
            if p.format != "B" or p.ndim != 1 or not p.c_contiguous or not p.readonly:
                raise InvalidInput("a memoryview payload must be a read-only contiguous 1-D byte view")
        elif not isinstance(p, bytes):
            raise InvalidInput("payload must be bytes (or a read-only byte memoryview)")
        if len(p) != (self.dim * self.width + 7) // 8:
            raise InvalidInput("payload length must be ceil(dim * width / 8)")
        pad = 8 * len(self.payload) - self.dim * self.width
        if pad and self.payload[-1] >> (8 - pad):
            raise InvalidInput("nonzero padding bits")

    def _body(self) -> bytes:
        return _U32.pack(self.dim) + bytes([self.width]) + bytes(self.payload)

    def to_bytes(self) -> bytes:
        """Header + body in a single join: the (large) payload is copied exactly once."""
        head = _HDR.pack(self.CODE, ROUNDS.index(self.round), self.session, self.party)
        return b"".join((head, _U32.pack(self.dim), bytes((self.width,)), self.payload))

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int) -> "MaskedInput":
        dim = r.u32()
        width = r.u8()
        if not 1 <= width <= 64:
            raise MalformedMessage(f"bad bit width {width}")
        payload = r.take_view((dim * width + 7) // 8)  # zero-copy: a view into the received bytes
        pad = 8 * len(payload) - dim * width
        if pad and payload[-1] >> (8 - pad):
            raise MalformedMessage("nonzero padding bits in the packed vector")
        return cls._make(round, session, party, dim, width, payload)

    def vector(self, modulus: int, *, copy: bool = True):  # noqa: ANN201 - np.ndarray
        """Unpack ``y_u`` as a ``dtype_for(M)`` array (MalformedMessage on a width mismatch or element >= M).

        ``copy=False`` may return a read-only view of the payload (widths 8/16/32/64; see
        :func:`secagg.ring.unpack`): for a consumer that only reads it, e.g. the server's accumulator.
        """
        from secagg.ring import bit_width, unpack

        if self.width != bit_width(modulus):
            raise MalformedMessage(f"masked input packed at {self.width} bits, expected {bit_width(modulus)}")
        return unpack(self.payload, self.dim, modulus, copy=copy)


@dataclass(frozen=True)
class ConsistencyRequest(Message):
    """Round 2 broadcast, active variant: the full survivor list ``U3`` to sign.

    Two encodings of the same content (``survivors``, all of U3, ids increasing):

    * ``universe=None`` (complete graph, the original format): ``m u32 | m x id u32``;
    * ``universe=n`` (SecAgg+): ``n u32 | bitmap ceil(n / 8) B``, bit ``i`` (byte ``i // 8``, least
      significant bit first) set iff client ``i`` is in U3, padding bits zero: ``n / 8`` bytes instead of
      ``4 |U3|``.

    The parser tells them apart by length alone: after the leading u32 ``x`` the list form has ``4x``
    bytes left and the bitmap form ``ceil(x / 8)``, equal only for ``x = 0`` (the empty list; a bitmap
    needs ``n >= 1``), so each message still has exactly one encoding.
    """

    survivors: tuple[int, ...] = ()
    universe: int | None = None

    CODE: ClassVar[int] = 6
    KIND: ClassVar[str] = "consistency-request"
    DIRECTION: ClassVar[str] = "down"
    ROUND_TAGS: ClassVar[tuple[str, ...]] = ("masked-input",)

    def _validate(self) -> None:
        _check_ids(self.survivors, "survivors")
        if self.universe is not None:
            if isinstance(self.universe, bool) or not isinstance(self.universe, int) or not 1 <= self.universe <= MAX_PARTY:
                raise InvalidInput(f"universe must be None or an int in [1, 2**32), got {self.universe!r}")
            if self.survivors and self.survivors[-1] >= self.universe:
                raise InvalidInput(f"survivor {self.survivors[-1]} outside the bitmap's {self.universe} clients")

    def _body(self) -> bytes:
        if self.universe is None:
            return _ids_bytes(self.survivors)
        return _U32.pack(self.universe) + _bitmap(self.survivors, self.universe)

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int) -> "ConsistencyRequest":
        x = r.u32()
        left = len(r.data) - r.pos
        if left == 4 * x:
            raw = r.take(4 * x)
            ids = struct.unpack(f">{x}I", raw) if x else ()
            _check_increasing(ids)
            return cls._make(round, session, party, ids, None)
        if x >= 1 and left == (x + 7) // 8:
            return cls._make(round, session, party, _bitmap_ids(r.take(left), x), x)
        raise MalformedMessage(f"consistency request: {left} bytes after the count {x}: neither {4 * x} (id list) "
                               f"nor {(x + 7) // 8} (bitmap)")


def _bitmap(ids: tuple[int, ...], n: int) -> bytes:
    """``ceil(n / 8)`` bytes, bit ``i`` (byte ``i // 8``, least significant bit first) set iff ``i`` in ids."""
    import numpy as np

    bits = np.zeros(n, dtype=np.uint8)
    if ids:
        bits[np.fromiter(ids, dtype=np.int64, count=len(ids))] = 1
    return np.packbits(bits, bitorder="little").tobytes()


def _bitmap_ids(raw: bytes, n: int) -> tuple[int, ...]:
    """Inverse of :func:`_bitmap` (MalformedMessage on nonzero padding bits)."""
    import numpy as np

    bits = np.unpackbits(np.frombuffer(raw, dtype=np.uint8), bitorder="little")
    if bits[n:].any():
        raise MalformedMessage("nonzero padding bits in the survivor bitmap")
    return tuple(int(i) for i in np.flatnonzero(bits[:n]))


@dataclass(frozen=True)
class ConsistencyProof(Message):
    """Round 2 broadcast, active SecAgg+ with ``consistency_view="window"``: the part of U3 the
    recipient needs, authenticated against the Merkle root every client signs
    (:mod:`secagg.survivor_tree`).

    ``universe``: ``n``; ``leaves``: the ``c`` leaves of :func:`secagg.survivor_tree.window_leaves` (32
    bytes each, the ring bitmap's bits of 256 positions), in that order; ``paths``: each leaf's
    ``depth`` sibling hashes, leaf level first. Body: ``n u32 | c u16 | depth u8 | c x leaf 32 B |
    c x depth x hash 32 B``. ``c`` and ``depth`` depend only on ``n`` and ``k``
    (:func:`secagg.survivor_tree.tree_shape`), so every client's proof has the same size.
    """

    universe: int = 1
    leaves: tuple[bytes, ...] = ()
    paths: tuple[tuple[bytes, ...], ...] = ()

    CODE: ClassVar[int] = 10
    KIND: ClassVar[str] = "consistency-proof"
    DIRECTION: ClassVar[str] = "down"
    ROUND_TAGS: ClassVar[tuple[str, ...]] = ("masked-input",)

    def _validate(self) -> None:
        if isinstance(self.universe, bool) or not isinstance(self.universe, int) or not 1 <= self.universe <= MAX_PARTY:
            raise InvalidInput(f"universe must be an int in [1, 2**32), got {self.universe!r}")
        if not isinstance(self.leaves, tuple) or not isinstance(self.paths, tuple):
            raise InvalidInput("leaves and paths must be tuples")
        if not 1 <= len(self.leaves) <= 0xFFFF or len(self.paths) != len(self.leaves):
            raise InvalidInput(f"need 1..65535 leaves, one path each (got {len(self.leaves)} leaves, {len(self.paths)} paths)")
        for leaf in self.leaves:
            _check_bytes(leaf, 32, "leaf")
        depth = len(self.paths[0]) if isinstance(self.paths[0], tuple) else -1
        if not 0 <= depth <= 32:
            raise InvalidInput("each path must be a tuple of at most 32 hashes")
        for path in self.paths:
            if not isinstance(path, tuple) or len(path) != depth:
                raise InvalidInput("every path must have the same length")
            for h in path:
                _check_bytes(h, 32, "path hash")

    def _body(self) -> bytes:
        depth = len(self.paths[0])
        return (_U32.pack(self.universe) + struct.pack(">HB", len(self.leaves), depth) + b"".join(self.leaves)
                + b"".join(h for path in self.paths for h in path))

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int) -> "ConsistencyProof":
        n = r.u32()
        c, depth = struct.unpack(">HB", r.take(3))
        if n < 1 or c < 1 or depth > 32:
            raise MalformedMessage(f"consistency proof: n = {n}, {c} leaves, depth {depth}")
        leaves = tuple(r.take(32) for _ in range(c))
        paths = tuple(tuple(r.take(32) for _ in range(depth)) for _ in range(c))
        return cls._make(round, session, party, n, leaves, paths)


@dataclass(frozen=True)
class ConsistencySignature(Message):
    """Round 3 upload (active): the sender's signature over :func:`consistency_payload` of its U3."""

    signature: bytes = b""

    CODE: ClassVar[int] = 7
    KIND: ClassVar[str] = "consistency-signature"
    DIRECTION: ClassVar[str] = "up"
    ROUND_TAGS: ClassVar[tuple[str, ...]] = ("consistency-check",)

    def _validate(self) -> None:
        _check_bytes(self.signature, SIGNATURE_SIZE, "signature")

    def _body(self) -> bytes:
        return self.signature

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int) -> "ConsistencySignature":
        return cls._make(round, session, party, r.take(SIGNATURE_SIZE))


@dataclass(frozen=True)
class UnmaskingRequest(Message):
    """The server's request for shares (end of round 2, or of round 3 in the active variant).

    ``survivors``: peers (and the recipient itself) in U3 whose self-mask seed ``b`` shares are wanted;
    ``dropped``: peers in ``U2 \\ U3`` whose ``s_sk`` shares are wanted; ``signatures``: (active) the
    ``(v, sigma'_v)`` of every ``v in U4`` over U3. The paper leaves this request implicit (the
    client derives it from U3); making it explicit lets an honest client check it (no peer in both
    lists, exactly its own view) and refuse a cheating server.
    """

    survivors: tuple[int, ...] = ()
    dropped: tuple[int, ...] = ()
    signatures: tuple[tuple[int, bytes], ...] = ()

    CODE: ClassVar[int] = 8
    KIND: ClassVar[str] = "unmasking-request"
    DIRECTION: ClassVar[str] = "down"
    ROUND_TAGS: ClassVar[tuple[str, ...]] = ("masked-input", "consistency-check")

    def _validate(self) -> None:
        _check_ids(self.survivors, "survivors")
        _check_ids(self.dropped, "dropped")
        _check_pairs(self.signatures, SIGNATURE_SIZE, "signatures")

    def _body(self) -> bytes:
        return _ids_bytes(self.survivors) + _ids_bytes(self.dropped) + _pairs_bytes(self.signatures)

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int) -> "UnmaskingRequest":
        s = r.ids()
        d = r.ids()
        g = _read_pairs(r, SIGNATURE_SIZE)
        return cls._make(round, session, party, s, d, g)


@dataclass(frozen=True)
class UnmaskingResponse(Message):
    """Round 4 upload: ``b_shares`` = (v, share of b_v) for v in U3, ``key_shares`` = (v, share of
    s_sk_v) for v in U2 \\ U3 (never both for one v)."""

    b_shares: tuple[tuple[int, bytes], ...] = ()
    key_shares: tuple[tuple[int, bytes], ...] = ()

    CODE: ClassVar[int] = 9
    KIND: ClassVar[str] = "unmasking-response"
    DIRECTION: ClassVar[str] = "up"
    ROUND_TAGS: ClassVar[tuple[str, ...]] = ("unmasking",)

    def _validate(self) -> None:
        _check_pairs(self.b_shares, SHARE_SIZE, "b_shares")
        _check_pairs(self.key_shares, SHARE_SIZE, "key_shares")

    def _body(self) -> bytes:
        return _pairs_bytes(self.b_shares) + _pairs_bytes(self.key_shares)

    @classmethod
    def _parse_body(cls, r: _Reader, round: str, session: bytes, party: int) -> "UnmaskingResponse":
        b = _read_pairs(r, SHARE_SIZE)
        k = _read_pairs(r, SHARE_SIZE)
        return cls._make(round, session, party, b, k)


MESSAGE_TYPES: tuple[type[Message], ...] = (
    AdvertiseKeys,
    KeyList,
    ShareKeys,
    Ciphertexts,
    MaskedInput,
    ConsistencyRequest,
    ConsistencySignature,
    UnmaskingRequest,
    UnmaskingResponse,
    ConsistencyProof,
)
KINDS: tuple[str, ...] = tuple(t.KIND for t in MESSAGE_TYPES)
_BY_CODE = {t.CODE: t for t in MESSAGE_TYPES}


def parse(data: bytes) -> Message:
    """Parse any message by its kind byte (MalformedMessage if unknown or malformed)."""
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < 1:
        raise MalformedMessage("empty or non-bytes message")
    cls = _BY_CODE.get(bytes(data[:1])[0])
    if cls is None:
        raise MalformedMessage(f"unknown message kind {bytes(data[:1])[0]}")
    return cls.from_bytes(data)


# ---------------------------------------------------------------------------------------------------
# the share plaintext inside e_{u,v}
# ---------------------------------------------------------------------------------------------------
_SHARE_HDR = struct.Struct(">II16s")


def share_aad(sender: int, receiver: int, session: bytes) -> bytes:
    """Associated data binding a share ciphertext to ``(sender, receiver, session)``."""
    return b"secagg/share/v1" + _SHARE_HDR.pack(sender, receiver, session)


@dataclass(frozen=True)
class SharePlaintext:
    """``u || v || session || share of s_sk_u || share of b_u`` (Figure 4, ShareKeys, user step 4)."""

    sender: int
    receiver: int
    session: bytes
    key_share: bytes
    b_share: bytes

    def __post_init__(self) -> None:
        _check_party(self.sender)
        _check_party(self.receiver)
        _check_bytes(self.session, SESSION_SIZE, "session")
        _check_bytes(self.key_share, SHARE_SIZE, "key_share")
        _check_bytes(self.b_share, SHARE_SIZE, "b_share")

    def to_bytes(self) -> bytes:
        return _SHARE_HDR.pack(self.sender, self.receiver, self.session) + self.key_share + self.b_share

    @classmethod
    def from_bytes(cls, data: bytes) -> "SharePlaintext":
        if not isinstance(data, (bytes, bytearray)) or len(data) != SHARE_PLAINTEXT_SIZE:
            raise MalformedMessage(f"share plaintext must be {SHARE_PLAINTEXT_SIZE} bytes")
        data = bytes(data)
        sender, receiver, session = _SHARE_HDR.unpack(data[:24])
        return cls(sender, receiver, session, data[24 : 24 + SHARE_SIZE], data[24 + SHARE_SIZE :])


# ---------------------------------------------------------------------------------------------------
# signed payloads
# ---------------------------------------------------------------------------------------------------
def advertise_payload(session: bytes, party: int, c_pk: bytes, s_pk: bytes) -> bytes:
    """Bytes a client signs in round 0 (active variant)."""
    return b"secagg/advertise-keys/v1" + session + _U32.pack(party) + c_pk + s_pk


def commitment_payload(session: bytes, party: int, commitment: bytes) -> bytes:
    """Bytes a client signs in round 1 (active variant, self-mask commitments on)."""
    return b"secagg/commitment-signature/v1" + session + _U32.pack(party) + commitment


def consistency_payload(session: bytes, survivors: tuple[int, ...]) -> bytes:
    """Bytes a client signs in round 3 (active variant): the session and its view of U3."""
    return b"secagg/consistency/v1" + session + _ids_bytes(tuple(survivors))


def consistency_root_payload(session: bytes, n: int, root: bytes) -> bytes:
    """Bytes a client signs in round 3 with ``consistency_view="window"``: the session, ``n`` and the
    Merkle root of U3's ring bitmap (:mod:`secagg.survivor_tree`)."""
    return b"secagg/consistency-root/v1" + session + _U32.pack(n) + bytes(root)


# ---------------------------------------------------------------------------------------------------
# exact sizes (used by the analytical cost model; tests check them against to_bytes)
# ---------------------------------------------------------------------------------------------------
def advertise_keys_size(signed: bool) -> int:
    return HEADER_SIZE + 1 + 2 * KEY_SIZE + (SIGNATURE_SIZE if signed else 0)


def key_list_size(entries: int, signed: bool) -> int:
    return HEADER_SIZE + 5 + entries * (4 + 2 * KEY_SIZE + (SIGNATURE_SIZE if signed else 0))


def share_keys_size(ciphertexts: int, commitment: bool = False, signed: bool = False) -> int:
    """Round-1 upload: ``22 + 4 + m (4 + C)``, plus ``32 [+ 64]`` with a (signed) self-mask commitment."""
    extra = (COMMITMENT_SIZE + (SIGNATURE_SIZE if signed else 0)) if commitment else 0
    return HEADER_SIZE + 4 + ciphertexts * (4 + CIPHERTEXT_SIZE) + extra


def ciphertexts_size(ciphertexts: int) -> int:
    """Round-1 routing message: ``22 + 4 + m (4 + C)``."""
    return HEADER_SIZE + 4 + ciphertexts * (4 + CIPHERTEXT_SIZE)


def masked_input_size(dim: int, modulus: int) -> int:
    from secagg.ring import packed_size

    return HEADER_SIZE + 5 + packed_size(dim, modulus)


def consistency_request_size(survivors: int, universe: int | None = None) -> int:
    """Round-2 broadcast (active): ``22 + 4 + 4 |U3|`` as an id list (complete graph), or
    ``22 + 4 + ceil(n / 8)`` as a bitmap over the ``universe = n`` clients (SecAgg+)."""
    if universe is not None:
        return HEADER_SIZE + 4 + (universe + 7) // 8
    return HEADER_SIZE + 4 + 4 * survivors


def consistency_proof_size(n: int, k: int) -> int:
    """Round-2 broadcast with ``consistency_view="window"``: ``22 + 7 + c (32 + 32 depth)`` with ``(c,
    depth)`` of :func:`secagg.survivor_tree.tree_shape` (the same for every client)."""
    from secagg.survivor_tree import tree_shape

    _, depth, c = tree_shape(n, k)
    return HEADER_SIZE + 7 + c * 32 * (1 + depth)


def consistency_signature_size() -> int:
    return HEADER_SIZE + SIGNATURE_SIZE


def unmasking_request_size(survivors: int, dropped: int, signatures: int) -> int:
    return HEADER_SIZE + 12 + 4 * (survivors + dropped) + signatures * (4 + SIGNATURE_SIZE)


def unmasking_response_size(b_shares: int, key_shares: int) -> int:
    return HEADER_SIZE + 8 + (b_shares + key_shares) * (4 + SHARE_SIZE)
