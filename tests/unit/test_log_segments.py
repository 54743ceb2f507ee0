"""A detached run's rank logs in the shared state (fleet/run/log_segments.py): what one computer's
supervisor ships, another computer's `fleet logs` reads back — every rank, in order, each segment
bounded, the run's total capped with one line saying where the rest is."""
from __future__ import annotations

from fleet.run.log_segments import LogShipper, SegmentReader
from fleet.run_logs import follow_logs
from fleet.state import open_state


def _state(tmp_path):
    return open_state(f"sqlite:///{tmp_path / 'state.db'}")


def _run(state, run_id: str, *, detached: bool = True, log_path: str = "/nonexistent/on/this/computer") -> None:
    state.create_run(run_id, lease_id=None, project="p", user="u", command="train", log_path=log_path,
                     output_dir="/nonexistent", meta={"detached": detached})


def test_lines_of_every_rank_come_back_in_order_from_segments(tmp_path):
    state = _state(tmp_path)
    _run(state, "r-seg-1")
    seen = []
    shipper = LogShipper(state, "r-seg-1", flush_s=3600)   # flushed by close() only: deterministic
    sink = shipper.sink(lambda label, stream, line: seen.append((label, line)))
    for i in range(3):
        sink("0", "out", f"step {i}")
        sink("1", "out", f"step {i}")
    sink("1", "err", "warning: slow")
    shipper.close()
    assert len(seen) == 7                                     # every line also went on downstream
    state.finish_run("r-seg-1", "succeeded", 0)
    lines = list(follow_logs("r-seg-1", state=state))
    assert [x for x in lines if x.startswith("[0]")] == ["[0] step 0", "[0] step 1", "[0] step 2"]
    assert [x for x in lines if x.startswith("[1]")] == ["[1] step 0", "[1] step 1", "[1] step 2",
                                                         "[1] [stderr] warning: slow"]


def test_segments_are_bounded_and_a_long_line_is_put_back_together(tmp_path):
    state = _state(tmp_path)
    _run(state, "r-seg-2")
    shipper = LogShipper(state, "r-seg-2", flush_s=3600, segment_bytes=1024)
    long_line = "x" * 5000
    for i in range(100):
        shipper.add("0", "out", f"line {i:03d} " + "y" * 40)
    shipper.add("0", "out", long_line)
    shipper.add("0", "out", "after")
    shipper.close()
    rows = state.db.execute("SELECT seq, data FROM log_segments WHERE run_id = ? ORDER BY seq", ("r-seg-2",))
    assert len(rows) > 5 and all(len(r["data"].encode()) <= 1024 for r in rows)
    assert [r["seq"] for r in rows] == list(range(len(rows)))
    got = list(SegmentReader(state, "r-seg-2").lines())
    assert got[:2] == ["[0] line 000 " + "y" * 40, "[0] line 001 " + "y" * 40]
    assert got[-2:] == [f"[0] {long_line}", "[0] after"] and len(got) == 102


def test_a_run_over_the_cap_ships_one_line_saying_where_the_rest_is(tmp_path):
    state = _state(tmp_path)
    _run(state, "r-seg-3")
    shipper = LogShipper(state, "r-seg-3", flush_s=3600, cap_bytes=1000)
    for i in range(200):
        shipper.add("0", "out", f"line {i}")
    shipper.close()
    got = list(SegmentReader(state, "r-seg-3").lines())
    assert got[0] == "[0] line 0" and len(got) < 200
    assert "log shipping of this rank stopped" in got[-1] and "runs/r-seg-3/logs" in got[-1]


def test_setup_then_run_continue_the_same_labels_sequence(tmp_path):
    """execute() makes a shipper per phase (setup, then the command): the second continues the seqs."""
    state = _state(tmp_path)
    _run(state, "r-seg-4")
    for phase in ("setup", "run"):
        shipper = LogShipper(state, "r-seg-4", flush_s=3600)
        shipper.add("0", "out", phase)
        shipper.close()
    assert list(SegmentReader(state, "r-seg-4").lines()) == ["[0] setup", "[0] run"]


def test_an_attached_run_is_still_read_from_its_log_files(tmp_path):
    state = _state(tmp_path)
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "rank-0.log").write_text("from the file\n")
    _run(state, "r-seg-5", detached=False, log_path=str(logs))
    state.finish_run("r-seg-5", "succeeded", 0)
    assert list(follow_logs("r-seg-5", state=state)) == ["[0] from the file"]


def test_a_carriage_return_in_a_line_never_starts_an_unprefixed_line(tmp_path):
    """`fleet attach` (and `fleet up --detach` following) in a CI job: the runner reads a carriage
    return as a line break, so the text after one would be a line of its own that it obeys as a
    workflow command. A progress bar's redraws show as its last state, after the rank."""
    state = _state(tmp_path)
    _run(state, "r-seg-5")
    shipper = LogShipper(state, "r-seg-5", flush_s=3600)
    shipper.add("0", "out", "50%\r::stop-commands::pwn")
    shipper.add("0", "out", "10%\r100%\r")
    shipper.close()
    assert list(SegmentReader(state, "r-seg-5").lines()) == ["[0] ::stop-commands::pwn", "[0] 100%"]
