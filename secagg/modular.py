"""The cryptography-free client/server pair behind the ``modular`` backend.

:class:`ModularClient` and :class:`ModularServer` run the message flow of Bonawitz et al. (CCS 2017,
Figure 4) -- and of SecAgg+ (Bell et al., CCS 2020) on a Harary graph -- without keys, masks or
shares, driven by the same :class:`~secagg.transport.Transport` as the real parties and deciding
everything through the same :mod:`secagg.rules` (thresholds, holders, reconstructibility, the survivor
policy, the dropout schedule). Their messages are :class:`Token` objects: the ids a real message lists
and its exact serialized size, computed from those fields by the size functions of
:mod:`secagg.messages` (which the tests hold equal to ``len(to_bytes())``), so no masked vector is
ever materialised and the transport's ledger is *measured* on the same carrier, entry for entry equal
to a real run's. The sum over U3 equals the unmasked protocol output; :func:`secagg.cost.modular_run`
adds the survivors' rows directly (the masks cancel by construction).
"""

from __future__ import annotations

from collections import Counter
from itertools import chain

from secagg import messages as msg
from secagg import rules
from secagg.errors import StateError
from secagg.rounds import Round, Variant

__all__ = ["Token", "ModularClient", "ModularServer"]


class Token:
    """A message of the cryptography-free pair: its kind, the ids the real message carries, and its
    exact size (``len(token)`` = the serialized size of the real message with these fields)."""

    __slots__ = ("KIND", "nbytes", "ids", "other", "count", "signers")

    def __init__(self, kind: str, nbytes: int, ids: frozenset[int] = frozenset(), other: frozenset[int] = frozenset(),
                 count: int = 0, signers: frozenset[int] = frozenset()) -> None:
        self.KIND = kind
        self.nbytes = nbytes
        self.ids = ids
        self.other = other
        self.count = count
        self.signers = signers  # active unmasking request: the round-3 signers forwarded (count of them)

    def __len__(self) -> int:
        return self.nbytes

    def __repr__(self) -> str:
        return f"Token({self.KIND}, {self.nbytes} B, ids={len(self.ids)}, other={len(self.other)}, count={self.count})"


def _next(expected: Round | None, active: bool) -> Round | None:
    rounds = (Variant.ACTIVE if active else Variant.HONEST_BUT_CURIOUS).rounds
    assert expected is not None
    i = rounds.index(expected)
    return rounds[i + 1] if i + 1 < len(rounds) else None


class ModularClient:
    """An honest client without cryptography: same threshold checks as :class:`secagg.client.Client`
    (:func:`secagg.rules.require`), uploads sized like the real ones.

    Attributes:
        expected_round: the round whose method may be called next (None when finished or aborted).
        aborted: the :class:`~secagg.errors.SecAggError` that made it abort, or None.
    """

    def __init__(self, id: int, params) -> None:  # noqa: ANN001 - secagg.protocol.SessionParams
        self.id = int(id)
        self.threshold = params.threshold
        self.graph = params.graph
        self.active = params.variant is Variant.ACTIVE
        self._dim, self._modulus = params.dim, params.modulus
        self._commit = params.commit_self_masks
        self._window = params.window_view
        self.expected_round: Round | None = Round.ADVERTISE_KEYS
        self.aborted = None

    def _enter(self, round: Round) -> None:
        if self.aborted is not None:
            raise StateError(f"client {self.id} has aborted ({self.aborted}); no further messages")
        if self.expected_round is not round:
            want = "nothing (finished)" if self.expected_round is None else self.expected_round.method
            raise StateError(f"client {self.id}: {round.method} called while expecting {want}")

    def _step(self, round: Round, checks: tuple[tuple[int, int, str], ...], out: Token, *, rule=None) -> Token:  # noqa: ANN001
        """Enter ``round``, run ``rule`` (a zero-argument check, if any) then the threshold ``checks``; any
        failure aborts this client, as it does the real one."""
        self._enter(round)
        try:
            if rule is not None:
                rule()
            for check in checks:
                rules.require(round, *check, self.id)
        except Exception as exc:
            self.aborted = exc
            self.expected_round = None
            raise
        self.expected_round = _next(round, self.active)
        return out

    def advertise_keys(self) -> Token:
        return self._step(Round.ADVERTISE_KEYS, (), Token("advertise-keys", msg.advertise_keys_size(self.active)))

    def share_keys(self, key_list: Token) -> Token:
        ids = key_list.ids  # U1 ∩ (N(u) ∪ {u}): the holders of this client's shares
        peers = ids - {self.id}
        return self._step(Round.SHARE_KEYS, ((len(ids), self.threshold, "|U1|"),),
                          Token("share-keys", msg.share_keys_size(len(peers), self._commit, self.active), peers))

    def masked_input_collection(self, routed: Token) -> Token:
        return self._step(Round.MASKED_INPUT, ((len(routed.ids) + 1, self.threshold, "|U2|"),),
                          Token("masked-input", msg.masked_input_size(self._dim, self._modulus)))

    def consistency_check(self, request: Token) -> Token:
        if self._window:  # U3 on this client's window only: the real client's local rules (secagg.rules)
            return self._step(Round.CONSISTENCY_CHECK, (), Token("consistency-signature", msg.consistency_signature_size()),
                              rule=lambda: rules.check_window_policy(Round.CONSISTENCY_CHECK, self.graph, self.id,
                                                                     request.ids, self.threshold))
        return self._step(Round.CONSISTENCY_CHECK, ((len(request.ids), self.threshold, "|U3|"),),
                          Token("consistency-signature", msg.consistency_signature_size()))

    def unmasking(self, request: Token) -> Token:
        surv, drop = request.ids, request.other
        # active: the real client's per-peer signer rule, before its other checks (secagg.rules)
        signers = (lambda: rules.check_signers(Round.UNMASKING, self.graph, surv | drop, request.signers,
                                               self.threshold, self.id)) if self.active else None
        return self._step(Round.UNMASKING, ((len(surv), self.threshold, "|U3 ∩ (N(u) ∪ {u})|"),),
                          Token("unmasking-response", msg.unmasking_response_size(len(surv), len(drop)), surv, drop),
                          rule=signers)


class ModularServer:
    """An honest server without cryptography: the sets U1..U5, the routing and every check of
    :class:`secagg.server.Server`, through the same :mod:`secagg.rules`. Its last round returns U3
    (the inputs the released sum covers)."""

    def __init__(self, params) -> None:  # noqa: ANN001 - secagg.protocol.SessionParams
        self.params = params
        self.n, self.threshold, self.graph = params.n, params.threshold, params.graph
        self.active = params.variant is Variant.ACTIVE
        self.min_survivors = params.min_survivors
        self.sets: dict[str, frozenset[int]] = {}
        self.rejected: dict = {}
        self.expected_round: Round | None = Round.ADVERTISE_KEYS
        self._holders: dict[int, frozenset[int]] = {}
        self._senders_to: dict[int, frozenset[int]] = {}
        self._asked: dict[int, Token] = {}

    def _enter(self, round: Round) -> None:
        if round is not self.expected_round:
            want = "nothing (finished)" if self.expected_round is None else self.expected_round.method
            raise StateError(f"server: {round.method} called while expecting {want}")
        self.expected_round = _next(round, self.active)

    def _collect(self, uploads, allowed: frozenset[int]) -> dict[int, Token]:  # noqa: ANN001
        got: dict[int, Token] = {}
        for cid, tok in uploads:
            if cid in allowed and cid not in got:
                got[cid] = tok
        return got

    def _need(self, round: Round, have: int, what: str) -> None:
        try:
            rules.require(round, have, self.threshold, what)
        except Exception:
            self.expected_round = None
            raise

    def advertise_keys(self, uploads) -> dict[int, Token]:  # noqa: ANN001
        self._enter(Round.ADVERTISE_KEYS)
        u1 = frozenset(self._collect(uploads, frozenset(range(self.n))))
        self.sets["U1"] = u1
        self._need(Round.ADVERTISE_KEYS, len(u1), "|U1|")
        g = self.graph
        out = {}
        for u in sorted(u1):
            ids = u1 if g.is_complete else g.closed_neighbourhood(u) & u1
            out[u] = Token("key-list", msg.key_list_size(len(ids), self.active), ids)
        return out

    def share_keys(self, uploads) -> dict[int, Token]:  # noqa: ANN001
        self._enter(Round.SHARE_KEYS)
        got = self._collect(uploads, self.sets["U1"])
        u2 = frozenset(got)
        self.sets["U2"] = u2
        self._need(Round.SHARE_KEYS, len(u2), "|U2|")
        senders: dict[int, set[int]] = {v: set() for v in u2}
        for u, tok in got.items():
            h = rules.holders_of(u, tok.ids, u2)
            self._holders[u] = h
            if not self.graph.is_complete:
                for v in h:
                    if v != u:
                        senders[v].add(u)
        if self.graph.is_complete:  # every client addressed all of U1: v receives from U2 \ {v}
            self._senders_to = {v: u2 - {v} for v in u2}
        else:
            self._senders_to = {v: frozenset(s) for v, s in senders.items()}
        return {v: Token("ciphertexts", msg.ciphertexts_size(len(self._senders_to[v])), self._senders_to[v])
                for v in sorted(u2)}

    def masked_input_collection(self, uploads) -> dict[int, Token]:  # noqa: ANN001
        self._enter(Round.MASKED_INPUT)
        u3 = frozenset(self._collect(uploads, self.sets["U2"]))
        self.sets["U3"] = u3
        self._need(Round.MASKED_INPUT, len(u3), "|U3|")
        self._rule(rules.check_survivor_policy, Round.MASKED_INPUT, self.graph, u3, self.min_survivors, None,
                   self.params.tolerate)
        if self.active and self.params.window_view:  # U3 on each client's window, with Merkle paths
            self._rule(rules.check_window_policy, Round.MASKED_INPUT, self.graph, None, u3, self.threshold)
            size = msg.consistency_proof_size(self.n, self.graph.k)
            return {u: Token("consistency-proof", size, u3 & self.graph.two_hop_neighbourhood(u)) for u in sorted(u3)}
        if self.active:  # all of U3: an id list (complete graph) or an n-bit bitmap (SecAgg+)
            size = msg.consistency_request_size(len(u3), None if self.graph.is_complete else self.n)
            return {u: Token("consistency-request", size, u3) for u in sorted(u3)}
        self.sets["U4"] = u3
        self._rule(rules.check_reconstructible, Round.MASKED_INPUT, self.sets["U2"], u3, self._holders, u3, self.threshold)
        return self._requests(u3, None)

    def consistency_check(self, uploads) -> dict[int, Token]:  # noqa: ANN001
        self._enter(Round.CONSISTENCY_CHECK)
        u4 = frozenset(self._collect(uploads, self.sets["U3"]))
        self.sets["U4"] = u4
        self._need(Round.CONSISTENCY_CHECK, len(u4), "|U4|")
        self._rule(rules.check_reconstructible, Round.CONSISTENCY_CHECK, self.sets["U2"], self.sets["U3"], self._holders,
                   u4, self.threshold)
        return self._requests(u4, u4)

    def _rule(self, check, *args) -> None:  # noqa: ANN001
        try:
            check(*args)
        except Exception:
            self.expected_round = None
            raise

    def _requests(self, recipients: frozenset[int], u4: frozenset[int] | None) -> dict[int, Token]:
        """Unmasking requests; ``u4``: the round-3 signers (active), forwarded per :func:`secagg.rules.signers_for`."""
        u3 = self.sets["U3"]
        out = {}
        for u in sorted(recipients):
            view = self._senders_to[u] | {u}
            surv, drop = view & u3, view - u3
            signers = frozenset() if u4 is None else rules.signers_for(self.graph, u, u4)
            ng = len(signers)
            tok = Token("unmasking-request", msg.unmasking_request_size(len(surv), len(drop), ng), surv, drop, ng, signers)
            self._asked[u] = tok
            out[u] = tok
        return out

    def unmasking(self, uploads) -> frozenset[int]:  # noqa: ANN001
        self._enter(Round.UNMASKING)
        got = self._collect(uploads, frozenset(self._asked))
        u5 = frozenset(got)
        self.sets["U5"] = u5
        self._need(Round.UNMASKING, len(u5), "|U5|")
        u2, u3 = self.sets["U2"], self.sets["U3"]
        b_counts = Counter(chain.from_iterable(t.ids for t in got.values()))
        k_counts = Counter(chain.from_iterable(t.other for t in got.values()))
        self._rule(rules.check_shares_received, u3, rules.masks_to_cancel(u2, u3, self._holders), b_counts, k_counts,
                   self.threshold)
        return u3
