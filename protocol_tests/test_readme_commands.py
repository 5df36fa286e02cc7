"""Every command the README shows runs: exit code 0, its outputs exist, and no output says ``nan``.

The commands are read from the README's ``bash`` blocks, so a command added there without a case here
fails :func:`test_every_readme_command_is_exercised`. Each runs as a user types it (the installed console
script, or ``python -m bench`` from the repository root) in a fresh folder, with extra flags appended that
only make it smaller (argparse keeps the last value of a repeated flag): fewer rounds, seeds, clients,
a smaller grid, or the small sklearn digits set where the data set does not matter to what is checked. Not run here, and why:

* ``pip install ...``: installing is what CI (``.ci/run``) does before the suite can run at all;
* ``python -m pytest -n 2 protocol_tests``: the suite itself; the test checks that ``.ci/run`` runs the
  same command, so the README's test command is what CI runs.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

#: README command -> (extra size-reducing flags, output folder flag or None, expected output files: in the
#: output folder, or in the working folder when the command names its own output)
_RFA_SMALL = ["--rounds", "2", "--seeds", "1", "--clients", "10", "--clients-per-round", "5", "--jobs", "1", "--no-progress"]
CASES: dict[str, tuple[list[str], str | None, list[str]]] = {
    "rfa compare": (["--aggregators", "fedavg,rfa,coordinate-median", "--corruptions", "none,omniscient", "--rhos", "0,0.25"]
                    + _RFA_SMALL, "--out",
                    ["results.csv", "results.json", "table.md", "accuracy_vs_rho.png", "accuracy_vs_calls.png",
                     "privacy_vs_robustness.png"]),
    "secagg simulate --clients 50 --dim 10000 --graph secagg+ --variant active --dropout-rate 0.1": (["--dim", "500"], None, []),
    "secagg simulate --real --weights random --json": ([], None, []),
    "secagg trace --clients 4 --dim 3 --threshold 3 --drop 2:masked-input": ([], None, []),
    "secagg cost --clients 16384 --dim 16777216 --input-bits 16": ([], None, []),
    "secagg trace --clients 4 --drop 2:masked-input --html run.html": ([], None, ["run.html"]),
    "rfa compare --oracle secagg --aggregators fedavg,rfa --corruptions omniscient --rhos 0.1": (
        _RFA_SMALL, "--out", ["results.csv", "results.json", "table.md", "accuracy_vs_rho.png"]),
    "rfa train --aggregator rfa --corruption data-poisoning --rho 0.25": (
        ["--data", "digits", "--rounds", "2", "--clients", "10", "--clients-per-round", "5"], "--out", ["result.json"]),
    "rfa leakage --quick": (["--aggregators", "fedavg,rfa", "--ms", "2", "--trials", "1", "--no-progress"], "--out",
                            ["leakage.json", "leakage_table.md", "leakage_vs_s.png", "records.csv"]),
    "rfa compare --dropout-rate 0.05 --rhos 0.25": (
        ["--aggregators", "fedavg,rfa", "--corruptions", "omniscient"] + _RFA_SMALL, "--out", ["results.csv", "table.md"]),
    "rfa robustness": (["--aggregators", "fedavg,rfa", "--attacks", "sign-flip", "--rhos", "0.25"] + _RFA_SMALL, "--out",
                       ["results.csv", "matrix.md", "robustness_heatmap.png"]),
    "rfa train --aggregator coordinate-median --corruption fang-median --corruption-params b=3 --rho 0.25": (
        ["--data", "digits", "--rounds", "2", "--clients", "10", "--clients-per-round", "5"], "--out", ["result.json"]),
    "secagg simulate --clients 10000 --dim 1000 --graph secagg+ --executor ray": (["--clients", "40", "--dim", "50"], None, []),
    "rfa train --executor ray --clients-per-round 100": (
        ["--data", "digits", "--rounds", "1", "--clients", "10", "--clients-per-round", "4"], "--out", ["result.json"]),
    "rfa compare --executor ray": (  # --executor ray refuses --jobs: the small flags without it
        ["--data", "digits", "--aggregators", "fedavg,rfa", "--corruptions", "none", "--rounds", "2", "--seeds", "1",
         "--clients", "10", "--clients-per-round", "5", "--no-progress", "--no-plots"], "--out",
        ["results.csv", "results.json", "table.md"]),
    "python -m bench --quick": (["--smoke", "--only", "communication"], "--out", ["results.json", "summary.md", "bench_expansion.png"]),
}
#: templates (FILE, DIR, a cluster's HEAD address) and the test command itself; their flags are exercised
#: by the CASES above and by the commands' own tests (test_rfa_cli_jobs, test_ray_executor)
TEST_COMMAND = "python -m pytest -n 2 protocol_tests"
NOT_RUN = {TEST_COMMAND, "rfa compare --config FILE --seeds 5", "rfa compare --resume DIR",
           "ray start --head --port 6379",
           "RAY_ADDRESS=HEAD:6379 secagg simulate --clients 100000 --dim 1000 --graph secagg+ --executor ray",
           "rfa train --executor ray --ray-address HEAD:6379 --clients-per-round 100",
           "rfa compare --executor ray --ray-address HEAD:6379"}
#: README commands whose output is known broken on this checkout (a strict xfail: it fails the suite the
#: day the command is fixed, so the mark goes with the fix)
KNOWN_BROKEN: dict[str, str] = {}


def readme_commands() -> list[str]:
    """The commands of the README's ``bash`` blocks: comments dropped, ``&&`` chains split, spaces
    normalised, ``pip install`` steps left out."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    out = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip()
            for cmd in (c.strip() for c in line.split("&&")):
                cmd = " ".join(cmd.split())
                if cmd and not cmd.startswith("pip install") and cmd not in out:
                    out.append(cmd)
    return out


def test_every_readme_command_is_exercised() -> None:
    cmds = readme_commands()
    assert cmds, "no commands found in the README"
    missing = [c for c in cmds if c not in CASES and c not in NOT_RUN]
    assert not missing, f"README commands without a test case: {missing}"
    stale = [c for c in list(CASES) + sorted(NOT_RUN) if c not in cmds]
    assert not stale, f"test cases for commands no longer in the README: {stale}"


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert TEST_COMMAND in ci


def _argv(cmd: str) -> list[str]:
    words = shlex.split(cmd)
    if words[:3] == ["python", "-m", "bench"]:
        return [sys.executable, "-m", "bench", *words[3:]]
    exe = BIN / words[0]
    assert exe.exists(), f"console script {words[0]} is not installed next to {sys.executable}"
    return [str(exe), *words[1:]]


_NAN = re.compile(r"\bnan\b", re.I)


def _params() -> list:  # noqa: ANN202
    out = []
    for cmd in CASES:
        marks = [pytest.mark.slow] if cmd.startswith(("rfa ", "python -m bench")) else []
        if "--executor ray" in cmd:
            marks.append(pytest.mark.xdist_group("ray"))  # one Ray instance at a time, beside test_ray_executor
        if cmd in KNOWN_BROKEN:
            marks.append(pytest.mark.xfail(reason=KNOWN_BROKEN[cmd], strict=True))
        out.append(pytest.param(cmd, marks=marks, id=cmd.split(" --")[0] + f"[{len(out)}]"))
    return out


@pytest.mark.parametrize("cmd", _params())
def test_readme_command_runs_and_its_outputs_have_no_nan(cmd: str, tmp_path: Path) -> None:
    extra, out_flag, files = CASES[cmd]
    out_dir = tmp_path / "out"
    argv = _argv(cmd) + extra + ([out_flag, str(out_dir)] if out_flag else [])
    env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cwd = ROOT if cmd.startswith("python -m bench") else tmp_path
    r = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, env=env, timeout=600)
    assert r.returncode == 0, f"{' '.join(argv)} exited {r.returncode}\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}"
    assert r.stdout.strip(), "the command printed nothing"
    assert not _NAN.search(r.stdout), f"nan in the output of {cmd}:\n" + "\n".join(
        ln for ln in r.stdout.splitlines() if _NAN.search(ln))
    for name in files:
        f = (out_dir if out_flag else cwd) / name
        assert f.exists() and f.stat().st_size > 0, f"{cmd}: {name} was not written"
    if out_dir.exists():
        for f in out_dir.rglob("*"):
            if f.suffix in (".csv", ".json", ".jsonl", ".md", ".txt"):
                text = f.read_text(encoding="utf-8")
                bad = [ln for ln in text.splitlines() if _NAN.search(ln)]
                assert not bad, f"{cmd}: nan in {f.name}: {bad[:3]}"
