"""Tests written to fail when a security-critical line is broken (see ``python -m protocol_tests.mutation``).

Each test names the mutation it kills. They are attacks: a lying server or a broken invariant that an
adversary could exploit if the guarded check were missing.
"""

from __future__ import annotations

import dataclasses

import pytest

from secagg import shamir
from secagg.commands.simulate import random_inputs
from secagg.errors import InconsistentView, ProtocolAborted
from secagg.messages import UnmaskingRequest, consistency_payload
from secagg.protocol import Session
from secagg.server import Server

M = 2**16


# ------------------------------------------------------------------------------------------------
# mutation: a client verifies only the first forwarded round-3 signature
# ------------------------------------------------------------------------------------------------
class ForgeLastSignature(Server):
    """Forwards every genuine signature but replaces the *last* one with a signature by the same
    client over a different U3 (the first ones verify, so checking only those misses it)."""

    session_obj: Session | None = None

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        if not msg.signatures:
            return msg
        last, _ = msg.signatures[-1]
        key = type(self).session_obj.clients[last]._signing_key  # the test plays the colluding signer's key
        other_u3 = tuple(v for v in self.sets["U3"] if v != 0)
        forged = key.sign(consistency_payload(self.session, other_u3))
        return dataclasses.replace(msg, signatures=msg.signatures[:-1] + ((last, forged),))


def test_every_forwarded_signature_is_verified_not_just_the_first() -> None:
    session = Session(random_inputs(7, 4, M, 1), modulus=M, threshold=5, seed=2, variant="active", server_class=ForgeLastSignature)
    ForgeLastSignature.session_obj = session
    with pytest.raises(ProtocolAborted):
        session.run()
    assert all(isinstance(c.aborted, InconsistentView) for c in session.clients.values())
    assert all(not c.released for c in session.clients.values())


# ------------------------------------------------------------------------------------------------
# mutation: the s_sk and b sharings use the same polynomial randomness
# ------------------------------------------------------------------------------------------------
def test_the_two_sharings_of_a_client_use_independent_polynomials(monkeypatch: pytest.MonkeyPatch) -> None:
    # with the same coefficients a_1..a_{t-1}, share(s_sk)_v - share(b)_v = s_sk - b for every holder v:
    # any single holder learns s_sk_u - b_u, and once b_u is reconstructed (u survives) the server can
    # get s_sk_u from one colluding holder and strip every mask off y_u
    calls: list[dict[int, bytes]] = []
    real = shamir.split

    def spy(secret, threshold, party_ids, drbg):  # noqa: ANN001, ANN202
        out = real(secret, threshold, party_ids, drbg)
        calls.append(out)
        return out

    monkeypatch.setattr(shamir, "split", spy)
    Session(random_inputs(6, 3, M, 3), modulus=M, threshold=3, seed=4).run()
    assert len(calls) == 12  # two sharings per client, s_sk first
    p = shamir.PRIME
    for key_sh, b_sh in zip(calls[0::2], calls[1::2]):
        diffs = {(int.from_bytes(key_sh[v], "big") - int.from_bytes(b_sh[v], "big")) % p for v in key_sh}
        assert len(diffs) == len(key_sh)  # a constant difference would be the secret difference


# ------------------------------------------------------------------------------------------------
# mutation: the consistency signature is not bound to the session
# ------------------------------------------------------------------------------------------------
def test_consistency_signatures_are_bound_to_the_session() -> None:
    u3 = (0, 1, 2, 3, 4)
    assert consistency_payload(bytes(16), u3) != consistency_payload(b"\x01" * 16, u3)


class ReplayFromOtherSession(Server):
    """Replaces client 2's signature by its signature over the *same* U3 in another session (what a
    server that ran an earlier session with these clients holds)."""

    session_obj: Session | None = None

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        key = type(self).session_obj.clients[2]._signing_key
        old = key.sign(consistency_payload(bytes(16), tuple(sorted(self.sets["U3"]))))
        return dataclasses.replace(msg, signatures=tuple((v, old if v == 2 else s) for v, s in msg.signatures))


def test_a_signature_replayed_from_another_session_is_refused() -> None:
    session = Session(random_inputs(7, 4, M, 5), modulus=M, threshold=5, seed=6, variant="active", server_class=ReplayFromOtherSession)
    assert session.session != bytes(16)
    ReplayFromOtherSession.session_obj = session
    with pytest.raises(ProtocolAborted):
        session.run()
    assert all(isinstance(c.aborted, InconsistentView) for c in session.clients.values())


# ------------------------------------------------------------------------------------------------
# mutation: the server's early reconstructibility checks are removed
# ------------------------------------------------------------------------------------------------
def _starved_schedule(n: int, k: int, t: int, seed: int, rnd: str, variant: str) -> tuple[int, dict[int, str]]:
    """A victim u and a schedule dropping all but t - 2 of u's neighbours at ``rnd``: |U_r| stays >= t
    but b_u has only t - 1 live holders left (u and t - 2 neighbours)."""
    g = Session(random_inputs(n, 2, M, 0), modulus=M, graph="secagg+", neighbours=k, threshold=t, seed=seed, variant=variant,
                dropout_fraction=0.5).graph
    u = 0
    nbrs = sorted(g.neighbours(u))
    return u, {v: rnd for v in nbrs[t - 2 :]}


@pytest.mark.parametrize(
    "variant,rnd,t",
    [("honest-but-curious", "masked-input", 3), ("active", "consistency-check", 5)],
)
def test_the_server_aborts_before_asking_for_shares_it_cannot_use(variant: str, rnd: str, t: int) -> None:
    # without the check the server would send unmasking requests, the other clients would reveal
    # their shares of every survivor's b, and the run would abort anyway one round later
    n, k, seed = 14, 6, 7
    victim, drops = _starved_schedule(n, k, t, seed, rnd, variant)
    # declared for up to half the clients dropping, so the survivor policy (|U3| >= ceil((1 - delta) n),
    # G[U3] connected) holds and the reconstructibility check is the one that must stop the run (active:
    # t = 5 > k/2 + 1, as a survivor bound of n / 2 requires, secagg.rules.check_interleaving_threshold)
    session = Session(
        random_inputs(n, 3, M, 8), modulus=M, graph="secagg+", neighbours=k, threshold=t, seed=seed, variant=variant, dropouts=drops,
        dropout_fraction=0.5,
    )
    with pytest.raises(ProtocolAborted) as err:
        session.run()
    assert err.value.party is None and err.value.round == rnd
    assert f"client {victim}" in err.value.reason
    assert all(not c.released for c in session.clients.values())
    assert not any(e.kind == "unmasking-request" for e in err.value.ledger)


# ------------------------------------------------------------------------------------------------
# mutation: the server forwards round-3 signatures without verifying them
# ------------------------------------------------------------------------------------------------
def test_a_bad_consistency_signature_drops_its_sender_not_the_session() -> None:
    # forwarded, one bad signature would make every honest client abort (InconsistentView); the
    # server verifies each one and drops the sender instead
    from secagg.errors import SignatureInvalid
    from secagg.messages import ConsistencySignature
    from secagg.protocol import run_secure_aggregation

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if rnd == "consistency-check" and direction == "up" and client == 2:
            msg = ConsistencySignature.from_bytes(data)
            return dataclasses.replace(msg, signature=bytes([msg.signature[0] ^ 1]) + msg.signature[1:]).to_bytes()
        return data

    xs = random_inputs(7, 4, M, 9)
    res = run_secure_aggregation(xs, modulus=M, threshold=5, seed=10, variant="active", interceptor=hook)
    assert isinstance(res.rejected[2], SignatureInvalid) and 2 not in res.sets["U4"]
    assert 2 in res.included and res.client_errors == {}


# ------------------------------------------------------------------------------------------------
# mutation: a client accepts a request that declares it dropped
# ------------------------------------------------------------------------------------------------
class DeclareRecipientDead(Server):
    """Asks client 3 for the s_sk share of client 3 itself (the key it never shares with itself: a
    live client's s_sk with its b would unmask x_3)."""

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        if u == 3:
            return dataclasses.replace(
                msg, survivors=tuple(v for v in msg.survivors if v != 3), dropped=tuple(sorted(msg.dropped + (3,)))
            )
        return msg


@pytest.mark.parametrize("variant,t", [("honest-but-curious", 3), ("active", 5)])
def test_a_client_declared_dropped_refuses_and_reveals_nothing(variant: str, t: int) -> None:
    from secagg.errors import ProtocolViolation

    session = Session(random_inputs(7, 4, M, 11), modulus=M, threshold=t, seed=12, variant=variant, server_class=DeclareRecipientDead)
    session.run()  # the other six still unmask
    c = session.clients[3]
    assert isinstance(c.aborted, ProtocolViolation) and "dropped" in str(c.aborted)
    assert c.released == {}


# ------------------------------------------------------------------------------------------------
# mutation: a client does not compare the request with the U3 it signed
# ------------------------------------------------------------------------------------------------
class HideThenAskBoth(Server):
    """Has everyone sign a U3 without client 1 (whose y_1 it did receive), asks even clients for
    s_sk_1 (consistent with the signed U3) and odd clients for b_1 (not): both would unmask y_1."""

    def consistency_request_for(self, u: int):  # noqa: ANN201
        msg = super().consistency_request_for(u)
        return dataclasses.replace(msg, survivors=tuple(v for v in msg.survivors if v != 1))

    def _signed_u3_for(self, u: int) -> bytes:
        return consistency_payload(self.session, self.consistency_request_for(u).survivors)

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        if u == 1:
            return msg
        if u % 2 == 0:
            return dataclasses.replace(
                msg, survivors=tuple(v for v in msg.survivors if v != 1), dropped=tuple(sorted(msg.dropped + (1,)))
            )
        return msg  # 1 stays among the survivors: a b-share request


def test_a_request_disagreeing_with_the_signed_u3_is_refused() -> None:
    session = Session(random_inputs(8, 4, M, 13), modulus=M, threshold=6, seed=14, variant="active", server_class=HideThenAskBoth)
    try:
        session.run()
    except ProtocolAborted:
        pass
    released = set().union(*(c.released.get(1, set()) for u, c in session.clients.items() if u != 1))
    assert released <= {"s_sk"}
    assert all(isinstance(session.clients[u].aborted, InconsistentView) for u in (3, 5, 7))


# ------------------------------------------------------------------------------------------------
# mutation: the server accepts a response that does not answer its request
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("edit", ["drop-one", "extra-key-share"])
def test_a_response_that_does_not_answer_the_request_is_rejected(edit: str) -> None:
    # a client that picks which shares to reveal (fewer, or an s_sk share of a live peer) is refused
    # as a whole; the others still unmask
    from secagg.errors import ProtocolViolation
    from secagg.messages import UnmaskingResponse
    from secagg.protocol import run_secure_aggregation

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if rnd == "unmasking" and direction == "up" and client == 2:
            msg = UnmaskingResponse.from_bytes(data)
            if edit == "drop-one":
                return dataclasses.replace(msg, b_shares=msg.b_shares[1:]).to_bytes()
            v, sh = msg.b_shares[0]
            return dataclasses.replace(msg, key_shares=((v, sh),) + msg.key_shares).to_bytes()
        return data

    xs = random_inputs(7, 4, M, 15)
    res = run_secure_aggregation(xs, modulus=M, threshold=4, seed=16, interceptor=hook)
    assert isinstance(res.rejected[2], ProtocolViolation) and 2 not in res.sets["U5"]


# ------------------------------------------------------------------------------------------------
# mutation: share ciphertexts not bound to their receiver in the associated data
# ------------------------------------------------------------------------------------------------
def test_share_associated_data_follows_the_documented_layout() -> None:
    # secagg.messages documents AAD = "secagg/share/v1" | sender u32 | receiver u32 | session. (A
    # rerouted ciphertext also fails on the per-direction channel key and the plaintext header; this
    # pins the third, independent binding.)
    import struct

    from secagg.messages import share_aad

    session = bytes(range(16))
    assert share_aad(3, 9, session) == b"secagg/share/v1" + struct.pack(">II", 3, 9) + session
    assert share_aad(3, 9, session) != share_aad(3, 8, session)
