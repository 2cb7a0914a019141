"""Shared pytest setup: hypothesis profiles, the ``root`` marker, and the test-host fixtures."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# The only place profiles are registered: "fast" (the default, in CI) and "deep" (on
# demand: HYPOTHESIS_PROFILE=deep). No deadline: two suites may share two busy cores.
settings.register_profile("fast", max_examples=100, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

IS_ROOT = os.geteuid() == 0


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_root = pytest.mark.skip(reason="needs root: creates network namespaces and veth pairs "
                                        "(CI runs as root)")
    for item in items:
        if "root" in item.keywords and not IS_ROOT:
            item.add_marker(skip_root)

# Test hosts (network namespaces serving HTTP and echo): the session fixture `test_host`.
from testhosts import session_test_host  # noqa: E402, F401
