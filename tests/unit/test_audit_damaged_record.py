"""`fleet audit --verify --json` with a record whose body is damaged lists it in chain_problems (and
checks the snapshots of the readable ones); it stopped at reading it, with nothing on stdout."""
from __future__ import annotations

import json

from tests.conftest import run_fleet
from tests.unit.test_runs_diff import records  # noqa: F401 — the fixture: four recorded runs


def test_audit_verify_json_lists_a_record_whose_body_is_damaged(records):  # noqa: F811
    from fleet.state import open_state
    db = open_state().db
    db.execute("UPDATE run_records SET body = '{not json' WHERE run_id = 'r-b'")
    done = run_fleet(["audit", "--verify", "--json"], cwd=records)
    assert done.returncode == 5, done.stderr
    got = json.loads(done.stdout)
    assert got["ok"] is False and any("r-b" in p for p in got["chain_problems"]), got
    assert got["records"] == 3                      # the readable ones, their snapshots checked
    errors = [line for line in done.stderr.splitlines() if line.startswith("fleet: error:")]
    assert len(errors) == 1 and "r-b" in errors[0], done.stderr


def test_runs_ls_sets_a_damaged_record_aside_and_lists_the_rest(records):  # noqa: F811
    from fleet.state import open_state
    open_state().db.execute("UPDATE run_records SET body = '{not json' WHERE run_id = 'r-b'")
    listed = run_fleet(["runs", "ls", "--json"], cwd=records)
    assert listed.returncode == 0, listed.stderr
    got = json.loads(listed.stdout)
    assert sorted(r["run_id"] for r in got["runs"]) == ["r-a", "r-c", "r-d"], got
    assert len(got["damaged"]) == 1 and "r-b" in got["damaged"][0]
    assert "set aside" in listed.stderr and "r-b" in listed.stderr
    table = run_fleet(["runs", "ls"], cwd=records)
    assert table.returncode == 0 and "r-c" in table.stdout, table.stderr


def test_runs_show_and_ls_never_pass_an_edited_record_off_as_the_one_written(records):  # noqa: F811
    """An edit of a record's body in the state database (valid JSON, its hash left alone) showed in
    `runs show` and `runs ls` as if it were the record written; only `audit --verify` noticed."""
    from fleet.state import open_state
    db = open_state().db
    body = json.loads(db.execute("SELECT body FROM run_records WHERE run_id = 'r-b'")[0]["body"])
    body["command"] = "python evil.py"
    db.execute("UPDATE run_records SET body = ? WHERE run_id = 'r-b'", (json.dumps(body),))
    for args in (["runs", "show", "r-b"], ["runs", "show", "r-b", "--json"]):
        shown = run_fleet(args, cwd=records)
        assert shown.returncode == 5, shown.stderr
        assert "python evil.py" in shown.stdout                 # shown as held, but said to be untrusted
        assert "fleet: error: run r-b's record cannot be trusted: run record" in shown.stderr
        assert "was modified" in shown.stderr
    listed = run_fleet(["runs", "ls", "--json"], cwd=records)
    assert listed.returncode == 0, listed.stderr
    got = json.loads(listed.stdout)
    assert sorted(r["run_id"] for r in got["runs"]) == ["r-a", "r-c", "r-d"], got
    assert "r-b" in got["damaged"][0] and "was modified" in got["damaged"][0]
    assert "python evil.py" not in run_fleet(["runs", "ls"], cwd=records).stdout
    intact = run_fleet(["runs", "show", "r-c"], cwd=records)
    assert intact.returncode == 0 and "cannot be trusted" not in intact.stderr, intact.stderr


def test_audit_of_one_run_fails_when_its_record_or_a_snapshot_is_not_intact(records):  # noqa: F811
    """`fleet audit RUN` printed BROKEN and exited 0: a CI step auditing the run it ships passed."""
    from fleet.state import open_state
    lost = run_fleet(["audit", "r-c"], cwd=records)      # the fixture's snapshots were never stored
    assert lost.returncode == 5 and "fleet: error: run r-c: no snapshot cccccccccccc" in lost.stderr, lost.stderr
    db = open_state().db
    body = json.loads(db.execute("SELECT body FROM run_records WHERE run_id = 'r-b'")[0]["body"])
    body["command"] = "python evil.py"
    db.execute("UPDATE run_records SET body = ? WHERE run_id = 'r-b'", (json.dumps(body),))
    for args in (["audit", "r-b"], ["audit", "r-b", "--json"]):
        done = run_fleet(args, cwd=records)
        assert done.returncode == 5, done.stderr
        assert "BROKEN" in done.stdout or '"chain_ok": false' in done.stdout, done.stdout
        assert "fleet: error: run r-b: run record" in done.stderr and "was modified" in done.stderr
