"""A trial running as root mounts under its machine's directory (a tmpfs in its outputs, a host
directory bound there): the release deleted the directory through the bind mount, emptying the
host directory, which is not fleet's, and stopped at the busy mount points, leaving the machine's
directory and the mounts on the host. Mounts are now detached first."""
from __future__ import annotations

import os
import subprocess

import pytest

from fleet.providers.local import LocalProvider
from fleet.remote.mounts import mounts_under

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")]


def test_release_detaches_mounts_and_never_deletes_through_a_bind(local_lease, tmp_path):
    host = tmp_path / "host-data"
    host.mkdir()
    (host / "keep.txt").write_text("not fleet's")
    lease = local_lease(gpus=1)
    d = lease.machines[0].provider_ref["dir"]
    bound, scratch = os.path.join(d, "out", "bound"), os.path.join(d, "out", "scratch")
    os.makedirs(bound)
    os.makedirs(scratch)
    try:
        subprocess.run(["mount", "--bind", str(host), bound], check=True, timeout=30)
        subprocess.run(["mount", "-t", "tmpfs", "none", scratch], check=True, timeout=30)
        assert set(mounts_under(d)) == {bound, scratch}
        LocalProvider().release(lease)
        assert (host / "keep.txt").read_text() == "not fleet's"
        assert mounts_under(d) == [] and not os.path.exists(d)
    finally:
        for point in mounts_under(d):
            subprocess.run(["umount", "-l", point], timeout=30)


def test_a_release_that_cannot_read_the_mount_table_never_deletes_through_a_bind(fleet_home, tmp_path, monkeypatch):
    """A release worker out of descriptors read no mountinfo and took it for "no mount"; by its rmtree
    the other workers had given theirs back, and the bound host directory was emptied."""
    import errno
    from fleet.remote import mounts
    host = tmp_path / "host-data"
    host.mkdir()
    (host / "keep.txt").write_text("not fleet's")
    d = fleet_home / "machines" / "l-nofd-n0"
    bound = d / "root" / "out" / "bound"
    bound.mkdir(parents=True)
    calls = []

    def open_once_out_of_descriptors(path, *args, **kwargs):
        if str(path) == "/proc/self/mountinfo" and not calls:
            calls.append(path)
            raise OSError(errno.EMFILE, "Too many open files", str(path))
        return open(path, *args, **kwargs)

    subprocess.run(["mount", "--bind", str(host), str(bound)], check=True, timeout=30)
    try:
        monkeypatch.setattr(mounts, "open", open_once_out_of_descriptors, raising=False)
        LocalProvider()._release_dirs([d])
        assert calls and (host / "keep.txt").read_text() == "not fleet's"
    finally:
        monkeypatch.undo()
        for point in mounts_under(d):
            subprocess.run(["umount", "-l", point], timeout=30)
    LocalProvider()._release_dirs([d])            # the mount gone, the directory goes
    assert not d.exists() and (host / "keep.txt").exists()
