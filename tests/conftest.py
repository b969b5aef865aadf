"""Test-session settings shared by every test module.

The suite runs in parallel under pytest-xdist (``-n auto --dist loadgroup``, pyproject.toml):
every test that drives the real Slurm controller (``@pytest.mark.slurm``) goes to one worker,
in order, because such tests change cluster-wide settings for their user (``MaxSubmitJobs``)
and count that user's jobs.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slurm") is not None:
            item.add_marker(pytest.mark.xdist_group("slurm"))


# The plug-in fixture package (tests/test_plugins.py installs it): its modules are no tests.
collect_ignore = ["plugin_fixture"]
