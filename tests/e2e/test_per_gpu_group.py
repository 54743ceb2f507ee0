"""With `per_gpu`, a machine's ranks run under one agent (`agent group`), not one agent start each:
what a user sees stays what it was with one agent per rank. Every rank's lines carry its own label
and land in its own log; each rank's exit code is its own and the first failing rank is named;
Ctrl-C reaches every rank of every machine (each gets its SIGTERM and says so) and nothing is left
running."""
from __future__ import annotations

import json
import signal
import time

from tests.conftest import communicate_or_kill, processes_under, run_fleet, start_fleet_up, wait_for_line

PARENT = 'parent=$PPID:$(tr "\\\\0" " " < /proc/$PPID/cmdline)'


def _toml(command: str) -> str:
    return ('project = "t"\ntemplate = "local-4gpu"\nper_gpu = true\nmax_duration = "10m"\n'
            f"command = '{command}'\n")


def test_a_machines_ranks_share_one_agent_and_keep_their_own_output_logs_and_exit_codes(experiment, fleet_home):
    (experiment / "fleet.toml").write_text(_toml(
        f'echo "R=$FLEET_RANK {PARENT}"; echo "E=$FLEET_RANK" >&2; [ "$FLEET_RANK" != 6 ] || exit 3'))
    proc = run_fleet(["up", "--gpus", "8", "--json"], cwd=experiment, timeout=240)
    assert proc.returncode == 3, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["machines"] == 2 and summary["failing_rank"] == "6", summary
    assert summary["rank_exit_codes"] == {str(r): (3 if r == 6 else 0) for r in range(8)}, summary
    parents: dict[int, set[str]] = {0: set(), 1: set()}
    for rank in range(8):
        [line] = [x for x in proc.stderr.splitlines() + proc.stdout.splitlines() if x.startswith(f"[{rank}] R=")]
        parent = line.split("parent=", 1)[1]
        assert "agent.py group" in parent, line
        parents[rank // 4].add(parent)
        log = (experiment / summary["run_dir"] / "logs" / f"rank-{rank}.log").read_text()
        assert f"R={rank} " in log and f"[stderr] E={rank}" in log, log
        assert all(f"R={other} " not in log for other in range(8) if other != rank), log
    # One agent per machine, the same for its four ranks; two machines, two agents.
    assert [len(p) for p in parents.values()] == [1, 1] and parents[0] != parents[1], parents
    assert processes_under(fleet_home) == []


def test_ctrl_c_reaches_every_rank_of_every_machine(experiment, fleet_home):
    (experiment / "fleet.toml").write_text(_toml(
        'trap "echo stopping $FLEET_RANK; exit 0" TERM; echo "up $FLEET_RANK"; sleep 120 & wait'))
    proc = start_fleet_up(experiment, ["--gpus", "8"])
    seen = wait_for_line(proc, "] up ", timeout=180)   # (killed if it never comes)
    while not all(f"] up {rank}" in seen for rank in range(8)):
        seen += wait_for_line(proc, "] up ", timeout=60)
    time.sleep(0.5)   # every shell has set its trap before printing; give the last a moment
    proc.send_signal(signal.SIGINT)
    out = seen + communicate_or_kill(proc, 120)[0]
    assert proc.returncode == 130, out[-3000:]
    for rank in range(8):
        assert f"[{rank}] stopping {rank}" in out, out[-3000:]
    assert processes_under(fleet_home) == []
