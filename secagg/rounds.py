"""The protocol's rounds and variants as enums: the one place their names, order and roles are written.

Bonawitz et al., *Practical Secure Aggregation for Privacy-Preserving Machine Learning* (CCS 2017),
Figure 4 numbers the rounds 0-4: AdvertiseKeys, ShareKeys, MaskedInputCollection, ConsistencyCheck
(active variant only) and Unmasking. Each :class:`Round` knows its index, the client and server methods
that run it (the same names on every protocol's client and server classes) and the kind of message a
client uploads in it. :class:`Variant` knows which rounds it runs.

Both are :class:`enum.StrEnum`: a member *is* its name string (``Round.MASKED_INPUT == "masked-input"``),
so ledgers, dropout schedules, traces and JSON keep the plain names.
"""

from __future__ import annotations

import enum

__all__ = ["Round", "Variant", "ROUNDS", "VARIANTS"]


class Round(enum.StrEnum):
    """One round of Bonawitz et al. (CCS 2017), Figure 4, in protocol order."""

    ADVERTISE_KEYS = "advertise-keys"
    SHARE_KEYS = "share-keys"
    MASKED_INPUT = "masked-input"
    CONSISTENCY_CHECK = "consistency-check"
    UNMASKING = "unmasking"

    @property
    def index(self) -> int:
        """Round number 0-4 (the paper's numbering; also the round tag on the wire)."""
        return _ORDER.index(self)

    @property
    def method(self) -> str:
        """Name of the client and server method that runs this round."""
        return _METHOD[self]

    @property
    def upload_kind(self) -> str:
        """Kind of message a client sends in this round (``secagg.messages.KINDS``)."""
        return _UPLOAD[self]

    @classmethod
    def parse(cls, name: object) -> "Round":
        """``name`` as a Round; ValueError (callers wrap it) on anything else."""
        return cls(name)


class Variant(enum.StrEnum):
    """The two threat models of Bonawitz et al. (CCS 2017): an honest-but-curious server (Section 4,
    rounds 0, 1, 2, 4) or an active one (signed keys and the consistency check of round 3)."""

    HONEST_BUT_CURIOUS = "honest-but-curious"
    ACTIVE = "active"

    @property
    def rounds(self) -> tuple[Round, ...]:
        """The rounds this variant runs, in order."""
        if self is Variant.ACTIVE:
            return _ORDER
        return tuple(r for r in _ORDER if r is not Round.CONSISTENCY_CHECK)

    @property
    def signed(self) -> bool:
        """True when the variant signs keys and survivor lists (the active variant)."""
        return self is Variant.ACTIVE


_ORDER: tuple[Round, ...] = tuple(Round)
_METHOD = {
    Round.ADVERTISE_KEYS: "advertise_keys",
    Round.SHARE_KEYS: "share_keys",
    Round.MASKED_INPUT: "masked_input_collection",
    Round.CONSISTENCY_CHECK: "consistency_check",
    Round.UNMASKING: "unmasking",
}
_UPLOAD = {
    Round.ADVERTISE_KEYS: "advertise-keys",
    Round.SHARE_KEYS: "share-keys",
    Round.MASKED_INPUT: "masked-input",
    Round.CONSISTENCY_CHECK: "consistency-signature",
    Round.UNMASKING: "unmasking-response",
}
#: The round names in protocol order (plain strings; ``Round`` members compare equal to them).
ROUNDS: tuple[str, ...] = tuple(r.value for r in _ORDER)
#: The variant names.
VARIANTS: tuple[str, ...] = tuple(v.value for v in Variant)
