"""``rfa robustness``: the aggregator x attack matrix (table, heat map, results rows)."""

from __future__ import annotations

import csv
import json
import math

import pytest

from rfa.cli import main
from rfa.fl import robustness as rb
from rfa.fl.experiments import CSV_COLUMNS


def _rows():
    rows = []
    for a, sec in (("fedavg", True), ("coordinate-median", False)):
        rows.append({"aggregator": a, "corruption": "none", "rho": 0.0, "accuracy": 0.9, "secure_compatible": sec})
        for seed, (x, y) in enumerate(((0.1, 0.5), (0.3, 0.7))):
            rows.append({"aggregator": a, "corruption": "min-max", "rho": 0.25, "accuracy": x if a == "fedavg" else y,
                         "secure_compatible": sec, "seed": seed})
            rows.append({"aggregator": a, "corruption": "backdoor", "rho": 0.25, "accuracy": 0.8, "backdoor_accuracy": 0.5 + seed / 10,
                         "secure_compatible": sec, "seed": seed})
    return rows


def test_matrix_cells_are_means_over_seeds_and_worst_is_the_row_minimum():
    mx = rb.matrix(_rows())
    assert mx["aggregators"] == ["fedavg", "coordinate-median"] and mx["attacks"] == ["min-max", "backdoor"]
    assert mx["rhos"] == [0.25]
    assert math.isclose(mx["acc"][("fedavg", "min-max", 0.25)], 0.2)
    assert math.isclose(mx["acc"][("coordinate-median", "min-max", 0.25)], 0.6)
    assert math.isclose(mx["backdoor"][("fedavg", "backdoor", 0.25)], 0.55)
    assert ("fedavg", "min-max", 0.25) not in mx["backdoor"]
    assert math.isclose(mx["worst"][("fedavg", 0.25)], 0.2) and math.isclose(mx["worst"][("coordinate-median", 0.25)], 0.6)
    assert mx["secure"] == {"fedavg": True, "coordinate-median": False}
    assert mx["seeds"][("fedavg", "backdoor", 0.25)] == 2
    text = rb.format_matrix(mx, 0.25)
    assert "| *fedavg | yes | 90.0 | 20.0 | 80.0 (bd 55.0) | 20.0 |" in text
    assert "| coordinate-median | no | 90.0 | 60.0 | 80.0 (bd 55.0) | 60.0 |" in text


def test_robustness_command_writes_matrix_heatmap_and_rows(tmp_path, capsys):
    out = tmp_path / "rb"
    rc = main(["robustness", "--data", "digits", "--partition", "iid", "--clients", "6", "--clients-per-round", "5",
               "--rounds", "1", "--seeds", "1", "--aggregators", "fedavg,coordinate-median", "--attacks", "sign-flip,backdoor",
               "--rhos", "0.25", "--oracle", "ideal", "--jobs", "1", "--no-progress", "--out", str(out)])
    assert rc == 0
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert len(rows) == 2 * (1 + 2)  # clean run + two attacks at rho 0.25, per aggregator
    assert {r["corruption"] for r in rows} == {"none", "sign-flip", "backdoor"}
    assert all(r["backdoor_accuracy"] != "" and r["base_class_accuracy"] != "" for r in rows if r["corruption"] == "backdoor")
    text = (out / "matrix.md").read_text()
    assert "rho = 0.25" in text and "*fedavg" in text and "| coordinate-median | no |" in text
    assert (out / "robustness_heatmap.png").stat().st_size > 5000
    assert "rho = 0.25" in capsys.readouterr().out


@pytest.mark.parametrize("extra,needle", [(["--attacks", "meteor"], "meteor"), (["--oracle", "auto"], "auto")])
def test_robustness_bad_input_is_one_line_and_no_output(tmp_path, capsys, extra, needle):
    out = tmp_path / "rb"
    assert main(["robustness", "--data", "digits", "--rounds", "1", "--seeds", "1", "--no-progress", *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rfa robustness:") and needle in err and "Traceback" not in err
    assert not out.exists()


def test_robustness_saves_every_run_and_resumes_or_extends_without_redoing_finished_runs(tmp_path, monkeypatch):
    """Each finished run is appended to the run store as it finishes; --resume re-runs only what is
    missing (a torn or lost record), and flags given with --resume extend the saved sweep."""
    from rfa.fl import experiments as ex

    out = tmp_path / "rb"
    argv = ["robustness", "--data", "digits", "--partition", "iid", "--clients", "6", "--clients-per-round", "5",
            "--rounds", "1", "--seeds", "1", "--aggregators", "fedavg", "--attacks", "sign-flip", "--rhos", "0.25",
            "--oracle", "ideal", "--jobs", "1", "--no-progress", "--no-plots"]
    calls = []
    real = ex._run_one
    monkeypatch.setattr(ex, "_run_one", lambda cfg: calls.append((cfg.aggregator, cfg.corruption)) or real(cfg))
    assert main([*argv, "--out", str(out)]) == 0
    assert calls == [("fedavg", "none"), ("fedavg", "sign-flip")]
    first = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in csv.DictReader((out / "results.csv").open())]
    lines = (out / "records.jsonl").read_text().splitlines()
    (out / "records.jsonl").write_text(lines[0] + "\n" + lines[1][:40])  # the second record torn mid-write
    calls.clear()
    assert main(["robustness", "--resume", str(out), "--no-progress", "--no-plots"]) == 0
    assert calls == [("fedavg", "sign-flip")]
    rows = [{k: v for k, v in r.items() if k != "wall_time_s"} for r in csv.DictReader((out / "results.csv").open())]
    assert rows == first  # the re-run is seeded by its config: the same row
    calls.clear()
    assert main(["robustness", "--resume", str(out), "--aggregators", "fedavg,coordinate-median", "--no-progress",
                 "--no-plots"]) == 0
    assert sorted(calls) == [("coordinate-median", "none"), ("coordinate-median", "sign-flip")]
    assert len(list(csv.DictReader((out / "results.csv").open()))) == 4
    # a manifest written before a flag existed resumes with that flag's default
    man = json.loads((out / "manifest.json").read_text())
    del man["args"]["dropout_rate"]
    (out / "manifest.json").write_text(json.dumps(man))
    calls.clear()
    assert main(["robustness", "--resume", str(out), "--no-progress", "--no-plots"]) == 0
    assert calls == []
    assert main([*argv, "--out", str(out)]) == 2  # a non-empty folder is refused without --resume/--overwrite
