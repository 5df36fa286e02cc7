"""The client (user) side of Bonawitz et al. (CCS 2017), Figure 4, rounds 0-4; SecAgg+ neighbourhoods.

A :class:`Client` is a state machine with one method per round, named after the paper's rounds. Each
method takes the server's previous broadcast as *bytes* and returns the client's upload as *bytes*; a
client never does I/O and never sees another party's secrets. Any deviation it detects raises a typed
:class:`~secagg.errors.SecAggError`; the client is then *aborted* (every later call raises too), which
the transport treats like a dropout.

Notation: ``u`` this client, ``N(u)`` its neighbours in the graph (all others on the complete graph),
``t`` the threshold.

* :meth:`Client.advertise_keys` (round 0): two X25519 key pairs ``(c_pk, c_sk)`` (share channel) and
  ``(s_pk, s_sk)`` (mask seeds); uploads both public keys, signed with the client's Ed25519 key in the
  active variant (emulated PKI: the verification keys of all clients are known to everyone).
Active variant parameters: a client refuses ``2t <= |N(u)| + 1`` (see
:func:`secagg.protocol.check_active_threshold`): with two disjoint groups of ``t`` holders a lying server
could show each group a different U3 with ``t`` genuine signatures and collect both share types of a live
peer; Bonawitz et al. require ``t > (n + n_C) / 2`` for active security.

* :meth:`Client.share_keys` (round 1): receives the key list ``U1 ∩ (N(u) ∪ {u})``; checks it holds
  its own keys unchanged, at least ``t`` entries, only neighbours, pairwise distinct keys and (active)
  valid signatures. Draws the self-mask seed ``b_u`` and makes ``t``-of-``|H(u)|`` Shamir shares of
  ``s_sk_u`` and of ``b_u`` for the *holders* ``H(u) = U1 ∩ (N(u) ∪ {u})``.

  **Self share.** As in the paper (shares go to all of U1, the user included), ``u`` keeps the share
  evaluated at its own id: it never travels, and ``u`` reveals it in round 4 as one of the ``t``
  shares of ``b_u`` (never of ``s_sk_u``: a live client is never asked for its own key). On SecAgg+ this
  is Bell et al.'s self-edge: ``k + 1`` holders per client, ``t`` counted over them.

  For every other holder ``v`` it encrypts ``u || v || session || share(s_sk_u)_v || share(b_u)_v``
  with AES-256-GCM under the send key of :func:`channel_keys` (64 bytes of
  ``HKDF(KA(c_sk_u, c_pk_v); session, "share-channel", min(u,v), max(u,v))``: one half per direction),
  the header also bound as associated data. With self-mask commitments on (opt-in) the upload also
  carries ``H(session, u, b_u)`` (:func:`secagg.reconstruct.self_mask_commitment`), signed in the
  active variant, against which the server checks the ``b_u`` it reconstructs. The receive key for ``v -> u`` comes from the same
  agreement and is kept for round 4 (the paper re-derives it from ``c_sk_u``; same secret).
* :meth:`Client.masked_input_collection` (round 2): the ciphertexts routed to it define its view of
  ``U2`` (``V2(u)`` = senders plus itself; abort if ``< t``). Computes
  ``y_u = x_u + PRG(b_u) + sum_{v in V2(u), v != u} sigma_{u,v} PRG(s_{u,v})  (mod M)`` with
  ``s_{u,v} = HKDF(KA(s_sk_u, s_pk_v); session, "pairwise-mask", min(u,v), max(u,v))`` and
  ``sigma_{u,v} = +1 if u > v else -1``, so ``p_{u,v} + p_{v,u} = 0``; uploads ``y_u`` packed.
* :meth:`Client.consistency_check` (round 3, active only): receives the whole U3 (an id list on the
  complete graph, an ``n``-bit bitmap on SecAgg+), checks the survivor policy on it, signs ``(session, U3)``.
  With ``consistency_view="window"`` (SecAgg+) it receives U3 only on its window ``N2[u]`` with Merkle
  paths (:mod:`secagg.survivor_tree`), checks :func:`secagg.rules.check_window_policy` and signs
  ``(session, n, root)``.
* :meth:`Client.unmasking` (round 4): verifies (active) every forwarded signature over its own ``U3``
  (:class:`~secagg.errors.InconsistentView` otherwise; on SecAgg+ the server forwards those of the
  two-hop neighbourhood ``N2[u]`` only and a signer outside it is refused) and requires, for every peer
  ``v`` it reveals a share of, ``t`` signers among ``N(v) ∪ {v}`` (:func:`secagg.rules.check_signers`:
  two honest holders of ``v`` that reveal different share types would each need ``t`` signatures of
  different U3 from those ``k + 1`` clients, so ``2t <= k + 1 + n_C(v)``), checks the server's request (survivors and
  dropped partition exactly its ``V2(u)``; no peer in both; itself a survivor; active: survivors are
  exactly the signed ``U3``), decrypts every ciphertext checking the ``(u, v, session)`` header, and
  sends ``b`` shares of survivors and ``s_sk`` shares of dropped peers, **never both for one peer**.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from secagg import keys, prg, reconstruct, ring, rules, shamir, survivor_tree
from secagg.drbg import Drbg
from secagg.errors import (
    DecryptionFailed,
    InconsistentView,
    InvalidInput,
    MalformedMessage,
    ProtocolAborted,
    ProtocolViolation,
    SecAggError,
    SignatureInvalid,
    StateError,
)
from secagg.rounds import VARIANTS, Round
from secagg.messages import (
    AdvertiseKeys,
    Ciphertexts,
    ConsistencyProof,
    ConsistencyRequest,
    ConsistencySignature,
    KeyList,
    MaskedInput,
    Message,
    SharePlaintext,
    ShareKeys,
    UnmaskingRequest,
    UnmaskingResponse,
    advertise_payload,
    commitment_payload,
    consistency_payload,
    consistency_root_payload,
    share_aad,
)

__all__ = ["Client", "PURPOSE_CHANNEL", "PURPOSE_PAIRWISE_SEED", "VARIANTS", "pairwise_seed", "channel_keys", "mask_sign"]

PURPOSE_CHANNEL = "share-channel"
PURPOSE_PAIRWISE_SEED = "pairwise-mask"

def pairwise_seed(agreement: keys.AgreementKey, peer_public: bytes, *, session: bytes, u: int, v: int) -> bytes:
    """``s_{u,v} = HKDF(KA(sk, pk_peer); session, "pairwise-mask", min(u,v), max(u,v))`` (32 bytes)."""
    shared = agreement.agree(peer_public)
    return keys.derive_key(shared, session=session, purpose=PURPOSE_PAIRWISE_SEED, u=min(u, v), v=max(u, v))


def channel_keys(agreement: keys.AgreementKey, peer_public: bytes, *, session: bytes, me: int, peer: int) -> tuple[bytes, bytes]:
    """``(send key me -> peer, receive key peer -> me)`` of the share channel.

    ``HKDF(KA(c_sk_me, c_pk_peer); session, "share-channel", min, max)`` expanded to 64 bytes: the first
    32 bytes key the direction ``min -> max``, the last 32 the direction ``max -> min``. Both ends get
    the same pair from one X25519 agreement and one HKDF call.
    """
    okm = keys.derive_key(
        agreement.agree(peer_public), session=session, purpose=PURPOSE_CHANNEL, u=min(me, peer), v=max(me, peer), length=64
    )
    lo, hi = okm[:32], okm[32:]
    return (lo, hi) if me < peer else (hi, lo)


def mask_sign(u: int, v: int) -> int:
    """Sign with which client ``u`` adds the pairwise mask shared with ``v``: +1 if ``u > v`` else -1."""
    return 1 if u > v else -1


class Client:
    """One user of the protocol; see the module docstring for what each round does.

    Args:
        id: the client id (its position in the inputs).
        x: its input, a ``dtype_for(M)`` vector of length ``dim`` with elements in ``[0, M)``.
        modulus: M.  threshold: t.  graph: a :class:`secagg.graph.Graph` (public).
        variant: ``"honest-but-curious"`` or ``"active"``.
        session: 16-byte session id.  drbg: this client's private randomness.
        pki: ``client id -> Ed25519 verification key`` (active variant; public).
        signing_key: this client's Ed25519 key registered in ``pki`` (active variant).
        min_survivors: the session's survivor bound (public); in the active variant the client refuses to
            sign a U3 that breaks the survivor policy (default ``t``).
        commit_self_mask: send a commitment to ``b_u`` with the round-1 shares (signed in the active
            variant; :func:`secagg.reconstruct.self_mask_commitment`).

    Attributes:
        expected_round: the round whose method may be called next (None once the client has finished
            or aborted); any other call raises :class:`~secagg.errors.StateError`.
        aborted: the error that made this client abort, or None.
        released: ``peer -> share types revealed for it`` (``"b"``, ``"s_sk"``); never both.
        views: the sets this client saw (``"U1"``, ``"U2"``, ``"U3"``, ``"U4"``), restricted to its
            neighbourhood except ``U3`` in the active variant (all of it; with ``consistency_view="window"``
            its two-hop window) and ``U4`` there (all of it on the complete graph, its two-hop
            neighbourhood's signers on SecAgg+).
    """

    def __init__(
        self,
        id: int,
        x: np.ndarray,
        params=None,  # noqa: ANN001 - secagg.protocol.SessionParams
        *,
        drbg: Drbg,
        pki: Mapping[int, bytes] | None = None,
        signing_key: keys.SigningKey | None = None,
        **keywords: object,
    ) -> None:
        """``Client(u, x_u, params, drbg=..., pki=..., signing_key=...)`` with the session's
        :class:`~secagg.protocol.SessionParams`, or the keyword form ``Client(u, x_u, modulus=,
        threshold=, graph=, variant=, session=, drbg=[, min_survivors=, commit_self_mask=])`` for an
        explicit graph (built with :meth:`~secagg.protocol.SessionParams.for_graph`)."""
        from secagg.protocol import SessionParams

        kw = dict(keywords)
        if "commit_self_mask" in kw:  # the keyword form names the client's own commitment
            kw["commit_self_masks"] = kw.pop("commit_self_mask")
        if params is None:  # n and d follow from the graph and the input
            if hasattr(kw.get("graph"), "n"):
                kw.setdefault("n", kw["graph"].n)
            kw.setdefault("dim", int(np.asarray(x).shape[0]))
        params = SessionParams.for_party("Client", params, kw)
        self.params = params
        self.id = int(id)
        self.commit_self_mask = params.commit_self_masks
        self.modulus = params.modulus
        self.threshold = params.threshold
        graph = self.graph = params.graph
        self.variant = variant = params.variant.value
        self.active = self.variant == "active"
        self.session = params.session
        self.dim = int(x.shape[0])
        if self.dim != params.dim:
            raise InvalidInput(f"Client {id}: input has {self.dim} elements, the session's dimension is {params.dim}")
        self._x = x
        self._drbg = drbg
        self._pki = dict(pki or {})
        self._signing_key = signing_key
        self.min_survivors = params.min_survivors
        self._neighbourhood = graph.closed_neighbourhood(self.id)
        self.expected_round: Round | None = Round.ADVERTISE_KEYS
        self.aborted: SecAggError | None = None
        self.released: dict[int, set[str]] = {}
        self.views: dict[str, frozenset[int]] = {}
        self._c: keys.AgreementKey | None = None
        self._s: keys.AgreementKey | None = None
        self._peers: dict[int, tuple[bytes, bytes]] = {}
        self._ciphertexts: dict[int, bytes] = {}
        self._own_shares: tuple[bytes, bytes] | None = None
        self._u3: tuple[int, ...] | None = None
        self._signed_payload: bytes = b""
        self._b: bytes | None = None
        self._recv_keys: dict[int, bytes] = {}
        if self.active and (signing_key is None or self._pki.get(self.id) != signing_key.public_bytes):
            raise ProtocolViolation("active variant: the client's signing key must be registered in the PKI")
        # t >= 2 and, in the active variant, 2t > h: the same rules the session applies (secagg.rules)
        rules.check_threshold_value(self.threshold, graph.holders_per_client)
        rules.check_active_threshold(graph.holders_per_client, self.threshold, variant)

    # ------------------------------------------------------------------------------------------
    # plumbing
    # ------------------------------------------------------------------------------------------
    def _enter(self, method: str) -> None:
        if self.aborted is not None:
            raise StateError(f"client {self.id} has aborted ({self.aborted}); no further messages")
        if self.expected_round is None or self.expected_round.method != method:
            want = "nothing (finished)" if self.expected_round is None else self.expected_round.method
            raise StateError(f"client {self.id}: {method} called while expecting {want}")

    def _fail(self, exc: SecAggError) -> SecAggError:
        self.aborted = exc
        self.expected_round = None
        # forget secrets: an aborted client reveals nothing more
        self._ciphertexts.clear()
        self._recv_keys.clear()
        self._own_shares = None
        return exc

    def _check_header(self, msg: Message, round: str) -> None:
        if msg.session != self.session:
            raise ProtocolViolation(f"message from session {msg.session.hex()} (replay?), expected {self.session.hex()}")
        if msg.round != round:
            raise ProtocolViolation(f"{msg.KIND} tagged for round {msg.round!r}, expected {round!r}")
        if msg.party != self.id:
            raise ProtocolViolation(f"{msg.KIND} addressed to client {msg.party}, not {self.id}")

    def _run(self, method: str, step, *args):  # noqa: ANN001, ANN202
        self._enter(method)
        try:
            out = step(*args)
        except SecAggError as exc:
            self._fail(exc)
            raise
        return out

    # ------------------------------------------------------------------------------------------
    # round 0: AdvertiseKeys
    # ------------------------------------------------------------------------------------------
    def advertise_keys(self) -> bytes:
        """Round 0: generate ``(c_pk, c_sk)``, ``(s_pk, s_sk)``; upload the public keys (signed if active)."""
        return self._run("advertise_keys", self._advertise_keys)

    def _advertise_keys(self) -> bytes:
        self._c = keys.AgreementKey.generate(self._drbg.child(b"c-key"))
        self._s = keys.AgreementKey.generate(self._drbg.child(b"s-key"))
        c_pk, s_pk = self._c.public_bytes, self._s.public_bytes
        sig = None
        if self.active:
            assert self._signing_key is not None
            sig = self._signing_key.sign(advertise_payload(self.session, self.id, c_pk, s_pk))
        self.expected_round = Round.SHARE_KEYS
        return AdvertiseKeys("advertise-keys", self.session, self.id, c_pk, s_pk, sig).to_bytes()

    # ------------------------------------------------------------------------------------------
    # round 1: ShareKeys
    # ------------------------------------------------------------------------------------------
    def share_keys(self, data: bytes) -> bytes:
        """Round 1: check the key list, share ``s_sk_u`` and ``b_u``, upload the encrypted shares."""
        return self._run("share_keys", self._share_keys, data)

    def _share_keys(self, data: bytes) -> bytes:
        msg = KeyList.from_bytes(data)
        self._check_header(msg, "advertise-keys")
        if msg.signed != self.active:
            raise ProtocolViolation("key list signatures do not match the variant")
        ids = [e.id for e in msg.entries]
        outside = [i for i in ids if i not in self._neighbourhood]
        if outside:
            raise ProtocolViolation(f"key list contains non-neighbours {outside[:5]}")
        mine = [e for e in msg.entries if e.id == self.id]
        assert self._c is not None and self._s is not None
        if not mine or mine[0].c_pk != self._c.public_bytes or mine[0].s_pk != self._s.public_bytes:
            raise ProtocolViolation("the key list does not hold this client's own public keys unchanged")
        rules.require("share-keys", len(ids), self.threshold, "|U1|", self.id)
        all_keys = [k for e in msg.entries for k in (e.c_pk, e.s_pk)]
        if len(set(all_keys)) != len(all_keys):
            raise ProtocolViolation("advertised public keys are not pairwise distinct")
        if self.active:
            for e in msg.entries:
                pk = self._pki.get(e.id)
                if pk is None:
                    raise ProtocolViolation(f"client {e.id} is not registered in the PKI")
                assert e.signature is not None
                keys.verify_signature(pk, e.signature, advertise_payload(self.session, e.id, e.c_pk, e.s_pk))
        self._peers = {e.id: (e.c_pk, e.s_pk) for e in msg.entries if e.id != self.id}
        holders = sorted(ids)
        self.views["U1"] = frozenset(holders)
        b = self._drbg.child(b"self-mask-seed").bytes(32)
        self._b = b
        key_shares = shamir.split(self._s.private_bytes, self.threshold, holders, self._drbg.child(b"shamir-s_sk"))
        b_shares = shamir.split(b, self.threshold, holders, self._drbg.child(b"shamir-b"))
        self._own_shares = (key_shares[self.id], b_shares[self.id])
        nonces = self._drbg.child(b"nonces")
        out = []
        self._recv_keys = {}
        for v in holders:
            if v == self.id:
                continue
            send, recv = channel_keys(self._c, self._peers[v][0], session=self.session, me=self.id, peer=v)
            self._recv_keys[v] = recv
            pt = SharePlaintext(self.id, v, self.session, key_shares[v], b_shares[v]).to_bytes()
            out.append((v, keys.seal(send, pt, aad=share_aad(self.id, v, self.session), nonce=nonces.bytes(keys.NONCE_SIZE))))
        com = com_sig = None
        if self.commit_self_mask:
            com = reconstruct.self_mask_commitment(self.session, self.id, b)
            if self.active:
                assert self._signing_key is not None
                com_sig = self._signing_key.sign(commitment_payload(self.session, self.id, com))
        self.expected_round = Round.MASKED_INPUT
        return ShareKeys("share-keys", self.session, self.id, tuple(out), com, com_sig).to_bytes()

    # ------------------------------------------------------------------------------------------
    # round 2: MaskedInputCollection
    # ------------------------------------------------------------------------------------------
    def masked_input_collection(self, data: bytes) -> bytes:
        """Round 2: from the routed ciphertexts (= U2), compute and upload ``y_u``."""
        return self._run("masked_input_collection", self._masked_input_collection, data)

    def _masked_input_collection(self, data: bytes) -> bytes:
        msg = Ciphertexts.from_bytes(data)
        self._check_header(msg, "share-keys")
        senders = [v for v, _ in msg.ciphertexts]
        bad = [v for v in senders if v not in self._peers]
        if bad:
            raise ProtocolViolation(f"ciphertexts from clients outside this client's U1 view: {bad[:5]}")
        u2 = frozenset(senders) | {self.id}
        rules.require("masked-input", len(u2), self.threshold, "|U2|", self.id)
        self._ciphertexts = dict(msg.ciphertexts)
        self.views["U2"] = u2
        assert self._s is not None
        m = self.modulus
        x = self._x
        if not isinstance(x, np.ndarray) or x.ndim != 1 or x.dtype != ring.dtype_for(m):
            raise InvalidInput(f"client input must be a 1-D {ring.dtype_for(m)} vector")
        masks = [(self._b, prg.PURPOSE_SELF, 1)]
        for v in senders:
            seed = pairwise_seed(self._s, self._peers[v][1], session=self.session, u=self.id, v=v)
            masks.append((seed, prg.PURPOSE_PAIRWISE, mask_sign(self.id, v)))
        # y_u = x_u + all k + 1 masks, built in one fresh buffer chunk by chunk (x_u is only read: its
        # copy is fused into the first mask's pass; one pass over y per group of masks)
        y = np.empty(x.shape[0], dtype=x.dtype)
        prg.add_masks(y, masks, session=self.session, modulus=m, base=x)
        self._x = None  # the input is no longer needed
        self._b = None
        payload = ring.pack_view(y, m)  # widths 8/16/32/64: a view of y, copied once into the message
        self.expected_round = Round.CONSISTENCY_CHECK if self.active else Round.UNMASKING
        return MaskedInput("masked-input", self.session, self.id, self.dim, ring.bit_width(m), payload).to_bytes()

    # ------------------------------------------------------------------------------------------
    # round 3: ConsistencyCheck (active variant)
    # ------------------------------------------------------------------------------------------
    def consistency_check(self, data: bytes) -> bytes:
        """Round 3 (active only): sign ``(session, U3)``."""
        if not self.active:
            self._enter("consistency_check")  # raises: not expected in honest-but-curious
        return self._run("consistency_check", self._consistency_check, data)

    def _consistency_check(self, data: bytes) -> bytes:
        if self.params.window_view:
            return self._consistency_check_window(data)
        msg = ConsistencyRequest.from_bytes(data)
        self._check_header(msg, "masked-input")
        want = None if self.graph.is_complete else self.graph.n
        if msg.universe != want:
            form = "an id list" if msg.universe is None else f"a bitmap over {msg.universe} clients"
            expected = "an id list" if want is None else f"a bitmap over the {want} clients"
            raise ProtocolViolation(f"U3 sent as {form}; this graph expects {expected}")
        u3 = msg.survivors
        s3 = frozenset(u3)
        if self.id not in s3:
            raise ProtocolViolation("U3 sent to this client does not contain it")
        if any(i >= self.graph.n for i in u3):
            raise ProtocolViolation("U3 contains unknown client ids")
        self._check_no_stray(s3)
        rules.require("consistency-check", len(u3), self.threshold, "|U3|", self.id)
        # the survivor policy, checked by the client too: a lying server that skipped it would otherwise
        # collect the shares that unmask a component's partial sum (secagg.rules)
        rules.check_survivor_policy("consistency-check", self.graph, s3, self.min_survivors, self.id,
                                    self.params.tolerate)
        self._u3 = u3
        self.views["U3"] = s3
        return self._sign_consistency(consistency_payload(self.session, u3))

    def _consistency_check_window(self, data: bytes) -> bytes:
        """``consistency_view="window"``: U3 on this client's window ``N2[u]`` only, authenticated by Merkle
        paths (:mod:`secagg.survivor_tree`); the local survivor rules; sign ``(session, n, root)``."""
        msg = ConsistencyProof.from_bytes(data)
        self._check_header(msg, "masked-input")
        n = self.graph.n
        if msg.universe != n:
            raise ProtocolViolation(f"survivor proof over {msg.universe} clients; this session has {n}")
        want = survivor_tree.window_leaves(self.graph, self.id)
        if len(msg.leaves) != len(want):
            raise ProtocolViolation(f"survivor proof with {len(msg.leaves)} leaves; this client's window needs {len(want)}")
        root = survivor_tree.root_from_proof(self.session, n, want, msg.leaves, msg.paths)
        s3 = survivor_tree.survivors_in_window(self.graph, self.id, msg.leaves)
        if self.id not in s3:
            raise ProtocolViolation("U3 sent to this client does not contain it")
        self._check_no_stray(s3)
        rules.check_window_policy("consistency-check", self.graph, self.id, s3, self.threshold)
        self._u3 = tuple(sorted(s3))
        self.views["U3"] = s3
        return self._sign_consistency(consistency_root_payload(self.session, n, root))

    def _check_no_stray(self, s3: frozenset[int]) -> None:
        """Every neighbour in the U3 this client is sent shared keys with it (it is in its U2)."""
        u2 = self.views["U2"]
        stray = sorted(v for v in s3 if v in self._neighbourhood and v not in u2)
        if stray:
            raise ProtocolViolation(f"U3 holds neighbours {stray[:5]} that never shared keys with this client")

    def _sign_consistency(self, payload: bytes) -> bytes:
        assert self._signing_key is not None
        self._signed_payload = payload
        sig = self._signing_key.sign(payload)
        self.expected_round = Round.UNMASKING
        return ConsistencySignature("consistency-check", self.session, self.id, sig).to_bytes()

    # ------------------------------------------------------------------------------------------
    # round 4: Unmasking
    # ------------------------------------------------------------------------------------------
    def unmasking(self, data: bytes) -> bytes:
        """Round 4: check the request, decrypt the shares, reveal ``b_v`` (survivors) or ``s_sk_v`` (dropped)."""
        return self._run("unmasking", self._unmasking, data)

    def _unmasking(self, data: bytes) -> bytes:
        msg = UnmaskingRequest.from_bytes(data)
        self._check_header(msg, "consistency-check" if self.active else "masked-input")
        u2 = self.views["U2"]
        surv, drop = frozenset(msg.survivors), frozenset(msg.dropped)
        both = surv & drop
        if both:
            raise ProtocolViolation(f"server asked for both the b and the s_sk share of clients {sorted(both)[:5]}")
        already = [v for v in surv if "s_sk" in self.released.get(v, ())] + [v for v in drop if "b" in self.released.get(v, ())]
        if already:
            raise ProtocolViolation(f"server asks for the second share type of clients {sorted(already)[:5]}")
        if self.id in drop or self.id not in surv:
            raise ProtocolViolation("server declares this (live) client dropped")
        if surv | drop != u2:
            raise ProtocolViolation("unmasking request does not partition this client's view of U2")
        if self.active:
            assert self._u3 is not None
            u3 = frozenset(self._u3)
            sig_ids = [v for v, _ in msg.signatures]
            signers = frozenset(sig_ids)
            if not signers <= u3:
                raise InconsistentView("U4 (signers) is not a subset of the U3 this client signed")
            if not self.graph.is_complete:
                # SecAgg+: only the holders of this client's peers' shares matter (N2[u], O(k) of them)
                outside = sorted(signers - self.graph.two_hop_neighbourhood(self.id))
                if outside:
                    raise ProtocolViolation(f"signatures of clients {outside[:5]} outside this client's two-hop neighbourhood")
            # per peer v to reveal a share of: t signers among N(v) ∪ {v} (complete graph: |U4| >= t)
            rules.check_signers("unmasking", self.graph, u2, signers, self.threshold, self.id)
            payload = self._signed_payload
            for v, sig in msg.signatures:
                pk = self._pki.get(v)
                if pk is None:
                    raise InconsistentView(f"signer {v} is not registered in the PKI")
                try:
                    keys.verify_signature(pk, sig, payload)
                except SignatureInvalid:
                    raise InconsistentView(f"client {v} signed a different U3 (or the signature is forged)") from None
            declared_dead = sorted(drop & u3)
            if declared_dead:
                raise ProtocolViolation(f"server declares clients {declared_dead[:5]} dropped although they are in the signed U3")
            if surv != u3 & u2:
                raise InconsistentView("unmasking request disagrees with the signed U3")
            self.views["U4"] = signers
        else:
            self.views["U3"] = surv
            self.views["U4"] = surv
        rules.require("unmasking", len(surv), self.threshold, "|U3 ∩ (N(u) ∪ {u})|", self.id)
        # decrypt everything addressed to us (Figure 4, round 4, user step 3)
        assert self._c is not None and self._own_shares is not None
        plain: dict[int, SharePlaintext] = {}
        for v, sealed in sorted(self._ciphertexts.items()):
            pt = keys.open_sealed(self._recv_keys[v], sealed, aad=share_aad(v, self.id, self.session))
            try:
                p = SharePlaintext.from_bytes(pt)
            except MalformedMessage:
                raise DecryptionFailed(f"share plaintext from client {v} is malformed") from None
            if p.sender != v or p.receiver != self.id or p.session != self.session:
                raise DecryptionFailed(f"share from client {v} carries header ({p.sender}, {p.receiver}) for another channel or session")
            plain[v] = p
        b_out, k_out = [], []
        for v in sorted(surv):
            b_out.append((v, self._own_shares[1] if v == self.id else plain[v].b_share))
        for v in sorted(drop):
            k_out.append((v, plain[v].key_share))
        for v, _ in b_out:
            self.released.setdefault(v, set()).add("b")
        for v, _ in k_out:
            self.released.setdefault(v, set()).add("s_sk")
        self.expected_round = None
        self._ciphertexts = {}
        self._recv_keys = {}
        return UnmaskingResponse("unmasking", self.session, self.id, tuple(b_out), tuple(k_out)).to_bytes()
