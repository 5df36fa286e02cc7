"""`rfa compare` / `rfa train`: validation, shared defaults, --config, output folders, Ctrl-C and --resume,
any subset of the sweep, and publishable outputs (exact accuracies, upload/download bytes)."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

from rfa.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "digits", "--partition", "iid", "--clients", "6", "--clients-per-round", "4", "--rounds", "2",
        "--eval-every", "1", "--no-progress"]
TRAIN_TINY = TINY[:-1]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# ------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("argv,needle", [
    (["compare", "--lr", "nan"], "--lr"), (["compare", "--lr", "inf"], "--lr"), (["train", "--lr", "-inf"], "--lr"),
    (["compare", "--jobs", "0"], "--jobs"), (["compare", "--rhos", "0.1,0.5"], "--rhos"), (["train", "--rho", "0.5"], "--rho"),
    (["compare", "--dropout-rate", "1"], "--dropout-rate"), (["compare", "--seeds", "0"], "--seeds"),
    (["compare", "--rounds", "2.5"], "--rounds"), (["train", "--clients-per-round", "0"], "--clients-per-round"),
    (["compare", "--aggregators", "fedavg,median"], "median"), (["compare", "--corruptions", "nonsense"], "nonsense"),
    (["train", "--aggregator-params", "foo"], "key=value"), (["train", "--data", "mnist"], "unknown data set"),
    (["train", "--dirichlet-alpha", "0"], "--dirichlet-alpha"), (["train", "--local-test-fraction", "1"], "fraction"),
])
def test_nonsense_flags_are_one_line_exit_2(argv, needle, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "Traceback" not in err


@pytest.mark.parametrize("argv,needle", [
    (["train", "--rho", "0.1"], "--rho 0.1 does nothing without --corruption"),
    (["train", "--corruption-params", "z=1"], "does nothing without --corruption"),
    (["train", "--oracle", "ideal", "--dropout-rate", "0.1"], "needs a secure protocol"),
    (["compare", "--oracle", "ideal", "--dropout-rate", "0.1"], "needs a secure protocol"),
    (["train", "--aggregator", "rfa", "--aggregator-params", "foo=1"], "accepted: "),
    (["train", "--aggregator", "rfa", "--aggregator-params", "budget=x"], "budget"),
    (["train", "--oracle-params", "bogus=1"], "accepted: "),
    (["train", "--local-steps", "2", "--local-epochs", "1"], "not both"),
])
def test_flags_that_do_nothing_or_do_not_fit_are_refused(argv, needle, capsys, tmp_path):
    assert main(argv + ["--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()  # refused before any work: no folder made


def test_unknown_aggregator_parameter_lists_the_accepted_ones(capsys, tmp_path):
    from rfa import aggregators

    assert main(["train", "--aggregator", "rfa", "--aggregator-params", "foo=1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    import inspect

    for name in inspect.signature(aggregators.REGISTRY["rfa"]).parameters:
        assert name in err


def test_help_lists_defaults_registry_names_and_params_format(capsys):
    from rfa import aggregators
    from rfa.fl import attacks, data, models

    for cmd in ("compare", "train"):
        assert main([cmd, "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        for name in (*aggregators.NAMES, *attacks.CORRUPTIONS, *models.MODELS, *data.DATASETS):
            assert name in text, (cmd, name)
        assert "key=value" in text and "(default modular" in text and "runs/" in text
        assert "(default 25)" in text and "(default 0.1)" in text


def test_train_warns_about_a_corruption_at_rho_zero(tmp_path, capsys):
    assert main(["train", *TRAIN_TINY, "--corruption", "gaussian", "--out", str(tmp_path / "o"), "--quiet"]) == 0
    assert "corrupts no client" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- train defaults and saving


def test_train_shares_compare_defaults_and_always_saves(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TRAIN_TINY]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("rfa train: digits / linear / fedavg via the modular oracle")  # header first
    assert lines[1].startswith("  output: runs/train-")
    saved = list((tmp_path / "runs").glob("train-*/result.json"))
    assert len(saved) == 1
    res = json.loads(saved[0].read_text())
    assert res["config"]["oracle"] == "modular"
    rows = _rows(saved[0].parent / "results.csv")
    from rfa.fl.experiments import CSV_COLUMNS

    assert list(rows[0]) == list(CSV_COLUMNS)
    bytes_lines = [ln for ln in lines if ln.strip().startswith("bytes_")]
    assert bytes_lines and all(ln.split(": ")[1].isdigit() for ln in bytes_lines)  # integers, no 186090.0000


def test_train_unwritable_out_fails_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    t0 = time.perf_counter()
    assert main(["train", "--out", str(tmp_path / "file" / "sub")]) == 2
    cap = capsys.readouterr()
    assert "not writable" in cap.err and "round" not in cap.out  # no training happened (the default is 25 rounds)


def test_non_empty_out_refused_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["train", *TRAIN_TINY, "--out", str(out), "--quiet"]) == 0
    before = (out / "result.json").read_text()
    assert main(["train", *TRAIN_TINY, "--out", str(out), "--quiet", "--seed", "1"]) == 2
    assert "not empty" in capsys.readouterr().err and (out / "result.json").read_text() == before
    assert main(["train", *TRAIN_TINY, "--out", str(out), "--quiet", "--seed", "1", "--overwrite"]) == 0
    assert json.loads((out / "result.json").read_text())["config"]["seed"] == 1


# ------------------------------------------------------------------------------------- any subset; outputs


def _no_nan(text: str) -> None:
    assert "nan" not in text.lower() and "inf" not in text.replace("info", "").lower()


def test_readme_example_subset_gives_a_true_header_and_no_nan(tmp_path, capsys):
    """`rfa compare --oracle secagg --aggregators fedavg,rfa --corruptions omniscient --rhos 0.1` (tiny)."""
    out = tmp_path / "o"
    assert main(["compare", *TINY, "--seeds", "1", "--oracle", "secagg", "--aggregators", "fedavg,rfa",
                 "--corruptions", "omniscient", "--rhos", "0.1", "--jobs", "1", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "added the rho = 0 baseline" in cap.err
    assert "rfa compare: 4 runs: 2 aggregators x (rho=0 baseline + 1 corruption x rho 0.1) x 1 seeds" in cap.out
    rows = _rows(out / "results.csv")
    assert len(rows) == 4 and sorted({r["rho"] for r in rows}) == ["0.0", "0.1"]
    _no_nan((out / "results.csv").read_text().replace("backdoor_accuracy", "").replace("local_accuracy", ""))
    table = (out / "table.md").read_text()
    _no_nan(table)
    assert "acc (rho=0)" in table and "acc omniscient (rho=0.1)" in table
    for png in ("accuracy_vs_rho.png", "accuracy_vs_calls.png", "privacy_vs_robustness.png"):
        assert (out / png).stat().st_size > 1000


def test_corruptions_without_a_positive_rho_adapt_with_a_warning(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compare", *TINY, "--seeds", "1", "--aggregators", "fedavg", "--corruptions", "none", "--rhos", "0.25",
                 "--jobs", "1", "--out", str(out)]) == 0
    assert "only the rho = 0 runs" in capsys.readouterr().err
    assert [r["rho"] for r in _rows(out / "results.csv")] == ["0.0"]
    _no_nan((out / "table.md").read_text())


def test_accuracy_is_an_exact_fraction_and_bytes_are_split(tmp_path):
    out = tmp_path / "o"
    # 10 clients per call, each dropping with probability 0.1: the seeded schedule keeps >= t survivors
    assert main(["compare", *TINY, "--clients", "10", "--clients-per-round", "10", "--seeds", "1",
                 "--aggregators", "fedavg,coordinate-median", "--corruptions", "gaussian", "--rhos", "0,0.25",
                 "--dropout-rate", "0.1", "--jobs", "1", "--no-plots", "--out", str(out)]) == 0
    rows = _rows(out / "results.csv")
    for r in rows:
        # the stored float is the double nearest to correct/total: it parses back to exactly that fraction
        correct, total = int(r["test_correct"]), int(r["test_total"])
        assert float(r["accuracy"]) == correct / total
        assert Fraction(r["accuracy"]).limit_denominator(total) == Fraction(correct, total)
        up, down, both = (float(r[k]) for k in ("bytes_up_per_client_per_round", "bytes_down_per_client_per_round",
                                                "bytes_per_client_per_round"))
        # up + down re-adds the two shares of one float: equal to the total within a few ulps of it
        assert math.isclose(up + down, both, rel_tol=4 * sys.float_info.epsilon)
        assert float(r["dropout_rate"]) == 0.1
        if r["aggregator"] == "fedavg":
            assert up > down > 0 and float(r["min_survivor_fraction"]) <= 1.0
        else:  # plaintext-only: the float32 update uploaded in the clear, nothing from the protocol down
            assert down == 0 and r["min_survivor_fraction"] == ""
    assert any(float(r["min_survivor_fraction"]) < 1.0 for r in rows if r["aggregator"] == "fedavg")


# ------------------------------------------------------------------------------------- --config


def test_compare_config_file_toml_and_json_flags_override(tmp_path):
    cfg = tmp_path / "study.toml"
    cfg.write_text('data = "digits"\npartition = "iid"\nclients = 6\nclients_per_round = 4\nrounds = 1\nseeds = 1\n'
                   'aggregators = ["fedavg"]\ncorruptions = ["none"]\nrhos = [0]\nno_progress = true\nno-plots = true\n')
    out = tmp_path / "o"
    assert main(["compare", "--config", str(cfg), "--rounds", "2", "--jobs", "1", "--out", str(out)]) == 0
    rows = _rows(out / "results.csv")
    assert len(rows) == 1 and rows[0]["rounds"] == "2" and rows[0]["dataset"] == "digits"
    assert not (out / "accuracy_vs_rho.png").exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"round": 3}')
    assert main(["compare", "--config", str(bad)]) == 2


def test_bad_config_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('{"lr": "nan"}')
    assert main(["compare", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rfa compare: config file") and err.count("\n") == 1


# ------------------------------------------------------------------------------------- Ctrl-C and --resume

SWEEP = [*TINY, "--seeds", "4", "--aggregators", "fedavg,rfa,coordinate-median", "--corruptions", "omniscient",
         "--rhos", "0.25", "--no-plots"]
N_RUNS = 3 * (1 + 1) * 4


@pytest.mark.slow
def test_ctrl_c_saves_finished_runs_and_resume_matches_an_uninterrupted_sweep(tmp_path):
    """Ctrl-C (SIGINT to the process group, workers included) mid-sweep: exit 130, one line naming the
    saved runs and `--resume DIR`, no traceback; the saved rows are whole; `--resume` then finishes the
    sweep with the same rows as an uninterrupted run in every column but the timing one."""
    out = tmp_path / "interrupted"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "rfa.cli", "compare", *SWEEP, "--jobs", "2", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    records = out / "records.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and len(records.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the sweep ended before it could be interrupted: " + proc.stderr.read()
    os.killpg(proc.pid, signal.SIGINT)
    t0 = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("rfa compare did not stop after Ctrl-C") from None
    stopped_in = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    saved = len(records.read_text().splitlines())
    assert last == (f"rfa compare: interrupted (SIGINT): {saved} of {N_RUNS} runs saved in {out}; "
                    f"continue with: rfa compare --resume {out}")
    assert 2 <= saved < N_RUNS, saved
    assert stopped_in < 30  # "within a few seconds"; generous for a loaded CI machine, far below a finished sweep
    part = _rows(out / "records.csv")
    assert len(part) == saved and all(r["accuracy"] and r["wall_time_s"] for r in part)
    assert not (out / "results.csv").exists()

    assert main(["compare", "--resume", str(out), "--jobs", "1", "--no-progress"]) == 0
    ref = tmp_path / "reference"
    assert main(["compare", *SWEEP, "--jobs", "1", "--out", str(ref)]) == 0

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "wall_time_s"} for r in rows]

    a, b = _rows(out / "results.csv"), _rows(ref / "results.csv")
    assert len(a) == N_RUNS and strip(a) == strip(b)
    assert (out / "table.md").read_text() == (ref / "table.md").read_text()
    ja, jb = (json.loads((d / "results.json").read_text())["runs"] for d in (out, ref))
    assert [r["history"] for r in ja] == [r["history"] for r in jb]


def test_resume_refuses_a_changed_sweep_and_a_missing_store(tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["compare", *TINY, "--seeds", "1", "--aggregators", "fedavg", "--corruptions", "none", "--rhos", "0",
                 "--jobs", "1", "--no-plots", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", "--resume", str(out), "--rounds", "3"]) == 2
    assert "drop --rounds" in capsys.readouterr().err
    assert main(["compare", "--resume", str(tmp_path / "nothing")]) == 2
    assert "no interrupted run" in capsys.readouterr().err
    # the other studies refuse to continue a compare folder (nothing written there)
    files = sorted(p.name for p in out.iterdir())
    for cmd in ("leakage", "robustness"):
        assert main([cmd, "--resume", str(out)]) == 2
        assert "holds a 'rfa compare" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == files
    # a complete sweep resumes to the same outputs without running anything
    before = _rows(out / "results.csv")
    assert main(["compare", "--resume", str(out), "--jobs", "1"]) == 0
    assert "resuming: 1 of 1 runs already saved" in capsys.readouterr().out
    assert _rows(out / "results.csv") == before


def test_compare_non_empty_out_refused(tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["compare", *TINY, "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- figures


def _study_json(tmp_path) -> dict:
    out = tmp_path / "fig"
    assert main(["compare", *TINY, "--seeds", "2", "--aggregators", "fedavg,rlr,coordinate-median",
                 "--corruptions", "omniscient,gaussian,data-poisoning,alie", "--rhos", "0.25", "--jobs", "1", "--no-plots",
                 "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def _texts(fig) -> str:
    parts = [t.get_text() for t in fig.texts] + [fig._suptitle.get_text() if fig._suptitle else ""]
    for ax in fig.axes:
        parts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    for leg in fig.legends:
        parts += [t.get_text() for t in leg.get_texts()]
    return " ".join(" ".join(parts).split())


def test_figures_name_the_study_and_the_band_and_stay_readable(tmp_path):
    import matplotlib.pyplot as plt

    from rfa.fl import plots

    blob = _study_json(tmp_path)
    rows, runs, meta = blob["rows"], blob["runs"], blob["meta"]
    figs = {"rho": plots.accuracy_vs_rho_figure(rows, meta=meta),
            "calls": plots.accuracy_vs_calls_figure(runs, rows=rows, meta=meta),
            "privacy": plots.privacy_vs_robustness_figure(rows, meta=meta)}
    try:
        for name, fig in figs.items():
            text = _texts(fig)
            for needle in ("digits", "linear", "2 rounds", "6 clients", "4 per round", "2 seeds", "modular oracle"):
                assert needle in text, (name, needle)
            if name != "privacy":
                assert "min-max over seeds" in text
            w, h = fig.get_size_inches()
            assert 0.9 <= w / h <= 3.2, (name, w, h)  # four corruptions wrap onto two rows, not one 1848x396 strip
        # plaintext-only aggregators are named where they are not drawn, and marked where they are
        assert "not drawn: coordinate-median (plaintext-only" in _texts(figs["calls"])
        assert "coordinate-median (plaintext-only)" in _texts(figs["rho"])
        # overlapping curves stay distinguishable: line style and marker differ between aggregators
        lines = [ln for ln in figs["rho"].axes[0].get_lines()]
        styles = {(ln.get_linestyle(), ln.get_marker()) for ln in lines}
        assert len(lines) == 3 and len(styles) == 3
    finally:
        for fig in figs.values():
            plt.close(fig)


@pytest.mark.slow
def test_train_ctrl_c_is_one_line_exit_130(tmp_path):
    out = tmp_path / "t"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "rfa.cli", "train", *TRAIN_TINY, "--rounds", "100000", "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    lines = [proc.stdout.readline(), proc.stdout.readline(), proc.stdout.readline()]  # header, output, first round
    assert lines[2].strip().startswith("round"), "".join(lines) + proc.stderr.read()
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("rfa train did not stop after Ctrl-C") from None
    assert proc.returncode == 130 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"rfa train: interrupted (SIGINT) before the run finished; nothing saved in {out} "
        "(one run has no partial results: run the command again)"]


def test_calls_figure_without_a_secure_aggregator_says_so():
    import matplotlib.pyplot as plt

    from rfa.fl.plots import accuracy_vs_calls_figure

    runs = [{"config": {"aggregator": "coordinate-median", "corruption": c, "rho": rho}, "final": {"secure_compatible": False},
             "history": [{"cumulative_oracle_calls": 0, "accuracy": 0.5}]} for c, rho in (("none", 0.0), ("omniscient", 0.1))]
    fig = accuracy_vs_calls_figure(runs)
    try:
        text = " ".join(t.get_text() for ax in fig.axes for t in ax.texts)
        assert "no secure-compatible aggregator" in text and "coordinate-median" in text
        assert not any(ax.get_lines() for ax in fig.axes)
    finally:
        plt.close(fig)
