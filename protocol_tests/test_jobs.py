"""rfa.jobs: validation, key=value parameters, --config files, output folders, run store, interruption."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Literal

import pytest

from rfa import jobs
from rfa.jobs import RunStore, UsageError
from secagg.errors import InvalidInput

# ---------------------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", float("nan"), float("inf"), "x", None, True])
def test_check_finite_refuses_non_finite_and_non_numbers(bad):
    with pytest.raises(UsageError, match="lr"):
        jobs.check_finite("lr", bad)


def test_check_range_bounds_open_and_closed():
    assert jobs.check_range("rho", "0", 0, 0.5, hi_open=True) == 0.0
    with pytest.raises(UsageError, match=r"\[0, 0.5\)"):
        jobs.check_range("rho", 0.5, 0, 0.5, hi_open=True)
    with pytest.raises(UsageError):
        jobs.check_range("lr", 0.0, 0, None, lo_open=True)
    assert jobs.check_range("lr", 1e-3, 0, None, lo_open=True) == 1e-3
    with pytest.raises(UsageError):
        jobs.check_range("x", -1e-300, 0.0, 1.0)


@pytest.mark.parametrize("bad", [0, -1, "0", "1.5", 1.5, "two", True])
def test_check_int_default_is_at_least_one(bad):
    with pytest.raises(UsageError, match="jobs"):
        jobs.check_int("jobs", bad)


def test_check_int_accepts_integral_values():
    assert jobs.check_int("jobs", "3") == 3 and jobs.check_int("jobs", 2.0) == 2
    assert jobs.check_int("seed", 0, lo=0) == 0
    with pytest.raises(UsageError, match=r"in \[1, 4\]"):
        jobs.check_int("k", 5, 1, 4)


def test_probability_half_open_by_default():
    assert jobs.check_probability("p", 0) == 0.0
    with pytest.raises(UsageError):
        jobs.check_probability("p", 1.0)
    assert jobs.check_probability("p", 1.0, allow_one=True) == 1.0
    with pytest.raises(UsageError):
        jobs.check_probability("p", -0.1)


def test_usage_error_is_the_projects_invalid_input():
    assert issubclass(UsageError, InvalidInput) and issubclass(UsageError, ValueError)


def _parser() -> argparse.ArgumentParser:
    p = jobs.OneLineErrorParser(prog="tool")
    p.add_argument("--config")
    p.add_argument("--lr", type=jobs.float_arg(0, None, lo_open=True), default=0.1)
    p.add_argument("--jobs", type=jobs.int_arg(1), default=1)
    p.add_argument("--rhos", type=jobs.csv_arg(jobs.float_arg(0, 0.5, hi_open=True)), default=[0.0])
    p.add_argument("--names", type=jobs.csv_arg(choices=lambda: ("a", "b", "c")), default=["a"])
    p.add_argument("--params", type=jobs.params_arg, default={})
    p.add_argument("--oracle", choices=("ideal", "modular"), default="modular")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", dest="full", action="store_false")
    mode.add_argument("--full", dest="full", action="store_true")
    p.set_defaults(full=False)
    return p


@pytest.mark.parametrize("argv,needle", [
    (["--lr", "nan"], "--lr"), (["--lr", "inf"], "--lr"), (["--lr", "0"], "--lr"), (["--jobs", "0"], "--jobs"),
    (["--rhos", "0,0.5"], "--rhos"), (["--rhos", "0.1,0.1"], "twice"), (["--names", "a,z"], "not one of a, b, c"),
    (["--params", "foo"], "key=value"),
])
def test_argparse_types_give_one_line_and_exit_2(argv, needle, capsys):
    with pytest.raises(SystemExit) as ei:
        _parser().parse_args(argv)
    assert ei.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err and "usage:" not in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------------- parameters


class _Target:
    def __init__(self, budget: int = 3, nu: float = 1e-6, mode: Literal["a", "b"] = "a", f: int | None = None,
                 flag: bool = False, name: str = "x") -> None:
        pass


def test_parse_and_bind_params_coerce_to_the_signature():
    raw = jobs.parse_params("budget=5, nu=1e-4,mode=b,f=none,flag=true,name=hi")
    assert raw == {"budget": "5", "nu": "1e-4", "mode": "b", "f": "none", "flag": "true", "name": "hi"}
    bound = jobs.bind_params(raw, _Target, what="aggregator 't'")
    assert bound == {"budget": 5, "nu": 1e-4, "mode": "b", "f": None, "flag": True, "name": "hi"}
    assert type(bound["budget"]) is int and type(bound["nu"]) is float
    assert jobs.bind_params(jobs.parse_params('{"f": 2}'), _Target, what="t") == {"f": 2}


def test_unknown_parameter_lists_the_accepted_names():
    with pytest.raises(UsageError, match=r"unknown parameter 'foo' for aggregator 't'; accepted: budget, nu, mode, f, flag, name"):
        jobs.bind_params({"foo": "1"}, _Target, what="aggregator 't'")

    class NoParams:
        def __init__(self) -> None:
            pass

    with pytest.raises(UsageError, match=r"accepted: \(none\)"):
        jobs.bind_params({"foo": "1"}, NoParams, what="aggregator 'fedavg'")


@pytest.mark.parametrize("raw,needle", [({"budget": "2.5"}, "integer"), ({"nu": "nan"}, "finite"),
                                        ({"mode": "c"}, "one of a, b"), ({"flag": "maybe"}, "true or false")])
def test_bad_parameter_values_name_the_parameter(raw, needle):
    with pytest.raises(UsageError, match=needle):
        jobs.bind_params(raw, _Target, what="t")


@pytest.mark.parametrize("text", ["foo", "=1", "a=1,a=2", "{bad json", "[1, 2]"])
def test_malformed_params_are_usage_errors(text):
    with pytest.raises(UsageError):
        jobs.parse_params(text)


def test_kwargs_targets_accept_any_name():
    def f(**kw):
        return kw

    assert jobs.accepted_params(f) is None
    assert jobs.bind_params({"anything": "1"}, f, what="f") == {"anything": "1"}


# ---------------------------------------------------------------------------------------------- --config


def test_config_json_and_toml_set_defaults_and_flags_override(tmp_path):
    p = _parser()
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"lr": 0.5, "jobs": 3, "rhos": [0.1, 0.25], "names": "b,c", "params": {"budget": 2}, "full": True}))
    a = jobs.parse_args(p, ["--config", str(j), "--jobs", "2"])
    assert (a.lr, a.jobs, a.rhos, a.names, a.params, a.full) == (0.5, 2, [0.1, 0.25], ["b", "c"], {"budget": "2"}, True)
    t = tmp_path / "c.toml"
    t.write_text('lr = 0.25\noracle = "ideal"\nquick = true\n')
    a = jobs.parse_args(_parser(), ["--config", str(t), "--lr", "0.125"])
    assert (a.lr, a.oracle, a.full) == (0.125, "ideal", False)


@pytest.mark.parametrize("content,suffix,needle", [
    ('{"lrr": 1}', ".json", "unknown key 'lrr'; accepted: "),
    ('{"lr": "nan"}', ".json", "lr"),
    ('{"jobs": 0}', ".json", "jobs"),
    ('{"oracle": "fast"}', ".json", "not one of ideal, modular"),
    ('{"full": "yes"}', ".json", "switch"),
    ('{"config": "x"}', ".json", "unknown key 'config'"),
    ("[1]", ".json", "table/object"),
    ("{not json", ".json", "not valid JSON"),
    ("lr = = 1", ".toml", "not valid TOML"),
])
def test_bad_config_files_are_usage_errors(tmp_path, content, suffix, needle):
    f = tmp_path / f"c{suffix}"
    f.write_text(content)
    with pytest.raises(UsageError, match=needle):
        jobs.parse_args(_parser(), ["--config", str(f)])


def test_missing_config_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="cannot read config file"):
        jobs.parse_args(_parser(), ["--config", str(tmp_path / "nope.json")])


def test_config_lists_every_accepted_key(tmp_path):
    f = tmp_path / "c.json"
    f.write_text('{"bogus": 1}')
    with pytest.raises(UsageError) as ei:
        jobs.parse_args(_parser(), ["--config", str(f)])
    for k in ("lr", "jobs", "rhos", "names", "params", "oracle", "quick", "full"):
        assert k in str(ei.value)


# ---------------------------------------------------------------------------------------------- output folders


def test_out_dir_default_is_under_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    p = jobs.prepare_out_dir(None, "compare")
    assert p.parent == Path("runs") and p.name.startswith("compare-") and p.is_dir()
    assert jobs.default_out_dir("compare") != p  # a second default never reuses the first


def test_non_empty_out_dir_is_refused_unless_resume_or_overwrite(tmp_path):
    out = tmp_path / "o"
    jobs.prepare_out_dir(out, "c")
    RunStore(out, ["a"], manifest={"command": "c"})
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(UsageError, match=f"--resume {out}"):
        jobs.prepare_out_dir(out, "c")
    assert jobs.prepare_out_dir(None, "c", resume=out) == out
    jobs.prepare_out_dir(out, "c", overwrite=True, owned=["table.md"])
    assert not (out / RunStore.RECORDS).exists() and (out / "mine.txt").read_text() == "keep me"
    with pytest.raises(UsageError, match="another --out"):  # a folder of unrelated files
        jobs.prepare_out_dir(out, "c")


def test_resume_needs_a_store_and_the_same_folder(tmp_path):
    with pytest.raises(UsageError, match="no interrupted run"):
        jobs.prepare_out_dir(None, "c", resume=tmp_path)
    (tmp_path / RunStore.MANIFEST).write_text("{}")
    with pytest.raises(UsageError, match="different folders"):
        jobs.prepare_out_dir(tmp_path / "x", "c", resume=tmp_path)
    with pytest.raises(UsageError, match="exclude"):
        jobs.prepare_out_dir(None, "c", resume=tmp_path, overwrite=True)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root can write anywhere; POSIX permissions")
def test_unwritable_out_dir_fails_before_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="not writable"):
            jobs.prepare_out_dir(ro / "sub", "c")
    finally:
        ro.chmod(0o700)


def test_out_dir_that_cannot_be_created_fails_before_work(tmp_path):
    """Runs as any user, root included: a folder below a regular file can never be created."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="not writable"):
        jobs.prepare_out_dir(tmp_path / "file" / "sub", "c")


def test_out_path_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "f"
    f.write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        jobs.prepare_out_dir(f, "c")


# ---------------------------------------------------------------------------------------------- run store


def test_config_hash_is_stable_and_order_free():
    a = {"lr": 0.1, "agg": "rfa", "params": {"nu": 1e-6, "budget": 3}}
    b = {"params": {"budget": 3, "nu": 1e-6}, "agg": "rfa", "lr": 0.1}
    assert jobs.config_hash(a) == jobs.config_hash(b)
    assert jobs.config_hash(a) != jobs.config_hash({**a, "lr": 0.2})
    # the canonical JSON is fixed, so the key is a constant of the config (independent of machine)
    assert jobs.config_hash({"a": 1}) == __import__("hashlib").sha256(b'{"a":1}').hexdigest()[:16]


def test_run_store_appends_and_resumes(tmp_path):
    cols = ["name", "acc"]
    s = RunStore(tmp_path, cols, manifest={"command": "t", "args": {"x": 1}})
    s.append("h1", {"name": "a", "acc": 0.5}, {"history": [1, 2]})
    s.append("h2", {"name": "b", "acc": float("nan")})
    with pytest.raises(ValueError):
        s.append("h1", {"name": "a", "acc": 0.5})
    lines = (tmp_path / RunStore.CSV).read_text().splitlines()
    assert lines == ["name,acc", "a,0.5", "b,"]
    r = RunStore(tmp_path, cols, resume=True)
    assert r.done == {"h1", "h2"} and r.manifest["args"] == {"x": 1}
    assert r.records()[0]["record"] == {"history": [1, 2]} and r.rows()[1] == {"name": "b", "acc": None}
    with pytest.raises(UsageError, match="other result columns"):
        RunStore(tmp_path, ["name"], resume=True)


def test_run_store_drops_a_torn_last_line_and_rebuilds_the_csv(tmp_path):
    s = RunStore(tmp_path, ["k"], manifest={})
    s.append("h1", {"k": 1})
    with (tmp_path / RunStore.RECORDS).open("a") as f:
        f.write('{"hash": "h2", "row": {"k"')  # a crash mid-line
    with (tmp_path / RunStore.CSV).open("a") as f:
        f.write("9\n")  # a CSV row without its JSON record
    r = RunStore(tmp_path, ["k"], resume=True)
    assert r.done == {"h1"}
    assert (tmp_path / RunStore.CSV).read_text() == "k\n1\n"
    r.append("h3", {"k": 3})
    assert [json.loads(x)["hash"] for x in (tmp_path / RunStore.RECORDS).read_text().splitlines()] == ["h1", "h3"]


def test_damaged_middle_line_is_an_error_not_a_silent_loss(tmp_path):
    s = RunStore(tmp_path, ["k"], manifest={})
    s.append("h1", {"k": 1})
    (tmp_path / RunStore.RECORDS).write_text("garbage\n" + (tmp_path / RunStore.RECORDS).read_text())
    with pytest.raises(UsageError, match="line 1"):
        RunStore(tmp_path, ["k"], resume=True)


# ---------------------------------------------------------------------------------------------- interruption


def _square(x: int) -> int:
    return x * x


def test_run_parallel_matches_serial():
    serial = dict(jobs.run_parallel(_square, list(range(6)), jobs=1))
    par = dict(jobs.run_parallel(_square, list(range(6)), jobs=2))
    assert serial == par == {i: i * i for i in range(6)}
    with pytest.raises(UsageError):
        list(jobs.run_parallel(_square, [1], jobs=0))


_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from rfa import jobs

    def slow(i):
        if i == 0:
            return os.getpid()
        time.sleep(60)
        return i

    if __name__ == "__main__":
        n_jobs, n_items = int(sys.argv[1]), int(sys.argv[2])
        done = 0
        try:
            with jobs.handle_signals():
                for i, r in jobs.run_parallel(slow, list(range(n_items)), jobs=n_jobs):
                    done += 1
                    print("RESULT", i, r, flush=True)
        except jobs.Interrupted as exc:
            print(jobs.interrupted_message("tool", exc, saved=done, total=n_items, out="D"), file=sys.stderr, flush=True)
            sys.exit(jobs.EXIT_INTERRUPTED)
""")


@pytest.mark.slow
@pytest.mark.parametrize("n_jobs,n_items,sig,group", [
    (2, 8, signal.SIGINT, False), (2, 8, signal.SIGTERM, False), (1, 8, signal.SIGINT, False),
    # 3 workers, 3 jobs: after job 0 one worker is idle, waiting for work, when Ctrl-C reaches it
    (3, 3, signal.SIGINT, True), (3, 3, signal.SIGTERM, True),
])
def test_signal_stops_workers_and_queue_within_seconds(tmp_path, n_jobs, n_items, sig, group):
    """The parent alone (as `kill PID` does) or the whole process group (as Ctrl-C in a terminal does)
    gets the signal: the parent must cancel the queue, terminate the busy workers (each sleeping 60 s)
    and exit 130 with one line, well before any job could finish; workers print no traceback."""
    script = tmp_path / "s.py"
    script.write_text(_SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(n_jobs), str(n_items)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, start_new_session=True)
    line = proc.stdout.readline()  # the first job's result: workers are up and the others are busy
    assert line.startswith("RESULT 0"), line + proc.stderr.read()
    worker = int(line.split()[2])
    time.sleep(0.5)
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        out, err = proc.communicate(timeout=30)  # far below the 60 s a job would take
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the command did not stop after the signal") from None
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [
        f"tool: interrupted ({signal.Signals(sig).name}): 1 of {n_items} runs saved in D; continue with: tool --resume D"]
    assert "RESULT" not in out
    if n_jobs > 1:  # the worker that ran job 0 is gone (terminated, not left sleeping)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"worker {worker} still alive after the parent exited")


def test_main_wrapper_turns_invalid_input_into_exit_2(capsys):
    def body() -> int:
        raise UsageError("bad --lr")

    assert jobs.main_wrapper("tool", body) == 2
    assert capsys.readouterr().err == "tool: bad --lr\n"
    assert jobs.main_wrapper("tool", lambda: 0) == 0


def test_jobs_imports_no_ml_library():
    """Benchmarks and secagg-side tools may use the job helpers without torch or numpy."""
    code = "import sys, rfa.jobs; sys.exit(int(any(m in sys.modules for m in ('torch', 'numpy'))))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_a_signal_during_a_store_append_waits_for_the_append(tmp_path):
    """The handler only notes a signal inside an append; Interrupted comes when the append is whole."""
    store = RunStore(tmp_path, ["k"], manifest={})
    real = jobs._append_line
    calls = []

    def append_then_signal(path, line):
        real(path, line)
        calls.append(path.name)
        if len(calls) == 1:  # between the JSON line and the CSV row
            os.kill(os.getpid(), signal.SIGINT)

    with jobs.handle_signals():
        jobs._append_line = append_then_signal
        try:
            with pytest.raises(jobs.Interrupted):
                store.append("h1", {"k": 1})
        finally:
            jobs._append_line = real
    assert calls == [RunStore.RECORDS, RunStore.CSV] and len(store) == 1
    assert (tmp_path / RunStore.CSV).read_text() == "k\n1\n"
