"""What sbatch prints on stdout is not always its `--parsable` id alone: many clusters put a wrapper
in front of Slurm's sbatch that adds its own lines (the group's remaining GPU-hours, a reminder)
after the id. The job id is the line sbatch itself printed; and where no line is one, sbatch still
exited 0, so a job may well be queued under the lease's name: fleet withdraws it (as it does for
salloc) rather than leave it holding GPUs until its time limit. Fake sbatch and scancel on PATH."""
from __future__ import annotations

import pytest

from fleet.providers.slurm.commands import AllocationRequest, LocalRunner, SlurmCommands
from fleet.providers.slurm.errors import SlurmError

REQ = AllocationRequest("fleet-L", 1, 1, 300, comment="fleet:lease=L")


@pytest.fixture
def fake(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scancel").write_text(f'#!/bin/sh\necho "$*" >> {tmp_path}/scancel.log\n')

    def sbatch(stdout: str):
        (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncat >/dev/null\nprintf '%s' '{stdout}'\n")
        for tool in ("sbatch", "scancel"):
            (bin_dir / tool).chmod(0o755)
        return tmp_path / "scancel.log"

    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return sbatch


@pytest.mark.parametrize("stdout", ["12\nYour group has 3400 GPU-hours left this quarter.\n",
                                    "Checking quota... ok\n12;gpucluster\nRemember: scratch is purged on Fridays\n"])
def test_the_job_id_is_sbatchs_line_not_a_wrappers(fake, stdout):
    scancel = fake(stdout)
    assert SlurmCommands(LocalRunner()).submit(REQ, "#!/bin/sh\n") == "12"
    assert not scancel.exists()


def test_a_submission_without_a_readable_id_is_withdrawn_by_the_leases_name(fake):
    scancel = fake("Job submitted. Thank you for using the cluster.\n")
    slurm = SlurmCommands(LocalRunner())
    with pytest.raises(SlurmError, match="sbatch printed no job id"):
        slurm.submit(REQ, "#!/bin/sh\n")
    assert f"--user={slurm.user}" in scancel.read_text() and "--name=fleet-L" in scancel.read_text()
