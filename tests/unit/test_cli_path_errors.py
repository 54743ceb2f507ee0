"""A path no program could use as given (here a name longer than the filesystem allows) was `fleet:
internal error: OSError: [Errno 36] File name too long: …` from `-f`, `snapshot create PATH`,
`snapshot ls --store`, `runs compare --runs-dir` and `hosts add --key`. It is now one line naming the
path and the reason, exit 3 (something on this computer); an OSError with no path is still a bug."""
from __future__ import annotations

import errno

import pytest

from tests.conftest import run_fleet

LONG = "a" * 300


@pytest.mark.parametrize("args", [
    ["up", "--dry-run", "--gpus", "1", "-f", LONG],
    ["snapshot", "create", LONG],
    ["snapshot", "ls", "--store", LONG],
    ["runs", "compare", "--runs-dir", LONG, "--sweep", "x"],
    ["hosts", "add", "127.0.0.1", "--key", LONG],
])
def test_a_name_too_long_is_one_line_naming_it(tmp_path, fleet_home, args):
    proc = run_fleet(args, cwd=tmp_path)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fleet: error: ") and "internal" not in lines[0]
    assert LONG in lines[0] and lines[0].endswith(": File name too long")


def test_an_oserror_without_a_path_is_still_reported_as_a_bug(capsys):
    from fleet.cli.guard import guard

    def fail() -> int:
        raise OSError(errno.ENAMETOOLONG, "File name too long")

    assert guard(fail, debug=False) == 1
    assert "internal error: OSError" in capsys.readouterr().err


def test_a_full_disk_under_a_copy_names_where_it_was_writing_not_what_it_read(capsys, tmp_path):
    """A local machine's agent copied from fleet's package into a full FLEET_HOME said `fleet: error:
    …/site-packages/fleet/remote/agent/agent.py: No space left on device`: the file read, not the
    full filesystem, so the user looked for space in the wrong place."""
    from fleet.cli.guard import guard
    source = tmp_path / "agent.py"
    source.write_text("x")
    target = tmp_path / "full" / "agent.py"

    def fail() -> int:
        raise OSError(errno.ENOSPC, "No space left on device", str(source), None, str(target))

    assert guard(fail, debug=False) == 3
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err]
    assert err.startswith(f"fleet: error: {target}: No space left on device") and str(source) not in err
    assert "free space" in err


def test_a_full_disk_that_names_no_file_is_one_line_naming_fleet_home(capsys, tmp_path, monkeypatch):
    """A local machine's host key written into a full FLEET_HOME failed as the file closed, an OSError
    with no file name: `fleet up` said `internal error: OSError: [Errno 28] No space left on device
    (rerun with --debug …)`, a bug report for a full disk. It now names the full place and what to do."""
    import os
    from fleet.cli.guard import guard
    home, cwd = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    cwd.mkdir()
    monkeypatch.setenv("FLEET_HOME", str(home))
    monkeypatch.chdir(cwd)
    real = os.statvfs

    class Full:
        f_bavail, f_frsize = 3, 4096

    monkeypatch.setattr(os, "statvfs", lambda p: Full() if str(p) == str(home) else real(p))

    def fail() -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    assert guard(fail, debug=False) == 3
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and "internal" not in err
    assert err == (f"fleet: error: No space left on device while writing: FLEET_HOME {home} (12.0 KiB free): "
                   "free space there and run again")


@pytest.mark.parametrize("filename", [None, "/some/file"])
def test_too_many_open_files_names_the_limit_not_a_bug(capsys, monkeypatch, filename):
    """`ulimit -n 14; fleet up` ended `fleet: internal error: OSError: [Errno 24] Too many open files
    (rerun with --debug …)`: the shell's limit, said as a bug in fleet."""
    import resource
    from fleet.cli.guard import guard
    monkeypatch.setattr(resource, "getrlimit", lambda which: (14, 4096))

    def fail() -> int:
        raise OSError(errno.EMFILE, "Too many open files", filename)

    assert guard(fail, debug=False) == 3
    err = capsys.readouterr().err.strip()
    assert err == ("fleet: error: too many open files: this shell allows 14 (`ulimit -n`); raise it "
                   "(`ulimit -n 1024`) and run again")


def test_too_many_open_files_at_the_usual_1024_says_raise_it_not_that_it_is_the_hard_limit(capsys, monkeypatch):
    """A soft limit of 1024 under a hard one of 524288 (systemd's defaults) was told it is its hard
    limit too ('run from a new shell, or raise the hard limit'): `ulimit -n 4096` works at once."""
    import resource
    from fleet.cli.guard import guard
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 524288))

    def fail() -> int:
        raise OSError(errno.EMFILE, "Too many open files")

    assert guard(fail, debug=False) == 3
    err = capsys.readouterr().err.strip()
    assert err == ("fleet: error: too many open files: this shell allows 1024 (`ulimit -n`); raise it "
                   "(`ulimit -n 4096`) and run again")
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 1024))    # `ulimit -n 1024` set both
    assert guard(fail, debug=False) == 3
    assert "that is its hard limit too" in capsys.readouterr().err


def test_a_full_disk_met_from_a_deleted_current_directory_is_still_one_line(capsys, tmp_path, monkeypatch):
    """The current directory removed under the shell (another terminal's `rm -rf`): naming it with its
    free space raised FileNotFoundError from os.getcwd() inside the error handler, a traceback."""
    from fleet.cli.guard import guard
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.setenv("FLEET_HOME", str(tmp_path))
    monkeypatch.chdir(gone)
    gone.rmdir()

    def fail() -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    assert guard(fail, debug=False) == 3
    err = capsys.readouterr().err.strip()
    assert err.splitlines() == [err] and err.startswith("fleet: error: No space left on device while writing: ")
    assert f"FLEET_HOME {tmp_path}" in err
