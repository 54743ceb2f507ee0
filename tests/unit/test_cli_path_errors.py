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
