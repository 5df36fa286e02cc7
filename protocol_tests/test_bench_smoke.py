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


# ------------------------------------------------------------------------------------------------------------
# the bench never claims what it did not measure
# ------------------------------------------------------------------------------------------------------------
def test_unmeasured_flower_goals_have_no_verdict(smoke) -> None:  # noqa: ANN001
    """No Flower goal point is in the smoke grid (and Flower may not be installed): every Flower goal row
    says why it was not measured, has no value and no verdict, and the summary shows "no verdict"; a figure
    quoted for the reader names a file that exists in the repository."""
    _, res, out = smoke
    from bench.flower import REFERENCE

    goals = res["flower"]["goals"]
    assert len(goals) == 2
    for g in goals:
        assert g["value"] is None and g["met"] is None
        assert g["note"].startswith("not measured (")
        if res["flower"].get("skipped"):
            assert g["note"].startswith("not measured (flwr not installed)")
        if "reference" in g:
            assert g["reference"]["source"] == REFERENCE and os.path.exists(os.path.join(ROOT, REFERENCE))
    md = (out / "summary.md").read_text()
    rows = [ln for ln in md.splitlines() if ln.startswith("| flower | speedup vs Flower")]
    assert len(rows) == 2 and all("| no verdict |" in r and "met" not in r.split("|")[5] for r in rows)
    if res["flower"].get("skipped"):
        assert not (out / "bench_vs_flower.png").exists()  # nothing measured, nothing drawn


def test_rows_kept_from_an_earlier_run_never_give_a_verdict(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    """BENCH_FLOWER_POINTS re-measures some points and keeps the other rows of an earlier results file:
    a kept row (even with a speedup) is labelled with its source and gives no verdict in this run."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    import bench.flower as fl

    prev = {"flower": {"ran": {"started_utc": "2026-01-01T00:00:00+00:00"}, "rows": [
        {"n": 100, "d": 1000000, "graph": "11 share holders (k=10)", "t": 6, "ours_s": 1.0, "flower_s": 50.0, "speedup": 50.0,
         "source": fl.MEASURED}]}}
    p = tmp_path / "prev.json"
    p.write_text(json.dumps(prev))
    monkeypatch.setenv("BENCH_FLOWER_POINTS", "7x7")  # matches no point: nothing is run, every row is kept
    monkeypatch.setenv("BENCH_FLOWER_PREVIOUS", str(p))
    monkeypatch.setattr(fl, "flower_python", lambda: (None, "no Python with flwr found (test)"))
    out = fl.run(quick=True, repeats=1, log=lambda s: None)
    assert [r["source"].startswith("kept from ") for r in out["rows"]] == [True]
    g = [g for g in out["goals"] if "11 neighbours" in g["goal"]][0]
    assert g["value"] is None and g["met"] is None and "not measured" in g["note"]


def _fake_results() -> dict:
    from bench.flower import MEASURED

    return {"flower": {"rows": [
        {"n": 20, "d": 10000, "graph": "complete", "ours_s": 0.1, "ours_w2_s": 0.08, "flower_s": 4.0, "speedup": 40.0,
         "speedup_w2": 50.0, "source": MEASURED},
        {"n": 100, "d": 10000, "graph": "complete", "ours_s": 1.8, "ours_w2_s": 1.7, "source": "not measured (flwr not installed)"},
        {"n": 50, "d": 10000, "graph": "complete", "ours_s": 0.6, "flower_s": 56.0, "speedup": 93.0,
         "source": "kept from prev.json (measured 2026-01-01)"},
        {"n": 100, "d": 1000000, "graph": "11 share holders (k=10)", "ours_s": 2.5, "flower_s": 22.0, "speedup": 8.8,
         "source": MEASURED},
    ]}}


def test_flower_plot_draws_only_rows_measured_in_this_run(tmp_path) -> None:  # noqa: ANN001
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    from bench.plots import flower_figure, measured_flower_rows, plot_all

    res = _fake_results()
    assert [r["n"] for r in measured_flower_rows(res)] == [20, 100]
    fig = flower_figure(res)
    heights = sorted(round(p.get_height(), 6) for p in fig.axes[0].patches)
    # Flower, ours serial, ours workers=2 (only where measured): 2 + 2 + 1 bars, all from measured rows
    assert heights == sorted([4.0, 22.0, 0.1, 2.5, 0.08])
    assert [t.get_text().split("\n")[0] for t in fig.axes[0].get_xticklabels()] == ["n=20, d=1e+04", "n=100, d=1e+06"]
    res["flower"]["rows"] = [r for r in res["flower"]["rows"] if r["source"] != "measured (same run)"]
    assert flower_figure(res) is None
    plot_all(res, str(tmp_path))
    assert not (tmp_path / "bench_vs_flower.png").exists()


def test_bench_cites_no_missing_file() -> None:
    """The bench quotes figures only from files in the repository (no peers.md, which never existed here)."""
    import re

    from bench.flower import REFERENCE

    assert os.path.exists(os.path.join(ROOT, REFERENCE))
    for name in os.listdir(os.path.join(ROOT, "bench")):
        if name.endswith(".py"):
            text = open(os.path.join(ROOT, "bench", name), encoding="utf-8").read()
            assert "peers.md" not in text, name
            for path in re.findall(r"bench/reference_results/[\w.-]+", text):
                assert os.path.exists(os.path.join(ROOT, path)), (name, path)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT to the process group (Ctrl-C)", "SIGTERM to the main process"])
def test_interrupt_saves_what_finished_and_exits_130(tmp_path, how) -> None:  # noqa: ANN001
    """Ctrl-C (or SIGTERM) while the second benchmark runs: exit 130, no traceback, one line naming what
    was saved and how to finish, and results.json holds the finished benchmark (complete, valid JSON)."""
    import signal
    import subprocess
    import time

    sig = signal.SIGINT if how.startswith("SIGINT") else signal.SIGTERM
    out = tmp_path / "b"
    p = subprocess.Popen([sys.executable, "-m", "bench", "--smoke", "--only", "communication,protocol_phases", "--out", str(out)],
                         cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in p.stdout:
            if line.startswith("[bench] communication done"):
                time.sleep(0.5)  # protocol_phases has started (its smoke grid runs for seconds)
                (os.killpg if sig == signal.SIGINT else os.kill)(p.pid, sig)
                break
        _, err = p.communicate(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 130, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "communication" in lines[0] and "--only protocol_phases" in lines[0], err
    with open(out / "results.json") as f:
        res = json.load(f)
    assert "communication" in res and "protocol_phases" not in res and "error" not in res["communication"]
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]
