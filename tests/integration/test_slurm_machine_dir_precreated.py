"""A machine directory another user made first (red team): under a shared workdir (/tmp) the
path fleet used on a Slurm node, `<workdir>/fleet-<lease>-n<rank>`, was known before the lease
started, so any user of the node could make it first. Not writable by fleet's user, the lease
failed; writable by its maker (or fleet root, as on the test cluster), fleet wrote the lease's
host key and authorized key into a directory someone else controls. The node step now makes its
directory with a random suffix (mkdtemp) and reports it back: the lease works and the planted
directory is left exactly as it was. Real test cluster (tests/fixtures/slurm.py), a throwaway Unix
user made and removed by the test.
"""
from __future__ import annotations

import os
import pwd
import secrets
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.slurm import wait_for

from fleet.ids import new_lease_id
from fleet.plan import make_plan
from fleet.providers.base import choose_mix
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def other_user():
    if os.geteuid() != 0:
        pytest.skip("making a throwaway Unix user needs root")
    name = f"fleetrt{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True, timeout=60)
    try:
        yield pwd.getpwnam(name)
    finally:
        subprocess.run(["userdel", name], capture_output=True, timeout=60)


def _look(path: Path) -> tuple:
    """What a user sees of a directory: owner, mode, inode, and every name in it with its content."""
    st = os.lstat(path)
    return (st.st_uid, st.st_mode, st.st_ino,
            sorted((p.name, p.read_bytes() if p.is_file() else None) for p in path.iterdir()))


def test_a_machine_directory_precreated_by_another_user_neither_blocks_the_lease_nor_is_used(
        slurm_env, fleet_home, tmp_path, other_user):
    nodes_dir = tmp_path / "nodes"
    nodes_dir.mkdir()
    os.chmod(nodes_dir, 0o755)
    lease_id = new_lease_id()
    planted = nodes_dir / f"fleet-{lease_id}-n0"       # the old predictable name of node rank 0's directory
    planted.mkdir()
    (planted / "authorized_keys").write_text("ssh-ed25519 AAAA-someone-elses-key\n")
    for p in (planted, planted / "authorized_keys"):
        os.chown(p, other_user.pw_uid, other_user.pw_gid)
    os.chmod(planted, 0o755)          # its maker's; fleet's user may not write there (were it not root)
    before = _look(planted)

    provider = SlurmProvider(SlurmSettings(workdir=str(nodes_dir), poll_s=0.5))
    plan = make_plan(provider="slurm", mix=choose_mix(provider, "slurm-1gpu", 1), max_duration_s=600,
                     heartbeat_ttl_s=120, project="slurm-test", user="tester")
    lease = provider.lease(plan, lease_id, 120)
    try:
        (machine,) = lease.machines
        from fleet.remote.ssh import connect
        with connect(machine, timeout=30) as session:
            result = session.run("echo $FLEET_MACHINE_ID $FLEET_MACHINE_ROOT")
        assert result.exit_code == 0, result.stderr
        assert result.stdout.split() == [f"{lease_id}-n0", machine.workdir]
        machine_dir = Path(machine.workdir).parent
        assert machine_dir.parent == nodes_dir and machine_dir != planted
        assert machine_dir.name.startswith(f"fleet-{lease_id}-n0-")
        assert os.lstat(machine_dir).st_uid == os.geteuid() and os.lstat(machine_dir).st_mode & 0o077 == 0
        assert (machine_dir / "ssh_host_ed25519_key").is_file()
        assert _look(planted) == before                    # nothing of the lease went into it
    finally:
        provider.release(lease)
    wait_for(lambda: [p for p in nodes_dir.iterdir()] == [planted], 60, "the machine's own directory to go")
    assert _look(planted) == before                        # release did not touch it either


def test_as_an_unprivileged_user_a_directory_someone_else_made_first_no_longer_blocks_the_machine(other_user):
    # The test cluster runs its steps as root, which any directory lets in; here node.py's own code
    # runs as an unprivileged user (the throwaway one), as on a real cluster. The old fixed name,
    # made first by someone else (root here) and closed to others, used to fail the step there.
    import shutil
    from fleet.providers.slurm import node
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 another user can run")
    import tempfile
    workdir = Path(tempfile.mkdtemp(prefix="fleet-rt-workdir-"))   # outside pytest's 0700 tree
    try:
        os.chmod(workdir, 0o1777)                              # like /tmp
        (workdir / "node.py").write_text(Path(node.__file__).read_text())
        os.chmod(workdir / "node.py", 0o644)
        planted = workdir / "fleet-l-deadbeef-n0"
        planted.mkdir(mode=0o700)
        before = _look(planted)
        script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import node; "
                  "print(node._machine_dir(json.loads(sys.argv[2])))")
        spec = '{"workdir": "%s", "machine_id": "l-deadbeef-n0"}' % workdir
        done = subprocess.run(["runuser", "-u", other_user.pw_name, "--", python, "-S", "-B", "-c", script,
                               str(workdir), spec], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        made = Path(done.stdout.strip())
        assert made.parent == workdir and made != planted and made.name.startswith("fleet-l-deadbeef-n0-")
        st = os.lstat(made)
        assert st.st_uid == other_user.pw_uid and st.st_mode & 0o777 == 0o700
        assert _look(planted) == before
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_a_workdir_another_user_can_rename_into_is_refused_in_one_line(other_user):
    # `[slurm] workdir = "/tmp/team/fleet"` where /tmp/team is writable by others without the sticky
    # bit (or a directory another user made first): anyone could rename the machine's directory away
    # and put their own in its place, with an authorized_keys the machine's sshd (StrictModes no,
    # running as fleet's user) reads at every login. The node step now refuses such a workdir.
    import shutil
    import tempfile
    from fleet.providers.slurm import node
    python = shutil.which("python3", path="/usr/bin:/bin")
    if python is None:
        pytest.skip("no system python3 another user can run")
    top = Path(tempfile.mkdtemp(prefix="fleet-rt-team-"))
    try:
        os.chmod(top, 0o777)                                   # no sticky bit: anyone renames in it
        (top / "node.py").write_text(Path(node.__file__).read_text())
        os.chmod(top / "node.py", 0o644)
        script = ("import json, sys; sys.path.insert(0, sys.argv[1]); import node; "
                  "print(node._machine_dir(json.loads(sys.argv[2])))")
        for workdir in (top / "fleet", top):
            spec = '{"workdir": "%s", "machine_id": "l-deadbeef-n0"}' % workdir
            done = subprocess.run(["runuser", "-u", other_user.pw_name, "--", python, "-S", "-B", "-c", script,
                                   str(top), spec], capture_output=True, text=True, timeout=60)
            assert done.returncode != 0 and "Traceback" not in done.stderr, (done.stdout, done.stderr)
            assert len(done.stderr.strip().splitlines()) == 1 and str(top) in done.stderr, done.stderr
            assert not list(Path(workdir).glob("fleet-l-deadbeef-n0-*"))
    finally:
        shutil.rmtree(top, ignore_errors=True)
