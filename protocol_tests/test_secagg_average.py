"""secure_average: correctness within the stated bound, over U3; modular backend bit-identical; errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

import secagg
from secagg import SecureAverageResult, secure_average
from secagg.cost import model_ledger
from secagg.discretize import RandomizedHadamard, rounding_error_bound
from secagg.errors import InvalidInput, OverflowRisk, ProtocolAborted
from secagg.messages import ROUNDS

_SPECS = [f"{r}{suffix}" for r in ROUNDS for suffix in ("", ":after")]


def _reference(x: np.ndarray, w: np.ndarray, included, res: SecureAverageResult, rotate: bool, seed) -> np.ndarray:
    """Exact weighted average over U3 of the clipped inputs (the quantity error_bound refers to)."""
    idx = list(included)
    xs = x[idx].astype(np.float64)
    c = res.clip
    if res.clip_mode == "norm":
        norms = np.linalg.norm(xs, axis=1, keepdims=True)
        xs = xs * np.minimum(1.0, c / np.maximum(norms, 1e-300))
    if rotate:
        from secagg.average import _rotation_seed

        rot = RandomizedHadamard(x.shape[1], _rotation_seed(seed))
        v = np.clip(rot.forward(xs), -c, c)
        ws = w[idx]
        return rot.inverse((ws[:, None] * v).sum(0) / ws.sum())
    if res.clip_mode == "coordinate":
        xs = np.clip(xs, -c, c)
    ws = w[idx]
    return (ws[:, None] * xs).sum(0) / ws.sum()


@st.composite
def cases(draw):  # noqa: ANN001, ANN201
    n = draw(st.integers(2, 7))
    d = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**20))
    rng = np.random.default_rng(seed)
    x = rng.normal(scale=draw(st.sampled_from([1e-3, 1.0, 100.0])), size=(n, d))
    w = 10.0 ** rng.uniform(-draw(st.sampled_from([0, 3, 6])), 0, size=n) * draw(st.sampled_from([1.0, 1e-4, 1e5]))
    clip_kind = draw(st.sampled_from(["none", "clip", "norm"]))
    kw: dict = {}
    if clip_kind == "clip":
        kw["clip"] = float(np.quantile(np.abs(x), 0.7)) + 1e-9
    elif clip_kind == "norm":
        kw["clip_norm"] = float(np.median(np.linalg.norm(x, axis=1)))
    kw["rotate"] = draw(st.booleans())
    kw["bits"] = draw(st.sampled_from([None, 16, 24, 40, 64]))
    kw["variant"] = draw(st.sampled_from(["honest-but-curious", "active"]))
    drops = draw(st.dictionaries(st.integers(0, n - 1), st.sampled_from(_SPECS), max_size=max(0, n - 2)))
    kw["dropouts"] = drops
    kw["threshold"] = draw(st.one_of(st.none(), st.integers(n // 2 + 1 if kw["variant"] == "active" else 2, n)))
    return x, w, seed, kw


def _run(x, w, seed, kw, backend):  # noqa: ANN001, ANN202
    try:
        return secure_average(x, w, seed=seed, backend=backend, **kw), None
    except ProtocolAborted as exc:
        return None, exc


@given(cases())
@settings(max_examples=70)
def test_secure_average_within_bound_over_U3_and_modular_is_bit_identical(case) -> None:
    """For random inputs, weights (up to 6 orders of magnitude apart), clipping, rotation, bit widths,
    variants and dropout schedules: the protocol's average equals the exact weighted average over U3 of the
    clipped inputs within the stated error bound, U3 is the clients whose masked input arrived, and the
    modular backend returns bit-identical numbers (or the same abort)."""
    x, w, seed, kw = case
    res, err = _run(x, w, seed, kw, "protocol")
    mres, merr = _run(x, w, seed, kw, "modular")
    assert (err is None) == (merr is None)
    event("aborted" if err is not None else "completed")
    if err is not None:
        assert (err.round, err.reason) == (merr.round, merr.reason)
        return
    # U3 = not dropped before (or at, without ':after') the masked-input round
    dropped_before = {u for u, s in kw["dropouts"].items()
                      if ROUNDS.index(s.split(":")[0]) < 2 or s == "masked-input"}
    assert set(res.included) <= set(range(len(x))) - dropped_before
    assert res.over == "U3" and res.included == tuple(sorted(res.protocol.sets["U3"]))
    ref = _reference(x, w, res.included, res, kw["rotate"], seed)
    assert np.max(np.abs(res.average - ref)) <= res.error_bound
    # the weight coordinate is within B = rounding_error_bound of sum omega_i c, so total_weight within B W / c
    b = rounding_error_bound(len(res.included), res.clip, res.scale)
    true_w = w[list(res.included)].sum()
    assert abs(res.total_weight - true_w) <= b / res.clip * res.weight_bound * (1 + 1e-9) + 1e-12 * true_w
    # bit-identical modular backend
    assert np.array_equal(res.average, mres.average)
    assert np.array_equal(res.sum, mres.sum)
    assert (res.included, res.total_weight, res.error_bound, res.clipped, res.modulus, res.scale) == (
        mres.included, mres.total_weight, mres.error_bound, mres.clipped, mres.modulus, mres.scale)
    assert res.ledger == mres.ledger
    assert mres.protocol is None and mres.backend == "modular"


@given(st.integers(3, 6), st.integers(1, 5), st.integers(0, 2**16), st.sampled_from(["complete", "secagg+"]))
@settings(max_examples=15)
def test_modular_backend_bit_identical_on_both_graphs(n, d, seed, graph) -> None:
    n = n + (5 if graph == "secagg+" else 0)
    rng = np.random.default_rng(seed)
    x, w = rng.normal(size=(n, d)), rng.uniform(0.5, 2.0, size=n)
    kw = dict(seed=seed, graph=graph, neighbours=4 if graph == "secagg+" else None, dropouts={0: "masked-input"}, bits=32, threshold=2,
              dropout_fraction=0.2 if graph == "secagg+" else None)  # designed for the dropout it suffers
    a, b = secure_average(x, w, **kw), secure_average(x, w, backend="modular", **kw)
    assert np.array_equal(a.average, b.average) and a.ledger == b.ledger and a.included == b.included
    assert a.ledger == model_ledger(n, d + 1, a.modulus, graph=graph, neighbours=kw["neighbours"], seed=seed,
                                    dropouts=kw["dropouts"], dropout_fraction=kw["dropout_fraction"])


def test_wide_weights_keep_precision_with_64_bits() -> None:
    """Weiszfeld-like weights spanning 1e6 (W = 1/nu public bound): with bits=64 the stated bound is tiny
    relative to the data, and the true error is within it."""
    rng = np.random.default_rng(3)
    n, d = 8, 16
    x = rng.normal(size=(n, d))
    nu = 1e-6
    w = np.array([1 / nu, 1.0, 2.0, 0.5, 1e3, 3.0, 1.5, 1e-0])  # beta_i in [1, 1/nu]
    res = secure_average(x, w, seed=1, bits=64, max_weight=1 / nu, clip=10.0, backend="modular")
    exact = (w[:, None] * x).sum(0) / w.sum()
    assert res.error_bound < 1e-9
    assert np.max(np.abs(res.average - exact)) <= res.error_bound
    # the same with only the small weights: denominator ~ 1e-5 of W, still resolved
    small = w < 10
    res2 = secure_average(x[small], w[small], seed=1, bits=64, max_weight=1 / nu, clip=10.0, backend="modular")
    exact2 = (w[small, None] * x[small]).sum(0) / w[small].sum()
    assert res2.error_bound < 1e-6 and np.max(np.abs(res2.average - exact2)) <= res2.error_bound
    # with too few bits the weights are below the resolution: a typed error, no result
    with pytest.raises(InvalidInput):
        secure_average(x[small], w[small], seed=1, bits=12, max_weight=1 / nu, clip=10.0, backend="modular")


def test_average_is_over_U3() -> None:
    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(5, 3)), rng.uniform(1, 2, size=5)
    res = secure_average(x, w, seed=2, threshold=2,
                         dropouts={1: "share-keys", 2: "masked-input", 3: "unmasking:after", 4: "masked-input:after"})
    assert res.included == (0, 3, 4)
    exact = (w[[0, 3, 4], None] * x[[0, 3, 4]]).sum(0) / w[[0, 3, 4]].sum()
    assert np.max(np.abs(res.average - exact)) <= res.error_bound
    assert "U3" in SecureAverageResult.__doc__


def test_torch_and_lists_accepted_without_changing_the_result() -> None:
    rng = np.random.default_rng(5)
    x = rng.normal(size=(3, 4)).astype(np.float32)
    w = np.array([1.0, 2.0, 3.0])
    base = secure_average(x, w, seed=4, backend="modular")
    assert np.array_equal(base.average, secure_average(list(x), list(w), seed=4, backend="modular").average)
    torch = pytest.importorskip("torch")  # a project dependency; guards only broken installs
    got = secure_average(torch.tensor(x), torch.tensor(w), seed=4, backend="modular")
    assert np.array_equal(base.average, got.average)


def test_bad_inputs_raise_before_anything_is_sent(monkeypatch) -> None:
    import secagg.protocol

    def boom(*a, **k):  # noqa: ANN002, ANN003, ANN202
        raise AssertionError("the protocol must not start on bad input")

    monkeypatch.setattr(secagg.protocol, "run_secure_aggregation", boom)
    x = np.ones((3, 2))
    bad_calls = [
        dict(vectors=np.array([[1.0, np.nan], [0, 0], [0, 0]])),
        dict(vectors=np.array([[1.0, np.inf], [0, 0], [0, 0]])),
        dict(vectors=np.ones(3)),
        dict(vectors=[np.ones(2), np.ones(3)]),
        dict(weights=[1.0, 2.0]),
        dict(weights=[1.0, 0.0, 1.0]),
        dict(weights=[1.0, -1.0, 1.0]),
        dict(weights=[1.0, np.nan, 1.0]),
        dict(weights=[1.0, np.inf, 1.0]),
        dict(clip=1.0, clip_norm=1.0),
        dict(clip=-1.0),
        dict(modulus=2**16, bits=16),
        dict(backend="carrier-pigeon"),
        dict(max_weight=0.5),
        dict(max_weight=float("nan")),
    ]
    for call in bad_calls:
        args = {"vectors": x, "weights": None, **call}
        with pytest.raises(InvalidInput):
            secure_average(args.pop("vectors"), args.pop("weights"), seed=1, **args)
    with pytest.raises(OverflowRisk):
        secure_average(x, seed=1, modulus=2**8, scale=1000.0, clip=1.0)
    with pytest.raises(OverflowRisk):
        secure_average(x, seed=1, modulus=4, clip=1.0)  # 4 <= 2 * 3 clients


def test_public_names_resolve() -> None:
    assert secagg.secure_average is secure_average
    assert secagg.Quantizer.__name__ == "Quantizer" and callable(secagg.choose_modulus)


def test_simulate_cli_real_inputs_weights_ledger_and_json(capsys) -> None:
    """`secagg simulate --real/--weights` (added by helper AVERAGE): within the stated bound over U3, a
    ledger table, JSON output, and the modular backend giving the same average as the protocol."""
    import json

    from secagg.cli import main as secagg_main

    argv = ["simulate", "-n", "6", "-d", "20", "--weights", "random", "--drop", "2:masked-input", "--seed", "3"]
    assert secagg_main(argv) == 0
    out = capsys.readouterr().out
    assert "<= stated bound" in out and ": YES" in out and "ledger:" in out and "missing [2]" in out
    assert secagg_main(argv + ["--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["within_bound"] and rep["included"] == [0, 1, 3, 4, 5]
    assert secagg_main(argv + ["--json", "--backend", "modular"]) == 0
    mod = json.loads(capsys.readouterr().out)
    assert mod["average_head"] == rep["average_head"] and mod["bytes"] == rep["bytes"]
    assert secagg_main(["simulate", "-n", "5", "-d", "4", "--weights", "1,2"]) == 2
    assert secagg_main(["simulate", "-n", "5", "-d", "4", "--weights", "1,2,x,4,5"]) == 2
    assert secagg_main(["simulate", "-n", "4", "-d", "4", "--real", "--threshold", "4", "--drop", "1:masked-input"]) == 1
    assert "ABORTED" in capsys.readouterr().out
    assert secagg_main(["simulate", "-n", "4", "-d", "4", "--json"]) == 0  # integer mode keeps working
    assert json.loads(capsys.readouterr().out)["matches_plaintext"] is True
