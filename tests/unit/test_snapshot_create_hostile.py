"""`fleet snapshot create ""` (a script's `"$DATA_DIR"` with the variable unset) snapshotted the whole
current directory and exited 0: typer made "" Path("."). And the warning for a file it skips (a FIFO,
a socket) printed the file's name as it was: ESC sequences reached the terminal, a line break forged
a line. Now "" is one usage error and nothing is stored; the warning shows the name's control characters."""
from __future__ import annotations

import os

from tests.conftest import run_fleet


def test_an_empty_path_is_refused_and_nothing_is_stored(tmp_path, fleet_home):
    (tmp_path / "big-home-directory-file").write_text("not meant to be snapshotted")
    proc = run_fleet(["snapshot", "create", "", "--name", "data"], cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "fleet: error: no path to snapshot (an empty string) (name a file or directory; `.` for here)"]
    assert "no snapshots" in run_fleet(["snapshot", "ls"], cwd=tmp_path).stdout


def test_a_skipped_file_with_a_hostile_name_is_shown_not_obeyed(tmp_path, fleet_home):
    tree = tmp_path / "data"
    tree.mkdir()
    (tree / "a.txt").write_text("a")
    os.mkfifo(tree / "pipe\x1b]52;c;cHduZWQ=\x07\nfleet: error: forged")
    proc = run_fleet(["snapshot", "create", str(tree)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "\x1b" not in proc.stderr and "\x07" not in proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("fleet: ")]
    assert warnings == ["fleet: warning: skipped pipe^[]52;c;cHduZWQ=^G^Jfleet: error: forged: not a regular file, "
                        "directory or symlink"]
