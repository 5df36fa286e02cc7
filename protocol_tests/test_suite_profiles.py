"""The Hypothesis profiles of protocol_tests/conftest.py do what they say.

``thorough`` must scale *every* property test's examples, including the many tests that set their own
``max_examples`` (which a profile alone does not touch), and rescale a parametrized test once, not once
per parameter. Checked by running a tiny test file under the project's conftest in a subprocess and
counting the calls of each test body. The strategies draw 16 random bytes, so Hypothesis never meets a
duplicate example (which it would skip) and the counts are exact.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

BODY = '''
import json, os
import pytest
from hypothesis import given, settings, strategies as st

CALLS = {}

def _count(name):
    CALLS[name] = CALLS.get(name, 0) + 1

@settings(max_examples=7)
@given(st.binary(min_size=16, max_size=16))
def test_own(b):
    _count("own")

@given(st.binary(min_size=16, max_size=16))
def test_profile_default(b):
    _count("default")

@pytest.mark.parametrize("p", [1, 2])
@settings(max_examples=5)
@given(st.binary(min_size=16, max_size=16))
def test_param(p, b):
    _count(f"param{p}")

def test_zz_dump():
    with open(os.environ["COUNTS_OUT"], "w") as f:
        json.dump(CALLS, f)
'''


def _counts(tmp_path: Path, *args: str, env_extra: dict[str, str] | None = None) -> dict[str, int]:
    d = tmp_path / "suite"
    d.mkdir(exist_ok=True)
    shutil.copy(HERE / "conftest.py", d / "conftest.py")
    (d / "test_tiny.py").write_text(BODY)
    (d / "pytest.ini").write_text("[pytest]\n")
    out = tmp_path / "counts.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYPOTHESIS_")}
    env.update(COUNTS_OUT=str(out), **(env_extra or {}))
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist", "-p", "no:randomly",
                        "--rootdir", str(d), "-c", str(d / "pytest.ini"), str(d), *args],
                       capture_output=True, text=True, env=env, cwd=str(d), timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(out.read_text())


def test_ci_profile_keeps_each_tests_own_examples(tmp_path: Path) -> None:
    c = _counts(tmp_path)
    assert c == {"own": 7, "default": 100, "param1": 5, "param2": 5}


@pytest.mark.slow
def test_thorough_scales_every_test_including_explicit_max_examples(tmp_path: Path) -> None:
    c = _counts(tmp_path, "--hypothesis-profile", "thorough", env_extra={"HYPOTHESIS_THOROUGH_FACTOR": "3"})
    assert c == {"own": 21, "default": 300, "param1": 15, "param2": 15}


def test_thorough_through_the_environment_variable(tmp_path: Path) -> None:
    c = _counts(tmp_path, env_extra={"HYPOTHESIS_PROFILE": "thorough", "HYPOTHESIS_THOROUGH_FACTOR": "2"})
    assert c == {"own": 14, "default": 200, "param1": 10, "param2": 10}
