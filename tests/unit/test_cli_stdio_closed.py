"""Standard output that is closed, or a reader that went away, and a stack outputs file that is no
file: one line or a quiet end, never a traceback, a hang or an exit 0 that printed nothing
(red-team findings)."""
from __future__ import annotations

import os
import subprocess

from tests.conftest import FLEET


def _sh(script: str, tmp_path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "FLEET_HOME": str(tmp_path / "home"), "FLEET": FLEET, **env})


def test_help_into_a_pipe_whose_reader_left_ends_quietly(tmp_path):
    got = _sh('"$FLEET" --help | true', tmp_path)
    assert got.returncode == 0 and "Traceback" not in got.stderr and "BrokenPipe" not in got.stderr, got.stderr


def test_a_closed_stdout_is_one_line_and_exit_2(tmp_path):
    for args in ("--help", "status", "status --json", "runs ls"):
        got = _sh(f'"$FLEET" {args} >&-', tmp_path)
        assert got.returncode == 2, (args, got.stderr)
        assert got.stderr.strip() == "fleet: error: standard output is closed (send it to /dev/null to discard it)"


def test_stack_outputs_that_are_not_a_json_file_are_one_line(tmp_path):
    (tmp_path / "binary").write_bytes(bytes(range(128, 256)) * 8)
    os.mkfifo(tmp_path / "fifo")
    for name, expect in (("binary", "not JSON"), ("fifo", "not a regular file")):
        got = _sh('"$FLEET" image ls', tmp_path, FLEET_AWS_OUTPUTS=str(tmp_path / name))
        assert got.returncode in (2, 3) and expect in got.stderr, (name, got.stderr)
        assert len(got.stderr.strip().splitlines()) == 1 and "internal error" not in got.stderr


def test_a_reader_that_leaves_early_ends_every_command_the_same_way(tmp_path):
    """`fleet status --json | head -c1` ended 0 (its fast path), `fleet snapshot show ID | head -c1`
    ended 1 with no word (click's answer to EPIPE): a `set -o pipefail` script broke for some commands
    only. Both end 0, as a pager or `head` closing early is no failure."""
    tree = tmp_path / "d"
    tree.mkdir()
    for i in range(3000):               # a listing far larger than a pipe's buffer
        (tree / f"file_with_a_long_name_{i}.txt").write_text(str(i))
    made = _sh(f'"$FLEET" snapshot create {tree} --json', tmp_path)
    assert made.returncode == 0, made.stderr
    import json
    sid = json.loads(made.stdout)["id"]
    got = subprocess.run(["bash", "-c", f'set -o pipefail; "$FLEET" snapshot show {sid} | head -c1 >/dev/null'],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "FLEET_HOME": str(tmp_path / "home"), "FLEET": FLEET})
    assert got.returncode == 0 and "Traceback" not in got.stderr, got.stderr
