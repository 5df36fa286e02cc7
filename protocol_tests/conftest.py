"""Shared test configuration: the Hypothesis profiles.

* ``ci`` (the default): derandomized, so a failure reproduces from the same checkout on any machine; no
  per-example deadline (CI machines are shared and noisy: speed is measured in ``bench/``, never
  asserted); Hypothesis' default of 100 examples for a test that does not set its own ``max_examples``.
* ``thorough`` for deep local runs: random (a new draw of examples every run) and every property test
  runs :data:`THOROUGH_FACTOR` times as many examples as under ``ci``. A test's own
  ``@settings(max_examples=N)`` becomes ``N * THOROUGH_FACTOR`` (:func:`pytest_collection_modifyitems`
  rescales it; a profile alone only changes the default of tests that set nothing), and a test that sets
  nothing gets ``100 * THOROUGH_FACTOR``. ``HYPOTHESIS_THOROUGH_FACTOR`` overrides the factor.

Choose one with ``--hypothesis-profile thorough`` (Hypothesis' pytest option) or
``HYPOTHESIS_PROFILE=thorough``; for example
``python -m pytest -n 2 protocol_tests --hypothesis-profile thorough -k shamir``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

#: examples under ``thorough`` / examples under ``ci``, for every property test
THOROUGH_FACTOR = int(os.environ.get("HYPOTHESIS_THOROUGH_FACTOR", "10"))
#: Hypothesis' own default ``max_examples`` (what ``ci`` uses for a test that sets none)
DEFAULT_EXAMPLES = settings.get_profile("default").max_examples

settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=DEFAULT_EXAMPLES * THOROUGH_FACTOR,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):  # noqa: ANN001, ANN201
    """Under ``pytest -n N`` keep each ``xdist_group`` on one worker (``--dist loadgroup``; ungrouped tests
    are spread as with the default ``load``): the Ray tests then share one local Ray instance."""
    if getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"


def scaled_examples(own: int, factor: int) -> int:
    """``own * factor``: the examples a test that sets ``max_examples=own`` runs under ``thorough``."""
    return max(1, int(own) * int(factor))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under ``thorough``, multiply each property test's own ``max_examples`` by :data:`THOROUGH_FACTOR`.

    A test with ``@settings(max_examples=N)`` keeps N under any profile (explicit settings win over the
    profile), so the profile alone would leave about seventy tests at their CI sizes. Every ``@given``
    test carries its settings in ``_hypothesis_internal_use_settings`` (read when it runs); the ones
    whose ``max_examples`` differs from the profile's were set by the test, and get ``N * factor``.
    Parametrized tests share one function object: it is rescaled once.
    """
    if settings.get_current_profile_name() != "thorough" or THOROUGH_FACTOR == 1:
        return
    profile = settings()  # the loaded profile (Hypothesis' --hypothesis-profile loads it before collection)
    done: set[int] = set()
    for item in items:
        fn = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        own = getattr(fn, "_hypothesis_internal_use_settings", None)
        if own is None or id(fn) in done or not hasattr(fn, "hypothesis"):
            continue
        done.add(id(fn))
        if own.max_examples != profile.max_examples:
            fn._hypothesis_internal_use_settings = settings(own, max_examples=scaled_examples(own.max_examples, THOROUGH_FACTOR))
