"""Id prefixes are literal and never empty: `fleet rerun ''` or `fleet down %` must match nothing."""
from __future__ import annotations

import pytest

from fleet.errors import NotFound
from fleet.state.db import Database
from fleet.state.store import StateStore


@pytest.fixture
def store(tmp_path):
    s = StateStore(Database(tmp_path / "state.db"))
    for run_id in ("r-20260101-aa_1", "r-20260101-aaX1", "r-2026%zz"):
        s.create_run(run_id, lease_id=None, project="p", user="u", command="true", log_path="", output_dir="")
    yield s
    s.close()


@pytest.mark.parametrize("prefix", ["", " ", "r-", "%", "_", "r-2026____-aa%"])
def test_empty_short_and_wildcard_prefixes_match_nothing(store, prefix):
    with pytest.raises(NotFound):
        store.get_run(prefix)


def test_a_unique_literal_prefix_finds_its_run(store):
    assert store.get_run("r-20260101-aa_")["id"] == "r-20260101-aa_1"
    assert store.get_run("r-2026%")["id"] == "r-2026%zz"
    with pytest.raises(NotFound):
        store.get_run("r-20260101-aa")   # ambiguous
