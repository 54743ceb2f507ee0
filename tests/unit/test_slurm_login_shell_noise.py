"""A login node whose shell prints to stdout before running any command (a `.bashrc` that echoes a
greeting, activates conda, or lists the cluster's news: bash reads it for ssh's commands too):
what Slurm's tools print reaches fleet after those lines. fleet must read its tools' output, not the
shell's: `id -u` printed the greeting first, every check of the job's owner failed, and a lease's
job that was running read as unreadable until the wait ran out. Here with a fake ssh that runs the
command under a shell printing such lines, and a fake squeue and sbatch on PATH."""
from __future__ import annotations

import os
import threading

import pytest

from fleet.providers.base import LeaseWatch
from fleet.providers.slurm.commands import AllocationRequest, SSHRunner
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings

FAKE_SQUEUE = f"""#!/bin/sh
case "$*" in
  *--jobs=*) echo "12|RUNNING|None|1|n1|0:05|5:00|gres:gpu:1|gpu|fleet|normal|{os.getuid()}|me|2026-01-05T10:00:00|fleet-L|fleet:lease=L" ;;
  *) echo "12|RUNNING|None|1|n1|0:05|5:00|gres:gpu:1|gpu|fleet|normal|fleet-L|fleet:lease=L" ;;
esac
"""
FAKE_SBATCH = "#!/bin/sh\ncat >/dev/null\necho 12\n"
FAKE_SCANCEL = "#!/bin/sh\nexit 0\n"
NOISY_SSH = """#!/bin/sh
for last; do :; done
echo "Welcome to the cluster. Scratch is purged on Fridays."
echo "(base) conda environment activated"
exec sh -c "$last"
"""


@pytest.fixture
def provider(tmp_path, monkeypatch):
    d = tmp_path / "bin"
    d.mkdir()
    for name, text in (("squeue", FAKE_SQUEUE), ("sbatch", FAKE_SBATCH), ("scancel", FAKE_SCANCEL),
                       ("ssh", NOISY_SSH)):
        (d / name).write_text(text)
        (d / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{d}:/usr/bin:/bin")
    return SlurmProvider(SlurmSettings(poll_s=0.05), runner=SSHRunner("me@login.example"))


def test_a_chatty_login_shell_does_not_hide_the_leases_job(provider):
    job_id = provider.slurm.submit(AllocationRequest("fleet-L", 1, 1, 300, comment="fleet:lease=L"), "#!/bin/sh\n")
    job = provider._wait_running(job_id, LeaseWatch(cancel=threading.Event(), max_wait_s=3))
    assert (job.job_id, job.state.value, job.nodes) == ("12", "RUNNING", ("n1",))
    assert [j.comment for j in provider.slurm.tagged("fleet:lease=")] == ["fleet:lease=L"]
