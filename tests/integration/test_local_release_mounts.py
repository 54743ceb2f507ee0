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
