"""Slurm never proved a job fleet's own (a red-team finding): `squeue --json` lists every user's
jobs and nothing kept only the login user's, so another user's job named `fleet-<lease>` with
`--comment=fleet:lease=<lease>` (both public while a job pends) stood for a lease whose id went
unrecorded: `fleet down` scancel'ed it (refused, so every retry failed; an operator's fleet killed
it), the leftover sweep likewise, and so did salloc's withdrawal by tag. A recorded id that now
names another job (a controller that lost its state, ids wrapped) was cancelled, shrunk, read as
the lease's running job and billed. Here on the jobs of `squeue --json` recorded from the real 22.05
test cluster (tests/unit/slurm_outputs/squeue.json), given owners, and printed as squeue's
--format prints them."""
from __future__ import annotations

import copy
import json
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from fleet.models import Lease, Machine, utcnow
from fleet.providers.base import LeaseWatch
from fleet.providers.slurm.commands import AllocationRequest, CommandResult, SlurmCommands
from fleet.providers.slurm.errors import SlurmError
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings

OUT = Path(__file__).parent / "slurm_outputs"
ME, THEM = "alice", "mallory"
MY_UID = 1000
RECORDED = json.loads((OUT / "squeue.json").read_text())
SACCT = "|".join(["12", "CANCELLED by 0", "None", "0:0", "{elapsed}", "cpu=2,gres/gpu=4,node=2", "n[1-2]",
                  "00:05:00", "2026-12-02T10:00:00", "2026-12-02T10:01:00", "gpu", "fleet", "normal", "{name}",
                  "{comment}"])


def _queue(*extra: tuple[int, str, str, str], drop: int | None = None) -> str:
    """The recorded jobs, all ME's (12 RUNNING fleet-run, 13 PENDING fleet-pend), less job `drop`,
    plus copies of the running job 12 as (id, owner, name, comment)."""
    data = copy.deepcopy(RECORDED)
    for job in data["jobs"]:
        job["user_name"], job["user_id"] = ME, MY_UID
    running = next(j for j in data["jobs"] if j["job_id"] == 12)
    data["jobs"] = [j for j in data["jobs"] if j["job_id"] != drop]
    for job_id, user, name, comment in extra:
        data["jobs"].append({**copy.deepcopy(running), "job_id": job_id, "user_name": user,
                             "user_id": MY_UID if user == ME else 4242,
                             "name": name, "comment": comment})
    return json.dumps(data)


class Cluster:
    """squeue (--json, the login's own jobs with --me, or one job by id), id, scancel, scontrol and
    sacct as Slurm answers them; records every call."""

    def __init__(self, queue: str, sacct: str = "", record: str = "", login_name: str = ME,
                 squeue_fails: bool = False):
        self.queue, self.sacct, self.record, self.calls = queue, sacct, record, []
        self.login_name, self.squeue_fails = login_name, squeue_fails

    def __call__(self, argv, *, stdin=None, env=None, timeout=60) -> CommandResult:
        argv = list(argv)
        self.calls.append(argv)
        out = {"squeue": self.queue, "sacct": self.sacct}.get(argv[0], "")
        if argv[:2] == ["id", "-u"]:
            out = f"{MY_UID}\n"
        elif argv[:2] == ["id", "-un"]:
            out = self.login_name + "\n"
        elif argv[0] == "squeue" and self.squeue_fails:
            return CommandResult(tuple(argv), 1, "", "slurm_load_jobs error: Socket timed out on send/recv operation")
        if argv[:3] == ["scontrol", "show", "job"]:
            out = self.record
        elif argv[0] == "squeue" and any(a.startswith("--format=") and "%U" in a for a in argv):
            return _one_job(self.queue, next(a.removeprefix("--jobs=") for a in argv if a.startswith("--jobs=")))
        elif argv[:2] == ["squeue", "--steps"]:
            out = ""
        elif argv[0] == "squeue" and "--me" in argv:
            out = "".join(_line(j) + "\n" for j in json.loads(self.queue)["jobs"] if j["user_id"] == MY_UID)
        return CommandResult(tuple(argv), 0, out, "")

    def signalled(self) -> list[list[str]]:
        return [c for c in self.calls if c[0] == "scancel" or c[:2] == ["scontrol", "update"]]


def _line(job: dict, owner: bool = False) -> str:
    """A job of `queue` (--json's) as `squeue --format` prints it: SQUEUE_FORMAT, or JOB_FORMAT (`owner`)."""
    fields = [job["job_id"], job["job_state"], job["state_reason"], job["node_count"], job["nodes"], "0:03",
              job["time_limit"] or "UNLIMITED", job["tres_per_node"], job["partition"], job["account"], job["qos"],
              *([job["user_id"], job["user_name"], "2026-01-05T10:00:00"] if owner else []), job["name"], job["comment"]]
    return "|".join(map(str, fields))


def _one_job(queue: str, job_id: str) -> CommandResult:
    """`squeue --jobs=ID --format=JOB_FORMAT` as Slurm prints it for that job in `queue` (--json's)."""
    argv = ("squeue", f"--jobs={job_id}")
    job = next((j for j in json.loads(queue)["jobs"] if str(j["job_id"]) == job_id), None)
    if job is None:
        return CommandResult(argv, 1, "", "slurm_load_jobs error: Invalid job id specified\n")
    return CommandResult(argv, 0, _line(job, owner=True) + "\n", "")


def _lease(lease_id: str, job_id: str | None, nodes=("n1",)) -> Lease:
    now = utcnow()
    machines = [Machine(id=f"{lease_id}-n{i}", lease_id=lease_id, node_rank=i, host=n, port=22, user="u",
                        key_path="k", host_key="h", workdir="/tmp/w", provider_ref={"job_id": job_id, "node": n})
                for i, n in enumerate(nodes)] if job_id else []
    return Lease(id=lease_id, provider="slurm", template="slurm-1gpu", machines=machines, created_at=now,
                 deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(minutes=10), meta={})


def test_another_users_job_wearing_the_leases_name_and_tag_is_never_listed_or_cancelled(fleet_home, capsys):
    from fleet.state import open_state
    cluster = Cluster(_queue((77, THEM, "fleet-l-lost", "fleet:lease=l-lost")))
    provider = SlurmProvider(SlurmSettings(), runner=cluster)
    assert "77" not in [j.job_id for j in provider.slurm.queue()]
    tagged = [j.job_id for j in provider.slurm.tagged("fleet:lease=")]
    assert "77" not in tagged and {"12", "13"} <= set(tagged)
    # The controller died between sbatch and the record: the lease knows no job id, only its tag.
    lease = _lease("l-lost", None)
    assert provider._lease_jobs(provider.slurm, lease) == []
    assert provider.describe(lease) == []
    provider.release(lease)                        # `fleet down`: nothing to cancel, and no failure
    assert cluster.signalled() == []
    open_state().save_lease(lease)                 # `fleet down --all`: the leftover sweep
    assert provider.sweep(set()) == [] and cluster.signalled() == []
    # salloc granted but printed no id: withdrawn by its tag, never another user's job with that tag.
    cluster.calls.clear()
    req = AllocationRequest(name="fleet-l-lost", nodes=1, gpus_per_node=1, time_limit_s=60,
                            comment="fleet:lease=l-lost")
    assert provider.slurm.allocate_now(req) is None and cluster.signalled() == []
    assert [c for c in cluster.calls if c[0] == "squeue" and "--me" in c]   # the scan for its tag: alice's jobs
    assert not [c for c in cluster.calls if "--json" in c]


def test_a_recorded_id_that_now_names_another_job_of_the_user_is_left_alone(fleet_home, capsys):
    # The lease recorded job 12; the controller lost its state, and job 12 is now the user's unrelated one.
    cluster = Cluster(_queue((12, ME, "unrelated", ""), drop=12))
    cluster.sacct = "\n".join([SACCT.format(elapsed=60, name="fleet-l-1", comment="fleet:lease=l-1"),
                               SACCT.format(elapsed=999, name="unrelated", comment="")]) + "\n"
    cluster.record = (OUT / "scontrol-show-job-batch.txt").read_text().replace("JobId=5", "JobId=12")
    provider = SlurmProvider(SlurmSettings(), runner=cluster)
    lease = _lease("l-1", "12", nodes=("n1", "n2"))
    provider.release(lease)
    assert cluster.signalled() == []
    assert "Slurm job 12 is no longer lease l-1's" in capsys.readouterr().err
    with pytest.raises(SlurmError, match="not running; nothing to extend"):
        provider.extend_limit(lease, utcnow() + timedelta(minutes=8))
    provider.release_machines(lease, ["l-1-n1"])        # a sweep's pool giving a node back
    assert cluster.signalled() == []
    assert [c for c in cluster.calls if c[0] == "sacct"] == []
    acct = provider.accounting(lease)                   # only the lease's record is billed
    assert acct["gpu_seconds"] == 60 * 4 and acct["jobs"] == ["12"]
    assert "--user=alice" in [c for c in cluster.calls if c[0] == "sacct"][-1]
    lost: list[str] = []
    heard = threading.Event()
    provider.config = SlurmSettings(poll_s=0.05)        # the lease's watch: not a running lease of its own
    provider._watch("l-1", "12", LeaseWatch(cancel=threading.Event(), on_lost=lambda m: (lost.append(m), heard.set())))
    assert heard.wait(10)
    provider._watches.pop("l-1").set()
    assert "Slurm job 12 is gone: its id now names another job ('unrelated', user alice)" in lost[0]


def test_a_recorded_id_that_is_another_users_job_is_never_signalled(fleet_home, capsys):
    # Their unrelated job under the id: the lease's job is gone; reported, and release succeeds.
    cluster = Cluster(_queue((40, THEM, "their-job", "")))
    SlurmProvider(SlurmSettings(), runner=cluster).release(_lease("l-2", "40"))
    assert cluster.signalled() == []
    assert "Slurm job 40 is now user mallory's job 'their-job', not lease l-2's" in capsys.readouterr().err
    # Another user's job under the lease's own name: fleet may not end it, and says whose it is.
    cluster = Cluster(_queue((41, THEM, "fleet-l-3", "fleet:lease=l-3")))
    with pytest.raises(SlurmError) as err:
        SlurmProvider(SlurmSettings(), runner=cluster).release(_lease("l-3", "41"))
    assert "Slurm job 41 of lease l-3 is user mallory's, not alice's" in err.value.one_line()
    assert cluster.signalled() == []


def test_the_lease_own_job_is_still_cancelled(fleet_home):
    cluster = Cluster(_queue((77, THEM, "fleet-run", "fleet:lease=L-run")))
    SlurmProvider(SlurmSettings(), runner=cluster).release(_lease("L-run", "12"))
    assert cluster.signalled() == [["scancel", "--quiet", "12"]]
    cluster.calls.clear()
    SlurmProvider(SlurmSettings(), runner=cluster).release(_lease("L-run", None))   # by its tag: ours only
    assert cluster.signalled() == [["scancel", "--quiet", "12"]]


def test_a_login_whose_name_reads_otherwise_still_owns_its_jobs_by_uid(fleet_home):
    """sssd names the login `alice@corp` where slurmctld says `alice`: the same uid, so the same user."""
    from fleet.providers.slurm.ownership import lease_jobs
    slurm = SlurmCommands(Cluster(_queue(), login_name="alice@corp"))
    assert [j.job_id for j in lease_jobs(slurm, "l-x", ["12"])] in ([], ["12"])   # by name or tag only
    jobs = slurm.queue(["12", "13"])
    assert [j.job_id for j in jobs] == ["12", "13"], "the login's own jobs were taken for another user's"
    assert all(j.user_id == MY_UID for j in jobs)


def test_a_release_whose_listing_fails_lets_slurmctld_filter_the_cancel(fleet_home):
    cluster = Cluster(_queue(), squeue_fails=True)
    provider = SlurmProvider(SlurmSettings(), runner=cluster)
    provider.release(_lease("l-flaky", "12"))
    cancels = [c for c in cluster.calls if c[0] == "scancel"]
    assert cancels and all(f"--user={ME}" in c and "--name=fleet-l-flaky" in c for c in cancels), cancels
