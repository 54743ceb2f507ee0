"""`fleet init DIR` where DIR is there but is no directory (a regular file, /dev/null, a FIFO, a
symlink to nothing) said "cannot write DIR/fleet.toml: File exists", from mkdir: it says in one
line that DIR is not a directory, and leaves it as it was."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.errors import ExitCode
from tests.unit.test_config_schema_init import run_fleet


def _make(tmp_path: Path, kind: str) -> Path:
    if kind == "/dev/null":
        return Path("/dev/null")
    path = tmp_path / kind
    if kind == "file":
        path.write_text("data\n")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "link-to-file":
        (tmp_path / "file").write_text("data\n")
        path.symlink_to(tmp_path / "file")
    elif kind == "link-to-nothing":
        path.symlink_to(tmp_path / "missing")
    return path


@pytest.mark.parametrize("kind", ["/dev/null", "file", "fifo", "link-to-file", "link-to-nothing"])
def test_init_in_a_path_that_is_no_directory_says_so_in_one_line(tmp_path, monkeypatch, capsys, kind):
    target = _make(tmp_path, kind)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert run_fleet(monkeypatch, "init", str(target)) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fleet: error: {target} is ")
    assert ("a symlink to nothing" if kind == "link-to-nothing" else "not a directory") in err
    assert "File exists" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before      # nothing made beside it

