"""The communication ledger: one entry per serialized message that crossed the (emulated) network.

Every message of a session travels through :class:`secagg.transport.Transport`, which records here the
round it belongs to, its direction (``"up"``: client -> server, ``"down"``: server -> client), the
client at the other end, the message kind (``secagg.messages.KINDS``) and its exact size in bytes
(``len(message.to_bytes())``). Sizes are therefore a pure function of the wire format documented in
:mod:`secagg.messages`, which is what lets an analytical model (:mod:`secagg.cost`) reproduce a
measured ledger byte for byte.

Downlink messages are recorded when the server sends them, whether or not the recipient is still
there to read them (a client that dropped after sending still receives the server's next broadcast;
the server cannot know it is gone).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from secagg.errors import InvalidInput

__all__ = ["LedgerEntry", "Ledger", "DIRECTIONS"]

DIRECTIONS = ("up", "down")


@dataclass(frozen=True)
class LedgerEntry:
    """One message on the wire.

    Attributes:
        round: protocol round name (one of ``secagg.protocol.ROUNDS``). A server broadcast carries the
            name of the round whose uploads it answers (e.g. the key list is ``"advertise-keys"``).
        direction: ``"up"`` (client -> server) or ``"down"`` (server -> client).
        client: id of the client that sent (up) or receives (down) the message.
        kind: message kind, see ``secagg.messages.KINDS``.
        nbytes: exact serialized size in bytes.
    """

    round: str
    direction: str
    client: int
    kind: str
    nbytes: int


class Ledger:
    """A list of :class:`LedgerEntry` with summaries. Equality ignores the order of entries."""

    __slots__ = ("entries",)

    def __init__(self, entries: Iterable[LedgerEntry] = ()) -> None:
        self.entries: list[LedgerEntry] = list(entries)

    def record(self, round: str, direction: str, client: int, kind: str, nbytes: int) -> None:
        """Append one entry (InvalidInput on an unknown direction or a negative size)."""
        if direction not in DIRECTIONS:
            raise InvalidInput(f"direction must be 'up' or 'down', got {direction!r}")
        if int(nbytes) < 0:
            raise InvalidInput(f"message size must be >= 0, got {nbytes}")
        self.entries.append(LedgerEntry(str(round), direction, int(client), str(kind), int(nbytes)))

    # -- list-like -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[LedgerEntry]:
        return iter(self.entries)

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        return self.entries[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Ledger):
            return NotImplemented
        return Counter(self.entries) == Counter(other.entries)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Ledger({len(self.entries)} messages, {self.total()} bytes)"

    # -- summaries -------------------------------------------------------------------------------
    def total(self) -> int:
        """Total bytes, both directions."""
        return sum(e.nbytes for e in self.entries)

    def by_round(self) -> dict[str, dict[str, int]]:
        """``round -> {"up": bytes, "down": bytes}`` for every round that has at least one message."""
        out: dict[str, dict[str, int]] = {}
        for e in self.entries:
            d = out.setdefault(e.round, {"up": 0, "down": 0})
            d[e.direction] += e.nbytes
        return out

    def by_kind(self) -> dict[str, int]:
        """``kind -> bytes``."""
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.kind] = out.get(e.kind, 0) + e.nbytes
        return out

    def upload_per_client(self) -> dict[int, int]:
        """``client -> bytes it sent`` (only clients that sent something)."""
        out: dict[int, int] = {}
        for e in self.entries:
            if e.direction == "up":
                out[e.client] = out.get(e.client, 0) + e.nbytes
        return out

    def download_per_client(self) -> dict[int, int]:
        """``client -> bytes the server sent to it``."""
        out: dict[int, int] = {}
        for e in self.entries:
            if e.direction == "down":
                out[e.client] = out.get(e.client, 0) + e.nbytes
        return out

    def expansion_factor(self, dim: int, input_bits: int) -> float:
        """Upload expansion: mean bytes *sent* per sending client divided by the raw input size
        ``dim * input_bits / 8`` bytes.

        It counts uploads only (client -> server). Bonawitz et al. (CCS 2017, Section 7.1) quote
        expansion for the data a client exchanges, so this is the upload half of their figure, measured
        on our wire format; the downloads (key lists, routed ciphertexts, requests) are in
        :meth:`download_per_client`.
        """
        if dim <= 0 or input_bits <= 0:
            raise InvalidInput("expansion_factor needs dim > 0 and input_bits > 0")
        up = self.upload_per_client()
        if not up:
            return 0.0
        return (sum(up.values()) / len(up)) / (dim * input_bits / 8)
