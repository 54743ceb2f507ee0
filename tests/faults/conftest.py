"""Every test here is part of the fault matrix (`pytest -m faults`); each gets a private sandbox."""
from __future__ import annotations

import pytest

from .harness import Sandbox, kill_everything_under


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.faults)


@pytest.fixture
def box(tmp_path):
    sandbox = Sandbox(tmp_path / "case")
    yield sandbox
    kill_everything_under(sandbox.home)
