"""`fleet runs ls --limit 6000 --json` held every record three times over (rows, RunRecords, one giant
JSON string): ~650 MB of controller memory for 6,000 records with a captured environment. The listing
is now read a page at a time and written a record at a time; its JSON is the same text as before
(a damaged record's `damaged` key now comes after `runs`)."""
from __future__ import annotations

import json

from fleet.records.chain import RunRecord, append_record, list_records
from fleet.records.views import record_json
from fleet.render.data import json_text
from tests.conftest import run_fleet
from tests.fixtures.records_at_scale import fleet_peak_kb, write_records
from tests.unit.test_runs_diff import records  # noqa: F401 — the fixture: four recorded runs


def test_the_streamed_listing_is_the_json_it_always_was(records):  # noqa: F811
    from fleet.state import open_state
    db = open_state().db
    old_shape = json_text({"runs": [record_json(r) for r in list_records(db, limit=50)]})
    listed = run_fleet(["runs", "ls", "--json"], cwd=records)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == old_shape

    db.execute("UPDATE run_records SET body = '{not json' WHERE run_id = 'r-b'")
    damaged: list[str] = []
    old = {"runs": [record_json(r) for r in list_records(db, limit=50, damaged=damaged)], "damaged": damaged}
    listed = run_fleet(["runs", "ls", "--json"], cwd=records)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == old and [r["run_id"] for r in old["runs"]] == ["r-d", "r-c", "r-a"]
    # The same text as before, but for where `damaged` stands: after the runs, not before.
    after_runs = ',\n  "damaged": ' + json.dumps(damaged, indent=2).replace("\n", "\n  ") + "\n}\n"
    assert listed.stdout == json_text({"runs": old["runs"]})[:-len("\n}\n")] + after_runs
    assert "set aside" in listed.stderr and "r-b" in listed.stderr


def test_json_list_chunks_is_json_text_for_any_list():
    from fleet.render.data import json_list_chunks
    for items, after in (([], {}), ([{"b": 1, "a": [1, {"y": None, "x": "é\n"}]}, 2, "s"], {}), ([[]], {"z": [1]}),
                         ([{}], {"n": {"b": 2, "a": 1}, "m": "t"})):
        streamed = "".join(json_list_chunks("runs", iter(items), lambda: after))
        assert json.loads(streamed) == {"runs": items, **after}
        if not after:
            assert streamed == json_text({"runs": items})


def test_pages_are_read_by_seq_and_stop_at_the_limit(tmp_path):
    from fleet.records.chain import iter_records
    from fleet.state.db import Database
    db = Database(tmp_path / "state.db")
    try:
        for i in range(7):
            append_record(RunRecord(run_id=f"r-{i}", command="x", project="mine" if i % 2 else "other"), db)
        assert [r.run_id for r in iter_records(db, limit=5, page=2)] == ["r-6", "r-5", "r-4", "r-3", "r-2"]
        assert [r.run_id for r in iter_records(db, limit=9, project="mine", page=2)] == ["r-5", "r-3", "r-1"]
        assert [r.run_id for r in iter_records(db, limit=2, project="other", page=3)] == ["r-6", "r-4"]
    finally:
        db.close()


RECORDS = 1500       # ~10 kB of JSON each (an environment of 40 packages): ~15 MB listed


def test_a_long_json_listing_is_written_in_bounded_memory(tmp_path, fleet_home):
    write_records(RECORDS, data_snapshots={"train": "d" * 64})
    out = tmp_path / "runs.json"
    rc, peak_kb, stderr = fleet_peak_kb(["runs", "ls", "--limit", str(RECORDS), "--json"], out, tmp_path)
    assert rc == 0, stderr
    listed = json.loads(out.read_text())["runs"]
    assert len(listed) == RECORDS and listed[0]["run_id"] == f"r-{RECORDS - 1:05d}" and listed[-1]["run_id"] == "r-00000"
    # Holding the whole listing peaked at ~180 MB here; page by page it stays near the CLI's own ~30 MB.
    assert peak_kb < 80_000, f"fleet runs ls --json peaked at {peak_kb} kB for {RECORDS} records"


def test_a_listing_that_fails_part_way_still_prints_whole_json(tmp_path, fleet_home):
    """The state DB found damaged on the second page of a listing left stdout as `{"runs": [ …200 records`
    with no end: a program reading it got a parse error instead of the records and the reason."""
    from fleet.state import open_state
    state = open_state()
    try:
        for i in range(300):
            append_record(RunRecord(run_id=f"r-{i:05d}", command=f"train --old-marker-{i:05d}", user="u"), state.db)
    finally:
        state.close()
    db_file = fleet_home / "state.db"
    data = bytearray(db_file.read_bytes())
    page = int.from_bytes(data[16:18], "big")   # SQLite's page size, from its file header
    at = data.index(b"--old-marker-00010")    # in a table page the second page of 200 has to read
    data[at - at % page:at - at % page + page] = b"\xff" * page
    db_file.write_bytes(bytes(data))

    listed = run_fleet(["runs", "ls", "--limit", "1000", "--json"], cwd=tmp_path)
    assert listed.returncode != 0
    out = json.loads(listed.stdout)
    assert [r["run_id"] for r in out["runs"]] == [f"r-{i:05d}" for i in range(299, 99, -1)]
    assert "corrupt" in out["error"] and "state.db" in out["error"]
    lines = listed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error: ") and "corrupt" in lines[0], listed.stderr
