"""Shared test configuration.

Hypothesis profiles: ``ci`` (default; derandomized so a failure reproduces from the same checkout,
no per-example deadline because CI machines are shared and noisy) and ``thorough`` for local deep runs
(``HYPOTHESIS_PROFILE=thorough pytest``).
"""

import os

from hypothesis import HealthCheck, settings

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
    max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):  # noqa: ANN001, ANN201
    """Under ``pytest -n N`` keep each ``xdist_group`` on one worker (``--dist loadgroup``; ungrouped tests
    are spread as with the default ``load``): the Ray tests then share one local Ray instance."""
    if getattr(config.option, "dist", None) == "load":
        config.option.dist = "loadgroup"
