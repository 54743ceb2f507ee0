"""The probe behind `fleet hosts ls`'s isolation column says `cgroup` only where a machine's agent
really gets a unit: it makes a cgroup under <cgroup2>/fleet and moves a process into it, as the
agent does. A login that may write <cgroup2>/fleet but whose processes live in a cgroup it cannot
leave (a "delegated" directory outside its own subtree) gets verified pids from the agent, and the
probe says so (issue 13: "say which isolation a host gives")."""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import uuid

import pytest

from fleet.providers.ssh.hosts import _ISOLATION, parse_isolation
from fleet.remote.agent import containment

MOUNT = containment.cgroup2_mount()
ROOT_WITH_CGROUP = bool(MOUNT) and os.geteuid() == 0 and os.access(MOUNT, os.W_OK)
pytestmark = pytest.mark.skipif(not ROOT_WITH_CGROUP or not shutil.which("setpriv"),
                                reason="needs root, a writable cgroup v2 hierarchy and setpriv")


@pytest.fixture
def base():
    """A stand-in for <cgroup2>/fleet (the real one is shared with every other test's machines)."""
    name = f"fleet-probe-test-{uuid.uuid4().hex[:8]}"
    path = os.path.join(MOUNT, name)
    yield name, path
    for top, dirs, _files in os.walk(path, topdown=False):
        for d in dirs:
            os.rmdir(os.path.join(top, d))
    if os.path.isdir(path):
        os.rmdir(path)


def _probe(base_name: str, user: str | None = None) -> str | None:
    script = _ISOLATION.replace("$cg/fleet", f"$cg/{base_name}")
    assert script != _ISOLATION
    argv = ["sh", "-c", script]
    if user:
        ids = pwd.getpwnam(user)
        argv = ["setpriv", f"--reuid={ids.pw_uid}", f"--regid={ids.pw_gid}", "--clear-groups", *argv]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout
    return parse_isolation(out)


def test_root_gets_a_unit_and_the_probe_leaves_nothing_behind(base):
    name, path = base
    assert _probe(name) == "cgroup"
    assert not [d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))]   # the probe cgroup went


def test_a_writable_fleet_directory_outside_the_logins_own_cgroup_is_not_a_unit(base):
    name, path = base
    os.mkdir(path)
    os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
    # The agent, under the same login, falls back to pids here: moving a process needs write access
    # to cgroup.procs of the common ancestor (the root), which the login does not have.
    assert _probe(name, user="nobody") == "pids"
    assert not [d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d))]


def test_no_rights_at_all_is_pids(base):
    name, _path = base
    assert _probe(name, user="nobody") == "pids"
