"""Robust reconstruction: wrong Shamir shares sent in round 4 are corrected (and their senders recorded)
or make the server abort; a wrong sum is never released.

The attack: a client answers the unmasking request with a well-formed share that is not the one it
received (a field element off by delta). Reconstructing from the t smallest ids, as the paper's server
does, the wrong share silently shifts b_u (or s_sk_v), so the released "sum" is wrong. The server now
uses all r >= t shares it received: Reed-Solomon decoding corrects floor((r - t) / 2) of them.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg import reconstruct, ring
from secagg.commands.simulate import random_inputs
from secagg.errors import InconsistentShares, InvalidInput, ProtocolAborted
from secagg.messages import UnmaskingResponse
from secagg.protocol import run_secure_aggregation
from secagg.reconstruct import WrongShare
from secagg.shamir import PRIME

M = 2**16


def _plain(xs, ids) -> np.ndarray:  # noqa: ANN001
    acc = ring.zeros(xs[0].shape[0], M)
    for u in ids:
        ring.add_into(acc, xs[u], M)
    return acc


def _corrupt(cheaters: dict[int, set[tuple[str, int]] | str], delta: int = 12345):  # noqa: ANN202
    """Interceptor: each cheater adds ``delta`` to its shares of the listed ``(kind, owner)`` secrets
    (``"all"``: every share it reveals). The result stays a well-formed field element."""

    def bump(pairs, kind):  # noqa: ANN001, ANN202
        out = []
        for v, sh in pairs:
            if targets == "all" or (kind, v) in targets:
                sh = ((int.from_bytes(sh, "big") + delta) % PRIME).to_bytes(len(sh), "big")
            out.append((v, sh))
        return tuple(out)

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        nonlocal targets
        if rnd == "unmasking" and direction == "up" and client in cheaters:
            targets = cheaters[client]
            msg = UnmaskingResponse.from_bytes(data)
            return dataclasses.replace(msg, b_shares=bump(msg.b_shares, "b"), key_shares=bump(msg.key_shares, "s_sk")).to_bytes()
        return data

    targets: set[tuple[str, int]] | str = set()
    return hook


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_one_wrong_b_share_is_corrected_and_its_sender_recorded(variant: str) -> None:
    # client 0 has the smallest id: the paper's t-smallest-ids reconstruction would use its share
    xs = random_inputs(7, 5, M, 3)
    res = run_secure_aggregation(
        xs, modulus=M, threshold=5, variant=variant, seed=4, interceptor=_corrupt({0: {("b", 4)}})
    )
    assert np.array_equal(res.sum, _plain(xs, res.included))
    assert res.wrong_shares == (WrongShare(0, "b", 4),)
    assert res.cheaters == {0}


def test_one_wrong_mask_key_share_is_corrected() -> None:
    xs = random_inputs(7, 5, M, 5)
    res = run_secure_aggregation(
        xs, modulus=M, threshold=4, seed=6, dropouts={6: "masked-input"}, interceptor=_corrupt({1: {("s_sk", 6)}})
    )
    assert 6 not in res.included
    assert np.array_equal(res.sum, _plain(xs, res.included))
    assert res.wrong_shares == (WrongShare(1, "s_sk", 6),)


def test_wrong_share_on_the_secagg_plus_graph_is_corrected() -> None:
    xs = random_inputs(12, 4, M, 7)
    res = run_secure_aggregation(xs, modulus=M, graph="secagg+", neighbours=6, threshold=4, seed=8)
    # a holder of some b_u: any u whose closed neighbourhood contains client 0
    u = min(v for v in range(1, 12) if 0 in res.graph.neighbours(v))
    res = run_secure_aggregation(
        xs, modulus=M, graph="secagg+", neighbours=6, threshold=4, seed=8, interceptor=_corrupt({0: {("b", u)}})
    )
    assert np.array_equal(res.sum, _plain(xs, res.included))
    assert res.wrong_shares == (WrongShare(0, "b", u),)


def test_a_caught_sender_is_ignored_afterwards(monkeypatch: pytest.MonkeyPatch) -> None:
    # client 2 corrupts every share it reveals; once caught on the first secret, its shares of the
    # others are left out (the server decodes once, then the remaining shares are all consistent)
    calls = []
    real = reconstruct.decode
    monkeypatch.setattr(reconstruct, "decode", lambda *a, **k: calls.append(1) or real(*a, **k))
    xs = random_inputs(8, 3, M, 9)
    res = run_secure_aggregation(xs, modulus=M, threshold=5, seed=10, interceptor=_corrupt({2: "all"}))
    assert np.array_equal(res.sum, _plain(xs, res.included))
    assert res.wrong_shares == (WrongShare(2, "b", 0),)
    assert len(calls) == 1


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_wrong_shares_beyond_the_decoding_radius_abort(variant: str) -> None:
    # n = 7, t = 5, all respond: r = 7, radius floor(2 / 2) = 1; two cheaters on the same secret
    xs = random_inputs(7, 5, M, 11)
    with pytest.raises(InconsistentShares) as err:
        run_secure_aggregation(
            xs, modulus=M, threshold=5, variant=variant, seed=12, interceptor=_corrupt({0: {("b", 3)}, 1: {("b", 3)}})
        )
    assert err.value.round == "unmasking" and isinstance(err.value, ProtocolAborted)
    assert "b_3" in err.value.reason


def test_no_redundancy_no_correction_but_the_mask_key_is_still_checked() -> None:
    # r = t: nothing to decode with; a wrong s_sk share is still caught by the s_pk check
    xs = random_inputs(5, 4, M, 13)
    with pytest.raises(InconsistentShares, match="s_pk"):
        run_secure_aggregation(
            xs, modulus=M, threshold=4, seed=14, dropouts={4: "masked-input"}, interceptor=_corrupt({0: {("s_sk", 4)}})
        )


# ------------------------------------------------------------------------------------------------
# the decoder on its own
# ------------------------------------------------------------------------------------------------
def _shares(rng: random.Random, t: int, ids: list[int]) -> tuple[list[int], dict[int, int]]:
    coeffs = [rng.randrange(PRIME) for _ in range(t)]
    return coeffs, {i: reconstruct._eval(coeffs, i + 1, PRIME) for i in ids}


@settings(max_examples=60)
@given(st.integers(1, 7), st.integers(0, 9), st.integers(0, 2**32), st.data())
def test_recover_corrects_every_error_pattern_within_the_radius(t: int, extra: int, seed: int, data) -> None:  # noqa: ANN001
    rng = random.Random(seed)
    r = t + extra
    ids = sorted(rng.sample(range(3 * r + 1), r))
    coeffs, pts = _shares(rng, t, ids)
    e = data.draw(st.integers(0, extra // 2))
    bad = sorted(data.draw(st.lists(st.sampled_from(ids), min_size=e, max_size=e, unique=True)))
    for i in bad:
        pts[i] = (pts[i] + rng.randrange(1, PRIME)) % PRIME
    out = reconstruct.recover(pts, t, rng.randrange(PRIME))
    assert out.secret == coeffs[0]
    assert out.wrong == tuple(bad)


@settings(max_examples=40)
@given(st.integers(1, 6), st.integers(1, 9), st.integers(0, 2**32), st.data())
def test_recover_refuses_random_errors_beyond_the_radius(t: int, extra: int, seed: int, data) -> None:  # noqa: ANN001
    # e in (radius, r - t]: no codeword is within the radius of the word, except with probability
    # about p^-1 per pattern for random error values, so the decoder must refuse
    rng = random.Random(seed)
    r = t + extra
    ids = sorted(rng.sample(range(3 * r + 1), r))
    _, pts = _shares(rng, t, ids)
    e = data.draw(st.integers(extra // 2 + 1, extra))
    for i in data.draw(st.lists(st.sampled_from(ids), min_size=e, max_size=e, unique=True)):
        pts[i] = (pts[i] + rng.randrange(1, PRIME)) % PRIME
    with pytest.raises(InconsistentShares):
        reconstruct.recover(pts, t, rng.randrange(PRIME))


def test_the_fast_check_accepts_codewords_and_rejects_one_error_at_any_position() -> None:
    rng = random.Random(0)
    t, ids = 4, list(range(10))
    xs = tuple(i + 1 for i in ids)
    rho = rng.randrange(PRIME)
    w = reconstruct.check_weights(xs, t, rho)
    for _ in range(5):
        _, pts = _shares(rng, t, ids)
        ys = [pts[i] for i in ids]
        assert sum(a * b for a, b in zip(w, ys)) % PRIME == 0
        for j in range(len(ys)):
            bad = list(ys)
            bad[j] = (bad[j] + 1) % PRIME
            assert sum(a * b for a, b in zip(w, bad)) % PRIME != 0


def test_recover_needs_t_points() -> None:
    with pytest.raises(InvalidInput):
        reconstruct.recover({0: 1, 1: 2}, 3, 5)


def test_the_challenge_depends_on_every_share() -> None:
    base = [b"\x00\x00\x00\x01" + bytes(40), b"\x00\x00\x00\x02" + bytes(40)]
    rho = reconstruct.challenge(bytes(16), base)
    assert rho != reconstruct.challenge(bytes(16), [base[0], base[1][:-1] + b"\x01"])
    assert rho != reconstruct.challenge(b"\x01" * 16, base)


def test_the_papers_t_smallest_rule_is_silently_wrong_where_decoding_is_right() -> None:
    # the attack in isolation: one wrong share among the t smallest ids shifts the secret, no error
    from secagg import shamir
    from secagg.drbg import Drbg

    secret = bytes(range(32))
    shares = shamir.split(secret, 3, list(range(6)), Drbg(1, b"test"))
    bad = dict(shares)
    bad[0] = ((int.from_bytes(bad[0], "big") + 1) % PRIME).to_bytes(33, "big")
    assert shamir.reconstruct(bad, 3, 32) != secret  # no exception: the corruption goes unnoticed
    got = reconstruct.recover({i: int.from_bytes(s, "big") for i, s in bad.items()}, 3, 7)
    assert got.secret == int.from_bytes(secret, "big") and got.wrong == (0,)


# ------------------------------------------------------------------------------------------------
# self-mask commitments (opt-in)
# ------------------------------------------------------------------------------------------------
def _coordinated(owner: int, honest: list[int], cheaters: list[int], delta: int = 99):  # noqa: ANN202
    """Interceptor: the cheaters shift their shares of b_owner by ``h(x_w)``, where ``h`` has degree
    ``len(honest) = t - 1``, vanishes at the honest holders' points and ``h(0) = delta``: the received
    word is again a codeword (the check passes), of a different secret."""
    hx = [i + 1 for i in honest]

    def h(x: int) -> int:
        num, den = 1, 1
        for xj in hx:
            num = num * (x - xj) % PRIME
            den = den * (0 - xj) % PRIME
        return delta * num * pow(den, -1, PRIME) % PRIME

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if rnd == "unmasking" and direction == "up" and client in cheaters:
            msg = UnmaskingResponse.from_bytes(data)
            b = tuple(
                (v, ((int.from_bytes(sh, "big") + h(client + 1)) % PRIME).to_bytes(33, "big") if v == owner else sh)
                for v, sh in msg.b_shares
            )
            return dataclasses.replace(msg, b_shares=b).to_bytes()
        return data

    return hook


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_coordinated_wrong_shares_need_the_commitment(variant: str) -> None:
    # n = 7, t = 5: three colluding holders shift b_6 along a polynomial that vanishes at the other
    # t - 1 = 4 holders; the seven shares are a codeword of a wrong b_6
    xs = random_inputs(7, 5, M, 15)
    hook = _coordinated(6, honest=[3, 4, 5, 6], cheaters=[0, 1, 2])
    off = run_secure_aggregation(xs, modulus=M, threshold=5, variant=variant, seed=16, interceptor=hook)
    assert not np.array_equal(off.sum, _plain(xs, off.included))  # the documented gap without it
    assert off.wrong_shares == ()
    with pytest.raises(InconsistentShares, match="commitment"):
        run_secure_aggregation(xs, modulus=M, threshold=5, variant=variant, seed=16, interceptor=hook, commit_self_masks=True)


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_commitments_on_still_give_the_sum_and_correct_single_errors(variant: str) -> None:
    xs = random_inputs(7, 5, M, 17)
    res = run_secure_aggregation(
        xs, modulus=M, threshold=5, variant=variant, seed=18, commit_self_masks=True, interceptor=_corrupt({3: {("b", 0)}})
    )
    assert np.array_equal(res.sum, _plain(xs, res.included))
    assert res.wrong_shares == (WrongShare(3, "b", 0),)


def test_a_forged_commitment_signature_drops_that_client() -> None:
    from secagg.errors import SignatureInvalid
    from secagg.messages import ShareKeys

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if rnd == "share-keys" and direction == "up" and client == 2:
            msg = ShareKeys.from_bytes(data)
            com = bytes([msg.commitment[0] ^ 1]) + msg.commitment[1:]
            return dataclasses.replace(msg, commitment=com).to_bytes()
        return data

    xs = random_inputs(7, 5, M, 19)
    res = run_secure_aggregation(xs, modulus=M, threshold=5, variant="active", seed=20, commit_self_masks=True, interceptor=hook)
    assert isinstance(res.rejected[2], SignatureInvalid)
    assert 2 not in res.sets["U2"]
    assert np.array_equal(res.sum, _plain(xs, res.included))


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_a_missing_commitment_is_rejected_when_they_are_on(variant: str) -> None:
    from secagg.errors import ProtocolViolation
    from secagg.messages import ShareKeys

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if rnd == "share-keys" and direction == "up" and client == 1:
            msg = ShareKeys.from_bytes(data)
            return dataclasses.replace(msg, commitment=None, commitment_signature=None).to_bytes()
        return data

    xs = random_inputs(7, 5, M, 21)
    res = run_secure_aggregation(xs, modulus=M, threshold=5, variant=variant, seed=22, commit_self_masks=True, interceptor=hook)
    assert isinstance(res.rejected[1], ProtocolViolation) and 1 not in res.sets["U2"]


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
@pytest.mark.parametrize("graph,k", [("complete", None), ("secagg+", 4)])
def test_ledger_and_closed_form_follow_the_commitment_setting(variant: str, graph: str, k) -> None:  # noqa: ANN001
    from secagg.cost import our_model
    from secagg.messages import share_keys_size

    n, d = 9, 6
    xs = random_inputs(n, d, M, 23)
    kw = dict(modulus=M, variant=variant, seed=24, graph=graph)
    if k:
        kw.update(neighbours=k, threshold=4 if variant == "active" else 3)
    off = run_secure_aggregation(xs, **kw)
    on = run_secure_aggregation(xs, commit_self_masks=True, **kw)
    extra = 32 + (64 if variant == "active" else 0)
    up_off = sum(e.nbytes for e in off.ledger if e.round == "share-keys" and e.direction == "up")
    up_on = sum(e.nbytes for e in on.ledger if e.round == "share-keys" and e.direction == "up")
    assert up_on - up_off == n * extra
    assert share_keys_size(3) == 22 + 4 + 3 * 122  # the paper's format when off
    for res, flag in ((off, False), (on, True)):
        cf = our_model(n, d, M, k=None if k is None else k, variant=variant, commit_self_masks=flag)
        assert cf.exact
        assert cf.total_up == sum(e.nbytes for e in res.ledger if e.direction == "up")
        assert cf.total_down == sum(e.nbytes for e in res.ledger if e.direction == "down")
        assert set(res.ledger.upload_per_client().values()) == {cf.upload_per_client}


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_the_modular_backend_prices_commitments_like_the_protocol(variant: str) -> None:
    from secagg.average import secure_average

    x = np.random.default_rng(0).normal(size=(7, 5))
    kw = dict(seed=3, variant=variant, dropouts={2: "masked-input", 5: "unmasking"}, commit_self_masks=True)
    proto = secure_average(x, backend="protocol", **kw)
    mod = secure_average(x, backend="modular", **kw)
    assert proto.ledger == mod.ledger
    assert np.array_equal(proto.average, mod.average)
    plain = secure_average(x, backend="modular", **{**kw, "commit_self_masks": False})
    assert mod.ledger.total() - plain.ledger.total() == 7 * (32 + (64 if variant == "active" else 0))


def test_simulate_cli_takes_the_commitment_flag(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from secagg.cli import main

    assert main(["simulate", "--clients", "6", "--dim", "4", "--variant", "active", "--commit-self-masks", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["ok"] and rep["commit_self_masks"] is True


# ------------------------------------------------------------------------------------------------
# round-0 validation on the server
# ------------------------------------------------------------------------------------------------
# X25519 points of small order (RFC 7748 / libsodium's blocklist): 0, 1 and a point of order 8
_LOW_ORDER = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
]


def _advertise_hook(client: int, edit):  # noqa: ANN001, ANN202
    from secagg.messages import AdvertiseKeys

    def hook(rnd, direction, cid, data):  # noqa: ANN001, ANN202
        if rnd == "advertise-keys" and direction == "up" and cid == client:
            return edit(AdvertiseKeys.from_bytes(data)).to_bytes()
        return data

    return hook


@pytest.mark.parametrize("point", _LOW_ORDER)
@pytest.mark.parametrize("field_name", ["c_pk", "s_pk"])
def test_a_low_order_key_drops_only_its_sender(point: bytes, field_name: str) -> None:
    from secagg.errors import ProtocolViolation

    xs = random_inputs(6, 4, M, 25)
    res = run_secure_aggregation(
        xs, modulus=M, threshold=3, seed=26, interceptor=_advertise_hook(2, lambda m: dataclasses.replace(m, **{field_name: point}))
    )
    assert isinstance(res.rejected[2], ProtocolViolation)
    assert res.sets["U1"] == frozenset({0, 1, 3, 4, 5}) and res.client_errors == {}
    assert np.array_equal(res.sum, _plain(xs, res.included))


def test_duplicated_keys_drop_every_advertiser_of_the_key() -> None:
    from secagg.messages import AdvertiseKeys

    grabbed: dict[int, AdvertiseKeys] = {}

    def hook(rnd, direction, cid, data):  # noqa: ANN001, ANN202
        if rnd == "advertise-keys" and direction == "up":
            msg = AdvertiseKeys.from_bytes(data)
            grabbed[cid] = msg
            if cid == 4:  # client 4 copies client 1's mask key
                return dataclasses.replace(msg, s_pk=grabbed[1].s_pk).to_bytes()
            if cid == 5:  # client 5 uses one key for both purposes
                return dataclasses.replace(msg, s_pk=msg.c_pk).to_bytes()
        return data

    xs = random_inputs(8, 4, M, 27)
    res = run_secure_aggregation(xs, modulus=M, threshold=3, seed=28, interceptor=hook)
    assert res.sets["U1"] == frozenset({0, 2, 3, 6, 7}) and res.client_errors == {}
    assert set(res.rejected) == {1, 4, 5}
    assert np.array_equal(res.sum, _plain(xs, res.included))


def test_a_mis_signed_advertisement_drops_only_its_sender() -> None:
    from secagg.errors import SignatureInvalid

    def forge(m):  # noqa: ANN001, ANN202
        return dataclasses.replace(m, signature=bytes([m.signature[0] ^ 1]) + m.signature[1:])

    xs = random_inputs(7, 4, M, 29)
    res = run_secure_aggregation(xs, modulus=M, threshold=5, variant="active", seed=30, interceptor=_advertise_hook(3, forge))
    assert isinstance(res.rejected[3], SignatureInvalid) and 3 not in res.sets["U1"]
    assert res.client_errors == {}
    assert np.array_equal(res.sum, _plain(xs, res.included))


def test_too_many_bad_keys_still_abort_in_round_0() -> None:
    xs = random_inputs(5, 4, M, 31)

    def hook(rnd, direction, cid, data):  # noqa: ANN001, ANN202
        from secagg.messages import AdvertiseKeys

        if rnd == "advertise-keys" and direction == "up" and cid < 3:
            return dataclasses.replace(AdvertiseKeys.from_bytes(data), c_pk=bytes(32)).to_bytes()
        return data

    with pytest.raises(ProtocolAborted) as err:
        run_secure_aggregation(xs, modulus=M, threshold=3, seed=32, interceptor=hook)
    assert err.value.round == "advertise-keys"


# ------------------------------------------------------------------------------------------------
# the whole protocol under random wrong-share patterns
# ------------------------------------------------------------------------------------------------
@settings(max_examples=20)
@given(st.integers(4, 8), st.data())
def test_random_wrong_shares_within_the_radius_are_corrected_end_to_end(n: int, data) -> None:  # noqa: ANN001
    t = data.draw(st.integers(2, n))
    radius = (n - t) // 2  # every client responds: r = n shares of each b
    cheaters = data.draw(st.lists(st.integers(0, n - 1), max_size=radius, unique=True))
    targets = {c: data.draw(st.integers(0, n - 1)) for c in cheaters}
    xs = random_inputs(n, 3, M, n + t)
    res = run_secure_aggregation(xs, modulus=M, threshold=t, seed=t, interceptor=_corrupt({c: {("b", o)} for c, o in targets.items()}))
    assert np.array_equal(res.sum, _plain(xs, res.included))
    assert set(res.wrong_shares) == {WrongShare(c, "b", o) for c, o in targets.items()}


@settings(max_examples=20)
@given(st.integers(4, 8), st.data())
def test_with_commitments_any_wrong_shares_give_the_sum_or_an_abort(n: int, data) -> None:  # noqa: ANN001
    # any number of cheaters, any targets, coordinated or not: never a wrong sum
    t = data.draw(st.integers(2, n))
    cheaters = data.draw(st.lists(st.integers(0, n - 1), min_size=1, max_size=n - 1, unique=True))
    owner = data.draw(st.integers(0, n - 1))
    honest = [v for v in range(n) if v not in cheaters][: t - 1]
    coordinated = data.draw(st.booleans()) and len(honest) == t - 1
    hook = _coordinated(owner, honest, cheaters) if coordinated else _corrupt({c: {("b", owner)} for c in cheaters})
    xs = random_inputs(n, 3, M, 2 * n + t)
    try:
        res = run_secure_aggregation(xs, modulus=M, threshold=t, seed=t + 1, interceptor=hook, commit_self_masks=True)
    except InconsistentShares:
        return
    assert np.array_equal(res.sum, _plain(xs, res.included))
