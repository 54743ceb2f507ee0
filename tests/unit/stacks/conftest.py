"""Fixtures for the stack tests; the mocks themselves live in fleet_stack_mocks.py."""
from __future__ import annotations

import pytest

from fleet_stack_mocks import StackRun, run_program


@pytest.fixture(scope="session")
def default_stack() -> StackRun:
    """The example config's whole stack, run once for the session's policy and output tests."""
    return run_program()
