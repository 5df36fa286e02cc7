"""Cost models (secagg.cost): exact ledger model == measured ledger; closed form; the paper's figures; CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from secagg.cli import main as secagg_main
from secagg.cost import model_ledger, our_model, paper_model, paper_modulus
from secagg.errors import InvalidInput, ProtocolAborted
from secagg.messages import ROUNDS
from secagg.protocol import run_secure_aggregation

_SPECS = [f"{r}{suffix}" for r in ROUNDS for suffix in ("", ":after")]


def test_paper_model_reproduces_the_papers_expansion_factors() -> None:
    small, big = paper_model(2**10, 2**20), paper_model(2**14, 2**24)
    assert f"{small.expansion:.2f}" == "1.73"
    assert f"{big.expansion:.2f}" == "1.98"
    # the formula itself: 2 n a_K + (5n - 4) a_S + d b, b = 16 + ceil(log2 n)
    assert small.element_bits == 26 and big.element_bits == 30
    assert small.traffic_bits == 2 * 1024 * 256 + (5 * 1024 - 4) * 256 + 2**20 * 26
    assert paper_modulus(2**10, 16) == 2**26
    assert paper_model(3, 5).element_bits == 18  # ceil(log2 3) = 2


@st.composite
def configs(draw):  # noqa: ANN001, ANN201
    sparse = draw(st.booleans())
    if sparse:
        n = draw(st.integers(5, 11))
        k = draw(st.sampled_from([k for k in range(2, n - 1, 2)]))
        holders = k + 1
    else:
        n = draw(st.integers(2, 8))
        k = None
        holders = n
    variant = draw(st.sampled_from(["honest-but-curious", "active"]))
    threshold = draw(st.one_of(st.none(), st.integers(holders // 2 + 1 if variant == "active" else 2, holders)))
    drops = draw(st.dictionaries(st.integers(0, n - 1), st.sampled_from(_SPECS), max_size=n))
    d = draw(st.integers(1, 9))
    bits = draw(st.sampled_from([1, 3, 8, 13, 16, 31, 32, 33, 64]))
    modulus = draw(st.sampled_from([2**bits, max(2, 2**bits - 3)]))
    seed = draw(st.integers(0, 2**16))
    return dict(n=n, d=d, modulus=modulus, graph="secagg+" if sparse else "complete", neighbours=k,
                variant=variant, threshold=threshold, dropouts=drops, seed=seed)


@given(configs())
@settings(max_examples=60)
def test_model_ledger_equals_measured_ledger_byte_for_byte(cfg) -> None:
    """Random small configurations (both graphs, both variants, any dropout schedule, thresholds, moduli):
    the analytical ledger has exactly the measured entries; aborts happen in the same round, same reason."""
    n, d, m = cfg["n"], cfg["d"], cfg["modulus"]
    x = np.random.default_rng(cfg["seed"]).integers(0, m, size=(n, d), dtype=np.uint64)
    kwargs = {k: cfg[k] for k in ("graph", "neighbours", "variant", "threshold", "dropouts", "seed")}
    try:
        measured = run_secure_aggregation(list(x), modulus=m, **kwargs).ledger
        err = None
    except ProtocolAborted as exc:
        measured, err = exc.ledger, exc
    try:
        modelled = model_ledger(n, d, m, **kwargs)
        merr = None
    except ProtocolAborted as exc:
        modelled, merr = exc.ledger, exc
    assert (err is None) == (merr is None)
    if err is not None:
        assert (err.round, err.reason, err.party) == (merr.round, merr.reason, merr.party)
    assert sorted(modelled.entries, key=repr) == sorted(measured.entries, key=repr)
    assert modelled == measured


@given(
    n=st.integers(2, 9),
    d=st.integers(1, 40),
    bits=st.integers(1, 64),
    variant=st.sampled_from(["honest-but-curious", "active"]),
    data=st.data(),
)
@settings(max_examples=60)
def test_closed_form_matches_exact_model_on_the_complete_graph(n, d, bits, variant, data) -> None:
    """our_model (O(1)) equals the per-message model's totals, per-round sums and per-client figures."""
    counts = [data.draw(st.integers(0, 1)) for _ in ROUNDS]
    dropouts, u = {}, 0
    for r, c in zip(ROUNDS, counts):
        for _ in range(c):
            if u < n:
                dropouts[u] = r
                u += 1
    m = 2**bits
    try:
        # the smallest t the rules accept (t >= 2; active: 2t > n): message sizes do not depend on t
        led = model_ledger(n, d, m, variant=variant, dropouts=dropouts, threshold=2 if variant != "active" else n // 2 + 1)
    except ProtocolAborted:  # everyone dropped in some round
        return
    drops: dict[str, int] = {}
    for r in dropouts.values():
        drops[r] = drops.get(r, 0) + 1
    cf = our_model(n, d, m, variant=variant, drops=drops)
    assert cf.exact
    assert cf.total_up == sum(e.nbytes for e in led if e.direction == "up")
    assert cf.total_down == sum(e.nbytes for e in led if e.direction == "down")
    assert cf.by_round == {r: {k: float(v) for k, v in x.items()} for r, x in led.by_round().items()}
    up, down = led.upload_per_client(), led.download_per_client()
    completers = [v for v in range(n) if v not in dropouts]
    for v in completers:
        assert up[v] == cf.upload_per_client and down[v] == cf.download_per_client
    assert cf.ledger_expansion == pytest.approx(led.expansion_factor(d, 16), rel=1e-12)


def test_closed_form_on_sparse_graph_without_drops_is_exact() -> None:
    n, d, m, k = 11, 6, 2**12, 4
    led = model_ledger(n, d, m, graph="secagg+", neighbours=k, seed=5)
    cf = our_model(n, d, m, k=k)
    assert cf.exact and cf.total_up == sum(e.nbytes for e in led if e.direction == "up")
    assert set(led.upload_per_client().values()) == {cf.upload_per_client}
    assert not our_model(n, d, m, k=k, drops={"masked-input": 2}).exact


def test_ours_beside_paper_at_the_paper_configurations() -> None:
    """Our wire format at the paper's two configurations: the masked vector dominates, so our expansion is
    within 10% of the paper's (we add headers, ids, nonces/tags and 33-byte shares)."""
    for n, d, paper in ((2**10, 2**20, 1.73), (2**14, 2**24, 1.98)):
        ours = our_model(n, d, paper_modulus(n, 16))
        assert abs(ours.expansion_traffic - paper) / paper < 0.1
        assert ours.expansion_traffic > paper_model(n, d).expansion  # more bytes, never fewer


def test_cost_cli_prints_both_models(capsys) -> None:
    assert secagg_main(["cost", "--clients", "16384", "--dim", "16777216", "--input-bits", "16"]) == 0
    out = capsys.readouterr().out
    assert "1.98x" in out and "ours" in out and "paper" in out
    assert secagg_main(["cost", "-n", "1024", "-d", "1048576", "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert round(js["paper"]["expansion"], 2) == 1.73
    assert js["ours"]["exact"] is True
    assert secagg_main(["cost", "-n", "1000", "-d", "1000", "--graph", "secagg+", "--dropout-rate", "0.1",
                        "--variant", "active"]) == 0
    assert "secagg+ graph, k = " in capsys.readouterr().out


def test_cost_cli_rejects_bad_arguments(capsys) -> None:
    assert secagg_main(["cost", "-n", "1", "-d", "10"]) == 2
    assert secagg_main(["cost", "-n", "10", "-d", "10", "--dropout-rate", "1.5"]) == 2
    assert secagg_main(["cost", "-n", "10", "-d", "10", "--modulus-bits", "65"]) == 2
    assert "error" in capsys.readouterr().err


def test_models_reject_bad_parameters() -> None:
    with pytest.raises(InvalidInput):
        paper_model(0, 10)
    with pytest.raises(InvalidInput):
        our_model(4, 4, 2**8, variant="lazy")
    with pytest.raises(InvalidInput):
        our_model(4, 4, 2**8, drops={"masked-input": 5})
    with pytest.raises(InvalidInput):
        model_ledger(4, 4, 2**8, dropouts={9: "masked-input"})
    with pytest.raises(InvalidInput):
        model_ledger(4, 4, 2**8, dropouts={1: "lunch"})


def test_ledger_table_totals() -> None:
    from secagg.cost import ledger_table

    led = model_ledger(5, 100, 2**16, dropouts={1: "masked-input"})
    text = ledger_table(led, dim=100, input_bits=16)
    up = sum(e.nbytes for e in led if e.direction == "up")
    down = sum(e.nbytes for e in led if e.direction == "down")
    total_line = [ln for ln in text.splitlines() if ln.strip().startswith("total")][0]
    assert f"{up:,}" in total_line and f"{down:,}" in total_line
    assert f"{led.expansion_factor(100, 16):.3f}" in text


def test_model_ledger_with_the_parameter_finder_graph() -> None:
    """graph="secagg+" without explicit k: the model derives the same Harary graph (k = 8 at n = 60) from the
    seed as the protocol, and the ledgers agree."""
    n, d, m = 60, 4, 2**16
    drops = {3: "masked-input", 7: "share-keys", 11: "unmasking"}
    res = run_secure_aggregation(list(np.zeros((n, d), dtype=np.uint16)), modulus=m, graph="secagg+", seed=1,
                                 dropouts=drops)
    assert not res.graph.is_complete and res.graph.k == 8
    assert model_ledger(n, d, m, graph="secagg+", seed=1, dropouts=drops) == res.ledger
