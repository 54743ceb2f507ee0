"""squeue takes filters from the environment too (SQUEUE_PARTITION, SQUEUE_ACCOUNT, SQUEUE_QOS,
SQUEUE_NAMES, …: `man squeue`), and applies them on top of `--jobs=ID` and `--me`: a real 22.05
squeue with SQUEUE_PARTITION=urgent prints nothing for a job in partition gpu, and an empty value
hides it as well. Users export them in their login node's rc file to read the queue their way; fleet's
own job must not vanish from fleet's view for it (the lease failed with "left the queue before it
started" and its job was cancelled). Here with a fake squeue on PATH that filters as the real one does."""
from __future__ import annotations

import os
import threading

import pytest

from fleet.providers.base import LeaseWatch
from fleet.providers.slurm.commands import LocalRunner, SSHRunner
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings

FAKE_SQUEUE = f"""#!/bin/sh
for var in SQUEUE_PARTITION SQUEUE_ACCOUNT SQUEUE_QOS SQUEUE_NAMES; do
  if eval "[ -n \\"\\${{$var+set}}\\" ]"; then exit 0; fi
done
echo "12|RUNNING|None|1|n1|0:05|5:00|gres:gpu:1|gpu|fleet|normal|{os.getuid()}|me|2026-01-05T10:00:00|fleet-L|fleet:lease=L"
"""
# A login node whose shell exports the user's own squeue defaults before running fleet's command.
FAKE_SSH = """#!/bin/sh
for last; do :; done
export SQUEUE_PARTITION=debug SQUEUE_ACCOUNT=otherlab
exec sh -c "$last"
"""


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    for name, text in (("squeue", FAKE_SQUEUE), ("ssh", FAKE_SSH)):
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{d}:/usr/bin:/bin")
    return d


def _wait(runner) -> str:
    provider = SlurmProvider(SlurmSettings(poll_s=0.05), runner=runner)
    job = provider._wait_running("12", LeaseWatch(cancel=threading.Event(), max_wait_s=5))
    return f"{job.job_id} {job.state.value} {','.join(job.nodes)}"


@pytest.mark.parametrize("value", ["debug", ""])
def test_squeue_filters_in_this_environment_do_not_hide_the_leases_job(bin_dir, monkeypatch, value):
    monkeypatch.setenv("SQUEUE_PARTITION", value)
    monkeypatch.setenv("SQUEUE_QOS", "other")
    assert _wait(LocalRunner()) == "12 RUNNING n1"


def test_squeue_filters_of_the_login_nodes_shell_do_not_hide_the_leases_job(bin_dir):
    assert _wait(SSHRunner("me@login.example")) == "12 RUNNING n1"
