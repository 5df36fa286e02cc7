"""``secagg trace``: a transcript for every drop point whose final check says the sums match."""

from __future__ import annotations

import json

import pytest

from secagg.cli import main as secagg_main
from secagg.commands.trace import render, trace
from secagg.errors import InvalidInput
from secagg.messages import ROUNDS

_DROP_POINTS = [None] + [f"{r}{suffix}" for r in ROUNDS for suffix in ("", ":after")]


@pytest.mark.parametrize("variant", ["honest-but-curious", "active"])
@pytest.mark.parametrize("drop", _DROP_POINTS)
def test_trace_for_every_drop_point_ends_with_matching_sums(variant: str, drop: str | None) -> None:
    drops = {2: drop} if drop else {}
    tr = trace(clients=4, dim=3, threshold=3, drops=drops, modulus_bits=8, variant=variant, seed=11)
    res = tr["result"]
    assert res["aborted"] is None and res["match"] is True
    assert res["protocol_sum"] == res["plaintext_sum_U3"] == res["replayed_sum"]
    text = render(tr)
    last = text.strip().splitlines()[-1]
    assert last.startswith("CHECK:") and "the sums match" in last
    # every masked vector the tracer recomputed equals the bytes the server received
    masks = [e for r in tr["rounds"] for e in r["events"] if e["type"] == "mask"]
    assert masks and all(e["matches_wire"] for e in masks if e["sent"])
    # the server never received both kinds of share for one client, and reconstructions were right
    un = tr["unmasking"]
    assert un["never_both"]
    assert all(s.get("b_matches", True) and s.get("s_pk_matches", True) for s in un["steps"])
    dropped_before_y = drop in ("advertise-keys", "advertise-keys:after", "share-keys", "share-keys:after", "masked-input")
    assert (2 in res["sets"]["U3"]) != dropped_before_y
    if drop in ("share-keys:after", "masked-input"):  # shared keys, never sent y: pairwise masks cancelled
        assert any("dropped client 2" in s["what"] for s in un["steps"])
        assert "why double masking" in text


def test_trace_of_an_abort_says_nothing_was_released() -> None:
    tr = trace(clients=4, dim=2, threshold=4, drops={1: "masked-input"}, seed=1)
    assert tr["result"]["aborted"]["round"] == "masked-input" and tr["result"]["match"] is None
    assert "Nothing is released" in render(tr)


def test_trace_on_a_secagg_plus_graph() -> None:
    tr = trace(clients=9, dim=2, graph="secagg+", neighbours=4, threshold=3, drops={0: "masked-input"}, seed=3,
               dropout_fraction=0.2)  # designed for the one dropout in nine
    assert tr["result"]["match"] is True
    assert tr["parameters"]["neighbours"] is not None


def test_trace_cli_text_json_and_colour(capsys, monkeypatch) -> None:
    argv = ["trace", "--clients", "4", "--dim", "3", "--threshold", "3", "--drop", "2:masked-input"]
    assert secagg_main(argv) == 0
    out = capsys.readouterr().out
    assert "\x1b[" not in out  # captured stdout is not a terminal: no colour
    assert out.strip().splitlines()[-1].endswith("the sums match ✓")
    assert secagg_main(argv + ["--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert js["result"]["match"] is True and js["parameters"]["threshold"] == 3
    assert "\x1b[" in render(js, color=True)
    assert secagg_main(["trace", "--drop", "nope"]) == 2
    assert secagg_main(["trace", "--drop", "1:lunch"]) == 2


def test_trace_rejects_unreadable_sizes() -> None:
    with pytest.raises(InvalidInput):
        trace(clients=500)
    with pytest.raises(InvalidInput):
        trace(modulus_bits=0)


def test_tutorial_trace_is_current() -> None:
    """docs/tutorial.md pastes the output of `secagg trace --clients 4 --dim 3 --threshold 3 --drop
    2:masked-input` (at the default width of a non-terminal, 100 columns); it must still be exactly what
    the command prints (regenerate the doc otherwise)."""
    from pathlib import Path

    from secagg.commands.trace import DEFAULT_WIDTH

    doc = (Path(__file__).resolve().parents[1] / "docs" / "tutorial.md").read_text(encoding="utf-8")
    text = render(trace(clients=4, dim=3, threshold=3, drops={2: "masked-input"}, modulus_bits=8, seed=0), width=DEFAULT_WIDTH)
    assert text in doc
