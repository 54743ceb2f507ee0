"""A shared Slurm cluster and a shared state are inputs fleet does not trust (red-team findings):
a lease row's staging path reaches `rm -rf` only when it is the lease's own; another user's bytes in
squeue's listing, or a listing fleet cannot parse, fail as Slurm failing (one line, and a release
still tries its filtered scancel); a Slurm without `--me` is asked for the login's jobs by name,
never for every user's; and `fleet down --all` leaves a teammate's queuing lease's job alone."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from fleet.providers.slurm.commands import CommandResult, LocalRunner, SlurmCommands
from fleet.providers.slurm.errors import SlurmError
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings
from fleet.providers.slurm.staging import staging_dir_of
from tests.unit.test_slurm_job_owner import THEM, Cluster, _lease, _queue


class RealShell(Cluster):
    """The fake Slurm tools, but `sh -c` (the staging cleanup) really runs."""

    def __call__(self, argv, **kw):
        if argv[0] == "sh":
            self.calls.append(list(argv))
            return LocalRunner()(argv, **kw)
        return super().__call__(argv, **kw)


def test_a_staging_path_planted_on_a_lease_row_is_never_removed(fleet_home, tmp_path):
    victim = tmp_path / "home" / "alice" / "thesis"
    victim.mkdir(parents=True)
    (victim / "chapter1.tex").write_text("years of work")
    os.chmod(victim / "chapter1.tex", 0o444)
    provider = SlurmProvider(SlurmSettings(), runner=RealShell(_queue()))
    lease = _lease("l-1", "12")
    lease.meta["slurm_staging"] = str(victim)              # a teammate's UPDATE on the shared lease row
    provider.release(lease)
    assert (victim / "chapter1.tex").read_text() == "years of work"


def test_the_leases_own_staging_directory_is_still_removed(fleet_home, tmp_path):
    staged = tmp_path / "scratch" / "fleet-l-1-inputs"
    (staged / "code").mkdir(parents=True)
    os.chmod(staged / "code", 0o555)                       # staged inputs are read-only
    provider = SlurmProvider(SlurmSettings(), runner=RealShell(_queue()))
    lease = _lease("l-1", "12")
    lease.meta["slurm_staging"] = str(staged)
    provider.release(lease)
    assert not staged.exists()


@pytest.mark.parametrize("recorded", ["/scratch/fleet-l-2-inputs", "/scratch/fleet-l-1-inputs/..", "/home/alice",
                                      "/a/../fleet-l-1-inputs", 17, None, "/"])
def test_only_a_path_the_probe_makes_for_that_lease_counts_as_its_staging(recorded):
    assert staging_dir_of("l-1", recorded) is None
    for made in ("/scratch/fleet-l-1-inputs", "~/scratch/fleet-l-1-inputs", "//nfs/./fleet-l-1-inputs"):
        assert staging_dir_of("l-1", made) == made     # wherever shared_dir or workdir pointed


def _tool(bindir: Path, name: str, payload: bytes) -> None:
    path = bindir / name
    path.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.buffer.write({payload!r})\n")
    path.chmod(0o755)


def test_another_users_job_comment_that_is_not_utf8_breaks_no_squeue(tmp_path, monkeypatch):
    raw = b"12|RUNNING|None|1|n1|0:03|5:00|gres:gpu:1|gpu|fleet|normal|4242|mallory|2026-01-05T10:00:00|x|\xff\n"
    bindir = tmp_path / "bin"
    bindir.mkdir()
    _tool(bindir, "squeue", raw)
    _tool(bindir, "id", b"1000\n")
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setenv("LC_ALL", "C.UTF-8")
    slurm = SlurmCommands(LocalRunner())
    assert slurm.queue(["12"]) == [] and slurm.job("12").user == THEM


class Garbled(Cluster):
    """squeue prints `out` for a job asked by id."""

    def __init__(self, out: str):
        super().__init__(_queue())
        self.out = out

    def __call__(self, argv, **kw):
        if argv[0] == "squeue" and any(a.startswith("--jobs=") for a in argv):
            self.calls.append(list(argv))
            return CommandResult(tuple(argv), 0, self.out, "")
        return super().__call__(argv, **kw)


@pytest.mark.parametrize("out", ["12|RUNNING\n", "slurm_load_jobs: unexpected\nmore\n",
                                 "12|RUNNING|None|1|n1|0:03|5:00|gres:gpu:1|gpu|fleet|normal|abc|alice|2026-01-05T10:00:00|fleet-l-1|c\n",
                                 "12|RUNNING|None|1\n|n1|0:03|5:00|gres:gpu:1|gpu|fleet|normal|1000|alice|2026-01-05T10:00:00|fleet-l-1|c\n"])
def test_a_listing_fleet_cannot_read_is_a_slurm_error_and_release_still_scancels_by_name(fleet_home, out):
    cluster = Garbled(out)
    provider = SlurmProvider(SlurmSettings(), runner=cluster)
    with pytest.raises(SlurmError, match="squeue printed output fleet cannot read"):
        SlurmCommands(cluster).queue(["12"])
    provider.release(_lease("l-1", "12"))                  # by the controller's own name filter instead
    assert any(c[0] == "scancel" and "--name=fleet-l-1" in c for c in cluster.calls)


class NoMe:
    """A Slurm older than 20.11: no --me; its text listing names no owner."""

    def __init__(self, theirs: str):
        self.theirs, self.calls = theirs, []

    def __call__(self, argv, *, stdin=None, env=None, timeout=60):
        argv = list(argv)
        self.calls.append(argv)
        if argv[0] == "squeue" and "--me" in argv:
            return CommandResult(tuple(argv), 1, "", "squeue: unrecognized option '--me'\n")
        if argv[:2] == ["id", "-u"]:
            return CommandResult(tuple(argv), 0, "1000\n", "")
        if argv[:2] == ["id", "-un"]:
            return CommandResult(tuple(argv), 0, "alice\n", "")
        if argv[0] == "squeue":     # every user's jobs unless asked for one user's
            return CommandResult(tuple(argv), 0, "" if "--user=alice" in argv else self.theirs, "")
        return CommandResult(tuple(argv), 0, "", "")


def test_without_me_another_users_job_wearing_the_leases_tag_is_not_cancelled(fleet_home):
    theirs = "77|RUNNING|None|1|n1|1:00|2:00|gres:gpu:1|gpu|acct|normal|fleet-l-lost|fleet:lease=l-lost\n"
    cluster = NoMe(theirs)
    provider = SlurmProvider(SlurmSettings(), runner=cluster)
    lease = _lease("l-lost", None)                         # its controller died before recording a job
    provider.release(lease)
    from fleet.state import open_state
    open_state().save_lease(dataclasses.replace(lease, status="released"))
    provider.sweep(set())
    assert not [c for c in cluster.calls if c[0] == "scancel" and "77" in c]
    assert any("--user=alice" in c for c in cluster.calls if c[0] == "squeue")


def test_down_all_leaves_a_teammates_queuing_lease_job_alone(fleet_home, monkeypatch):
    """Team state, one Slurm account: bob's `fleet up` waits in the queue (lease 'leasing', no job
    recorded yet); alice's `fleet down --all` must not sweep it."""
    from fleet import leases
    from fleet.state import open_state
    queue = json.loads(_queue())
    pending = next(j for j in queue["jobs"] if j["job_id"] == 13)
    pending["name"], pending["comment"] = "fleet-l-bob", "fleet:lease=l-bob"
    cluster = Cluster(json.dumps(queue))
    provider = SlurmProvider(SlurmSettings(), runner=cluster)
    monkeypatch.setattr(leases, "_provider", lambda name: provider)
    open_state().save_lease(dataclasses.replace(_lease("l-bob", None), user="bob", status="leasing"))
    leases.down([], all_leases=True, user="alice")
    assert ["scancel", "--quiet", "13"] not in cluster.calls
    assert open_state().lease_status("l-bob")[0] == "leasing"


class ScancelFails(RealShell):
    """A controller that refuses every scancel (down, or timing out)."""

    def __call__(self, argv, **kw):
        if argv[0] == "scancel":
            self.calls.append(list(argv))
            return CommandResult(tuple(argv), 1, "", "scancel: error: Socket timed out on send/recv operation")
        return super().__call__(argv, **kw)


def test_a_release_whose_scancel_fails_still_removes_the_leases_key_and_staging(fleet_home, tmp_path):
    from fleet.providers.local import lease_key_path
    from fleet.keys import generate_ed25519
    staged = tmp_path / "scratch" / "fleet-l-1-inputs"
    (staged / "code").mkdir(parents=True)
    key = lease_key_path("l-1")
    generate_ed25519(key, comment="fleet-lease-l-1")
    generate_ed25519(key.with_name("host_ed25519"), comment="fleet-host-l-1")
    lease = _lease("l-1", "12")
    lease.meta["slurm_staging"] = str(staged)
    with pytest.raises(SlurmError, match="timed out"):
        queue = _queue((40, "alice", "fleet-l-1", "fleet:lease=l-1"), drop=12)
        lease.machines[0].provider_ref["job_id"] = "40"
        SlurmProvider(SlurmSettings(), runner=ScancelFails(queue)).release(lease)   # the next release retries it
    assert not key.exists() and not key.with_name("host_ed25519").exists()
    assert not staged.exists()
