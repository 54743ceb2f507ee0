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


def test_a_rank_that_cannot_start_takes_the_started_ones_down_with_it(tmp_path):
    """All ranks or none: rank 1's pid file cannot be written, so rank 0 (already running) is ended,
    not left holding its GPU unrelayed, and the agent says which rank and why."""
    procs = _procs(tmp_path, "sleep 60", "sleep 60")
    procs[1]["pidfile"] = str(tmp_path / "no-such-dir" / "r1.pid")
    p = _start(tmp_path, procs)
    out, err = p.communicate(timeout=60)
    assert p.returncode == 125 and b"could not start rank 1" in err, err
    pgid = int((tmp_path / "r0.pid").read_text().split()[0])
    assert c.start_time(pgid) is None, "rank 0 still runs after the group failed to start"


def test_a_line_longer_than_a_piece_is_joined_at_home_before_it_is_masked(tmp_path):
    """A line is relayed in pieces past 64 KiB; a secret across a piece boundary must still be
    masked, so the controller joins the pieces before masking or showing the line."""
    from fleet.remote.exec import ProcessSpec, ProcessResult, RunningProcess, _Output
    from fleet.remote.exec_group import _dispatch
    from fleet.remote.agent.group import MAX_LINE
    import threading
    secret = "hf_S3CRETTOKEN0123456789"
    line = "x" * (MAX_LINE * 2 - 10) + secret + " end"
    p = _start(tmp_path, _procs(tmp_path, f"{sys.executable} -c \"print('x' * {MAX_LINE * 2 - 10} + '{secret} end')\""))
    out, _ = p.communicate(timeout=60)
    assert len(out.split(b"\n")) > 3   # really relayed in pieces
    seen, log = [], tmp_path / "rank-0.log"

    class _M:   # a stand-in machine: only the label and id are read
        id = "m"
    spec = ProcessSpec(_M(), "0", "", {}, "/", "/p")
    proc = RunningProcess(spec, threading.Thread(target=lambda: None), ProcessResult(spec))
    output = _Output(spec, lambda label, stream, text: seen.append(text), log, lambda t: t.replace(secret, "***"))
    assert _dispatch(out, [proc], [output]) == b""
    output.close()
    assert seen == [line.replace(secret, "***")] and proc.result.exit_code == 0
    assert secret not in log.read_text() and log.read_text() == line.replace(secret, "***") + "\n"


def test_a_sigterm_while_the_ranks_are_still_starting_reaches_every_rank(tmp_path):
    """A stop that comes while the agent is still starting ranks (the first is up, the rest not yet)
    reaches the ranks started after it too; it neither kills the agent (leaving its ranks running,
    unrelayed, holding their GPUs) nor is lost."""
    n = 24
    procs = _procs(tmp_path, *["sleep 30"] * n)
    p = _start(tmp_path, procs)
    first = tmp_path / "r0.pid"
    end = time.monotonic() + 30
    while not first.exists() and time.monotonic() < end:
        time.sleep(0.001)
    p.send_signal(signal.SIGTERM)
    started = time.monotonic()
    out, err = p.communicate(timeout=60)
    assert time.monotonic() - started < 20, "the ranks ran on after the stop"
    assert p.returncode == 0, (p.returncode, err)          # the agent relayed every end, not killed itself
    ends = {r[0]: r[2] for r in _records(out) if r[1] == "x"}
    assert ends == {i: b"143" for i in range(n)}, ends    # each rank ended by the SIGTERM (128 + 15)


def test_a_line_without_end_is_passed_on_in_pieces_and_never_cut_inside_a_secret(tmp_path):
    """A hostile or careless process writes without a newline: the controller holds about MAX_LINE
    bytes per stream (it held it all, rescanning it on every read: 64 MiB took 25 s), and a secret
    where a piece is cut is still masked."""
    import threading
    import time

    from fleet.remote.exec import MAX_LINE, ProcessResult, ProcessSpec, RunningProcess, _Output
    secret = "hf_S3CRETTOKEN0123456789"

    class _M:
        id = "m"
    spec = ProcessSpec(_M(), "0", "", {}, "/", "/p")
    seen = []
    output = _Output(spec, lambda label, stream, text: seen.append(text), None, lambda t: t.replace(secret, "***"))
    RunningProcess(spec, threading.Thread(target=lambda: None), ProcessResult(spec))
    piece = b"y" * 65536
    t0 = time.monotonic()
    for i in range(24 * 16):                          # 24 MiB without a newline, a secret in every MiB
        output.feed("out", piece[:-len(secret)] + secret.encode() if i % 16 == 15 else piece)
        assert len(output.buffers["out"]) <= MAX_LINE + 65536
    output.feed("out", b"", final=True)
    assert time.monotonic() - t0 < 20
    assert sum(len(t) for t in seen) == 24 * 1024 * 1024 - 24 * (len(secret) - 3)
    assert all(secret not in t for t in seen) and "".join(seen).count("***") == 24


def test_a_secret_exactly_where_a_long_line_would_be_cut_is_still_masked():
    import threading

    from fleet.remote.exec import MAX_LINE, SECRET_SPAN, ProcessResult, ProcessSpec, RunningProcess, _Output
    secret = "hf_S3CRETTOKEN0123456789"

    class _M:
        id = "m"
    spec = ProcessSpec(_M(), "0", "", {}, "/", "/p")
    RunningProcess(spec, threading.Thread(target=lambda: None), ProcessResult(spec))
    data = bytearray(b"z" * (MAX_LINE + 100))
    at = len(data) - SECRET_SPAN - 5                  # the secret spans the first place a cut would go
    data[at:at + len(secret)] = secret.encode()
    seen = []
    output = _Output(spec, lambda label, stream, text: seen.append(text), None, lambda t: t.replace(secret, "***"))
    output.feed("out", bytes(data))
    output.feed("out", b"", final=True)
    assert len(seen) == 2 and all("hf_S3" not in t and "0123456789" not in t for t in seen)
    assert "".join(seen).count("***") == 1
