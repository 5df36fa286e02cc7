"""`rfa compare --leakage`: the measured privacy axis beside robustness."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("skimage")


def test_measure_leakage_reports_each_readable_aggregator_and_leaves_out_rlr():
    from rfa.commands.compare import measure_leakage
    from rfa.fl import experiments as ex

    base = ex.quick_config().replace(clients_per_round=3)
    warned: list[str] = []
    got = measure_leakage(base, ["fedavg", "rlr"], trials=1, warn=warned.append)
    assert set(got) == {"fedavg"}
    assert got["fedavg"]["m"] == 3 and 0 < got["fedavg"]["max_s"] < 1
    assert any("rlr left out" in w for w in warned)


def test_compare_with_leakage_writes_the_figure(tmp_path):
    from rfa.cli import main

    out = tmp_path / "c"
    rc = main(["compare", "--rounds", "1", "--seeds", "1", "--clients-per-round", "3", "--aggregators",
               "fedavg,coordinate-median", "--corruptions", "omniscient", "--rhos", "0.25", "--oracle", "ideal",
               "--leakage", "--jobs", "1", "--no-progress", "--out", str(out)])
    assert rc == 0
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert set(meta["leakage"]) == {"fedavg", "coordinate-median"}
    assert meta["leakage"]["coordinate-median"]["max_s"] == 1.0
    assert (out / "leakage_vs_robustness.png").stat().st_size > 0
