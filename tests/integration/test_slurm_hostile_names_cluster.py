"""Against the real test cluster (tests/fixtures/slurm.py): another user's job whose name and
comment hold hostile text (a newline that forges a listing line, '|' delimiters, an escape
sequence, bytes that are not UTF-8, quotes and backslashes) breaks no listing of fleet's and is never
cancelled; a lease's polls, asking for its one job, read such a job under the lease's id as that
user's; and a release whose squeue fails cancels through slurmctld's own filters only the
lease's job: never another user's job under a recorded id, never the login's job of another name.
fleet runs here as root, a Slurm operator: a scancel of anyone's job would succeed."""
from __future__ import annotations

import dataclasses
import os
import subprocess
import threading

import pytest

from tests.fixtures.slurm import wait_for

from fleet.ids import new_lease_id
from fleet.providers.base import LeaseWatch
from fleet.providers.slurm.commands import CommandResult, LocalRunner, SlurmCommands
from fleet.providers.slurm.errors import SlurmError
from fleet.providers.slurm.provider import SlurmProvider, tag
from fleet.providers.slurm.settings import SlurmSettings

from tests.integration.test_slurm_job_owner_cluster import _lease

pytestmark = pytest.mark.timeout(300)


def _sbatch(env, name: str | bytes, comment: str | bytes, user: str | None = None) -> str | None:
    """sbatch a job (as `user`); its id, or None when refused. Bytes: a name that is not UTF-8."""
    raw = [(name if isinstance(name, bytes) else name.encode()), (comment if isinstance(comment, bytes)
                                                                    else comment.encode())]
    argv = [b"sbatch", b"--parsable", b"--no-requeue", b"--job-name=" + raw[0], b"--comment=" + raw[1],
            b"--time=5", b"--output=/dev/null", b"--chdir=/tmp", b"--wrap", b"sleep 300"]
    if user:
        argv = [b"runuser", b"-u", user.encode(), b"--", b"env", b"SLURM_CONF=" + env["SLURM_CONF"].encode(), *argv]
    done = subprocess.run(argv, capture_output=True, timeout=60, env={**os.environ, **env})
    return done.stdout.decode().strip() or None if done.returncode == 0 else None


def _add_nobody(cluster) -> None:
    if cluster.accounting:     # associations are enforced: the user needs one to submit
        subprocess.run(["sacctmgr", "-i", "add", "user", "nobody", f"account={cluster.account}"],
                       capture_output=True, timeout=60, env={**os.environ, **cluster.env})


def _running(slurm: SlurmCommands, job_id: str) -> bool:
    job = slurm.job(job_id)
    return job is not None and not job.state.finished


def _forged_or_theirs(jobs, theirs: str, lease_id: str) -> list:
    return [j for j in jobs if j.job_id == theirs or lease_id in j.name or lease_id in j.comment]


def test_another_users_hostile_job_names_break_no_listing_and_are_never_swept(slurm_env, fleet_home, capsys):
    from fleet.state import open_state
    _add_nobody(slurm_env)
    released = new_lease_id()             # a lease of this FLEET_HOME whose job was never recorded
    forged = (f"1|RUNNING|None|1|n1|0:01|5:00|gres:gpu:1|gpu|fleet|normal|fleet-{released}|{tag(released)}")
    hostile = f"x\n{forged}\x1b[2J\x1b]0;pwned\x07 \"q\" \\ \u2028|a|b|".encode() + b"\xff"
    theirs = wait_for(lambda: _sbatch(slurm_env.env, hostile, hostile + b"\n" + tag(released).encode(), "nobody"), 60,
                      "nobody's association to reach slurmctld", interval=1)
    root = SlurmCommands(LocalRunner(slurm_env.env))
    try:
        wait_for(lambda: _running(root, theirs), 60, "nobody's hostile job in the queue")
        open_state().save_lease(dataclasses.replace(_lease(released, None), status="released"))
        provider = SlurmProvider(SlurmSettings(poll_s=0.5))
        # The scan for fleet's tag (root's own jobs, --me: the session's cluster keeps the finished
        # jobs of earlier tests) and a listing by id: none of nobody's job taken for root's
        assert _forged_or_theirs(provider.slurm.queue(), theirs, released) == []
        assert provider.slurm.queue([theirs]) == []
        assert provider.sweep(set()) == []                        # `fleet down --all`
        provider.release(_lease(released, None))                  # `fleet down RELEASED`
        assert _running(root, theirs)
        assert "\x1b" not in capsys.readouterr().err
    finally:
        root.cancel([theirs])


class Logged:
    """The real cluster, every command it was asked recorded."""

    def __init__(self, env):
        self.local, self.calls = LocalRunner(env), []

    def __call__(self, argv, *, stdin=None, env=None, timeout=60):
        self.calls.append(list(argv))
        return self.local(argv, stdin=stdin, env=env, timeout=timeout)


def test_a_leases_polls_ask_for_its_job_alone_and_read_a_hostile_job_under_its_id_as_theirs(slurm_env, fleet_home):
    _add_nobody(slurm_env)
    lease_id = new_lease_id()
    # The lease's recorded id names nobody's job, renamed once its id is known so that its name and
    # comment forge a line of root's running job for the lease under that id: root's uid and name,
    # the lease's name and its tag.
    theirs = wait_for(lambda: _sbatch(slurm_env.env, "x", "y", "nobody"), 60,
                      "nobody's association to reach slurmctld", interval=1)
    forged = f"{theirs}|RUNNING|None|1|n1|0:01|5:00|gres:gpu:1|gpu|fleet|normal|0|root|2026-01-05T10:00:00|fleet-{lease_id}|{tag(lease_id)}"
    hostile = f"x\n{forged}\x1b[2J".encode() + b"\xff"
    subprocess.run([b"runuser", b"-u", b"nobody", b"--", b"env", b"SLURM_CONF=" + slurm_env.env["SLURM_CONF"].encode(),
                    b"scontrol", b"update", f"JobId={theirs}".encode(), b"JobName=" + hostile,
                    f"Comment=y\n{forged}".encode()], check=True, capture_output=True, timeout=60)
    runner = Logged(slurm_env.env)
    provider = SlurmProvider(SlurmSettings(poll_s=0.2), runner=runner)
    try:
        wait_for(lambda: _running(provider.slurm, theirs), 60, "nobody's hostile job in the queue")
        fields = "%i|%T|%r|%D|%N|%M|%l|%b|%P|%a|%q|%U|%u|%j|%k"
        printed = LocalRunner(slurm_env.env)(["squeue", "--noheader", f"--jobs={theirs}",
                                              f"--format={fields}"]).stdout.splitlines()
        assert printed[1].startswith(forged)          # read line by line, a running job of root's for the lease
        job = provider.slurm.job(theirs)
        assert job.user == "nobody" and f"{job.name}|{job.comment}".startswith(f"x\n{forged}")
        with pytest.raises(SlurmError, match=f"Slurm job {theirs} left the queue before it started"):
            provider._wait_running(theirs, LeaseWatch(cancel=threading.Event()))
        lost: list[str] = []
        heard = threading.Event()
        provider._watch(lease_id, theirs, LeaseWatch(cancel=threading.Event(),
                                                     on_lost=lambda m: (lost.append(m), heard.set())))
        assert heard.wait(60)
        assert lost[0].startswith(f"Slurm job {theirs} is gone: its id now names another job (")
        assert lost[0].endswith(", user nobody)")
        polls = [c for c in runner.calls if c[0] == "squeue"]
        assert polls and all(f"--jobs={theirs}" in c and "--json" not in c for c in polls), polls
    finally:
        provider._watches.pop(lease_id, threading.Event()).set()
        SlurmCommands(LocalRunner(slurm_env.env)).cancel([theirs])


class SqueueDown:
    """squeue times out (a busy controller); every other tool runs on the real cluster."""

    def __init__(self, env):
        self.local = LocalRunner(env)

    def __call__(self, argv, *, stdin=None, env=None, timeout=60):
        if argv[0] == "squeue":
            return CommandResult(tuple(argv), 1, "", "squeue: error: Socket timed out on send/recv operation\n")
        return self.local(argv, stdin=stdin, env=env, timeout=timeout)


def test_a_release_whose_squeue_fails_cancels_only_the_leases_own_job(slurm_env, fleet_home):
    from fleet.state import open_state
    _add_nobody(slurm_env)
    reused, other, own = new_lease_id(), new_lease_id(), new_lease_id()
    # Lease REUSED recorded an id that now names nobody's job; lease OTHER's recorded id names a job of
    # root's under another name; lease OWN's is its own job.
    theirs = wait_for(lambda: _sbatch(slurm_env.env, f"fleet-{reused}", tag(reused), "nobody"), 60,
                      "nobody's association to reach slurmctld", interval=1)
    roots = _sbatch(slurm_env.env, "their-own-job", "")
    mine = _sbatch(slurm_env.env, f"fleet-{own}", tag(own))
    root = SlurmCommands(LocalRunner(slurm_env.env))
    try:
        assert roots and mine
        wait_for(lambda: all(_running(root, j) for j in (theirs, roots, mine)), 60, "the three jobs in the queue")
        provider = SlurmProvider(SlurmSettings(poll_s=0.5), runner=SqueueDown(slurm_env.env))
        for lease in (_lease(reused, theirs), _lease(other, roots), _lease(own, mine)):
            open_state().save_lease(lease)
            provider.release(lease)                               # `fleet down`, squeue failing
        assert _running(root, theirs) and _running(root, roots)
        wait_for(lambda: not _running(root, mine), 60, "the lease's own job to end")
    finally:
        root.cancel([theirs, roots, mine])
