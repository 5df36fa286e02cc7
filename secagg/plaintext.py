"""The ``"plaintext"`` protocol: every client sends its input in the clear and the server adds them.

No privacy at all: it is the baseline against which the cost of secure aggregation is measured (the
expansion factor of Bonawitz et al., CCS 2017, Section 7.1, compares a user's traffic to the size of its
raw input). One round, ``masked-input``, carrying the same :class:`~secagg.messages.MaskedInput` wire
format as the real protocol's round 2 (22-byte header, packed vector) with an unmasked vector, so the
two ledgers differ exactly by what the masking protocol adds. Clients that drop before sending are not
in the sum (U1 = U2 = U3 = U4 = U5 = the senders); at least one input must arrive.

It plugs into :data:`secagg.protocol.PROTOCOLS` like any protocol: a client and a server class whose
methods are named after :attr:`secagg.rounds.Round.method`, driven by the one
:class:`~secagg.transport.Transport`.
"""

from __future__ import annotations

import numpy as np

from secagg import messages as msg
from secagg import ring, rules
from secagg.errors import MalformedMessage, ProtocolViolation, SecAggError, StateError
from secagg.messages import MaskedInput
from secagg.modular import Token
from secagg.rounds import Round

__all__ = ["PlaintextClient", "PlaintextServer"]


class PlaintextClient:
    """Sends ``x_u`` in the clear (``x=None``: a cryptography-free stand-in that sends a :class:`Token`
    of the same size, for cost accounting).

    Attributes:
        expected_round: ``Round.MASKED_INPUT`` until it has sent, then None. aborted: always None.
    """

    def __init__(self, id: int, x: np.ndarray | None, params) -> None:  # noqa: ANN001 - SessionParams
        self.id = int(id)
        self._x = x
        self._params = params
        self.expected_round: Round | None = Round.MASKED_INPUT
        self.aborted = None

    def masked_input_collection(self) -> bytes | Token:
        if self.expected_round is not Round.MASKED_INPUT:
            raise StateError(f"client {self.id}: masked_input_collection called twice")
        self.expected_round = None
        p = self._params
        if self._x is None:
            return Token("masked-input", msg.masked_input_size(p.dim, p.modulus))
        payload = ring.pack_view(self._x, p.modulus)
        self._x = None
        return MaskedInput("masked-input", p.session, self.id, p.dim, ring.bit_width(p.modulus), payload).to_bytes()


class PlaintextServer:
    """Adds the inputs it receives (``summing=False``: only records who sent). Returns the sum over U3."""

    def __init__(self, params, *, summing: bool = True) -> None:  # noqa: ANN001 - SessionParams
        self.params = params
        self.sets: dict[str, frozenset[int]] = {}
        self.rejected: dict[int, SecAggError] = {}
        self.expected_round: Round | None = Round.MASKED_INPUT
        self._summing = summing

    def masked_input_collection(self, uploads) -> np.ndarray | frozenset[int]:  # noqa: ANN001
        if self.expected_round is not Round.MASKED_INPUT:
            raise StateError("server: masked_input_collection called twice")
        self.expected_round = None
        p = self.params
        acc = ring.zeros(p.dim, p.modulus) if self._summing else None
        seen: set[int] = set()
        for cid, data in uploads:
            if cid in seen or not 0 <= cid < p.n:
                self.rejected[cid] = ProtocolViolation(f"unexpected upload from client {cid}")
                continue
            if acc is not None:
                try:
                    m = MaskedInput.from_bytes(data)
                    if m.session != p.session or m.party != cid or m.round != "masked-input":
                        raise ProtocolViolation("wrong session, sender or round")
                    if m.dim != p.dim:
                        raise MalformedMessage(f"input of length {m.dim}, expected {p.dim}")
                    ring.add_into(acc, m.vector(p.modulus, copy=False), p.modulus)
                except SecAggError as exc:
                    self.rejected[cid] = exc
                    continue
            seen.add(cid)
        u3 = frozenset(seen)
        for key in ("U1", "U2", "U3", "U4", "U5"):
            self.sets[key] = u3
        rules.require(Round.MASKED_INPUT, len(u3), 1, "|U3|")
        return acc if acc is not None else u3
