"""Two partial releases of one Slurm lease at once (a sweep's early release of an idle machine on
its own thread while the pool's final release ends the rest beside it, fleet/sweep/pool.py): each
reads the job's nodes, and without one release at a time per lease the second shrinks the job to
nodes read before the first shrink, which Slurm refuses (a job can only shrink), leaving a node
whose machine was ended in the job, billed until the lease ends."""
from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest

from fleet.models import Lease, Machine, utcnow
from fleet.providers.slurm.commands import CommandResult, SlurmCommands
from fleet.providers.slurm.errors import SlurmError
from fleet.providers.slurm.parsing import expand_hostlist
from fleet.providers.slurm.shrink import release_nodes
from fleet.providers.slurm.steps import NodeStep

OUT = Path(__file__).parent / "slurm_outputs"
JOB = ((OUT / "scontrol-show-job-batch.txt").read_text().replace("JobId=5", "JobId=9")
       .replace("BatchFlag=1", "BatchFlag=0"))          # an salloc job: every node may leave it


class Cluster:
    """scontrol show job (the job's current nodes), squeue --steps, scancel, and scontrol update
    NodeList, which refuses a node the job does not hold, as Slurm does."""

    def __init__(self, nodes: list[str]):
        self.nodes = list(nodes)
        self.steps = [f"9.{i}|{n}|fleet-node-{n}" for i, n in enumerate(nodes)]
        self.lock = threading.Lock()
        self.both_read = threading.Barrier(2)
        self.refused: list[str] = []

    def __call__(self, argv, *, stdin=None, env=None, timeout=60) -> CommandResult:
        argv = list(argv)
        if argv[:3] == ["scontrol", "show", "job"]:
            with self.lock:
                record = JOB.replace("NodeList=n[1-2]", "NodeList=" + ",".join(self.nodes))
            try:
                self.both_read.wait(timeout=1.0)      # two releases at once read the same nodes
            except threading.BrokenBarrierError:
                pass                                  # one at a time: the other is not there to meet
            return CommandResult(tuple(argv), 0, record, "")
        with self.lock:
            if argv[:2] == ["squeue", "--steps"]:
                return CommandResult(tuple(argv), 0, "".join(s + "\n" for s in self.steps), "")
            if argv[0] == "scancel":
                self.steps = [s for s in self.steps if not s.startswith(argv[-1] + "|")]
                return CommandResult(tuple(argv), 0, "", "")
            if argv[:2] == ["scontrol", "update"]:
                wanted = list(expand_hostlist(argv[-1].split("=", 1)[1]))
                if not set(wanted) <= set(self.nodes):
                    self.refused.append(argv[-1])
                    return CommandResult(tuple(argv), 1, "", "scontrol: error: Invalid node name specified\n")
                self.nodes = wanted
        return CommandResult(tuple(argv), 0, "", "")


class Frontend:
    """A node step's srun frontend: the release request on its stdin ends the step (node.py's answer)."""
    stdout = None

    def __init__(self, cluster: Cluster, node: str):
        self.cluster, self.node, self.stdin = cluster, node, self

    def write(self, data: bytes) -> None:
        pass

    def flush(self) -> None:
        with self.cluster.lock:
            self.cluster.steps = [s for s in self.cluster.steps if not s.endswith(f"|fleet-node-{self.node}")]

    def close(self) -> None:
        pass

    def poll(self):
        return None

    def wait(self, timeout=None):
        return 0


def test_two_releases_at_once_leave_the_job_with_only_the_nodes_still_in_use():
    now = utcnow()
    nodes = ["n1", "n2", "n3"]
    machines = [Machine(id=f"L-n{i}", lease_id="L", node_rank=i, host="127.0.0.1", port=1, user="u", key_path="k",
                        host_key="h", workdir="/w", gpu_slots=(0,), provider_ref={"job_id": "9", "node": n})
                for i, n in enumerate(nodes)]
    lease = Lease(id="L", provider="slurm", template="slurm-1gpu", machines=machines, created_at=now,
                  deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))
    cluster = Cluster(nodes)
    slurm = SlurmCommands(cluster)
    errors: list[BaseException] = []
    steps = [NodeStep(n, Frontend(cluster, n), {}, Path(f"s-{n}"), f"token-{n}") for n in nodes]

    def release(machine_id: str) -> None:
        try:
            release_nodes(slurm, lease, [machine_id], steps)
        except BaseException as exc:  # noqa: BLE001 — asserted below
            errors.append(exc)

    threads = [threading.Thread(target=release, args=(m,)) for m in ("L-n1", "L-n2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert cluster.refused == []
    assert cluster.nodes == ["n1"]


def test_a_suspended_job_is_not_reported_as_released():
    # A job suspended (gang scheduling, PreemptMode=SUSPEND, scontrol suspend) cannot give a node
    # back, and its machine's step, stopped, cannot end now: saying "released" closed the machine's
    # bill while the job still held its GPUs.
    now = utcnow()
    machines = [Machine(id=f"L-n{i}", lease_id="L", node_rank=i, host="127.0.0.1", port=1, user="u", key_path="k",
                        host_key="h", workdir="/w", gpu_slots=(0,), provider_ref={"job_id": "9", "node": n})
                for i, n in enumerate(["n1", "n2"])]
    lease = Lease(id="L", provider="slurm", template="slurm-1gpu", machines=machines, created_at=now,
                  deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))
    cluster = Cluster(["n1", "n2"])
    suspended = JOB.replace("JobState=RUNNING", "JobState=SUSPENDED")
    assert suspended != JOB

    def runner(argv, *, stdin=None, env=None, timeout=60):
        if list(argv[:3]) == ["scontrol", "show", "job"]:
            return CommandResult(tuple(argv), 0, suspended, "")
        return cluster(argv, stdin=stdin, env=env, timeout=timeout)

    with pytest.raises(SlurmError) as err:
        release_nodes(SlurmCommands(runner), lease, ["L-n1"], [])
    assert "SUSPENDED" in err.value.one_line() and "\n" not in err.value.one_line()
    assert cluster.nodes == ["n1", "n2"]
