"""Active SecAgg+: the consistency check over neighbourhoods (docs/protocol.md, "Active SecAgg+ without a
Theta(n) download").

Each client signs ``(session, u, U3 ∩ (N(u) ∪ {u}))`` and, before unmasking, needs ``t`` signers among
``N(v) ∪ {v}`` attesting the status of every peer ``v`` it reveals a share for, with no forwarded view
contradicting it. The split-view attack is adapted to neighbourhoods: the server tells part of ``v``'s
holders (some two hops from each other) that ``v`` survived and the others that it dropped.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from secagg import ring
from secagg.commands.simulate import random_inputs
from secagg.cost import our_model
from secagg.errors import InconsistentView, ProtocolAborted
from secagg.messages import ConsistencyRequest, UnmaskingRequest, view_bitmap
from secagg.protocol import Session, run_secure_aggregation
from secagg.server import Server

M = 2**16


def _plain(xs, ids) -> np.ndarray:  # noqa: ANN001
    acc = ring.zeros(xs[0].shape[0], M)
    for u in ids:
        ring.add_into(acc, xs[u], M)
    return acc


def test_active_secagg_plus_sums_correctly_with_dropouts() -> None:
    xs = random_inputs(30, 5, M, 1)
    res = run_secure_aggregation(xs, modulus=M, graph="secagg+", neighbours=8, variant="active", seed=2,
                                 dropouts={3: "masked-input", 5: "consistency-check", 9: "unmasking"})
    assert not res.graph.is_complete and res.client_errors == {}
    assert np.array_equal(res.sum, _plain(xs, res.included))


def test_download_per_client_does_not_grow_with_n() -> None:
    # the global check sends every client all of U3 and all |U4| signatures: Theta(n); here O(k)
    down = {}
    for n in (30, 60):
        res = run_secure_aggregation(random_inputs(n, 4, M, n), modulus=M, graph="secagg+", neighbours=6, variant="active", seed=3)
        down[n] = set(res.ledger.download_per_client().values())
        cf = our_model(n, 4, M, k=6, variant="active")
        assert cf.exact and down[n] == {cf.download_per_client}
        assert cf.total_down == sum(e.nbytes for e in res.ledger if e.direction == "down")
    assert down[30] == down[60]


class NeighbourhoodSplit(Server):
    """Tells the holders in GROUP_B that client VICTIM dropped (in their consistency requests and their
    unmasking requests) and every other client that it survived; forwards each signer's signature with
    the view that signer was asked to sign. FILTER: forward to each client only the signers whose view
    agrees with what that client is told."""

    VICTIM = 0
    GROUP_B: frozenset[int] = frozenset()
    FILTER = False

    def _told_dropped(self, u: int) -> bool:
        return u in self.GROUP_B

    def consistency_request_for(self, u: int) -> ConsistencyRequest:
        msg = super().consistency_request_for(u)
        if self._told_dropped(u):
            return dataclasses.replace(msg, survivors=tuple(v for v in msg.survivors if v != self.VICTIM))
        return msg

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        entries = []
        for (s, sig) in msg.signatures:
            signed = frozenset(self.consistency_request_for(s).survivors)
            says_alive = self.VICTIM in signed
            closed = self._closed_sorted(s)
            if self.FILTER and self.VICTIM in closed and says_alive == self._told_dropped(u):
                continue
            entries.append(((s, sig), view_bitmap(closed, signed)))
        sigs = tuple(e[0] for e in entries)
        views = tuple(e[1] for e in entries)
        msg = dataclasses.replace(msg, signatures=sigs, views=views)
        if self._told_dropped(u) and self.VICTIM in msg.survivors:
            msg = dataclasses.replace(msg, survivors=tuple(v for v in msg.survivors if v != self.VICTIM),
                                      dropped=tuple(sorted(msg.dropped + (self.VICTIM,))))
        return msg


@pytest.mark.parametrize("filter_", [False, True], ids=["forward-all", "forward-agreeing-only"])
def test_neighbourhood_split_view_releases_no_share_of_the_victim(filter_: bool) -> None:
    n, k, seed = 24, 6, 5
    probe = Session(random_inputs(n, 3, M, 0), modulus=M, graph="secagg+", neighbours=k, variant="active", seed=seed)
    victim = 0
    holders = sorted(set(probe.graph.neighbours(victim)))
    t = probe.threshold  # 2t > k + 1 = 7, so t >= 4: neither group below reaches t on its own

    class Split(NeighbourhoodSplit):
        VICTIM = victim
        GROUP_B = frozenset(holders[: (k + 1) // 2])  # about half of the victim's neighbours
        FILTER = filter_

    assert len(Split.GROUP_B) < t and k + 1 - len(Split.GROUP_B) < t
    session = Session(random_inputs(n, 3, M, 6), modulus=M, graph="secagg+", neighbours=k, variant="active", seed=seed,
                      server_class=Split)
    with pytest.raises(ProtocolAborted):
        session.run()
    released = set().union(*(c.released.get(victim, set()) for u, c in session.clients.items() if u != victim))
    assert released == set()
    for u in holders + [victim]:
        err = session.clients[u].aborted
        assert isinstance(err, (InconsistentView, ProtocolAborted)), (u, err)
