"""Fixtures for the simulator tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sim.testing import SimulatorProcess


@pytest.fixture(scope="module")
def default_sim() -> Iterator[SimulatorProcess]:
    with SimulatorProcess() as sim:
        yield sim
