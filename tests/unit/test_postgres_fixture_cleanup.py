"""A test process killed before its teardown (a CI job cancelled, a worker SIGKILLed) left its
PostgreSQL server running for good (tests/fixtures/postgres.py): the server's watcher stops it and
removes its directory once the process that started it is gone."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

STARTER = ("import sys; sys.path.insert(0, %r)\n"
           "from tests.fixtures.postgres import ServerUnavailable, start_server\n"
           "try:\n    s = start_server()\nexcept ServerUnavailable as exc:\n    print('skip', exc, flush=True)\n"
           "else:\n    print(s['base'], flush=True)\n"
           "import time; time.sleep(600)\n")


def _postmaster_of(base: str) -> list[int]:
    found = []
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if f"-D {base}/data".encode() in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "):
                found.append(pid)
        except OSError:
            continue
    return found


def test_a_killed_test_process_leaves_no_postgres_behind():
    starter = subprocess.Popen([sys.executable, "-c", STARTER % str(Path.cwd())], stdout=subprocess.PIPE, text=True)
    try:
        line = starter.stdout.readline().strip()
        if line.startswith("skip") or not line:
            pytest.skip(line or "the server did not start")
        assert _postmaster_of(line), "the server never ran: the test proves nothing"
    finally:
        starter.send_signal(signal.SIGKILL)      # no teardown runs
        starter.wait()
    end = time.monotonic() + 60
    while (_postmaster_of(line) or os.path.exists(line)) and time.monotonic() < end:
        time.sleep(0.2)
    assert not _postmaster_of(line) and not os.path.exists(line)
