"""The trace page and its counterfactual panels (no browser needed; see test_teaching_browser.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from secagg.cli import main as secagg_main
from secagg.commands.trace import trace
from secagg.errors import InvalidInput
from secagg.teaching import SCHEMA
from secagg.teaching.page import render_html
from secagg.teaching.pages import SCENARIOS, write_pages
from secagg.teaching.panels import TOY_PRIME, toy_shamir

ROOT = Path(__file__).resolve().parents[1]


def _embedded(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="trace-data">(.*?)</script>', page, re.S)
    assert m
    return json.loads(m.group(1))


def test_trace_carries_schema_and_the_ledger_message_by_message() -> None:
    tr = trace(clients=5, dim=3, threshold=3, variant="active", drops={1: "share-keys:after"}, seed=4)
    assert tr["schema"] == SCHEMA
    msgs = tr["teaching"]["messages"]
    by_round: dict = {}
    for m in msgs:
        by_round.setdefault(m["round"], {"up": 0, "down": 0})[m["direction"]] += m["bytes"]
    assert by_round == tr["result"]["by_round"] and sum(m["bytes"] for m in msgs) == tr["result"]["bytes_total"]
    # every message the tracer saw on the wire is one ledger entry (same round, direction, client, size)
    wire = sorted((r["round"], e["type"], e["client"], e["bytes"]) for r in tr["rounds"] for e in r["events"]
                  if e["type"] in ("up", "down"))
    wire += [(r["round"], "up", e["client"], e["bytes"]) for r in tr["rounds"] for e in r["events"] if e["type"] == "mask" and e["sent"]]
    assert sorted(wire) == sorted((m["round"], m["direction"], m["client"], m["bytes"]) for m in msgs)


@pytest.mark.parametrize(("t", "holders"), [(2, [0, 1, 2]), (3, [0, 1, 2, 3]), (4, [1, 3, 4, 6, 9])])
def test_toy_shamir_rebuilds_the_secret_and_t_minus_1_shares_fit_every_secret(t: int, holders: list[int]) -> None:
    rng = np.random.default_rng(t)
    secret = int(rng.integers(0, TOY_PRIME))
    coeffs = [int(c) for c in rng.integers(1, TOY_PRIME, size=t - 1)]
    used = holders[-t:]
    toy = toy_shamir(secret, t, holders, used, coeffs)
    # the shares are f(i + 1) of f(x) = secret + sum c_j x^(j+1) mod p (computed here independently)
    f = lambda x: (secret + sum(c * x ** (j + 1) for j, c in enumerate(coeffs))) % TOY_PRIME  # noqa: E731
    assert [(s["x"], s["y"]) for s in toy["shares"]] == [(i + 1, f(i + 1)) for i in holders]
    assert toy["curve"] == [f(x) for x in range(len(toy["curve"]))] and toy["curve"][0] == secret
    assert toy["reconstructed"] == secret
    assert toy["secrets_fitting_t_minus_1"] == TOY_PRIME  # t - 1 shares rule out no secret at all
    few = {s["x"]: s["y"] for s in toy["shares"] if s["party"] in toy["t_minus_1"]}
    assert len(few) == t - 1
    for o in toy["other_secrets"]:  # another secret, the same t - 1 shares
        assert o["curve"][0] == o["secret"] != secret and all(o["curve"][x] == y for x, y in few.items())


def test_shamir_panel_names_the_shares_used_and_never_both() -> None:
    tr = trace(clients=4, dim=3, threshold=3, drops={2: "masked-input"}, seed=0)
    sh = tr["teaching"]["shamir"]
    assert {(r["client"], r["secret"]) for r in sh["reconstructions"]} == {(0, "b"), (1, "b"), (3, "b"), (2, "s_sk")}
    assert all(len(r["shares_from"]) == 3 and set(r["shares_from"]) <= {0, 1, 3} for r in sh["reconstructions"])
    assert sh["never_both"] and sh["released"]["2"] == ["s_sk"]
    assert sh["toy"]["client"] == 2 and sh["toy"]["stands_for"] == "s_sk" and sh["toy"]["used"] == [0, 1, 3]
    assert sh["toy"]["reconstructed"] == sh["toy"]["secret"]


@pytest.mark.parametrize("drop", [None, "masked-input", "share-keys:after"])
def test_double_masking_panel_leaves_x_plus_self_mask(drop: str | None) -> None:
    tr = trace(clients=4, dim=3, threshold=3, drops={2: drop} if drop else {}, seed=0)
    dm = tr["teaching"]["double_masking"]
    m = tr["parameters"]["modulus"]
    v = dm["client"]
    assert dm["real_dropout"] == (drop is not None) and (v == 2) == (drop is not None)
    assert dm["left"] == [(a + b) % m for a, b in zip(tr["inputs"][str(v)], dm["self_mask"])]
    assert dm["left_is_x_plus_self_mask"] and not dm["left_equals_x"] and not dm["b_released"]


def test_equivocation_is_caught_in_the_active_variant_and_not_without_it() -> None:
    act = trace(clients=5, dim=2, threshold=3, variant="active", seed=3)["teaching"]["equivocation"]
    assert act["victim_shares_released"] == [] and not act["server_could_unmask_victim"]
    assert act["client_errors"] and set(act["client_errors"].values()) == {"InconsistentView"}
    assert act["aborted"]["round"] == "unmasking"
    hbc = trace(clients=5, dim=2, threshold=3, seed=3)["teaching"]["equivocation"]
    assert hbc["victim_shares_released"] == ["b", "s_sk"] and hbc["server_could_unmask_victim"]


@pytest.mark.parametrize(("variant", "drops"), [("honest-but-curious", {}), ("active", {1: "masked-input"}),
                                                ("honest-but-curious", {3: "share-keys:after", 0: "unmasking"})])
def test_ledger_panel_matches_the_ledger_and_our_closed_form(variant: str, drops: dict) -> None:
    from secagg.cost import paper_model

    tr = trace(clients=6, dim=4, threshold=4, variant=variant, drops=drops, seed=2)
    lg = tr["teaching"]["ledger"]
    assert lg["by_round"] == tr["result"]["by_round"] and lg["total"] == tr["result"]["bytes_total"]
    assert lg["ours"]["exact"] and lg["ours"]["total_up"] + lg["ours"]["total_down"] == lg["total"]  # complete graph: exact
    assert lg["ours"]["by_round"] == {r: {k: float(v) for k, v in d.items()} for r, d in lg["by_round"].items()}
    ups = [m["bytes"] for m in tr["teaching"]["messages"] if m["direction"] == "up"]
    senders = {m["client"] for m in tr["teaching"]["messages"] if m["direction"] == "up"}
    assert lg["expansion_factor"] == pytest.approx(sum(ups) / len(senders) / (4 * 8 / 8), rel=1e-12)
    assert lg["paper"]["expansion"] == paper_model(6, 4, 8).expansion


def test_page_is_self_contained_and_embeds_the_json_verbatim() -> None:
    tr = trace(clients=4, dim=3, threshold=3, drops={2: "masked-input"}, seed=0)
    page = render_html(tr)
    assert _embedded(page) == json.loads(json.dumps(tr))
    assert set(re.findall(r"[a-z]+://[^\s\"'<>]*", page)) == {"http://www.w3.org/2000/svg"}  # a namespace, never fetched
    assert not re.search(r"<(link|img|iframe|object|embed)\b|\bsrc\s*=|@import|url\((?!#)", page)
    # a hostile string in the transcript cannot close the data element
    evil = json.loads(json.dumps(tr))
    evil["parameters"]["graph"] = "</script><script>alert(1)</script>"
    page2 = render_html(evil)
    assert page2.count("</script>") == page.count("</script>") == 2 and _embedded(page2) == evil


def test_page_refuses_another_schema() -> None:
    tr = trace(clients=3, dim=1, seed=0)
    for bad in ({**tr, "schema": SCHEMA + 1}, {k: v for k, v in tr.items() if k != "schema"}, "not a trace"):
        with pytest.raises(InvalidInput, match="schema"):
            render_html(bad)  # type: ignore[arg-type]


def test_cli_writes_the_page_and_reports_an_unwritable_path(tmp_path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "run.html"
    argv = ["trace", "--clients", "4", "--dim", "2", "--graph", "secagg+", "--variant", "active", "--drop", "1:unmasking:after"]
    assert secagg_main(argv + ["--html", str(out), "--json"]) == 0
    js = json.loads(capsys.readouterr().out)
    assert _embedded(out.read_text(encoding="utf-8")) == js  # the page is a view of exactly the --json
    assert not list(tmp_path.glob("*.tmp"))
    assert secagg_main(argv + ["--html", str(tmp_path / "no" / "such" / "dir.html")]) == 2
    assert "cannot write" in capsys.readouterr().err


def test_committed_scenario_pages_are_current(tmp_path) -> None:  # noqa: ANN001
    """docs/trace/*.html are what `python -m secagg.teaching docs/trace` writes now (run it to refresh)."""
    written = write_pages(tmp_path)
    assert {p.name for p in written} == {f"{k}.html" for k in SCENARIOS}
    committed = ROOT / "docs" / "trace"
    assert {p.name for p in committed.glob("*.html")} == {p.name for p in written}
    for p in written:
        assert (committed / p.name).read_bytes() == p.read_bytes(), f"{p.name} is stale: run python -m secagg.teaching docs/trace"


def test_tutorial_links_every_scenario_page_and_screenshot() -> None:
    doc = (ROOT / "docs" / "tutorial.md").read_text(encoding="utf-8")
    for name in SCENARIOS:
        assert f"trace/{name}.html" in doc
    shots = re.findall(r"!\[[^\]]+\]\((images/trace-[^)]+\.png)\)", doc)
    assert len(shots) >= 3 and all((ROOT / "docs" / s).stat().st_size > 10_000 for s in shots)
    assert "python -m secagg.teaching docs/trace" in doc
