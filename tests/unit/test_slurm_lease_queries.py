"""describe, release, extend and the loss check read a lease's jobs as its polls do: `squeue
--jobs=ID` per recorded job, never `squeue --json` (on Slurm 22.05 every user's jobs whatever the
filter: the whole queue serialised on a controller the team shares, and other users' hostile names
parsed); a newline in another user's job name under the lease's id forges no job of the lease's.
And a squeue that keeps failing ends in one line naming its error, where once is tolerated.
Here through a fake Slurm on PATH (test_slurm_poll's, answering as 22.05 does) that logs every call."""
from __future__ import annotations

import os
import threading
import time
from dataclasses import replace
from datetime import timedelta

import pytest

from fleet.models import utcnow
from fleet.providers.base import LeaseWatch
from fleet.providers.slurm.commands import LocalRunner
from fleet.providers.slurm.errors import SlurmError
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings
from tests.unit.test_slurm_job_owner import _lease
from tests.unit.test_slurm_poll import FORGED, THEM, FakeSlurm, _only_the_leases_job
from tests.unit.test_slurm_poll import SQUEUE as POLL_SQUEUE

# squeue as test_slurm_poll's fake answers it, but failing while `broken` holds an error (removed
# after one answer when `once` is there too) and printing `garbage` instead of the job when that is there.
SQUEUE = POLL_SQUEUE.replace('>> "{d}/calls"\n', '>> "{d}/calls"\n'
    'if [ -f "{d}/broken" ]; then cat "{d}/broken" >&2; [ -f "{d}/once" ] && rm -f "{d}/broken" "{d}/once"; exit 1; fi\n'
    'if [ -f "{d}/garbage" ]; then cat "{d}/garbage"; exit 0; fi\n', 1)
LOGGED = '#!/bin/sh\nprintf \'%s %s\\n\' "$(basename "$0")" "$*" >> "{d}/tools"\n'
TIMEOUT = "slurm_load_jobs error: Socket timed out on send/recv operation\n"


@pytest.fixture
def fake(tmp_path, monkeypatch, fleet_home) -> FakeSlurm:
    cluster = FakeSlurm(tmp_path)
    (tmp_path / "bin" / "squeue").write_text(SQUEUE.format(d=tmp_path))
    for tool in ("scancel", "scontrol", "sacct"):
        (tmp_path / "bin" / tool).write_text(LOGGED.format(d=tmp_path))
        (tmp_path / "bin" / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    return cluster


def _tools(fake: FakeSlurm) -> list[str]:
    path = fake.dir / "tools"
    return path.read_text().splitlines() if path.exists() else []


def _provider() -> SlurmProvider:
    return SlurmProvider(SlurmSettings(poll_s=0.05), runner=LocalRunner())


def test_describe_asks_for_the_leases_job_alone(fake):
    fake.set("12", "RUNNING")
    states = _provider().describe(_lease("l-1", "12"))
    assert [(s.state, s.detail) for s in states] == [("running", "job 12 on n1")]
    _only_the_leases_job(fake.calls(), "12")


def test_release_asks_for_the_leases_job_alone_and_cancels_it(fake):
    fake.set("12", "RUNNING")
    _provider().release(_lease("l-1", "12"))
    assert _tools(fake) == ["scancel --quiet 12"]
    _only_the_leases_job(fake.calls(), "12")


def test_extend_asks_for_the_leases_job_alone_and_raises_its_limit(fake):
    fake.set("12", "RUNNING")
    _provider().extend_limit(_lease("l-1", "12"), utcnow() + timedelta(minutes=8))
    assert _tools(fake) == ["scontrol update JobId=12 TimeLimit=9"]
    _only_the_leases_job(fake.calls(), "12")


@pytest.mark.parametrize("state", ["SUSPENDED", "STOPPED"])
def test_extend_raises_the_limit_of_a_job_slurm_suspended(fake, state):
    # A suspended job keeps its nodes and resumes: `fleet extend` said "is not running; nothing to
    # extend". Its limit is raised; its machines (stopped with it) are not tried, and the user hears why.
    fake.set("12", state)
    with pytest.raises(SlurmError) as err:
        _provider().extend_limit(_lease("l-1", "12"), utcnow() + timedelta(minutes=8))
    assert _tools(fake) == ["scontrol update JobId=12 TimeLimit=9"]
    verb = state.lower()
    line = err.value.one_line()
    assert line.startswith(f"Slurm job 12 is {verb}: its time limit lets it run until ")
    assert (f" UTC if resumed now (Slurm does not count the time it is {verb}), but its machines are stopped "
            "with it, so their own deadlines did not move") in line
    assert "run `fleet extend` again once Slurm resumes job 12" in line and "\n" not in line


def test_describe_dates_a_job_that_was_suspended_from_its_start_and_its_end_from_its_run_time(fake):
    # Started 10 minutes ago, suspended for 9 of them: squeue's elapsed time (1:00) is run time, which
    # Slurm's 5:00 limit counts. The start fleet bills an unrecorded machine from was read as now
    # minus run time, 9 minutes late; the end stays 4 minutes off, where Slurm puts it.
    start = (utcnow() - timedelta(minutes=10)).replace(microsecond=0)
    fake.set("12", "RUNNING", elapsed="1:00", start=start.strftime("%Y-%m-%dT%H:%M:%S"))
    lease = replace(_lease("l-1", "12"), machines=[], meta={"slurm_job": "12"})  # killed inside lease()
    [state] = _provider().describe(lease)
    assert (state.machine_id, state.state, state.unrecorded) == ("l-1-n0", "running", True)
    assert state.started_at == start
    assert abs(state.deadline_at - (utcnow() + timedelta(minutes=4))) < timedelta(seconds=10)


def test_the_loss_check_asks_for_the_leases_job_alone_and_names_why(fake):
    fake.set("12", "PREEMPTED")
    assert _provider().loss_reason(_lease("l-1", "12")) == "Slurm ended job 12 under the run: PREEMPTED"
    _only_the_leases_job(fake.calls(), "12")


@pytest.mark.parametrize("name, comment", [
    (f"x\n{FORGED}", "c"),                                           # a newline forging a line of ours
    ("x", f"y\n{FORGED}\x1b[2J|a|b\udcff"),                          # in the comment, with ESC and a non-UTF-8 byte
])
def test_another_users_job_under_the_id_forging_a_line_of_ours_is_never_the_leases(fake, capsys, name, comment):
    fake.set("12", "RUNNING", uid=THEM, user="mallory", name=name, comment=comment)
    provider, lease = _provider(), _lease("l-1", "12")
    assert [(s.state, s.detail) for s in provider.describe(lease)] == [("gone", "no Slurm job")]
    provider.release(lease)
    assert "Slurm job 12 is now user mallory's job " in capsys.readouterr().err
    with pytest.raises(SlurmError, match="Slurm job 12 is not running; nothing to extend"):
        provider.extend_limit(lease, utcnow() + timedelta(minutes=8))
    assert provider.loss_reason(lease) is None
    assert [t for t in _tools(fake) if not t.startswith("sacct ")] == []     # never cancelled nor changed
    _only_the_leases_job(fake.calls(), "12")


@pytest.fixture
def quick(monkeypatch):
    """The unreadable-squeue rule (watch.py) over a test's time: 5 polls spanning 0.5 s."""
    from fleet.providers.slurm import watch
    monkeypatch.setattr(watch, "UNREADABLE_S", 0.5)
    return watch


def _watch(provider: SlurmProvider) -> tuple[list[str], threading.Event]:
    lost: list[str] = []
    heard = threading.Event()
    provider._watch("l-1", "12", LeaseWatch(cancel=threading.Event(),
                                            on_lost=lambda m: (lost.append(m), heard.set())))
    return lost, heard


def test_a_squeue_that_fails_once_ends_neither_the_pending_lease_nor_its_watch(fake, quick):
    fake.set("12", "PENDING", reason="Resources", nodes="")
    (fake.dir / "broken").write_text(TIMEOUT)
    (fake.dir / "once").write_text("")
    threading.Timer(0.5, lambda: fake.set("12", "RUNNING")).start()
    provider = _provider()
    assert provider._wait_running("12", LeaseWatch(cancel=threading.Event())).nodes == ("n1",)
    lost, heard = _watch(provider)
    try:
        time.sleep(0.3)
        (fake.dir / "garbage").write_text("12|RUNN")          # one answer fleet cannot read
        time.sleep(0.06)
        (fake.dir / "garbage").unlink()
        (fake.dir / "broken").write_text(TIMEOUT)
        (fake.dir / "once").write_text("")
        time.sleep(0.6)
        assert not heard.is_set(), lost
    finally:
        provider._watches.pop("l-1").set()


def test_a_squeue_that_keeps_failing_is_reported_once_naming_its_error(fake, quick):
    fake.set("12", "RUNNING")
    provider = _provider()
    lost, heard = _watch(provider)
    try:
        time.sleep(0.2)
        (fake.dir / "broken").write_text(TIMEOUT)
        began = time.monotonic()
        assert heard.wait(10)
        assert time.monotonic() - began >= 0.5               # not before the rule's span
    finally:
        provider._watches.pop("l-1").set()
    assert len(lost) == 1 and "\n" not in lost[0]
    assert lost[0].startswith("Slurm job 12: squeue answered nothing fleet could read for ")
    assert "Socket timed out on send/recv operation" in lost[0]
    assert lost[0].endswith("fleet can no longer tell whether the job still holds the machines")


def test_a_pending_lease_whose_squeue_keeps_printing_garbage_fails_naming_it(fake, quick):
    fake.set("12", "PENDING", reason="Resources", nodes="")
    (fake.dir / "garbage").write_text("<html>502 Bad Gateway</html>\n")
    with pytest.raises(SlurmError, match=r"Slurm job 12: squeue answered nothing fleet could read for \d+ polls "
                                         r"over \d+s \(squeue printed output fleet cannot read"):
        _provider()._wait_running("12", LeaseWatch(cancel=threading.Event()))


def test_a_pending_lease_whose_squeue_keeps_failing_ends_within_the_wait_asked_for(fake):
    """The wait asked for (`fleet up --wait`) bounds a squeue that fails too: the unreadable rule's
    300 s must not keep a user who asked for 1 s waiting five minutes."""
    from fleet.providers.slurm.errors import QueueWaitExpired
    fake.set("12", "PENDING", reason="Resources", nodes="")
    (fake.dir / "broken").write_text(TIMEOUT)
    began = time.monotonic()
    with pytest.raises(QueueWaitExpired, match=r"Slurm job 12: no answer from squeue fleet could read within the wait "
                                               r"of 1s \(.*Socket timed out on send/recv operation.*\); cancelled it"):
        _provider()._wait_running("12", LeaseWatch(cancel=threading.Event(), max_wait_s=1.0))
    assert time.monotonic() - began < 10
