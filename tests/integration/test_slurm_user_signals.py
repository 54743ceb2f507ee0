"""A user's own signals to a fleet Slurm job never end its machines (fleet/providers/slurm/node.py),
against the real test cluster (tests/fixtures/slurm.py).

`scancel -s USR1 JOB` is how a Slurm user asks a training to checkpoint: Slurm sends it to every
process of every step of the job, fleet's node steps included. It used to be fleet's own "this
machine alone is released", and the user-level sshd died of it too: every machine of the job ended.
Now the machines stay reachable, the run goes on, and the experiment's own handler sees the signal;
fleet's partial release (a request with the machine's token on its step's stdin) still works.
"""
from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import pytest

from tests.fixtures.slurm import wait_for
from tests.fixtures.slurm_lease import cluster_plan, cluster_provider

from fleet.ids import new_lease_id
from fleet.providers.slurm.parsing import JobState
from fleet.remote.ssh import connect

pytestmark = pytest.mark.timeout(300)

# A training that checkpoints on SIGUSR1 and logs SIGUSR2 (its handlers write a line), and runs until
# told to stop.
TRAINER = """\
import os, signal, sys, time
out = sys.argv[1]
def note(line):
    with open(out, "a") as fh:
        fh.write(line + "\\n")
signal.signal(signal.SIGUSR1, lambda *_: note("checkpoint"))
signal.signal(signal.SIGUSR2, lambda *_: note("usr2"))
note("training")
while not os.path.exists(out + ".stop"):
    time.sleep(0.1)
note("done")
"""


def _ssh(machine, command: str, **kw) -> str:
    with connect(machine, timeout=30) as session:
        result = session.run(command, **kw)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def test_a_users_scancel_usr1_reaches_the_training_and_ends_no_machine(slurm_env, fleet_home, tmp_path):
    provider, slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    plan = cluster_plan(provider, "slurm-1gpu", 2)
    lease = provider.lease(plan, new_lease_id(), 120)
    run: dict[str, object] = {}
    out = tmp_path / "trainer.out"           # the nodes share this host's filesystem
    try:
        job_id = lease.meta["slurm_job"]
        first, second = lease.machines
        trainer = tmp_path / "trainer.py"
        trainer.write_text(TRAINER)

        def train() -> None:       # as a run starts it: the agent's exec, in an SSH session of the machine
            try:
                run["stdout"] = _ssh(first, f"{first.python} -S {first.agent_path} exec -- "
                                            f"{first.python} {trainer} {out}", timeout=240)
            except BaseException as exc:  # noqa: BLE001 — asserted below
                run["error"] = exc

        thread = threading.Thread(target=train, daemon=True)
        thread.start()
        wait_for(lambda: "training" in _lines(out), 60, "the training to start")

        # The user asks the training to checkpoint, the Slurm way (and sends USR2 for good measure).
        for sig in ("USR1", "USR2"):
            done = subprocess.run(["scancel", "-s", sig, job_id], capture_output=True, text=True, timeout=60,
                                  env={**os.environ, **slurm_env.env})
            assert done.returncode == 0, done.stderr
        wait_for(lambda: {"checkpoint", "usr2"} <= set(_lines(out)), 30, "the training's handlers to run")

        # Every machine is still there: reachable over SSH, its directory and step in place, the job whole.
        for machine in lease.machines:
            assert _ssh(machine, "echo $FLEET_MACHINE_ID").strip() == machine.id
            assert Path(machine.workdir).is_dir()
        job = slurm.job(job_id)
        assert job.state is JobState.RUNNING and job.node_count == 2, job
        assert {n for s in slurm.steps(job_id) for n in s.nodes} == {first.provider_ref["node"],
                                                                     second.provider_ref["node"]}
        # The run goes on: the training ends when it is done, not when the signal came.
        assert thread.is_alive() and "error" not in run, run.get("error")
        Path(str(out) + ".stop").write_text("")
        thread.join(120)
        assert "error" not in run, run.get("error")
        lines = _lines(out)
        assert lines[0] == "training" and sorted(lines[1:3]) == ["checkpoint", "usr2"] and lines[3:] == ["done"]

        # fleet's own release of one machine still ends it (its request carries the machine's token).
        provider.release_machines(lease, [second.id])
        assert not Path(second.workdir).exists()
        job = slurm.job(job_id)
        assert job.state is JobState.RUNNING and job.nodes == (first.provider_ref["node"],), job
        assert _ssh(first, "echo ok").strip() == "ok"
    finally:
        Path(str(out) + ".stop").write_text("")
        provider.release(lease)
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "every machine directory to be removed")
