"""A damaged page in the state database: one line naming the file and the cause, exit 3, not
"internal error: DatabaseError"."""
from __future__ import annotations

import os
import sqlite3

import pytest

from tests.conftest import run_fleet


@pytest.fixture
def corrupt_state(fleet_home):
    """A real state.db with 300 leases, garbage written over pages in the middle of the lease rows
    (after the schema pages, which a fresh database fills: a broken schema fails at open instead)."""
    from fleet.plan import make_plan
    from fleet.providers.local.templates import LOCAL_TEMPLATES
    from fleet.state import open_state
    path = fleet_home / "state.db"
    open_state().close()
    fresh = path.stat().st_size
    state = open_state()
    plan = make_plan(provider="local", template=LOCAL_TEMPLATES["local-1gpu"], gpus=1, max_duration_s=600,
                     heartbeat_ttl_s=60, project="p", user="tester")
    with state.db.transaction():     # one commit, not 300 fsyncs
        for i in range(300):
            state.begin_lease(f"l-{i:08x}", plan, meta={"note": "x" * 200})
    state.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = path.stat().st_size
    assert size > fresh + 16 * 4096, (fresh, size)
    middle = (fresh + size) // 2 // 4096 * 4096
    with open(path, "r+b") as fh:
        fh.seek(middle)
        fh.write(b"\xde\xad\xbe\xef" * 2048)     # two pages
        fh.flush()
        os.fsync(fh.fileno())
    return path


@pytest.mark.parametrize("args", [["status"], ["down", "--all"], ["status", "--json"]])
def test_a_corrupt_state_database_is_named_with_its_cause(corrupt_state, tmp_path, args):
    proc = run_fleet(args, cwd=tmp_path)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fleet: error:")]
    assert proc.returncode == 3, (proc.returncode, proc.stderr)
    assert "internal error" not in proc.stderr and len(errors) == 1, proc.stderr
    line = errors[0]
    assert f"state database {corrupt_state} is corrupt: database disk image is malformed" in line, line
    assert f"mv {corrupt_state} {corrupt_state}.corrupt" in line, line


def test_a_file_that_is_no_database_is_named_too(fleet_home, tmp_path):
    (fleet_home / "state.db").write_bytes(b"this is not sqlite " * 512)
    proc = run_fleet(["status"], cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    assert "is corrupt: file is not a database" in proc.stderr and "mv " in proc.stderr, proc.stderr
