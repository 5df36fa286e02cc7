"""The server side of Bonawitz et al. (CCS 2017), Figure 4, rounds 0-4; SecAgg+ neighbourhoods.

The :class:`Server` is a state machine with one method per round, named after the paper's rounds.
Each takes the round's uploads as an iterable of ``(client id, bytes)`` -- consumed lazily, one message
at a time, as the transport delivers them -- and returns ``{client id: bytes}`` to send back (the
last round returns the aggregate). It only ever holds public keys, ciphertexts it cannot read,
signatures, one accumulator vector, and in round 4 the shares clients chose to reveal.

Threshold checks (``ProtocolAborted(round, reason)``, nothing released): every round needs ``|U_r| >= t``
messages; in addition, after rounds 2 and 3 the server checks that every secret it will have to
reconstruct still has at least ``t`` live holders (``b_u`` for ``u in U3``; ``s_sk_v`` for dropped
``v in U2 \\ U3`` that masked with a survivor), and after round 4 that it has received ``t`` shares
of each; and, once U3 is known and before asking for any share, the survivor policy
(:meth:`Server.check_survivors`: ``G[U3]`` connected, ``|U3| >= min_survivors``). All of these are
functions of :mod:`secagg.rules`. Rounds must come in order (:attr:`Server.expected_round`;
:class:`~secagg.errors.StateError` otherwise). ``H(u)`` (holders of u's shares) = ``{u}`` plus the clients the server forwarded ``u``'s
ciphertexts to.

Reconstruction in round 4 uses *every* share received, not just ``t``: the shares of each secret are
checked to lie on one polynomial of degree ``t - 1`` (a dual-code check, cheap), and only on mismatch
decoded as a Reed-Solomon codeword (:mod:`secagg.reconstruct`), correcting up to
``floor((r - t) / 2)`` wrong shares among ``r``; their senders are recorded in :attr:`Server.wrong_shares`
and ignored from then on. Shares inconsistent beyond that, or a reconstructed ``s_sk_v`` that does not
match ``s_pk_v``, abort with :class:`~secagg.errors.InconsistentShares`.

With ``commit_self_masks`` (opt-in) every round-1 upload must carry the sender's commitment to
``b_u`` (signed in the active variant; uploads without it, or with a bad signature, are rejected) and
every reconstructed ``b_u`` is checked against it: together with the ``s_pk`` check this means no
reconstructed secret goes unchecked, so no wrong sum can be released.

Round-0 advertisements are validated before they are forwarded: mis-signed (active), small-order or
duplicated public keys are rejected (:meth:`Server.advertise_keys`), so one bad key drops its sender
instead of making every honest client abort.

Messages a client sends that fail to parse or disagree with the server's state (wrong session,
round, sender, recipients) are *rejected*: the client is treated as dropped and the error kept in
:attr:`Server.rejected`; the protocol continues if the threshold still holds.

Active variant: each client of U3 receives all of U3 to sign (an ``n``-bit bitmap on SecAgg+; with
``consistency_view="window"`` only its window of the ring, with Merkle paths to the root it signs,
:mod:`secagg.survivor_tree`) and, with its unmasking request, the signatures of :func:`secagg.rules.signers_for` (all of U4 on the
complete graph, the two-hop neighbourhood's on SecAgg+: ``O(k)`` of them, not ``Theta(n)``).

Malicious servers for tests subclass :class:`Server` and override the message builders
(:meth:`key_list_for`, :meth:`ciphertexts_for`, :meth:`consistency_request_for`,
:meth:`unmasking_request_for`) or the round methods.
"""

from __future__ import annotations

import functools
from collections.abc import Container, Iterable, Mapping

import numpy as np

from secagg import keys, prg, reconstruct, ring, rules, shamir
from secagg.client import mask_sign, pairwise_seed
from secagg.errors import (
    InconsistentShares,
    InvalidInput,
    MalformedMessage,
    ProtocolAborted,
    ProtocolViolation,
    SecAggError,
    StateError,
)
from secagg.rounds import Round, Variant
from secagg.messages import (
    AdvertiseKeys,
    Ciphertexts,
    ConsistencyProof,
    ConsistencyRequest,
    ConsistencySignature,
    KeyEntry,
    KeyList,
    MaskedInput,
    Message,
    ShareKeys,
    UnmaskingRequest,
    UnmaskingResponse,
    advertise_payload,
    commitment_payload,
    consistency_payload,
    consistency_root_payload,
)
from secagg.survivor_tree import SurvivorTree, root_from_proof, window_leaves

__all__ = ["Server"]

Uploads = Iterable[tuple[int, bytes]]


@functools.cache
def _low_order_probe() -> keys.AgreementKey:
    """A fixed, public X25519 key: exchanging with it yields the all-zero secret (refused by
    :meth:`secagg.keys.AgreementKey.agree`) exactly for public keys of small order, since a clamped
    X25519 scalar is a multiple of the cofactor 8. Nothing secret: it only tests keys."""
    return keys.AgreementKey.from_private_bytes(bytes(range(1, 33)))


class Server:
    """The aggregation server (see module docstring).

    Args:
        n: number of clients (ids ``0..n-1``).  dim: vector length d.  modulus: M.  threshold: t.
        graph: :class:`secagg.graph.Graph`.  variant: ``"honest-but-curious"`` or ``"active"``.
        session: 16-byte session id.  pki: ``client id -> Ed25519 verification key`` (public).
        min_survivors: the survivor policy's bound on ``|U3|`` (:func:`secagg.rules.check_survivor_policy`;
            default ``t``).
        commit_self_masks: require every round-1 upload to carry a commitment to ``b_u`` (signed in the
            active variant) and check each reconstructed ``b_u`` against it.

    Attributes:
        expected_round: the round whose uploads the server accepts next (None once it has finished or
            aborted); calling another round raises :class:`~secagg.errors.StateError`.
        sets: ``"U1"``..``"U5"`` as they become known.
        rejected: ``client id -> error`` for uploads the server refused.
        keys: ``client id -> (c_pk, s_pk, signature)`` advertised in round 0.
        wrong_shares: :class:`~secagg.reconstruct.WrongShare` records of the round-4 shares that robust
            reconstruction proved wrong (their senders' later shares were ignored).
    """

    def __init__(
        self,
        params=None,  # noqa: ANN001 - secagg.protocol.SessionParams
        *,
        pki: Mapping[int, bytes] | None = None,
        **keywords: object,
    ) -> None:
        """``Server(params, pki=...)`` with the session's :class:`~secagg.protocol.SessionParams`, or the
        keyword form ``Server(n=, dim=, modulus=, threshold=, graph=, variant=, session=[, min_survivors=,
        commit_self_masks=])`` for an explicit graph (built with
        :meth:`~secagg.protocol.SessionParams.for_graph`, so the same checks and survivor bound apply)."""
        from secagg.protocol import SessionParams

        params = SessionParams.for_party("Server", params, keywords)
        self.params = params
        self.n = params.n
        self.commit_self_masks = params.commit_self_masks
        self._commitments: dict[int, bytes] = {}
        self.dim = params.dim
        self.modulus = params.modulus
        self.threshold = params.threshold
        self.graph = params.graph
        self.variant = params.variant.value
        self.active = params.variant is Variant.ACTIVE
        self.session = params.session
        self.pki = dict(pki or {})
        self.min_survivors = params.min_survivors
        self.expected_round: Round | None = Round.ADVERTISE_KEYS
        self.sets: dict[str, frozenset[int]] = {}
        self.rejected: dict[int, SecAggError] = {}
        self.keys: dict[int, tuple[bytes, bytes, bytes | None]] = {}
        self._entries: dict[int, KeyEntry] = {}
        self._key_list_ids: dict[int, tuple[int, ...]] = {}  # u -> ids in the key list sent to u
        self._routed: dict[int, dict[int, bytes]] = {}  # v -> {u: e_{u,v}}
        self._holders: dict[int, frozenset[int]] = {}  # u -> H(u)
        self._acc: np.ndarray | None = None
        self._signatures: dict[int, bytes] = {}
        self._consistency_sent: dict[int, ConsistencyRequest | ConsistencyProof] = {}
        self._requests: dict[int, UnmaskingRequest] = {}
        self.wrong_shares: list[reconstruct.WrongShare] = []

    # ------------------------------------------------------------------------------------------
    # helpers
    # ------------------------------------------------------------------------------------------
    def _abort(self, round: str, reason: str) -> ProtocolAborted:
        self._acc = None  # release nothing
        self.expected_round = None
        return ProtocolAborted(round, reason)

    def _enter(self, round: Round, uploads: object) -> None:
        """State guard: ``round`` must be the one expected next, with an iterable of uploads."""
        if self.expected_round is None:
            raise StateError(f"server: {round.method} called after the session ended (finished or aborted)")
        if round is not self.expected_round:
            raise StateError(f"server: {round.method} called while expecting {self.expected_round.method}")
        if uploads is None or isinstance(uploads, (bytes, str)) or not hasattr(uploads, "__iter__"):
            raise StateError(f"server: {round.method} needs an iterable of (client id, bytes), got {type(uploads).__name__}")
        # the round is consumed now: a repeated call is refused even if this one aborts
        self.expected_round = self._next_round(round)

    def _next_round(self, round: Round) -> Round | None:
        rounds = (Variant.ACTIVE if self.active else Variant.HONEST_BUT_CURIOUS).rounds
        i = rounds.index(round)
        return rounds[i + 1] if i + 1 < len(rounds) else None

    def _rule(self, check, *args) -> None:  # noqa: ANN001
        """Run a rule of :mod:`secagg.rules`; on abort release nothing (the accumulator is dropped)."""
        try:
            check(*args)
        except ProtocolAborted:
            self._acc = None
            self.expected_round = None
            raise

    def _accept(self, cls: type[Message], round: str, cid: int, data: bytes, allowed: frozenset[int] | set[int],
                done: Container[int] = ()) -> Message | None:
        """Parse and check an upload from a client in ``allowed`` that has not sent one yet (not in ``done``);
        None (and record the rejection) if it is not acceptable. O(1) per upload: the round's sets are
        never rebuilt per message."""
        try:
            msg = cls.from_bytes(data)
            if msg.session != self.session:
                raise ProtocolViolation("wrong session (replay?)")
            if msg.round != round:
                raise ProtocolViolation(f"tagged for round {msg.round!r}, expected {round!r}")
            if msg.party != cid:
                raise ProtocolViolation(f"claims sender {msg.party} on client {cid}'s channel")
            if cid not in allowed or cid in done:
                raise ProtocolViolation(f"client {cid} is not expected in round {round!r}")
            return msg
        except SecAggError as exc:
            self.rejected[cid] = exc
            return None

    def _need(self, round: str, have: int, what: str) -> None:
        self._rule(rules.require, round, have, self.threshold, what)

    def _check_reconstructible(self, round: str, alive: frozenset[int]) -> None:
        """Every secret the server will need has >= t live holders (else abort now, before asking)."""
        self._rule(rules.check_reconstructible, round, self.sets["U2"], self.sets["U3"], self._holders, alive, self.threshold)

    # ------------------------------------------------------------------------------------------
    # round 0: AdvertiseKeys
    # ------------------------------------------------------------------------------------------
    def advertise_keys(self, uploads: Uploads) -> dict[int, bytes]:
        """Collect the public keys (U1); send each client the keys of ``U1 ∩ (N(u) ∪ {u})``.

        Each advertisement is validated before it is forwarded (an honest client receiving a bad key
        would abort, so one bad key would stop every client): a mis-signed one (active variant), a key
        of small order (it would give an all-zero, publicly known agreement secret; detected by an
        X25519 exchange with a fixed probe key, which ``cryptography`` refuses for such points) and every
        advertisement holding a key value that appears more than once among the uploads (the server
        cannot tell the original from the copy) are rejected: that client is not in U1.
        """
        self._enter(Round.ADVERTISE_KEYS, uploads)
        everyone = set(range(self.n))
        seen: set[int] = set()
        for cid, data in uploads:
            msg = self._accept(AdvertiseKeys, "advertise-keys", cid, data, everyone, seen)
            if msg is None:
                continue
            assert isinstance(msg, AdvertiseKeys)
            seen.add(cid)
            if (msg.signature is not None) != self.active:
                self.rejected[cid] = ProtocolViolation("signature presence does not match the variant")
                continue
            try:
                if msg.signature is not None:
                    keys.verify_signature(self.pki.get(cid, b""), msg.signature, advertise_payload(self.session, cid, msg.c_pk, msg.s_pk))
                for pk in (msg.c_pk, msg.s_pk):
                    _low_order_probe().agree(pk)
            except SecAggError as exc:
                self.rejected[cid] = exc
                continue
            self.keys[cid] = (msg.c_pk, msg.s_pk, msg.signature)
        count: dict[bytes, int] = {}
        for c_pk, s_pk, _ in self.keys.values():
            for pk in (c_pk, s_pk):
                count[pk] = count.get(pk, 0) + 1
        for cid in sorted(self.keys):
            c_pk, s_pk, _ = self.keys[cid]
            if count[c_pk] > 1 or count[s_pk] > 1:
                self.rejected[cid] = ProtocolViolation("advertises a public key that another advertisement (or its other key) repeats")
                del self.keys[cid]
        u1 = frozenset(self.keys)
        self.sets["U1"] = u1
        self._need("advertise-keys", len(u1), "|U1|")
        out = {}
        for u in sorted(u1):
            kl = self.key_list_for(u)
            self._key_list_ids[u] = tuple(e.id for e in kl.entries)
            out[u] = kl.to_bytes()
        return out

    def key_list_for(self, u: int) -> KeyList:
        """The key list for client ``u`` (override to misbehave)."""
        if len(self._entries) != len(self.keys):
            self._entries = {v: KeyEntry(v, *k) for v, k in self.keys.items()}
        ids = sorted(self.graph.closed_neighbourhood(u) & self.sets["U1"])
        return KeyList("advertise-keys", self.session, u, tuple(self._entries[v] for v in ids), self.active)

    # ------------------------------------------------------------------------------------------
    # round 1: ShareKeys
    # ------------------------------------------------------------------------------------------
    def share_keys(self, uploads: Uploads) -> dict[int, bytes]:
        """Route the encrypted shares (U2 = senders); send each ``v in U2`` the ciphertexts addressed to it."""
        self._enter(Round.SHARE_KEYS, uploads)
        u1 = self.sets["U1"]
        got: dict[int, tuple[tuple[int, bytes], ...]] = {}
        for cid, data in uploads:
            msg = self._accept(ShareKeys, "share-keys", cid, data, u1, got)
            if msg is None:
                continue
            assert isinstance(msg, ShareKeys)
            expected = tuple(v for v in self._key_list_ids.get(cid, ()) if v != cid)
            recipients = tuple(v for v, _ in msg.ciphertexts)
            if recipients != expected:
                self.rejected[cid] = ProtocolViolation("ciphertexts not addressed to exactly the sender's U1 neighbours")
                continue
            if (msg.commitment is not None) != self.commit_self_masks or (msg.commitment_signature is not None) != (
                self.commit_self_masks and self.active
            ):
                self.rejected[cid] = ProtocolViolation("self-mask commitment presence does not match the session")
                continue
            if msg.commitment is not None:
                if msg.commitment_signature is not None:
                    try:
                        keys.verify_signature(self.pki.get(cid, b""), msg.commitment_signature, commitment_payload(self.session, cid, msg.commitment))
                    except SecAggError as exc:
                        self.rejected[cid] = exc
                        continue
                self._commitments[cid] = msg.commitment
            got[cid] = msg.ciphertexts
        u2 = frozenset(got)
        self.sets["U2"] = u2
        self._need("share-keys", len(u2), "|U2|")
        self._routed = {v: {} for v in u2}
        for u, cts in got.items():
            for v, ct in cts:
                if v in u2:
                    self._routed[v][u] = ct
            self._holders[u] = rules.holders_of(u, (v for v, _ in cts), u2)
        return {v: self.ciphertexts_for(v).to_bytes() for v in sorted(u2)}

    def ciphertexts_for(self, v: int) -> Ciphertexts:
        """The ciphertexts routed to client ``v`` (override to misbehave)."""
        return Ciphertexts("share-keys", self.session, v, tuple(sorted(self._routed[v].items())))

    # ------------------------------------------------------------------------------------------
    # round 2: MaskedInputCollection
    # ------------------------------------------------------------------------------------------
    def masked_input_collection(self, uploads: Uploads) -> dict[int, bytes]:
        """Stream the masked inputs into one accumulator (U3); check the survivor policy; then ask for
        signatures (active) or shares."""
        self._enter(Round.MASKED_INPUT, uploads)
        u2 = self.sets["U2"]
        m = self.modulus
        acc = ring.zeros(self.dim, m)
        seen: set[int] = set()
        for cid, data in uploads:
            msg = self._accept(MaskedInput, "masked-input", cid, data, u2, seen)
            if msg is None:
                continue
            assert isinstance(msg, MaskedInput)
            try:
                if msg.dim != self.dim:
                    raise MalformedMessage(f"masked input of length {msg.dim}, expected {self.dim}")
                y = msg.vector(m, copy=False)  # read-only view of the upload where the width allows
            except SecAggError as exc:
                self.rejected[cid] = exc
                continue
            ring.add_into(acc, y, m)
            seen.add(cid)
            del y, msg, data
        u3 = frozenset(seen)
        self.sets["U3"] = u3
        self._acc = acc
        self._need("masked-input", len(u3), "|U3|")
        self.check_survivors(u3)
        if self.active:
            self._consistency_sent = {u: self.consistency_request_for(u) for u in sorted(u3)}
            return {u: req.to_bytes() for u, req in self._consistency_sent.items()}
        self.sets["U4"] = u3
        self._check_reconstructible("masked-input", u3)
        return self._send_requests("masked-input", u3)

    def check_survivors(self, u3: frozenset[int]) -> None:
        """The survivor policy (:func:`secagg.rules.check_survivor_policy`), before any share is asked
        for: ``G[U3]`` connected and ``|U3| >= min_survivors``, else abort with nothing released."""
        self._rule(rules.check_survivor_policy, "masked-input", self.graph, u3, self.min_survivors, None,
                   self.params.tolerate)
        if self.active and self.params.window_view:  # what the clients will check on their windows
            self._rule(rules.check_window_policy, "masked-input", self.graph, None, u3, self.threshold)

    @functools.cached_property
    def survivor_tree(self) -> SurvivorTree:
        """The Merkle tree over U3's ring bitmap (``consistency_view="window"``), built once."""
        return SurvivorTree(self.graph, self.session, self.sets["U3"])

    def consistency_request_for(self, u: int) -> ConsistencyRequest | ConsistencyProof:
        """The U3 sent to client ``u`` for signing (override to misbehave): all of U3, as an id list on the
        complete graph, as an ``n``-bit bitmap on SecAgg+ (``n / 8`` bytes); with
        ``consistency_view="window"`` the leaves of ``u``'s window and their Merkle paths
        (:mod:`secagg.survivor_tree`)."""
        if self.params.window_view:
            leaves, paths = self.survivor_tree.proof(window_leaves(self.graph, u))
            return ConsistencyProof("masked-input", self.session, u, self.n, leaves, paths)
        universe = None if self.graph.is_complete else self.n
        return ConsistencyRequest("masked-input", self.session, u, tuple(sorted(self.sets["U3"])), universe)

    def _send_requests(self, round: str, recipients: frozenset[int]) -> dict[int, bytes]:
        out = {}
        for u in sorted(recipients):
            req = self.unmasking_request_for(u, round)
            self._requests[u] = req
            out[u] = req.to_bytes()
        return out

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        """What client ``u`` is asked to reveal (override to misbehave).

        Survivors: ``V2(u) ∩ U3`` (b shares, u itself included); dropped: ``V2(u) \\ U3`` (s_sk shares),
        where ``V2(u)`` = u plus the senders of the ciphertexts routed to u. Active variant: the round-3
        signatures of :func:`secagg.rules.signers_for` (all of U4 on the complete graph, ``U4 ∩ N2[u]`` on
        SecAgg+).
        """
        u3 = self.sets["U3"]
        view = set(self._routed[u]) | {u}
        sigs: tuple[tuple[int, bytes], ...] = ()
        if self.active:
            signers = rules.signers_for(self.graph, u, self.sets["U4"])
            sigs = tuple((v, self._signatures[v]) for v in sorted(signers))
        return UnmaskingRequest(round, self.session, u, tuple(sorted(view & u3)), tuple(sorted(view - u3)), sigs)

    # ------------------------------------------------------------------------------------------
    # round 3: ConsistencyCheck (active)
    # ------------------------------------------------------------------------------------------
    def consistency_check(self, uploads: Uploads) -> dict[int, bytes]:
        """Collect signatures over U3 (U4); forward them with each client's unmasking request (all of them on
        the complete graph, those of ``U4 ∩ N2[u]`` on SecAgg+: :func:`secagg.rules.signers_for`).

        The reconstructibility check on U4 also foresees the clients' per-peer signer rule
        (:func:`secagg.rules.check_signers`): a peer with fewer than ``t`` signers among its closed
        neighbourhood is a secret with fewer than ``t`` live holders, so the session aborts here
        (rule ``reconstructible``) before any request is sent."""
        if not self.active:
            raise InvalidInput("the consistency check round only exists in the active variant")
        self._enter(Round.CONSISTENCY_CHECK, uploads)
        u3 = self.sets["U3"]
        for cid, data in uploads:
            msg = self._accept(ConsistencySignature, "consistency-check", cid, data, u3, self._signatures)
            if msg is None:
                continue
            assert isinstance(msg, ConsistencySignature)
            try:
                keys.verify_signature(self.pki.get(cid, b""), msg.signature, self._signed_u3_for(cid))
            except SecAggError as exc:
                self.rejected[cid] = exc
                continue
            self._signatures[cid] = msg.signature
        u4 = frozenset(self._signatures)
        self.sets["U4"] = u4
        self._need("consistency-check", len(u4), "|U4|")
        self._check_reconstructible("consistency-check", u4)
        return self._send_requests("consistency-check", u4)

    def _signed_u3_for(self, u: int) -> bytes:
        """What client ``u`` signed if honest: the payload over the U3 (or the root) it was sent."""
        req = self._consistency_sent[u]
        if isinstance(req, ConsistencyProof):  # the root the leaves sent to u lead to
            idx = window_leaves(self.graph, u)
            if (req.leaves, req.paths) == self.survivor_tree.proof(idx):  # the honest proof: no hashing
                root = self.survivor_tree.root
            else:
                root = root_from_proof(self.session, self.n, idx, req.leaves, req.paths)
            return consistency_root_payload(self.session, self.n, root)
        return consistency_payload(self.session, req.survivors)

    # ------------------------------------------------------------------------------------------
    # round 4: Unmasking
    # ------------------------------------------------------------------------------------------
    def unmasking(self, uploads: Uploads) -> np.ndarray:
        """Collect shares (U5); reconstruct ``b_u`` (u in U3) and ``s_sk_v`` (v dropped) robustly from all
        the shares received (:func:`secagg.reconstruct.recover`: wrong shares within the decoding radius
        are corrected and their senders recorded in :attr:`wrong_shares`, more abort with
        :class:`~secagg.errors.InconsistentShares`); remove self masks and the dropped clients' pairwise
        masks; return the sum over U3."""
        self._enter(Round.UNMASKING, uploads)
        asked = frozenset(self._requests)
        b_sh: dict[int, dict[int, bytes]] = {}
        k_sh: dict[int, dict[int, bytes]] = {}
        u5: set[int] = set()
        responses: dict[int, bytes] = {}
        for cid, data in uploads:
            msg = self._accept(UnmaskingResponse, "unmasking", cid, data, asked, u5)
            if msg is None:
                continue
            assert isinstance(msg, UnmaskingResponse)
            req = self._requests[cid]
            if tuple(v for v, _ in msg.b_shares) != req.survivors or tuple(v for v, _ in msg.key_shares) != req.dropped:
                self.rejected[cid] = ProtocolViolation("response does not answer the request")
                continue
            if any(int.from_bytes(sh, "big") >= shamir.PRIME for _, sh in msg.b_shares + msg.key_shares):
                # a non-canonical field element is a malformed upload (this client is dropped), not a
                # reason to abort every reconstruction that would otherwise pick it
                self.rejected[cid] = MalformedMessage("a share is not an element of the Shamir field")
                continue
            responses[cid] = bytes(data)
            for v, sh in msg.b_shares:
                b_sh.setdefault(v, {})[cid] = sh
            for v, sh in msg.key_shares:
                k_sh.setdefault(v, {})[cid] = sh
            u5.add(cid)
        self.sets["U5"] = frozenset(u5)
        self._need("unmasking", len(u5), "|U5|")
        t = self.threshold
        u2, u3 = self.sets["U2"], self.sets["U3"]
        # which dropped clients' pairwise masks are in the sum: v in U2 \ U3 with survivor holders
        to_cancel = rules.masks_to_cancel(u2, u3, self._holders)
        self._rule(rules.check_shares_received, u3, to_cancel, {u: len(s) for u, s in b_sh.items()},
                   {v: len(s) for v, s in k_sh.items()}, t)
        acc = self._acc
        assert acc is not None
        m = self.modulus
        # robust reconstruction (secagg.reconstruct): a challenge fixed by every accepted share, then per
        # secret one interpolation plus a dual-code check, Reed-Solomon decoding only on mismatch; a
        # client caught with a wrong share is recorded and its later shares are ignored
        rho = reconstruct.challenge(self.session, (c.to_bytes(4, "big") + responses[c] for c in sorted(responses)))

        def ints(shares: dict[int, bytes]) -> dict[int, int]:
            return {w: int.from_bytes(sh, "big") for w, sh in shares.items()}

        batch = [("b", u, ints(b_sh[u])) for u in sorted(u3)] + [("s_sk", v, ints(k_sh[v])) for v in to_cancel]
        try:
            values, wrong = reconstruct.recover_many(batch, t, rho)
            self.wrong_shares.extend(wrong)
            secrets: dict[tuple[str, int], bytes] = {}
            for (kind, owner, _), value in zip(batch, values):
                if value >> 256:
                    raise InconsistentShares("unmasking", f"reconstructed {kind}_{owner} is not a 32-byte secret")
                secrets[kind, owner] = value.to_bytes(32, "big")
            masks: list[tuple[bytes, str, int]] = []
            for u in sorted(u3):
                b_u = secrets["b", u]
                if self.commit_self_masks and reconstruct.self_mask_commitment(self.session, u, b_u) != self._commitments[u]:
                    raise InconsistentShares("unmasking", f"reconstructed b_{u} does not match its commitment")
                masks.append((b_u, prg.PURPOSE_SELF, -1))
            for v, survivors in to_cancel.items():
                sk = keys.AgreementKey.from_private_bytes(secrets["s_sk", v])
                if sk.public_bytes != self.keys[v][1]:
                    raise InconsistentShares("unmasking", f"reconstructed s_sk_{v} does not match its advertised s_pk")
                for w in survivors:
                    seed = pairwise_seed(sk, self.keys[w][1], session=self.session, u=v, v=w)
                    masks.append((seed, prg.PURPOSE_PAIRWISE, -mask_sign(w, v)))
            # all masks removed in one streamed pass over acc per group of masks (prg.add_masks)
            prg.add_masks(acc, masks, session=self.session, modulus=m)
        except ProtocolAborted:
            self._acc = None
            raise
        except SecAggError as exc:
            raise self._abort("unmasking", f"reconstruction failed: {exc}") from None
        self._acc = None
        return acc
