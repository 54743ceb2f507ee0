"""`agent group`: one agent runs a machine's per-GPU processes and relays their output framed as
`<index> o|e <line>`, each end as `<index> x <code>`. What the controller relies on: every line
arrives whole and attributed to its process, whatever the process prints; each exit code (a
signal as 128+N) comes after that process's last line; a daemon that keeps a process's output open
does not hold the run; each process has its own pid file, so `agent signal` stops one rank; a
SIGTERM to the agent reaches every process; the same works from the single-file agent."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from fleet.remote.agent import AGENT_PATH, agent_source
from fleet.remote.agent import containment as c


def _procs(tmp_path, *commands, env=None):
    return [{"argv": ["sh", "-c", cmd], "pidfile": str(tmp_path / f"r{i}.pid"), "env": env or {"RANK": str(i)}}
            for i, cmd in enumerate(commands)]


def _start(tmp_path, procs, agent=AGENT_PATH):
    p = subprocess.Popen([sys.executable, "-S", str(agent), "group"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    p.stdin.write((json.dumps({"procs": procs}) + "\n").encode())
    p.stdin.close()
    p.stdin = None   # communicate() must not flush it again
    return p


def _records(out: bytes) -> list[tuple[int, str, bytes]]:
    rows = []
    for line in out.split(b"\n")[:-1]:
        index, tag, payload = line.split(b" ", 2)
        rows.append((int(index), tag.decode(), payload))
    return rows


def test_every_line_reaches_its_own_process_and_each_end_comes_after_its_output(tmp_path):
    procs = _procs(tmp_path,
                   'echo "rank $RANK"; echo warn >&2; printf "no newline"; exit 3',
                   'printf "a b  c\\0\\377\\n"; echo "rank $RANK"',
                   "kill -9 $$")
    p = _start(tmp_path, procs)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0 and err == b"", err
    rows = _records(out)
    # Its stdout and stderr each in order (between the two, as the pipes deliver them).
    assert [r[2] for r in rows if r[:2] == (0, "o")] == [b"rank 0", b"no newline"], rows
    assert [r[2] for r in rows if r[:2] == (0, "e")] == [b"warn"], rows
    assert [r for r in rows if r[0] == 1 and r[1] == "o"] == [(1, "o", b"a b  c\0\xff"), (1, "o", b"rank 1")]
    ends = {r[0]: r[2] for r in rows if r[1] == "x"}
    assert ends == {0: b"3", 1: b"0", 2: b"137"}, rows   # killed by SIGKILL: 128 + 9, as `agent exec` says
    for i in (0, 1, 2):   # nothing of a process comes after its end
        assert max(n for n, r in enumerate(rows) if r[0] == i) == next(n for n, r in enumerate(rows)
                                                                        if r[0] == i and r[1] == "x")


def test_a_daemon_holding_the_output_open_does_not_hold_the_run(tmp_path):
    procs = _procs(tmp_path, "sleep 30 & echo started", "echo other")
    t0 = time.monotonic()
    p = _start(tmp_path, procs)
    out, _ = p.communicate(timeout=60)
    took = time.monotonic() - t0
    assert {(i, t, x) for i, t, x in _records(out)} >= {(0, "o", b"started"), (0, "x", b"0"), (1, "x", b"0")}
    assert took < 10, f"the group waited {took:.1f} s for a daemon's output"
    subprocess.run(["pkill", "-f", "^sleep 30$"], check=False)


def test_each_process_has_its_pid_file_and_one_rank_can_be_stopped_alone(tmp_path):
    procs = _procs(tmp_path, "sleep 60", "sleep 2; echo survived")
    p = _start(tmp_path, procs)
    try:
        pidfile = tmp_path / "r0.pid"
        deadline = time.monotonic() + 20
        while not (pidfile.exists() and (tmp_path / "r1.pid").exists()) and time.monotonic() < deadline:
            time.sleep(0.05)
        pgid, start = map(int, pidfile.read_text().split())
        assert c.start_time(pgid) == start and os.getpgid(pgid) == pgid   # its own group, proven by start time
        subprocess.run([sys.executable, str(AGENT_PATH), "signal", "--pidfile", str(pidfile), "--signal", "TERM"],
                       check=True, timeout=30)
        out, _ = p.communicate(timeout=60)
    finally:
        p.kill()
    ends = {i: x for i, t, x in _records(out) if t == "x"}
    assert ends == {0: b"143", 1: b"0"}, out
    assert (1, "o", b"survived") in _records(out)


def test_a_sigterm_to_the_agent_reaches_every_process(tmp_path):
    procs = _procs(tmp_path, "trap 'echo term $RANK; exit 7' TERM; sleep 60 & wait",
                   "trap 'echo term $RANK; exit 7' TERM; sleep 60 & wait")
    p = _start(tmp_path, procs)
    deadline = time.monotonic() + 20
    while not all((tmp_path / f"r{i}.pid").exists() for i in (0, 1)) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)   # both shells have set their trap
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=60)
    rows = _records(out)
    assert {(i, x) for i, t, x in rows if t == "x"} == {(0, b"7"), (1, b"7")}, rows
    assert {(i, x) for i, t, x in rows if t == "o"} == {(0, b"term 0"), (1, b"term 1")}, rows


def test_the_single_file_agent_runs_groups_too(tmp_path):
    single = tmp_path / "agent.py"
    single.write_text(agent_source())
    p = _start(tmp_path, _procs(tmp_path, "echo one", "echo two"), agent=single)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 0, err
    assert sorted(_records(out)) == [(0, "o", b"one"), (0, "x", b"0"), (1, "o", b"two"), (1, "x", b"0")]
