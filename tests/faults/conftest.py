"""The fault suite: each test injects a fault and reports figures (tests/conftest.py prints them at the end).

FAULTS_FULL=1 runs the sizes the README states; without it, CI runs smaller ones.
"""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("FAULTS_FULL") == "1"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "faults" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.faults)
