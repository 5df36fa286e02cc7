"""`rfa compare` and `rfa train` on micro configurations."""

from __future__ import annotations

import csv
import json

import pytest

from rfa.cli import main
from rfa.fl.experiments import CSV_COLUMNS, Sweep, expand, quick_config

REQUIRED = ("aggregator", "corruption", "rho", "seed", "accuracy", "secure_calls_per_round", "bytes_per_client_per_round",
            "max_effective_weight", "secure_compatible")


def test_compare_micro_writes_results_csv_json_and_plots(tmp_path, capsys):
    out = tmp_path / "cmp"
    rc = main(["compare", "--data", "digits", "--partition", "iid", "--clients", "8", "--clients-per-round", "5",
               "--rounds", "2", "--seeds", "2", "--aggregators", "fedavg,rfa,one-step-rfa,coordinate-median,multi-krum",
               "--corruptions", "none,omniscient,data-poisoning", "--rhos", "0,0.25", "--eval-every", "1",
               "--oracle", "modular", "--jobs", "1", "--no-progress", "--out", str(out)])
    assert rc == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert set(REQUIRED) <= set(rows[0]) and list(rows[0]) == list(CSV_COLUMNS)
    # 5 aggregators x (rho=0 once + 2 corruptions at 0.25) x 2 seeds
    assert len(rows) == 5 * 3 * 2
    assert {r["aggregator"] for r in rows} == {"fedavg", "rfa", "one-step-rfa", "coordinate-median", "multi-krum"}
    for r in rows:
        secure = r["secure_compatible"] == "True"
        assert secure == (r["aggregator"] in ("fedavg", "rfa", "one-step-rfa"))
        assert float(r["bytes_per_client_per_round"]) > 0
        assert float(r["secure_calls_per_round"]) == {"fedavg": 1, "rfa": 3, "one-step-rfa": 1}.get(r["aggregator"], 0)
        assert 0 < float(r["max_effective_weight"]) <= 1
        assert (r["corruption"] == "none") == (float(r["rho"]) == 0.0)
    blob = json.loads((out / "results.json").read_text())
    assert len(blob["runs"]) == len(rows) and blob["runs"][0]["config"]["rounds"] == 2
    assert "modular" in blob["meta"]["oracle_choice"]
    for png in ("accuracy_vs_rho.png", "accuracy_vs_calls.png", "privacy_vs_robustness.png"):
        assert (out / png).stat().st_size > 1000
    text = capsys.readouterr().out
    assert "| aggregator |" in text and "oracle: modular" in text


def test_compare_ideal_oracle_prices_secure_bytes_with_the_cost_model(tmp_path):
    """With the ideal oracle the secure aggregators are charged what the secure protocol would send
    (the modular oracle's ledger for the same call shapes), never 0 and never the plaintext upload."""
    runs = {}
    for oracle in ("ideal", "modular"):
        out = tmp_path / oracle
        assert main(["compare", "--data", "digits", "--partition", "iid", "--clients", "6", "--clients-per-round", "4",
                     "--rounds", "1", "--seeds", "1", "--aggregators", "fedavg,rfa", "--corruptions", "none", "--rhos", "0",
                     "--oracle", oracle, "--jobs", "1", "--no-progress", "--no-plots", "--out", str(out)]) == 0
        with (out / "results.csv").open() as f:
            runs[oracle] = {r["aggregator"]: float(r["bytes_per_client_per_round"]) for r in csv.DictReader(f)}
    assert runs["ideal"] == runs["modular"]


def test_compare_missing_optional_data_is_a_clear_error(tmp_path, capsys):
    rc = main(["compare", "--data", "fashion-mnist", "--data-dir", str(tmp_path / "none"), "--no-progress",
               "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "apt install dataset-fashion-mnist" in capsys.readouterr().err


def test_sweep_skips_redundant_runs():
    sw = Sweep(base=quick_config(), aggregators=("fedavg", "trimmed-mean"), corruptions=("none", "omniscient", "gaussian"),
               rhos=(0.0, 0.1, 0.25), seeds=(0, 1))
    cfgs = expand(sw)
    assert len(cfgs) == 2 * (1 + 2 * 2) * 2
    assert all((c.corruption == "none") == (c.rho == 0.0) for c in cfgs)
    tm = [c for c in cfgs if c.aggregator == "trimmed-mean" and c.rho == 0.25]
    assert all(c.aggregator_params == {"rho": 0.25} for c in tm)
    assert all(c.aggregator_params["budget"] == 3 for c in expand(Sweep(base=quick_config(), aggregators=("rfa",))))


def test_train_one_configuration(tmp_path, capsys):
    rc = main(["train", "--data", "synthetic-cls", "--partition", "natural", "--rounds", "3", "--clients-per-round", "4",
               "--local-steps", "3", "--aggregator", "rfa", "--corruption", "omniscient", "--rho", "0.2", "--personalized",
               "--oracle", "ideal", "--eval-every", "1", "--out", str(tmp_path)])
    assert rc == 0
    res = json.loads((tmp_path / "result.json").read_text())
    assert res["config"]["personalized"] is True and res["config"]["aggregator"] == "rfa"
    assert len(res["history"]) == 3 and "local_accuracy" in res["final"]
    assert "accuracy" in capsys.readouterr().out


def test_train_bad_flag_value_is_clear_error(capsys):
    assert main(["train", "--rho", "2.0"]) == 2
    assert "rho" in capsys.readouterr().err
    assert main(["train", "--oracle", "quantum"]) == 2
