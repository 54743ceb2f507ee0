"""A warm pool gives back machines it has no trial left for while the last trials still run
(fleet/sweep/shrink.py): 3 trials, 2 at a time on 2 local machines, the first much longer than the
others. Once the 2nd and 3rd are done on one machine, that machine is released while the 1st still
runs: its sshd ends, `fleet status --json` shows the lease with one machine, and its ledger segment
closes at its release, not when the sweep ends.

Prices are set so the ledger moves: local-1gpu at $36/h.
"""
from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime

from fleet.money.ledger import Ledger
from fleet.providers.local.sshd import pid_alive
from fleet.state import open_state
from tests.conftest import FLEET, processes_under, run_fleet, wait_until


def _config(d) -> None:
    (d / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
                                  '[prices]\n"local-1gpu" = 36\n')


def _status(experiment) -> list[dict]:
    proc = run_fleet(["status", "--json"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["leases"]


def _machines() -> dict[str, int]:
    """Machine id → sshd pid of every recorded machine of every active lease."""
    state = open_state()
    try:
        return {m.id: int(m.provider_ref["sshd_pid"]) for lease in state.list_leases() for m in lease.machines}
    finally:
        state.close()


def test_an_idle_pool_machine_is_released_while_the_long_trial_runs(experiment, fleet_home, tmp_path):
    _config(experiment)
    go = tmp_path / "go"
    # Trial 1 runs until the test lets it end (at most 5 minutes); trials 2 and 3 end at once.
    script = (f"if [ {{x}} = 1 ]; then echo long-trial-up; i=0; while [ ! -e {go} ] && [ $i -lt 1500 ]; "
              "do sleep 0.2; i=$((i+1)); done; fi; true")
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    proc = subprocess.Popen([FLEET, "sweep", "--param", "x=1,2,3", "--parallel", "2", "--json", "--",
                             "sh", "-c", script], cwd=experiment, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Both machines leased and recorded.
        assert wait_until(lambda: len(_machines()) == 2 or proc.poll() is not None, timeout=120, interval=0.5)
        machines = _machines()
        assert len(machines) == 2, proc.poll()
        # The lease drops to one machine while trial 1 still runs (it waits for `go`).
        assert wait_until(lambda: len(_machines()) == 1 or proc.poll() is not None, timeout=180, interval=0.5)
        assert proc.poll() is None, "the sweep ended before the idle machine was released"
        (kept,) = _machines()
        (gone,) = set(machines) - {kept}
        assert wait_until(lambda: not pid_alive(machines[gone]), timeout=30)       # its sshd ended
        assert pid_alive(machines[kept])                                           # the long trial's did not
        leases = _status(experiment)
        assert len(leases) == 1 and [m["id"] for m in leases[0]["machines"]] == [kept]
        assert leases[0]["health"] == "up"
        go.write_text("")
        out, err = proc.communicate(timeout=180)
    finally:
        go.write_text("")            # a failed assertion above still lets the sweep end and release
        try:
            if proc.poll() is None:
                proc.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert [t["state"] for t in summary["trials"]] == ["succeeded"] * 3
    assert summary["machines"] == 2 and list(summary["released_early"]) == [gone]
    assert "released 1 machine(s)" in err and "no trial left for them" in err
    # The ledger: the released machine's billing ends at its release, the other's at the sweep's end.
    state = open_state()
    try:
        read = Ledger(state.db).read(lease_id=summary["lease_id"])
    finally:
        state.close()
    assert not read.corrupt
    ends: dict[str, str] = {}
    for e in read.entries:
        ends[e.machine_id] = max(ends.get(e.machine_id, e.end_at), e.end_at)
    closes = {e.machine_id: e for e in read.entries if e.kind == "close"}
    assert set(closes) == {gone, kept} and sum(e.kind == "close" for e in read.entries) == 2
    released_at = datetime.fromisoformat(summary["released_early"][gone])
    assert abs((datetime.fromisoformat(closes[gone].end_at) - released_at).total_seconds()) < 5
    assert ends[gone] == closes[gone].end_at                                       # nothing billed after it
    assert datetime.fromisoformat(closes[kept].end_at) > datetime.fromisoformat(closes[gone].end_at)
    assert processes_under(fleet_home) == []


def test_a_bad_idle_release_is_one_line(experiment, fleet_home):
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "x=1", "--idle-release", "soon", "--", "true"], cwd=experiment)
    assert proc.returncode == 2 and proc.stderr.startswith("fleet: error: --idle-release: must be a duration")
    assert len(proc.stderr.strip().splitlines()) <= 2 and processes_under(fleet_home) == []
