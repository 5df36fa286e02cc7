"""Typed exceptions of the secure aggregation layer.

Every failure a user (or a test) can provoke surfaces as a subclass of :class:`SecAggError`; no bare
``ValueError``/``KeyError``/``struct.error`` escapes from parsing or protocol code.
"""

from __future__ import annotations

__all__ = [
    "SecAggError",
    "InvalidInput",
    "MalformedMessage",
    "DecryptionFailed",
    "SignatureInvalid",
    "ProtocolViolation",
    "InconsistentView",
    "ProtocolAborted",
    "InconsistentShares",
    "StateError",
    "OverflowRisk",
]


class SecAggError(Exception):
    """Base class of every error raised by :mod:`secagg`."""


class InvalidInput(SecAggError, ValueError):
    """A caller passed bad data: wrong shape, NaN/Inf, values outside [0, M), bad parameters."""


class MalformedMessage(SecAggError):
    """Bytes that do not parse as the expected message (truncated, trailing data, bad tag, ...)."""


class DecryptionFailed(SecAggError):
    """AES-GCM authentication failed, or the decrypted (u, v, session) header does not match."""


class SignatureInvalid(SecAggError):
    """An Ed25519 signature (active variant) did not verify."""


class ProtocolViolation(SecAggError):
    """A party deviated from the protocol (e.g. the server asked for both shares of one peer,
    duplicated public keys, a message from an unexpected round or sender)."""


class InconsistentView(ProtocolViolation):
    """Active variant: the server told different clients different survivor sets (round 3)."""


class ProtocolAborted(SecAggError):
    """The protocol stopped before releasing any output.

    Attributes:
        round: name of the round in which it stopped (``"advertise-keys"``, ``"share-keys"``,
            ``"masked-input"``, ``"consistency-check"``, ``"unmasking"``).
        reason: human-readable cause.
        party: id of the client that aborted, or ``None`` if the server did.
        rule: the rule of :mod:`secagg.rules` that stopped it (``"threshold"``, ``"reconstructible"``,
            ``"min-survivors"``, ``"survivors-connected"``, ...), or ``None``.
        ledger: the messages on the wire up to the abort (set by the session that ran), or ``None``.
        sets: the survivor sets ``"U1"``.. known at the abort (``{}`` when not given).
        client_errors: ``client id -> error`` of the clients that aborted before (``{}`` when not given).
    """

    def __init__(self, round: str, reason: str, party: int | None = None, *, rule: str | None = None,
                 ledger: object | None = None, sets: dict | None = None, client_errors: dict | None = None) -> None:
        self.round = str(round)
        self.reason = reason
        self.party = party
        self.rule = rule
        self.ledger = ledger
        self.sets = dict(sets or {})
        self.client_errors = dict(client_errors or {})
        who = "server" if party is None else f"client {party}"
        super().__init__(f"protocol aborted in round {self.round!r} by {who}: {reason}")

    def with_context(self, *, ledger: object, sets: dict, client_errors: dict) -> "ProtocolAborted":
        """A copy of this abort carrying the session's ledger, sets and client errors."""
        return type(self)(self.round, self.reason, self.party, rule=self.rule, ledger=ledger, sets=sets,
                          client_errors=client_errors)

    def __reduce__(self):  # noqa: ANN204 - pickle with the constructor's arguments and attached state
        return (type(self), (self.round, self.reason, self.party), self.__dict__)


class InconsistentShares(ProtocolAborted):
    """The server aborted: the shares of a secret are inconsistent beyond what Reed-Solomon decoding
    corrects (``floor((r - t) / 2)`` wrong shares among ``r``), or a reconstructed secret disagrees with
    what it must match (``s_pk``, or the self-mask commitment when commitments are on). Nothing is released.
    """
class StateError(ProtocolViolation):
    """A party's method was called out of order: a round before its predecessor, a round twice, a
    session run a second time, or a round fed a missing message (e.g. ``Server.advertise_keys(None)``)."""


class OverflowRisk(SecAggError, ValueError):
    """The chosen modulus cannot hold the sum of the clients' discretized inputs without wrapping."""
