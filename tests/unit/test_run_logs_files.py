"""`fleet logs` reads a run's rank log files from the directory its run row names: only regular
files, so a FIFO planted there (a teammate who can write the shared state and that directory) cannot
hang it, and a link cannot point it at another file."""
from __future__ import annotations

import os
import threading

from fleet.run_logs import follow_logs


def test_logs_read_regular_files_only(fleet_home, tmp_path):
    from fleet.state import open_state
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "rank-0.log").write_text("hello\nworld\n")
    os.mkfifo(logs / "rank-1.log")
    (tmp_path / "secret").write_text("not a log\n")
    (logs / "rank-2.log").symlink_to(tmp_path / "secret")
    state = open_state()
    state.create_run("r-logs-1", lease_id=None, project="p", user="u", command="true", log_path=str(logs),
                     output_dir=str(tmp_path / "out"), meta={})
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.extend(follow_logs("r-logs-1", state=state)), daemon=True)
    reader.start()
    reader.join(20)
    assert not reader.is_alive(), "fleet logs hung on a FIFO"
    assert got == ["[0] hello", "[0] world"]
    state.close()
