"""Partial release on Slurm (fleet/providers/slurm/shrink.py, accounting.py) on outputs recorded from
the real 22.05 test cluster (tests/unit/slurm_outputs/): which commands run in which order, what is
refused before anything is ended, and how sacct's records of a job that shrank add up. The real
cluster's side: tests/integration/test_slurm_partial_release.py."""
from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.models import Lease, Machine, utcnow
from fleet.providers.slurm.accounting import lease_accounting
from fleet.providers.slurm.commands import CommandResult, SlurmCommands
from fleet.providers.slurm.parsing import JobStep, parse_scontrol_job, parse_steps
from fleet.providers.slurm.shrink import NodesKept, end_steps, release_nodes
from fleet.providers.slurm.steps import NodeStep

OUT = Path(__file__).parent / "slurm_outputs"
BATCH_JOB = (OUT / "scontrol-show-job-batch.txt").read_text()     # job 5: sbatch, n[1-2], BatchHost=n1


class Cluster:
    """A scripted Slurm: scontrol show job, squeue --steps, scancel, scontrol update. A step whose
    frontend received its release request (Frontend below) ends, unless it is deaf."""

    def __init__(self, records: dict[str, str], steps: dict[str, list[str]], deaf: set[str] = frozenset()):
        self.records, self.deaf, self.calls = records, set(deaf), []
        self.steps = {job: list(lines) for job, lines in steps.items()}

    def __call__(self, argv, *, stdin=None, env=None, timeout=60) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        if argv[:3] == ["scontrol", "show", "job"]:
            record = self.records.get(argv[-1])
            if record is None:
                return CommandResult(tuple(argv), 1, "", "slurm_load_jobs error: Invalid job id specified\n")
            return CommandResult(tuple(argv), 0, record, "")
        if argv[:2] == ["squeue", "--steps"]:
            job = argv[2].split("=", 1)[1]
            return CommandResult(tuple(argv), 0, "".join(ln + "\n" for ln in self.steps.get(job, [])), "")
        if argv[0] == "scancel":
            self.end(argv[-1])
            return CommandResult(tuple(argv), 0, "", "")
        return CommandResult(tuple(argv), 0, "", "")

    def end(self, target: str) -> None:
        job, _, step = target.partition(".")
        left = [ln for ln in self.steps.get(job, []) if not ln.startswith(target + "|")]
        self.steps[job] = left if step else []                        # a step ends, or the whole job

    def release_requested(self, node: str, line: str) -> None:
        self.calls.append(["request", node, line])
        for job, lines in self.steps.items():
            for ln in lines:
                step_id, _, rest = ln.partition("|")
                if rest.endswith(f"fleet-node-{node}") and step_id not in self.deaf:
                    self.end(step_id)

    def done(self, prefix: list[str]) -> list[list[str]]:
        return [c for c in self.calls if c[:len(prefix)] == prefix]


def _lease(jobs: dict[str, str]) -> Lease:
    """Machines n0..: node → job id."""
    now = utcnow()
    machines = [Machine(id=f"L-n{i}", lease_id="L", node_rank=i, host="127.0.0.1", port=1, user="u", key_path="k",
                        host_key="h", workdir="/w", gpu_slots=(0,), provider_ref={"job_id": job, "node": node})
                for i, (node, job) in enumerate(jobs.items())]
    return Lease(id="L", provider="slurm", template="slurm-1gpu", machines=machines, created_at=now,
                 deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(hours=1))


STEPS_5 = ["5.0|n1|fleet-node-n1", "5.1|n2|fleet-node-n2", "5.batch|n1|batch"]


def test_the_recorded_outputs_parse():
    record = parse_scontrol_job(BATCH_JOB)
    assert (record["JobState"], record["NodeList"], record["BatchFlag"], record["BatchHost"]) == \
        ("RUNNING", "n[1-2]", "1", "n1")
    assert parse_steps((OUT / "squeue-steps.txt").read_text()) == [
        JobStep("5.0", "fleet-node-n1", ("n1",)), JobStep("5.1", "fleet-node-n2", ("n2",)),
        JobStep("5.batch", "batch", ("n1",))]


class Stdin:
    def __init__(self, cluster: Cluster, node: str):
        self.cluster, self.node, self.written = cluster, node, b""

    def write(self, data: bytes) -> None:
        self.written += data

    def flush(self) -> None:
        self.cluster.release_requested(self.node, self.written.decode())

    def close(self) -> None:
        pass


class Frontend:
    """A node step's srun frontend: its stdin reaches node.py; it exits with the step."""
    stdout = None

    def __init__(self, cluster: Cluster | None = None, node: str = ""):
        self.stdin = Stdin(cluster, node) if cluster is not None else None

    def poll(self):
        return None

    def wait(self, timeout=None):
        return 0


def _steps(cluster: Cluster, *nodes: str) -> list[NodeStep]:
    return [NodeStep(n, Frontend(cluster, n), {}, Path(f"s-{n}"), f"token-{n}") for n in nodes]


@pytest.fixture(autouse=True)
def _no_ssh(monkeypatch):
    """No machine answers SSH here: the release request on the step's stdin is the only way in."""
    ssh: list[str] = []
    monkeypatch.setattr("fleet.providers.slurm.shrink.end_over_ssh", lambda m: ssh.append(m.id) or False)
    return ssh


def test_a_node_step_ends_first_then_the_job_keeps_only_the_other_node():
    cluster = Cluster({"5": BATCH_JOB}, {"5": STEPS_5})
    steps = _steps(cluster, "n1", "n2")
    release_nodes(SlurmCommands(cluster), _lease({"n1": "5", "n2": "5"}), ["L-n1"], steps)
    assert [s.node for s in steps] == ["n1"]                              # the ended step is reaped and forgotten
    kinds = [c[:2] if c[0] != "request" else c for c in cluster.calls]
    # The machine alone is asked to end, with its own token, on its step's stdin: no signal is sent.
    assert ["request", "n2", "FLEET-NODE-RELEASE token-n2\n"] in kinds
    assert not [c for c in cluster.calls if any(a.startswith("--signal") for a in c)]
    request_at = kinds.index(["request", "n2", "FLEET-NODE-RELEASE token-n2\n"])
    update_at = kinds.index(["scontrol", "update"])
    assert request_at < update_at, "the job shrank before the machine's step ended"
    assert cluster.done(["scontrol", "update"]) == [["scontrol", "update", "JobId=5", "NodeList=n1"]]
    assert not cluster.done(["scancel", "--quiet", "5"])                  # the job itself goes on


def test_the_batch_host_of_an_sbatch_job_stays_in_the_job_but_its_machine_ends():
    # Slurm refuses to take it out (scontrol-shrink-batch-host.stderr), so fleet does not ask; the
    # machine still ends: the heartbeat no longer extends it, and at its deadline its node step would
    # otherwise cancel the whole job, the node still running trials with it.
    assert "Invalid node name" in (OUT / "scontrol-shrink-batch-host.stderr").read_text()
    cluster = Cluster({"5": BATCH_JOB}, {"5": STEPS_5})
    with pytest.raises(NodesKept) as err:
        release_nodes(SlurmCommands(cluster), _lease({"n1": "5", "n2": "5"}), ["L-n0"], _steps(cluster, "n1", "n2"))
    line = err.value.one_line()
    assert "batch step runs there" in line and "node n1" in line and "stay held" in line and "\n" not in line
    assert err.value.released == []
    assert ["request", "n1", "FLEET-NODE-RELEASE token-n1\n"] in cluster.calls
    assert not cluster.done(["scontrol", "update"]) and not cluster.done(["scancel", "--quiet", "5"])


def test_the_batch_host_released_with_another_node_names_the_one_that_went_back():
    # Job of n[1-3], batch step on n1: releasing n1 and n2 gives n2 back (no longer billed) and keeps n1.
    three = BATCH_JOB.replace("NodeList=n[1-2]", "NodeList=n[1-3]")
    steps_5 = STEPS_5 + ["5.2|n3|fleet-node-n3"]
    cluster = Cluster({"5": three}, {"5": steps_5})
    with pytest.raises(NodesKept) as err:
        release_nodes(SlurmCommands(cluster), _lease({"n1": "5", "n2": "5", "n3": "5"}), ["L-n0", "L-n1"],
                      _steps(cluster, "n1", "n2", "n3"))
    assert err.value.released == ["L-n1"]
    assert cluster.done(["scontrol", "update"]) == [["scontrol", "update", "JobId=5", "NodeList=n3,n1"]]


def test_a_lease_of_one_job_per_node_cancels_that_nodes_job():
    one = BATCH_JOB.replace("JobId=5", "JobId=7").replace("NodeList=n[1-2]", "NodeList=n1")
    two = BATCH_JOB.replace("JobId=5", "JobId=8").replace("NodeList=n[1-2]", "NodeList=n2").replace(
        "BatchHost=n1", "BatchHost=n2")
    cluster = Cluster({"7": one, "8": two}, {"7": ["7.0|n1|fleet-node-n1"], "8": ["8.0|n2|fleet-node-n2"]})
    release_nodes(SlurmCommands(cluster), _lease({"n1": "7", "n2": "8"}), ["L-n1"], _steps(cluster, "n1", "n2"))
    assert ["request", "n2", "FLEET-NODE-RELEASE token-n2\n"] in cluster.calls
    assert cluster.done(["scancel", "--quiet", "8"]) and not cluster.done(["scontrol", "update"])
    assert not [c for c in cluster.calls if "7" in c[-1]]                 # the other node's job untouched


def test_released_already_or_a_job_gone_is_nothing_to_do():
    shrunk = BATCH_JOB.replace("NodeList=n[1-2]", "NodeList=n1")
    cluster = Cluster({"5": shrunk}, {"5": STEPS_5[::2]})
    release_nodes(SlurmCommands(cluster), _lease({"n1": "5", "n2": "5"}), ["L-n1"], [])
    gone = Cluster({}, {})
    release_nodes(SlurmCommands(gone), _lease({"n1": "5", "n2": "5"}), ["L-n1"], [])
    for c in (cluster, gone):
        assert not c.done(["scancel"]) and not c.done(["scontrol", "update"]) and not c.done(["request"])


def test_a_step_that_outlives_its_release_request_is_cancelled(_no_ssh):
    cluster = Cluster({"5": BATCH_JOB}, {"5": STEPS_5}, deaf={"5.1"})
    lease = _lease({"n1": "5", "n2": "5"})
    end_steps(SlurmCommands(cluster), "5", [lease.machines[1]], _steps(cluster, "n2"), timeout_s=0.3)
    assert ["request", "n2", "FLEET-NODE-RELEASE token-n2\n"] in cluster.calls and not _no_ssh
    assert ["scancel", "--quiet", "5.1"] in cluster.calls


def test_without_a_frontend_here_the_machine_is_asked_over_its_ssh(_no_ssh):
    cluster = Cluster({"5": BATCH_JOB}, {"5": STEPS_5}, deaf={"5.1"})
    lease = _lease({"n1": "5", "n2": "5"})
    end_steps(SlurmCommands(cluster), "5", [lease.machines[1]], [], timeout_s=0.3)
    assert _no_ssh == ["L-n1"] and ["scancel", "--quiet", "5.1"] in cluster.calls


def test_sacct_records_of_a_job_that_shrank_count_each_size_for_its_own_stretch():
    class Recorded:
        def __call__(self, argv, *, stdin=None, env=None, timeout=60):
            return CommandResult(tuple(argv), 0, (OUT / "sacct-resized.txt").read_text(), "")

    # Job 2: 8 s on 2 nodes × 1 GPU, shrunk to n2, then 8 s more on 1 GPU.
    acct = lease_accounting(SlurmCommands(Recorded()), ["2"], Decimal("3.6"))
    assert acct["gpu_seconds"] == 2 * 8 + 1 * 8 and acct["elapsed_s"] == 16
    assert acct["jobs"] == ["2"] and acct["states"] == ["CANCELLED"]
    assert acct["cost_usd"] == Decimal("0.024")
    assert [(r["state"], r["gpus"], r["nodes"]) for r in acct["records"]] == [
        ("RESIZING", 2, ["n1", "n2"]), ("CANCELLED", 1, ["n2"])]
