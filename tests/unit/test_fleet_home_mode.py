"""FLEET_HOME is private: created 0700 with its store 0700; an existing world-writable one is refused
in one line, a group-writable one is used with one warning line (SECURITY.md)."""
from __future__ import annotations

import stat

from tests.conftest import run_fleet


class _Sqlite:
    """A state database as write_marker reads one: its dialect."""
    dialect = "sqlite"


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_fleet_home_and_its_store_are_private(tmp_path):
    home = tmp_path / "new-home"
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f.txt").write_text("x")
    proc = run_fleet(["snapshot", "create", str(tmp_path / "d")], cwd=tmp_path, env={"FLEET_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert _mode(home) == 0o700 and _mode(home / "store") == 0o700


def test_a_world_writable_fleet_home_is_refused(tmp_path):
    home = tmp_path / "shared"
    home.mkdir()
    for mode in (0o777, 0o1777):
        home.chmod(mode)
        proc = run_fleet(["status"], cwd=tmp_path, env={"FLEET_HOME": str(home)})
        assert proc.returncode != 0
        lines = proc.stderr.strip().splitlines()
        assert len(lines) <= 2 and "is writable by every user" in lines[0] and f"chmod 700 {home}" in proc.stderr
        assert not (home / "state.db").exists()              # nothing was written into it


def test_a_group_writable_fleet_home_warns_once(tmp_path):
    home = tmp_path / "group"
    home.mkdir()
    home.chmod(0o770)
    proc = run_fleet(["status"], cwd=tmp_path, env={"FLEET_HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("is writable by its group") == 1


def test_supervisor_and_kept_marker_directories_are_private(tmp_path, monkeypatch):
    """supervisors/ and kept/ were made 0755 (a group-readable team FLEET_HOME then showed which runs
    and leases exist, and the state each lives in)."""
    import os
    from datetime import datetime, timezone

    from fleet.money.kept import MARKERS, write_marker
    from fleet.run.supervisor import SUPERVISORS, new_supervisor_dir
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("FLEET_HOME", str(home))
    old = os.umask(0o022)
    try:
        run_dir = new_supervisor_dir("r-1")
        write_marker(_Sqlite(), "l-1", datetime.now(timezone.utc))
    finally:
        os.umask(old)
    assert _mode(home / SUPERVISORS) == 0o700 and _mode(run_dir) == 0o700
    assert _mode(home / MARKERS) == 0o700 and (home / MARKERS / "l-1").exists()
