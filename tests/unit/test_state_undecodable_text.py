"""A row holding text that is not UTF-8 (written around fleet into a shared SQLite state) no longer
stops `fleet status` and `fleet report` for the whole team with a wrong "locked, or the disk is
full" line (a red-team finding): it is read with U+FFFD in place of the bad bytes."""
from __future__ import annotations

from tests.conftest import run_fleet


def test_status_and_report_read_a_row_that_is_not_utf8(tmp_path, fleet_home):
    from fleet.models import utcnow
    from fleet.state import open_state
    state = open_state()
    now = utcnow().isoformat()
    state.db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
                     " max_deadline, heartbeat_ttl_s) VALUES ('l-1a2b3c4d', 'local', CAST(X'74ff' AS TEXT),"
                     " CAST(X'70ff00' AS TEXT), 'tester', 'active', ?, ?, ?, 60)", (now, now, now))
    state.close()
    env = {"FLEET_HOME": str(fleet_home), "FLEET_USER": "tester"}
    status = run_fleet(["status", "--fast", "--all-users", "--json"], cwd=tmp_path, env=env)
    assert status.returncode == 0, status.stderr
    report = run_fleet(["runs", "ls", "--json"], cwd=tmp_path, env=env)
    assert report.returncode == 0, report.stderr
    from fleet.state import open_state as again
    rows = again().db.execute("SELECT template, project FROM leases")
    assert rows == [{"template": "t\ufffd", "project": "p\ufffd\x00"}]


def test_a_damaged_row_after_the_first_batch_gives_every_row_once(fleet_home):
    """The lenient retry gave the rows already handed out again (`fleet status` doubled machines)."""
    from fleet.state import open_state
    state = open_state()
    state.db.execute("CREATE TABLE t (n INTEGER, s TEXT)")
    state.db.executemany("INSERT INTO t VALUES (?, ?)", [(n, "ok") for n in range(250)])
    state.db.execute("UPDATE t SET s = CAST(X'66FF6F' AS TEXT) WHERE n = 220")
    rows = [r for batch in state.db.row_batches("SELECT n, s FROM t ORDER BY n") for r in batch]
    assert [r[0] for r in rows] == list(range(250)) and rows[220][1] == "f\ufffdo"
    state.close()
