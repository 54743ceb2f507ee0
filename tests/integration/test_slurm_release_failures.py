"""Partial releases on Slurm that fail, or half succeed, against the real test cluster
(tests/fixtures/slurm.py), as a sweep's pool meets them (fleet/sweep/shrink.py → fleet/providers/slurm/shrink.py):

- Slurm's side and the machine's own channels (its step's stdin, its SSH) all fail: the machine is
  not ended, the heartbeat no longer extends it, and it reaches its deadline while the other machine
  still runs trials. That deadline used to `scancel` the whole job; now the machine's node leaves the
  job and the other machine runs on.
- A lease that queued through sbatch gives back its batch host together with another node: Slurm
  keeps the batch host, the other node goes back. That node used to stay billed until the pool
  ended (the whole release counted as failed); now its ledger segment closes at its release and the
  warning names only the machine that stays.
"""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.fixtures.slurm import cancel_every_job, cluster_or_skip, wait_for
from tests.fixtures.slurm_lease import cluster_plan, cluster_provider

from fleet.ids import new_lease_id
from fleet.providers.slurm.errors import ControllerUnreachable
from fleet.providers.slurm.parsing import JobState
from fleet.remote.ssh import connect
from fleet.sweep.shrink import PoolShrink

pytestmark = pytest.mark.timeout(400)


def _ssh(machine, command: str) -> str:
    with connect(machine, timeout=30) as session:
        result = session.run(command)
    assert result.exit_code == 0, result.stderr
    return result.stdout


class Events:
    def __init__(self):
        self.phases, self.warnings = [], []

    def phase(self, name, detail=""):
        self.phases.append((name, detail))

    def log(self, *a):
        pass

    def warn(self, message):
        self.warnings.append(message)


class Ledger:
    """The pool run's budget and state as PoolShrink reaches them: which segments close, and when."""

    def __init__(self):
        self.closed: dict[str, float] = {}
        self.released: list[str] = []

    def close_machines(self, ids):
        self.closed.update({i: time.monotonic() for i in ids})

    def release_machines(self, lease_id, ids, at):
        self.released += ids


def _pool(lease):
    ledger = Ledger()
    return SimpleNamespace(lease=lease, heartbeat=None, budget=ledger, state=ledger, released_early={}), ledger


def test_a_machine_whose_release_failed_everywhere_never_cancels_the_job_at_its_deadline(
        slurm_env, fleet_home, tmp_path, monkeypatch):
    provider, slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    plan = cluster_plan(provider, "slurm-1gpu", 2, heartbeat_ttl_s=20)
    lease = provider.lease(plan, new_lease_id(), 25)     # no heartbeat here: each machine ends 25 s from now
    frontends = provider._steps[lease.id]
    try:
        job_id = lease.meta["slurm_job"]
        gone, kept = lease.machines
        # The machine still running trials: its heartbeat goes on (one beat, far ahead).
        _ssh(kept, f"{kept.python} -S {kept.agent_path} extend --state-dir {kept.state_dir} --ttl 500")

        def unreachable(job):
            raise ControllerUnreachable("scontrol did not return within 60s", slurm_reason="timeout")

        provider.slurm.job_record = unreachable                   # Slurm's side fails,
        provider._steps[lease.id] = []                            # this process has no frontend for the step,
        monkeypatch.setattr("fleet.providers.slurm.shrink.end_over_ssh", lambda machine: False)   # SSH fails
        ctx, ledger = _pool(lease)
        events = Events()
        assert PoolShrink(provider, events).release(ctx, [gone.id], "no trial left for them") == []
        assert ledger.closed == {} and [m.id for m in ctx.lease.machines] == [gone.id, kept.id]   # still billed
        assert Path(gone.workdir).is_dir(), "the machine was ended after all: the test proves nothing"

        # Its deadline passes: the machine ends, and its node leaves the job; the job runs on.
        wait_for(lambda: not Path(gone.workdir).parent.exists(), 90, "the forgotten machine to reach its deadline")

        def settled():
            j = slurm.job(job_id)
            return [j] if j is None or j.state is not JobState.RUNNING or j.node_count == 1 else None

        (job,) = wait_for(settled, 60, "the expired machine's node to leave the job")
        assert job is not None and job.state is JobState.RUNNING, f"the machine's deadline ended the job: {job}"
        assert job.nodes == (kept.provider_ref["node"],), job
        time.sleep(3)                                             # nothing more happens to the job
        job = slurm.job(job_id)
        assert job is not None and job.state is JobState.RUNNING and job.node_count == 1, job
        assert _ssh(kept, "echo $FLEET_MACHINE_ID").strip() == kept.id
        assert Path(lease.meta["slurm_staging"]).is_dir(), "the expired machine removed the lease's shared staging"
        # What the sweep said: one line, naming the machine and that it stays billed.
        (line,) = events.warnings
        assert line.startswith(f"could not release idle machine(s) {gone.id} (scontrol did not return") and \
            line.endswith("billed until the sweep ends") and "\n" not in line
    finally:
        provider._steps[lease.id] = frontends
        del provider.slurm.job_record
        provider.release(lease)
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "every machine directory to be removed")


def test_every_machine_past_its_deadline_still_ends_the_whole_job(slurm_env, fleet_home, tmp_path):
    """The controller is gone (no heartbeat reaches any machine): each machine ends at its deadline,
    and the last one cancels the job rather than leave it holding GPUs until its time limit."""
    provider, slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    plan = cluster_plan(provider, "slurm-1gpu", 2, heartbeat_ttl_s=10)
    lease = provider.lease(plan, new_lease_id(), 10)
    try:
        job_id = lease.meta["slurm_job"]
        wait_for(lambda: (j := slurm.job(job_id)) is None or j.state.finished, 120, "the job to end")
        wait_for(lambda: not list(nodes_dir.iterdir()), 60, "every machine directory to be removed")
        wait_for(lambda: not Path(lease.meta["slurm_staging"]).exists(), 30, "the shared staging to be removed")
    finally:
        provider.release(lease)


# --------------------------------------------------------------- a 3-node cluster: batch host + another


@pytest.fixture(scope="module")
def three_nodes():
    yield from cluster_or_skip(nodes=3)


@pytest.fixture
def three_env(three_nodes, monkeypatch):
    monkeypatch.setenv("SLURM_CONF", str(three_nodes.conf))
    yield three_nodes
    cancel_every_job(three_nodes)


def test_a_batch_host_released_with_another_node_stops_billing_the_node_that_went_back(three_env, fleet_home,
                                                                                         tmp_path):
    provider, slurm, nodes_dir = cluster_provider(tmp_path, three_env)
    provider.slurm.allocate_now = lambda req: None                       # as if the nodes were busy: sbatch
    plan = cluster_plan(provider, "slurm-1gpu", 3)
    lease = provider.lease(plan, new_lease_id(), 120)
    try:
        job_id = lease.meta["slurm_job"]
        batch, other, running = lease.machines
        assert slurm.job_record(job_id)["BatchHost"] == batch.provider_ref["node"]
        ctx, ledger = _pool(lease)
        events = Events()
        time.sleep(3)                       # billed a few seconds at 3 GPUs, so sacct tells the sizes apart
        released = PoolShrink(provider, events).release(ctx, [batch.id, other.id], "no trial left for them")
        released_at = time.monotonic()

        # The node that went back is billed no further; the batch host, still held, is; one line says which.
        assert released == [other.id] and set(ledger.closed) == {other.id} and ledger.released == [other.id]
        assert list(ctx.released_early) == [other.id]
        assert [m.id for m in ctx.lease.machines] == [batch.id, running.id]
        (line,) = events.warnings
        assert line.startswith(f"could not release idle machine(s) {batch.id} (") and "batch step runs there" in line
        assert line.endswith("billed until the sweep ends") and "\n" not in line
        assert events.phases[-1][1].startswith(f"no trial left for them: released 1 machine(s) ({other.id})")
        # Slurm's side: the job holds the batch host and the running node, both machines ended.
        job = slurm.job(job_id)
        assert job.state is JobState.RUNNING, job
        assert set(job.nodes) == {batch.provider_ref["node"], running.provider_ref["node"]}, job
        assert not Path(batch.workdir).exists() and not Path(other.workdir).exists()
        assert _ssh(running, "echo ok").strip() == "ok"
        time.sleep(max(0.0, 4 - (time.monotonic() - released_at)))
    finally:
        provider.release(lease)
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "every machine directory to be removed")
    if not three_env.accounting:
        return
    # sacct agrees: 3 GPUs up to the release, 2 after it (the freed node's GPU only until its release).
    acct = wait_for(lambda: (a := provider.accounting(lease))["states"] == ["CANCELLED"]
                    and {r["state"] for r in a["records"]} == {"RESIZING", "CANCELLED"} and a, 60,
                    "the job's accounting records at both sizes")
    before, after = ([r for r in acct["records"] if r["state"] == s] for s in ("RESIZING", "CANCELLED"))
    assert [r["gpus"] for r in before] == [3] and [r["gpus"] for r in after] == [2], acct
    assert acct["gpu_seconds"] == 3 * before[0]["elapsed_s"] + 2 * after[0]["elapsed_s"], acct


def test_a_release_whose_scancel_fails_still_has_each_machine_end_itself_before_its_frontend_dies(
        slurm_env, fleet_home, tmp_path, monkeypatch):
    """slurmctld unreachable at release: the step frontends were SIGKILLed after 30 s, which killed
    the node steps at once: no cleanup ran, and each node directory kept the machine's host private
    key and authorized_keys for good. Each machine is now asked to end itself first (its step's stdin)."""
    from fleet.providers.slurm import provider as provider_module
    provider, slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    lease = provider.lease(cluster_plan(provider, "slurm-1gpu", 1), new_lease_id(), 120)
    machine_dir = Path(lease.machines[0].workdir).parent
    assert (machine_dir / "ssh_host_ed25519_key").is_file()

    def unreachable(*a, **kw):
        raise ControllerUnreachable("scancel did not return within 60s", slurm_reason="timeout")
    with monkeypatch.context() as mp:
        mp.setattr(provider_module, "cancel_leases_jobs", unreachable)
        with pytest.raises(ControllerUnreachable):
            provider.release(lease)
    try:
        assert not (machine_dir / "ssh_host_ed25519_key").exists() and not (machine_dir / "authorized_keys").exists()
    finally:
        provider.release(lease)           # slurmctld answers again: the retried release cancels the job
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "every machine directory to be removed")
