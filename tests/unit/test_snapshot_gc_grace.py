"""`fleet snapshot gc --grace` is what keeps a create in progress (chunks written, manifest not yet)
from losing its chunks and temporary files: -1, nan or -inf made every unreferenced chunk "old enough"
and were accepted, exit 0. They are now one usage error, and nothing is deleted."""
from __future__ import annotations

import hashlib
import math

import pytest

from fleet.errors import UsageError
from fleet.snapshots.catalog import gc
from fleet.snapshots.store import open_store
from tests.conftest import run_fleet


@pytest.mark.parametrize("grace", [-1, math.nan, -math.inf, math.inf])
def test_a_grace_that_is_not_a_finite_time_is_refused(tmp_path, grace):
    store = open_store(str(tmp_path / "store"))
    data = b"a chunk a create in progress just wrote"
    store.put_chunk(hashlib.sha256(data).hexdigest(), data)
    with pytest.raises(UsageError, match="--grace must be a finite number of seconds"):
        gc(store, grace_s=grace)
    assert len(list(store.iter_chunks())) == 1


@pytest.mark.parametrize("grace", ["-1", "nan", "-inf"])
def test_from_the_command_line(tmp_path, fleet_home, grace):
    proc = run_fleet(["snapshot", "gc", f"--grace={grace}", "--json"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [f"fleet: error: --grace must be a finite number of seconds ≥ 0, got {float(grace)!r}"]
