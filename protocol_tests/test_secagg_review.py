"""Regression tests of the adversarial review of ``secagg`` (each one failed before its fix).

* active variant: a server that splits the clients into two groups and forwards to each group only the
  signatures of its own group collects both share types of a live client whenever ``2t <= h`` (``h`` =
  holders of a client's shares: ``n``, or ``k + 1`` on SecAgg+). Bonawitz et al. (CCS'17, Sec. 4 and
  Appendix A: active security needs ``2t > n + n_C``) -- such thresholds are now refused up front, and at
  the smallest allowed ``t`` the same attack is stopped before any share is released;
* the server rejects (instead of aborting on) a response carrying a non-canonical Shamir share;
* discretization / secure average: no bare exceptions for tiny clips or huge scales, a finite and
  in-bound average for magnitudes near the float64 range, typed errors for bad parameters, the modular
  backend validating dropouts exactly as the protocol does;
* CLI: bad seeds, odd Harary degrees and bad client ids give a usage message on stderr and a non-zero
  exit code, never a traceback;
* every public name resolves, and neither ``import secagg`` nor any submodule imports torch;
* the server streams masked inputs (one in flight, one accumulator; no n x d matrix).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import pkgutil
import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import secagg
from secagg import ring, shamir
from secagg.cli import main as secagg_main
from secagg.commands.simulate import random_inputs
from secagg.discretize import Quantizer, choose_modulus, offset_for, scale_for_modulus
from secagg.errors import InvalidInput, OverflowRisk, ProtocolAborted, ProtocolViolation, SecAggError
from secagg.messages import UnmaskingRequest, UnmaskingResponse
from secagg.protocol import Session, run_secure_aggregation
from secagg.server import Server

M = 2**16


def _xs(n: int, d: int = 4, seed: int = 0) -> list[np.ndarray]:
    return random_inputs(n, d, M, seed)


def _released(session: Session, victim: int) -> set[str]:
    out: set[str] = set()
    for c in session.clients.values():
        out |= c.released.get(victim, set())
    return out


# ------------------------------------------------------------------------------------------------
# active variant: split view with per-group signatures
# ------------------------------------------------------------------------------------------------
class GroupSplit(Server):
    """Group A = odd ids (victim 1 included) is told U3 = everyone; group B = even ids is told U3 without
    the victim. Each group receives only its own group's signatures, so every signature a client checks
    is genuine and over the U3 it signed: the consistency check alone cannot notice the split."""

    VICTIM = 1

    def _group(self, u: int) -> int:
        return u % 2

    def consistency_request_for(self, u: int):  # noqa: ANN201
        msg = super().consistency_request_for(u)
        if self._group(u) == 0:
            return dataclasses.replace(msg, survivors=tuple(v for v in msg.survivors if v != self.VICTIM))
        return msg

    def unmasking_request_for(self, u: int, round: str) -> UnmaskingRequest:
        msg = super().unmasking_request_for(u, round)
        sigs = tuple((v, s) for v, s in msg.signatures if self._group(v) == self._group(u))
        if self._group(u) == 0:
            return dataclasses.replace(
                msg,
                survivors=tuple(v for v in msg.survivors if v != self.VICTIM),
                dropped=tuple(sorted(msg.dropped + (self.VICTIM,))),
                signatures=sigs,
            )
        return dataclasses.replace(msg, signatures=sigs)


@pytest.mark.parametrize("n,t", [(8, 3), (8, 4), (6, 3), (4, 2)])
def test_active_variant_refuses_thresholds_the_consistency_check_cannot_protect(n: int, t: int) -> None:
    """2t <= n: two disjoint groups of t signers exist, so GroupSplit would obtain b_1 and s_sk_1 (it did
    before the fix); the run is refused before any key is generated."""
    with pytest.raises(InvalidInput, match="2t > "):
        Session(_xs(n), modulus=M, threshold=t, seed=1, variant="active", server_class=GroupSplit)
    with pytest.raises(InvalidInput, match="2t > "):
        run_secure_aggregation(_xs(n), modulus=M, threshold=t, variant="active")
    with pytest.raises(InvalidInput, match="2t > "):
        secagg.secure_average(np.ones((n, 2)), threshold=t, variant="active", backend="modular")
    # the honest party enforces it too (not only the session set-up)
    from secagg.client import Client
    from secagg.drbg import Drbg
    from secagg.graph import complete_graph
    from secagg.keys import SigningKey

    sk = SigningKey.generate(Drbg(0))
    with pytest.raises(InvalidInput, match="2t > "):
        Client(0, ring.zeros(2, M), modulus=M, threshold=t, graph=complete_graph(n), variant="active",
               session=bytes(16), drbg=Drbg(1), pki={0: sk.public_bytes}, signing_key=sk)


def test_active_variant_refuses_small_thresholds_on_secagg_plus() -> None:
    """On SecAgg+ the shares of a client live with its k + 1 holders: 2t > k + 1 is required, and
    2t > k + 2 against the interleaved and island splits (secagg.rules.check_interleaving_threshold)."""
    with pytest.raises(InvalidInput, match="2t > "):
        run_secure_aggregation(_xs(12), modulus=M, threshold=2, graph="secagg+", neighbours=4, variant="active")
    with pytest.raises(InvalidInput, match="2t > k \\+ 2"):
        run_secure_aggregation(_xs(12), modulus=M, threshold=3, graph="secagg+", neighbours=4, variant="active")
    res = run_secure_aggregation(_xs(12), modulus=M, threshold=4, graph="secagg+", neighbours=4, variant="active", seed=2)
    assert res.threshold == 4 and not res.graph.is_complete  # 2 * 4 > 4 + 2
    res = run_secure_aggregation(_xs(12), modulus=M, threshold=2, graph="secagg+", neighbours=4, seed=2)
    assert res.threshold == 2  # honest-but-curious: no such constraint (the server follows the protocol)


@pytest.mark.parametrize("n", [6, 8])
def test_group_split_at_the_smallest_allowed_threshold_releases_nothing(n: int) -> None:
    """With t = floor(n/2) + 1 neither group has t signatures: every client aborts before unmasking."""
    t = n // 2 + 1
    session = Session(_xs(n), modulus=M, threshold=t, seed=3, variant="active", server_class=GroupSplit)
    with pytest.raises(ProtocolAborted) as info:
        session.run()
    assert info.value.round == "unmasking"
    assert all(not c.released for c in session.clients.values())
    assert _released(session, GroupSplit.VICTIM) == set()


# ------------------------------------------------------------------------------------------------
# server: a non-canonical share is a malformed upload, not a reason to abort everyone
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
def test_server_rejects_a_response_with_a_share_outside_the_field(variant: str) -> None:
    xs = _xs(6)

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if rnd == "unmasking" and direction == "up" and client == 2:
            msg = UnmaskingResponse.from_bytes(data)
            bad = ((msg.b_shares[0][0], b"\xff" * shamir.SHARE_SIZE),) + msg.b_shares[1:]
            return dataclasses.replace(msg, b_shares=bad).to_bytes()
        return data

    res = run_secure_aggregation(xs, modulus=M, threshold=4, seed=5, variant=variant, interceptor=hook)
    assert 2 not in res.sets["U5"] and isinstance(res.rejected[2], SecAggError)
    expected = ring.zeros(4, M)
    for u in res.included:
        ring.add_into(expected, xs[u], M)
    assert np.array_equal(res.sum, expected)


# ------------------------------------------------------------------------------------------------
# discretization and secure average
# ------------------------------------------------------------------------------------------------
def test_tiny_clip_and_huge_scale_give_typed_errors_or_valid_parameters() -> None:
    m, s = choose_modulus(3, 1e-300)  # k / c overflows float64: the scale is capped, not inf
    assert math.isfinite(s) and m > 2 * 3 * offset_for(1e-300, s)
    assert math.isfinite(scale_for_modulus(2, 5e-324, 2**64))
    with pytest.raises(OverflowRisk):
        offset_for(10.0, 1e308)
    with pytest.raises(OverflowRisk):
        choose_modulus(2, 10.0, scale=1e308)
    with pytest.raises(OverflowRisk):
        Quantizer("coordinate", 10.0, 1e308, 2**64, 2, 3)
    for clip in (1e-300, 5e-324):
        try:
            secagg.secure_average(np.full((2, 3), clip), seed=1, backend="modular")
        except SecAggError:
            pass  # a typed refusal (below the quantization resolution) is fine; a bare exception is not


@settings(max_examples=25)
@given(
    exponent=st.integers(-300, 307),
    n=st.integers(2, 4),
    signs=st.lists(st.sampled_from([-1.0, 1.0, 0.5, 0.0]), min_size=4, max_size=4),
    log_w=st.lists(st.floats(-12, 0), min_size=4, max_size=4),
    bits=st.sampled_from([32, 64]),
)
def test_average_is_finite_and_within_bound_at_any_magnitude(exponent, n, signs, log_w, bits) -> None:  # noqa: ANN001
    """Values c * sign with c = 10^e (e up to 307: n c overflows float64) and weights spanning 12 decades;
    the error against the exact rational weighted average of the clipped inputs is <= error_bound."""
    c = 1.7976931348623157e308 if exponent == 307 else 10.0**exponent
    x = np.array([[signs[i] * c] for i in range(n)])
    w = np.array([10.0 ** log_w[i] for i in range(n)])
    try:
        res = secagg.secure_average(x, w, seed=exponent & 0xFFFF, clip=c, bits=bits, backend="modular")
    except InvalidInput as exc:  # only the documented refusal: the survivors' weight below the resolution
        assert "quantization resolution" in str(exc)
        return
    assert np.all(np.isfinite(res.average)) and math.isfinite(res.error_bound)
    exact = sum(Fraction(wi) * Fraction(xi) for wi, xi in zip(w, x[:, 0])) / sum(Fraction(wi) for wi in w)
    assert abs(Fraction(float(res.average[0])) - exact) <= Fraction(res.error_bound)


def test_secure_average_bad_parameters_are_typed_and_backends_agree() -> None:
    x = np.ones((3, 2))
    with pytest.raises(InvalidInput):
        secagg.secure_average(x, clip="a", seed=1)
    for backend in ("protocol", "modular"):
        with pytest.raises(InvalidInput):
            secagg.secure_average(x, dropouts=[1], seed=1, backend=backend)
        with pytest.raises(InvalidInput):  # the internal (round index, after) form is not a user schedule
            secagg.secure_average(x, dropouts={0: (1, False)}, seed=1, backend=backend)
        with pytest.raises(InvalidInput):
            secagg.secure_average(x, dropouts={0: (1, 2, 3)}, seed=1, backend=backend)


# ------------------------------------------------------------------------------------------------
# CLI: typed errors, never a traceback
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--seed", "-1", "--dim", "3"],
        ["simulate", "--seed", "x"],
        ["simulate", "--real", "--seed", "-1", "--dim", "3"],
        ["trace", "--seed", "-1"],
        ["simulate", "--drop", "99:unmasking", "--dim", "3"],
        ["simulate", "--modulus-bits", "0"],
        ["simulate", "--clients", "1"],
        ["cost", "-n", "10", "-d", "10", "--graph", "secagg+", "-k", "3"],
        ["simulate", "--clients", "4", "--dim", "3", "--variant", "active", "--threshold", "2"],
    ],
)
def test_cli_bad_values_exit_nonzero_with_a_message(argv: list[str], capsys) -> None:  # noqa: ANN001
    try:
        code = secagg_main(argv)
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and "error" in err and "Traceback" not in err


def test_simulate_function_rejects_a_negative_seed() -> None:
    from secagg.commands.simulate import simulate, simulate_real

    with pytest.raises(InvalidInput):
        simulate(clients=3, dim=2, seed=-1)
    with pytest.raises(InvalidInput):
        simulate_real(clients=3, dim=2, seed=-1)


# ------------------------------------------------------------------------------------------------
# public API and layering
# ------------------------------------------------------------------------------------------------
def test_every_public_name_resolves() -> None:
    for name in secagg.__all__:
        assert getattr(secagg, name) is not None, name
    assert set(secagg._LAZY) <= set(dir(secagg))
    with pytest.raises(AttributeError):
        secagg.no_such_name  # noqa: B018


def test_no_secagg_module_imports_torch() -> None:
    """In a fresh interpreter: import secagg, resolve every public name, import every submodule
    (commands included); torch must not be in sys.modules."""
    names = sorted(m.name for m in pkgutil.walk_packages(secagg.__path__, "secagg."))
    assert "secagg.protocol" in names and "secagg.commands.simulate" in names
    code = (
        "import importlib, sys, secagg\n"
        "[getattr(secagg, n) for n in secagg.__all__]\n"
        f"[importlib.import_module(m) for m in {names!r}]\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_every_submodule_imports_on_its_own() -> None:
    for m in pkgutil.walk_packages(secagg.__path__, "secagg."):
        importlib.import_module(m.name)


# ------------------------------------------------------------------------------------------------
# the server streams: one masked input in flight, one accumulator
# ------------------------------------------------------------------------------------------------
def test_server_streams_masked_inputs_and_keeps_one_accumulator() -> None:
    """Client u computes y_u only after the server consumed y_{u-1} (the uplink is lazy), and after the
    round the server's state holds exactly one d-vector (the accumulator), never an n x d matrix."""
    n, d = 12, 64
    events: list[tuple[str, int]] = []

    class Recorder(Server):
        def masked_input_collection(self, uploads):  # noqa: ANN001, ANN201
            def watch():  # noqa: ANN202
                for cid, data in uploads:
                    events.append(("consumed", cid))
                    yield cid, data

            out = super().masked_input_collection(watch())
            sizes = [v.nbytes for v in vars(self).values() if isinstance(v, np.ndarray)]
            assert sizes == [d * ring.dtype_for(M).itemsize]
            return out

    def hook(rnd, direction, client, data):  # noqa: ANN001, ANN202
        if rnd == "masked-input" and direction == "up":
            events.append(("produced", client))
        return data

    xs = _xs(n, d)
    res = run_secure_aggregation(xs, modulus=M, seed=4, server_class=Recorder, interceptor=hook,
                                 dropouts={3: "masked-input"})
    expected = [e for u in range(n) if u != 3 for e in (("produced", u), ("consumed", u))]
    assert events == expected and 3 not in res.included


def test_protocol_aborted_pickles_with_its_state():
    """ProtocolAborted crosses process boundaries (multiprocessing) with round, reason, party and the
    state attached by the engine (e.g. the ledger), and every other typed error pickles too."""
    import pickle

    import secagg.errors as errors

    exc = errors.ProtocolAborted("unmasking", "only 2 of t=3 responses", party=None)
    exc.sets = {"U1": frozenset({0, 1, 2})}
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is errors.ProtocolAborted
    assert (back.round, back.reason, back.party) == ("unmasking", "only 2 of t=3 responses", None)
    assert back.sets == exc.sets and str(back) == str(exc)
    for name in errors.__all__:
        cls = getattr(errors, name)
        if cls is errors.ProtocolAborted:
            continue
        if issubclass(cls, errors.ProtocolAborted):
            sub = pickle.loads(pickle.dumps(cls("unmasking", "boom")))
            assert type(sub) is cls and (sub.round, sub.reason) == ("unmasking", "boom")
            continue
        other = pickle.loads(pickle.dumps(cls("boom")))
        assert type(other) is cls and str(other) == "boom"
