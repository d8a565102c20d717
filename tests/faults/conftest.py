"""The fault suite: each test injects a fault and reports figures, printed at the end of the run.

FAULTS_FULL=1 runs the sizes the README states; without it, CI runs smaller ones.
"""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("FAULTS_FULL") == "1"
FIGURES: list[tuple[str, str]] = []


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "faults" in item.nodeid.split("::")[0]:
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def report(request: pytest.FixtureRequest):
    """report(name, value): a figure for the summary at the end of the run."""

    def add(name: str, value: object) -> None:
        FIGURES.append((f"{request.node.name}: {name}", str(value)))

    return add


def pytest_terminal_summary(terminalreporter) -> None:
    if FIGURES:
        terminalreporter.section(f"fault suite figures ({'full' if FULL else 'CI'} sizes)")
        for name, value in FIGURES:
            terminalreporter.write_line(f"{name}: {value}")
