"""`fleet logs RUN` reads a rank's log in pieces and prints as it reads: it read the whole file into
memory first (a red-team 512 MiB log: 1.9 GB peak and nothing printed for 19 s), so a chatty
multi-day run's log could run the laptop out of memory."""
from __future__ import annotations

import resource

from fleet import run_logs
from fleet.run_logs import follow_logs
from fleet.state import open_state


def _attached_run(tmp_path, content: bytes):
    state = open_state(f"sqlite:///{tmp_path / 'state.db'}")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "rank-0.log").write_bytes(content)
    state.create_run("r-logs-1", lease_id=None, project="p", user="u", command="train", log_path=str(logs),
                     output_dir="/nonexistent", meta={})
    state.finish_run("r-logs-1", "succeeded", 0)
    return state


def test_lines_come_back_whole_in_order_across_read_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(run_logs, "READ_PIECE", 7)     # every line crosses a piece boundary
    state = _attached_run(tmp_path, b"first line\n\nthird \xff line\r\nlast\nunfinished")
    assert list(follow_logs("r-logs-1", state=state)) == [
        "[0] first line", "[0] ", "[0] third \ufffd line", "[0] last"]


def test_a_line_without_end_is_shown_in_bounded_pieces(tmp_path, monkeypatch):
    monkeypatch.setattr(run_logs, "READ_PIECE", 4)
    monkeypatch.setattr(run_logs, "LINE_MAX", 10)
    state = _attached_run(tmp_path, b"x" * 25 + b"\nok\n")
    assert list(follow_logs("r-logs-1", state=state)) == ["[0] " + "x" * 10, "[0] " + "x" * 10, "[0] xxxxx", "[0] ok"]


def test_the_first_line_of_a_large_log_comes_before_the_file_is_read(tmp_path):
    line = b"step 123456 loss 0.4321 " + b"." * 100 + b"\n"
    state = _attached_run(tmp_path, line * (128 * 2 ** 20 // len(line)))          # 128 MiB
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    lines = follow_logs("r-logs-1", state=state)
    assert next(lines).startswith("[0] step 123456")
    count = 1 + sum(1 for _ in lines)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert count == 128 * 2 ** 20 // len(line)
    assert grown_mib < 64, f"peak memory grew {grown_mib:.0f} MiB reading a 128 MiB log"
