"""A fleet lease's job that Slurm suspends (gang scheduling, PreemptMode=SUSPEND, an operator's
`scontrol suspend`) and resumes keeps its machines and its run (fleet/providers/slurm/watch.py),
against the real test cluster (tests/fixtures/slurm.py).

The job's processes stop (the experiment's and fleet's sshd alike) and Slurm keeps the nodes; on
`scontrol resume` they go on where they were. The watch used to read SUSPENDED as Slurm ending the
job and stopped the run as lost; now the run hears it suspended and resumed, and the command ends
as it would have.
"""
from __future__ import annotations

import dataclasses
import os
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.fixtures.slurm import wait_for
from tests.fixtures.slurm_lease import cluster_plan, cluster_provider

from fleet.ids import new_lease_id
from fleet.providers.base import LeaseWatch
from fleet.providers.slurm.errors import SlurmError
from fleet.providers.slurm.parsing import JobState
from fleet.remote.ssh import connect

pytestmark = pytest.mark.timeout(300)

# Counts ticks into a file until told to stop: a suspended job's ticks stop.
TICKER = """\
import os, sys, time
out = sys.argv[1]
n = 0
while not os.path.exists(out + ".stop"):
    n += 1
    with open(out, "a") as fh:
        fh.write(f"{n}\\n")
    time.sleep(0.1)
print("done", n)
"""


def _scontrol(cluster, *args: str) -> None:
    done = subprocess.run(["scontrol", *args], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **cluster.env})
    assert done.returncode == 0, done.stderr


def _ticks(path: Path) -> int:
    return len(path.read_text().split()) if path.exists() else 0


def _still(path: Path) -> int | None:
    """The tick count once it holds for a second (a running ticker adds ten), else None."""
    before = _ticks(path)
    time.sleep(1)
    return before if _ticks(path) == before else None


def test_a_job_slurm_suspends_and_resumes_keeps_its_machines_and_its_command(slurm_env, fleet_home, tmp_path):
    provider, slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    said: list[str] = []
    lost: list[str] = []
    watch = LeaseWatch(cancel=threading.Event(), on_lost=lost.append, on_suspended=said.append,
                       on_resumed=said.append)
    lease = provider.lease(cluster_plan(provider, "slurm-1gpu", 1), new_lease_id(), 120, watch=watch)
    job_id = lease.meta["slurm_job"]
    (machine,) = lease.machines
    out = tmp_path / "ticks"
    run: dict[str, object] = {}
    suspended = False
    try:
        ticker = tmp_path / "ticker.py"
        ticker.write_text(TICKER)

        def command() -> None:       # as a run starts it: the agent's exec, in an SSH session of the machine
            try:
                with connect(machine, timeout=30) as session:
                    run["result"] = session.run(f"{machine.python} -S {machine.agent_path} exec -- "
                                                f"{machine.python} {ticker} {out}", timeout=240)
            except BaseException as exc:  # noqa: BLE001 — asserted below
                run["error"] = exc

        thread = threading.Thread(target=command, daemon=True)
        thread.start()
        wait_for(lambda: _ticks(out) > 0, 60, "the command to start")

        _scontrol(slurm_env, "suspend", job_id)
        suspended = True
        wait_for(lambda: said, 30, "the run to hear the job suspended")
        assert said == [f"Slurm suspended job {job_id}: its processes are stopped and it keeps its nodes; the run "
                        "goes on when Slurm resumes it"]
        assert slurm.job(job_id).state is JobState.SUSPENDED
        # Slurm sends SIGTSTP, then SIGSTOP a moment later (which the command's sshd session, an
        # orphaned process group, cannot ignore): then no tick comes.
        stopped_at = wait_for(lambda: _still(out), 30, "the command to stop")
        time.sleep(2)                                   # four polls of the watch: still no loss
        assert _ticks(out) == stopped_at and lost == []

        _scontrol(slurm_env, "resume", job_id)
        suspended = False
        wait_for(lambda: len(said) == 2, 30, "the run to hear the job resumed")
        assert said[1].startswith(f"Slurm resumed job {job_id} after ") and said[1].endswith("s; the run goes on")
        wait_for(lambda: _ticks(out) > stopped_at + 5, 30, "the command to go on")
        Path(str(out) + ".stop").write_text("")
        thread.join(60)
        assert "error" not in run, run.get("error")
        result = run["result"]
        assert result.exit_code == 0 and result.stdout.startswith("done "), (result.exit_code, result.stderr)
        assert lost == [] and slurm.job(job_id).state is JobState.RUNNING
    finally:
        if suspended:
            subprocess.run(["scontrol", "resume", job_id], capture_output=True, timeout=60,
                           env={**os.environ, **slurm_env.env})
        Path(str(out) + ".stop").write_text("")
        provider.release(lease)
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "the machine's directory to be removed")


def _agent(machine, *argv: str):
    with connect(machine, timeout=30) as session:
        return session.run([machine.python, machine.agent_path, *argv, "--state-dir", machine.state_dir], timeout=60)


def test_a_suspension_longer_than_the_ttl_keeps_the_machines_for_the_next_heartbeat(slurm_env, fleet_home, tmp_path):
    # The watchdog, stopped with the job while no beat could reach it, found its deadline passed at the
    # resume and ended the machine at once (fleet/remote/agent/wakes.py).
    provider, slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    lease = provider.lease(cluster_plan(provider, "slurm-1gpu", 1), new_lease_id(), 20)   # the watchdog's TTL
    job_id = lease.meta["slurm_job"]
    (machine,) = lease.machines
    suspended = False
    try:
        _agent(machine, "extend", "--ttl", "20")        # 20 s from now, whatever leasing took
        _scontrol(slurm_env, "suspend", job_id)
        suspended = True
        time.sleep(30)                                  # the deadline passes while the job is stopped
        _scontrol(slurm_env, "resume", job_id)
        suspended = False
        time.sleep(2)
        held = _agent(machine, "extend", "--ttl", "120")   # the controller's first beat after the resume
        assert held.exit_code == 0, held.stderr
        status = _agent(machine, "status")
        assert '"expired": false' in status.stdout and slurm.job(job_id).state is JobState.RUNNING, status.stdout
    finally:
        if suspended:
            subprocess.run(["scontrol", "resume", job_id], capture_output=True, timeout=60,
                           env={**os.environ, **slurm_env.env})
        provider.release(lease)
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "the machine's directory to be removed")


def test_extend_of_a_suspended_lease_raises_its_limit_and_says_its_machines_wait_for_the_resume(
        slurm_env, fleet_home, tmp_path):
    # `fleet extend` said "Slurm job N is not running; nothing to extend" of a suspended job.
    from fleet.run.keep import extend_lease
    from fleet.state import open_state
    from tests.integration.test_slurm_extend import limit_s, remaining_s
    provider, slurm, _ = cluster_provider(tmp_path, slurm_env)
    # A budget that runs out in 2 minutes caps the allocation's --time at 2 (max_duration is 10).
    plan = dataclasses.replace(cluster_plan(provider, "slurm-1gpu", 1), budget_deadline_s=120)
    lease = provider.lease(plan, new_lease_id(), 60)
    job_id = lease.meta["slurm_job"]
    suspended = False
    try:
        started = slurm.job(job_id).started
        assert started is not None and abs(started - lease.created_at) < timedelta(seconds=10)
        _scontrol(slurm_env, "suspend", job_id)
        suspended = True
        time.sleep(3)
        asked = time.monotonic()
        with pytest.raises(SlurmError) as err:
            extend_lease(open_state(), lease, 300, provider)               # what `fleet extend LEASE 5m` does
        line = err.value.one_line()
        assert line.startswith(f"Slurm job {job_id} is suspended: its time limit lets it run until "), line
        assert f"run `fleet extend` again once Slurm resumes job {job_id}" in line
        assert time.monotonic() - asked < 8                                # no SSH to its stopped machines
        assert limit_s(slurm_env, job_id) in (300, 360)
        job = slurm.job(job_id)
        # Suspended time is no run time: squeue's start stays where it was.
        assert job.state is JobState.SUSPENDED and job.started == started
        _scontrol(slurm_env, "resume", job_id)
        suspended = False
        extend_lease(open_state(), lease, 300, provider)
        assert 280 <= remaining_s(lease.machines[0]) <= 301
    finally:
        if suspended:
            subprocess.run(["scontrol", "resume", job_id], capture_output=True, timeout=60,
                           env={**os.environ, **slurm_env.env})
        provider.release(lease)
