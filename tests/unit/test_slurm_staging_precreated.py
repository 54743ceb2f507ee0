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


def _victim(tmp_path):
    """A directory of the lease owner's own, not fleet's: a read-only file, a 0755 subdirectory."""
    mine = tmp_path / "mine"
    (mine / "shared-with-group").mkdir(parents=True)
    os.chmod(mine / "shared-with-group", 0o755)
    (mine / "thesis.tex").write_text("years of work\n")
    os.chmod(mine / "thesis.tex", 0o444)
    return mine, lambda: sorted((p.name, stat.S_IMODE(p.stat().st_mode)) for p in mine.iterdir())


def test_cleanup_of_a_staging_directory_swapped_for_a_link_touches_nothing_behind_it(tmp_path):
    # In a shared_dir others can rename in, the lease's staging directory may be replaced by a link
    # (to a directory of the lease owner's, which the other user cannot touch themselves) after the
    # nodes proved the share: the end-of-job cleanup must not change modes or delete through it.
    from fleet.providers.slurm import node
    from fleet.providers.slurm.staging import remove_staging
    mine, look = _victim(tmp_path)
    before = look()
    link = tmp_path / "fleet-l-3-inputs"
    os.symlink(mine, link)
    node._remove_tree(str(link))
    assert look() == before
    os.symlink(mine, tmp_path / "fleet-l-4-inputs")
    remove_staging(SlurmCommands(LocalRunner()), str(tmp_path / "fleet-l-4-inputs"))
    assert look() == before and (mine / "thesis.tex").read_text() == "years of work\n"


def test_cleanup_of_a_staging_directory_never_changes_modes_through_a_link_inside_it(tmp_path):
    # Staged data may hold a link to a directory elsewhere (a dataset the user links to): os.walk lists
    # it among the directories, and a chmod through it changed the mode of the user's own directory.
    from fleet.providers.slurm import node
    mine, look = _victim(tmp_path)
    before = look()
    staging = tmp_path / "fleet-l-5-inputs" / "data"
    staging.mkdir(parents=True)
    os.symlink(mine / "shared-with-group", staging / "datasets")
    os.chmod(staging, 0o555)            # the sync makes staged trees read-only
    node._remove_tree(str(tmp_path / "fleet-l-5-inputs"))
    assert not (tmp_path / "fleet-l-5-inputs").exists() and look() == before


@pytest.mark.parametrize("mode", [0o777, 0o773])
def test_a_shared_dir_others_can_rename_in_is_refused(tmp_path, mode):
    # Made by the lease (mkdir, 0700), the staging directory could still be renamed away by anyone who
    # may write its parent without the sticky bit, and replaced by theirs after the nodes read the
    # probe: the nodes would then run their code as the lease's user.
    scratch = tmp_path / "team"
    scratch.mkdir()
    os.chmod(scratch, mode)
    with pytest.raises(InfrastructureError) as err:
        staging_probe(SlurmCommands(LocalRunner()), SlurmSettings(shared_dir=str(scratch / "fleet")), "l-6")
    assert "\n" not in err.value.one_line() and str(scratch) in err.value.one_line()
    assert not (scratch / "fleet" / "fleet-l-6-inputs").exists()
    assert staging_probe(SlurmCommands(LocalRunner()), SlurmSettings(workdir=str(scratch)), "l-6") is None
    os.chmod(scratch, mode | 0o1000)         # sticky, as /tmp: only the owner renames its entries
    assert staging_probe(SlurmCommands(LocalRunner()), SlurmSettings(shared_dir=str(scratch)), "l-6") is not None


def test_a_shared_dir_inside_another_users_directory_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, 65534, 65534)       # nobody's: they may rename anything in it
    with pytest.raises(InfrastructureError) as err:
        staging_probe(SlurmCommands(LocalRunner()), SlurmSettings(shared_dir=str(theirs)), "l-7")
    assert "another user's" in err.value.one_line()
    assert os.listdir(theirs) == []


def test_the_probe_token_is_never_in_a_command_line(tmp_path):
    # Every user of the login node reads every process's arguments (/proc/PID/cmdline), and over ssh
    # those of this computer's `ssh` too: the token must travel on stdin.
    seen = []
    local = LocalRunner()

    def runner(argv, **kw):
        seen.append(list(argv))
        return local(argv, **kw)
    spec = staging_probe(SlurmCommands(runner), SlurmSettings(shared_dir=str(tmp_path / "scratch")), "l-5")
    assert spec is not None and open(os.path.join(spec["dir"], spec["probe"])).read() == spec["token"]
    assert seen and not any(spec["token"] in arg for argv in seen for arg in argv), seen


def test_a_default_acl_on_a_group_space_still_gives_a_staging_directory_the_nodes_trust(tmp_path):
    """A group project space with a default ACL (`setfacl -d -m g::rwx`) overrides the umask: the lease's
    directory came out 0770, and every node refused it as writable by others (with `shared_dir` set,
    `fleet up` failed saying the share was not shared)."""
    import struct
    import pytest
    from fleet.providers.slurm import node
    space = tmp_path / "project"
    space.mkdir(mode=0o750)
    # POSIX ACL xattr (version 2): USER_OBJ rwx, GROUP_OBJ rwx, MASK rwx, OTHER ---, as setfacl -d writes it
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
                                          for tag, perm in ((0x01, 7), (0x04, 7), (0x10, 7), (0x20, 0)))
    try:
        os.setxattr(space, "system.posix_acl_default", acl)
    except OSError as exc:
        pytest.skip(f"no POSIX ACLs on this filesystem: {exc}")
    spec = staging_probe(SlurmCommands(LocalRunner()), SlurmSettings(shared_dir=str(space)), "l-6")
    assert spec is not None
    assert os.stat(spec["dir"]).st_mode & 0o777 == 0o700
    root = tmp_path / "machine"
    root.mkdir()
    assert node._shared_staging({"shared": spec}, str(root)) is True
