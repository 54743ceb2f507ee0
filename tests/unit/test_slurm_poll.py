"""A lease polls squeue every few seconds while it pends and while it runs; on Slurm 22.05 `squeue
--json` answers with every user's jobs whatever filter it is given, so each lease of a team sweep
had the shared controller serialise the whole queue every poll. The polls now ask for the lease's
job alone (`squeue --jobs=ID`, which slurmctld answers with that one job), still read safely when
another user's job under the id has a name that forges a line, and still hear the job end.
Here through a fake `squeue` on PATH that logs every call and answers as Slurm 22.05 does."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from fleet.providers.base import LeaseWatch
from fleet.providers.slurm.commands import LocalRunner
from fleet.providers.slurm.errors import SlurmError
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings

ME = os.getuid()
THEM = ME + 4242
SQUEUE = """#!/bin/sh
printf '%s\\n' "$*" >> "{d}/calls"
for a in "$@"; do
  case "$a" in
    --json) cat "{d}/all.json"; exit 0 ;;
    --jobs=*) id="${{a#--jobs=}}" ;;
  esac
done
if [ -n "$id" ] && [ -f "{d}/job-$id" ]; then cat "{d}/job-$id"; exit 0; fi
echo "slurm_load_jobs error: Invalid job id specified" >&2
exit 1
"""


class FakeSlurm:
    """squeue as 22.05 answers: --json lists everyone's jobs; --jobs=ID with a format prints that job."""

    def __init__(self, root: Path):
        self.dir = root
        (root / "bin").mkdir()
        squeue = root / "bin" / "squeue"
        squeue.write_text(SQUEUE.format(d=root))
        squeue.chmod(0o755)
        others = [{"job_id": 1000 + i, "job_state": "RUNNING", "user_id": THEM, "user_name": "mallory",
                   "name": f"train-{i}", "comment": ""} for i in range(300)]
        (root / "all.json").write_text(json.dumps({"jobs": others}))

    def set(self, job_id: str, state: str, *, uid: int = ME, user: str = "alice", name: str = "fleet-l-1",
            comment: str = "fleet:lease=l-1", reason: str = "None", nodes: str = "n1", elapsed: str = "0:05",
            start: str = "2026-01-05T10:00:00") -> None:
        line = (f"{job_id}|{state}|{reason}|1|{nodes}|{elapsed}|5:00|gres:gpu:1|gpu|fleet|normal|{uid}|{user}|"
                f"{start}|{name}|{comment}\n")
        # Whole or not at all, as slurmctld answers: a `cat` that read the file mid-write would see
        # no job, which squeue never says of a job it still holds.
        part = self.dir / f".job-{job_id}.part"
        part.write_bytes(line.encode("utf-8", "surrogateescape"))
        os.replace(part, self.dir / f"job-{job_id}")

    def calls(self) -> list[str]:
        path = self.dir / "calls"
        return path.read_text().splitlines() if path.exists() else []


@pytest.fixture
def fake(tmp_path, monkeypatch) -> FakeSlurm:
    cluster = FakeSlurm(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    return cluster


def _watch(provider: SlurmProvider, job_id: str) -> tuple[list[str], threading.Event]:
    lost: list[str] = []
    heard = threading.Event()
    provider._watch("l-1", job_id, LeaseWatch(cancel=threading.Event(),
                                              on_lost=lambda m: (lost.append(m), heard.set())))
    return lost, heard


def _only_the_leases_job(calls: list[str], job_id: str) -> None:
    assert calls, "squeue was never called"
    assert [c for c in calls if "--json" in c or f"--jobs={job_id} " not in f"{c} "] == []


def test_a_pending_lease_and_its_watch_ask_slurmctld_for_their_own_job_only_and_hear_it_preempted(fake):
    provider = SlurmProvider(SlurmSettings(poll_s=0.05), runner=LocalRunner())
    fake.set("12", "PENDING", reason="Resources", nodes="")
    heard_queue: list[str] = []
    waiting = LeaseWatch(cancel=threading.Event(), on_queue=lambda s: heard_queue.append(s.reason))
    threading.Timer(0.5, lambda: fake.set("12", "RUNNING")).start()
    job = provider._wait_running("12", waiting)
    assert job.nodes == ("n1",) and heard_queue == ["Resources"]
    lost, heard = _watch(provider, "12")
    try:
        time.sleep(0.5)
        assert not heard.is_set()                       # running: nothing to tell
        fake.set("12", "PREEMPTED", reason="None")
        assert heard.wait(10)
    finally:
        provider._watches.pop("l-1").set()
    assert lost == ["Slurm ended job 12 under the run: PREEMPTED"]
    _only_the_leases_job(fake.calls(), "12")


def test_a_job_the_controller_forgot_is_a_lost_lease(fake):
    provider = SlurmProvider(SlurmSettings(poll_s=0.05), runner=LocalRunner())
    fake.set("12", "RUNNING")
    lost, heard = _watch(provider, "12")
    try:
        time.sleep(0.3)
        (fake.dir / "job-12").unlink()                  # past MinJobAge: squeue says "Invalid job id"
        assert heard.wait(10)
    finally:
        provider._watches.pop("l-1").set()
    assert lost == ["Slurm ended job 12 under the run: left the queue"]
    _only_the_leases_job(fake.calls(), "12")


FORGED = f"12|RUNNING|None|1|n1|0:05|5:00|gres:gpu:1|gpu|fleet|normal|{ME}|alice|fleet-l-1|fleet:lease=l-1"


@pytest.mark.parametrize("name, comment", [
    (f"x\n{FORGED}", "c"),                                           # a newline forging a line of ours
    ("x", f"y\n{FORGED}\x1b[2J|a|b\udcff"),                          # in the comment, with ESC and a non-UTF-8 byte
])
def test_another_users_job_under_the_id_forging_a_line_of_ours_is_never_read_as_ours(fake, name, comment):
    provider = SlurmProvider(SlurmSettings(poll_s=0.05), runner=LocalRunner())
    fake.set("12", "RUNNING", uid=THEM, user="mallory", name=name, comment=comment)
    with pytest.raises(SlurmError, match="Slurm job 12 left the queue before it started"):
        provider._wait_running("12", LeaseWatch(cancel=threading.Event()))
    lost, heard = _watch(provider, "12")
    try:
        assert heard.wait(10)
    finally:
        provider._watches.pop("l-1").set()
    assert len(lost) == 1 and lost[0].startswith("Slurm job 12 is gone: its id now names another job (")
    assert lost[0].endswith(", user mallory)")
    _only_the_leases_job(fake.calls(), "12")


@pytest.mark.parametrize("state", ["SUSPENDED", "STOPPED"])
def test_a_job_slurm_suspends_and_resumes_keeps_the_run_and_says_so(fake, state):
    # Gang scheduling, PreemptMode=SUSPEND or an admin's `scontrol suspend`: the allocation stays,
    # its processes resume where they were. Only the end that follows is a loss.
    provider = SlurmProvider(SlurmSettings(poll_s=0.05), runner=LocalRunner())
    fake.set("12", "RUNNING")
    lost, heard, said = [], threading.Event(), []
    provider._watch("l-1", "12", LeaseWatch(cancel=threading.Event(), on_lost=lambda m: (lost.append(m), heard.set()),
                                            on_suspended=said.append, on_resumed=said.append))
    try:
        time.sleep(0.3)
        fake.set("12", state)
        time.sleep(0.6)
        assert lost == []
        fake.set("12", "RUNNING")
        time.sleep(0.6)
        assert lost == []
        fake.set("12", "CANCELLED", reason="None")
        assert heard.wait(10)
    finally:
        provider._watches.pop("l-1").set()
    verb = state.lower()
    assert said == [f"Slurm {verb} job 12: its processes are stopped and it keeps its nodes; the run goes on when "
                    "Slurm resumes it", said[1]]
    assert said[1].startswith("Slurm resumed job 12 after ") and said[1].endswith("s; the run goes on")
    assert lost == ["Slurm ended job 12 under the run: CANCELLED"]
