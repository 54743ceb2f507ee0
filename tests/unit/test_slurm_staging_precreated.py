"""The lease's staging directory on a shared filesystem is made by the lease, never adopted.

The job's name (`fleet-<lease id>`) is in squeue for every user of the cluster while it pends, and
the staging directory (`<shared_dir>/fleet-<lease id>-inputs`) is made only once it runs. Another
user who made that directory first in a world-writable scratch (mode 0777) would otherwise receive
the probe's token and then the lease's code and data, and could rewrite the code its nodes run."""
from __future__ import annotations

import os
import stat

import pytest

from fleet.errors import InfrastructureError
from fleet.providers.slurm.commands import LocalRunner, SlurmCommands
from fleet.providers.slurm.settings import SlurmSettings
from fleet.providers.slurm.staging import staging_probe


def test_a_fresh_staging_directory_is_the_lease_owners_alone(tmp_path):
    spec = staging_probe(SlurmCommands(LocalRunner()), SlurmSettings(shared_dir=str(tmp_path / "scratch")), "l-1")
    assert spec is not None and spec["dir"] == f"{tmp_path}/scratch/fleet-l-1-inputs"
    assert stat.S_IMODE(os.stat(spec["dir"]).st_mode) == 0o700
    assert open(os.path.join(spec["dir"], spec["probe"])).read() == spec["token"]


@pytest.mark.parametrize("planted", ["directory", "link"])
def test_a_staging_directory_someone_made_first_is_refused(tmp_path, planted):
    scratch = tmp_path / "scratch"
    theirs = tmp_path / "theirs"
    scratch.mkdir()
    theirs.mkdir()
    os.chmod(theirs, 0o777)
    path = scratch / "fleet-l-2-inputs"
    if planted == "directory":
        path.mkdir()
        os.chmod(path, 0o777)
    else:
        os.symlink(theirs, path)
    with pytest.raises(InfrastructureError) as err:
        staging_probe(SlurmCommands(LocalRunner()), SlurmSettings(shared_dir=str(scratch)), "l-2")
    assert "\n" not in err.value.one_line()
    assert os.listdir(theirs) == [] and (planted == "link" or os.listdir(path) == [])
    # Without a configured shared_dir (the nodes' workdir tried), the lease stages per machine instead.
    assert staging_probe(SlurmCommands(LocalRunner()), SlurmSettings(workdir=str(scratch)), "l-2") is None
    assert os.listdir(theirs) == [] and (planted == "link" or os.listdir(path) == [])
