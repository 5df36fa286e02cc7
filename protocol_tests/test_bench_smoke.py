"""Smoke test of the benchmark harness (bench/): it runs on micro grids and writes its JSON and summary.

No timing is asserted (speed is measured by ``python -m bench``, never tested); the test checks that the
harness runs end to end, that every benchmark it ran recorded rows and goals without an error, that the
correctness checks inside the benchmarks (sums against the plaintext sum, ledgers against the model)
passed, and that the JSON round-trips. Flower is optional: when its environment is absent the flower
benchmark must say so (with install commands) instead of failing. Deterministic (no statistical test).
"""

from __future__ import annotations

import json
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):  # noqa: ANN001, ANN201
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import bench.common
    from bench.__main__ import main

    out = tmp_path_factory.mktemp("bench")
    try:
        rc = main(["--smoke", "--only", "protocol_phases,flower,weiszfeld,communication", "--out", str(out)])
    finally:
        bench.common.SMOKE = False
    with open(out / "results.json") as f:
        res = json.load(f)
    return rc, res, out


def test_harness_runs_and_writes_json(smoke) -> None:  # noqa: ANN001
    rc, res, out = smoke
    assert rc == 0
    assert set(res) >= {"meta", "protocol_phases", "flower", "weiszfeld", "communication"}
    for name in ("protocol_phases", "flower", "weiszfeld", "communication"):
        assert "error" not in res[name], res[name].get("error")
        assert isinstance(res[name].get("goals", []), list)
    md = (out / "summary.md").read_text()
    assert "## Goals" in md and "| benchmark |" in md


def test_protocol_phase_rows(smoke) -> None:  # noqa: ANN001
    _, res, _ = smoke
    pp = res["protocol_phases"]
    assert pp["mask_primitive"] and all(r["mask_s"] > 0 and r["floor_s"] > 0 for r in pp["mask_primitive"])
    eng = pp["engine"]
    assert len(eng) == 3  # the smoke grid: every configuration ran (engine_row raises if a sum is wrong)
    assert {r["variant"] for r in eng} == {"honest-but-curious", "active"}
    assert any(r["survivors"] < r["n"] for r in eng)  # the dropout configuration really dropped clients
    for r in eng:
        assert r["client_masking_ratio"] > 0 and r["server_unmasking_ratio"] > 0
    # the client mask expansion is timed as the client does it (one add_masks with base = x_u) and beside
    # it the former one-add_mask-per-mask loop; primitive_rows raises if their outputs differ
    assert all(r["loop_s"] > 0 for r in pp["mask_primitive"])
    # the server primitive removes every mask it counted
    for r in pp["server_unmask_primitive"]:
        assert r["masks"] >= r["pair_agreements"] > 0


def test_parallel_engine_rows(smoke) -> None:  # noqa: ANN001
    """With the engine's opt-in parallel clients, the workers=2 rows ran (sums checked inside engine_row)."""
    _, res, _ = smoke
    from bench.protocol_phases import workers_supported

    pp = res["protocol_phases"]
    if not workers_supported():
        assert "workers" in pp["engine_workers_skipped"] and pp["engine_workers"] == []
        return
    assert pp["engine_workers"] and all(r["workers"] == 2 and r["serial_wall_s"] > 0 for r in pp["engine_workers"])
    fl = res["flower"]
    for row in fl.get("rows", []):
        assert row.get("ours_w2_ok") is True


def test_flower_runs_or_explains(smoke) -> None:  # noqa: ANN001
    _, res, _ = smoke
    fl = res["flower"]
    if fl.get("skipped"):
        assert "pip install --no-deps flwr==1.42.0" in fl["skipped"]
    else:
        row = fl["rows"][0]
        assert row["ours_ok"] is True
        assert row["flower_ok"] is True, row.get("flower_error")


def test_communication_cross_check(smoke) -> None:  # noqa: ANN001
    _, res, _ = smoke
    cc = res["communication"]["cross_check"]
    assert cc and all(r["ledgers_equal"] and r["measured_total"] == r["model_total"] for r in cc)


def test_weiszfeld_rows_have_suboptimality(smoke) -> None:  # noqa: ANN001
    _, res, _ = smoke
    wz = res["weiszfeld"]
    if wz.get("skipped"):
        pytest.skip("geom_median (bench extra) not installed: " + wz["skipped"])
    for r in wz["rows"]:
        assert r["ours_subopt"] > -1e-6 and r["geom_median_subopt"] > -1e-6  # g* is the minimum, up to float rounding


def test_server_in_subprocess_matches_sum() -> None:
    """The scale benchmark's server-in-a-child-process proxy runs a correct session."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from bench.scale import server_memory

    r = server_memory(8, 200, graph="complete", p_drop=0.25)
    assert r["ok"] is True
    assert r["server_peak_rss_mib"] >= r["server_base_rss_mib"] > 0
