"""A trial running as root binds a host directory into its outputs (or mounts a tmpfs there): the
reset before the next trial on that warm machine deleted the outputs through the bind, emptying the
host directory, which is not fleet's. The reset now detaches what the trial mounted first."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from fleet.remote.mounts import mounts_under
from tests.conftest import processes_under, run_fleet

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")


def test_a_bind_mount_a_trial_left_in_its_outputs_is_detached_not_deleted_through(experiment, fleet_home, tmp_path):
    host = tmp_path / "host-data"
    host.mkdir()
    (host / "keep.txt").write_text("not fleet's\n")
    script = (f'if [ {{x}} = 1 ]; then mkdir -p "$FLEET_OUTPUT_DIR/bound" && '
              f'mount --bind {host} "$FLEET_OUTPUT_DIR/bound"; fi')
    try:
        proc = run_fleet(["sweep", "--param", "x=1,2", "--json", "--", "sh", "-c", script], cwd=experiment,
                         timeout=180)
        trials = json.loads(proc.stdout)["trials"]
        assert [t["state"] for t in trials] == ["succeeded", "succeeded"], proc.stderr[-3000:]
        assert trials[0]["machines"] == trials[1]["machines"]          # the reset ran between them
        assert (host / "keep.txt").read_text() == "not fleet's\n"
        assert mounts_under(fleet_home) == []
        assert processes_under(fleet_home) == []
    finally:
        for point in mounts_under(fleet_home):
            subprocess.run(["umount", "-l", point], timeout=30)


def test_outputs_a_trial_linked_to_a_host_directory_leave_the_mounts_there_mounted(experiment, fleet_home, tmp_path):
    """The reset followed the link: every mount below the link's target (a host's scratch disk, a
    team's NFS share) was detached for the whole host, and the link left the machine unclean, so
    the next trial lost its slot."""
    host = tmp_path / "scratch"
    (host / "nfs").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "fleet-test", str(host / "nfs")], check=True, timeout=30)
    try:
        (host / "nfs" / "keep.txt").write_text("the team's\n")
        script = (f'if [ {{x}} = 1 ]; then mkdir -p "$(dirname "$FLEET_OUTPUT_DIR")" && '
                  f'ln -s {host} "$FLEET_OUTPUT_DIR"; fi')
        proc = run_fleet(["sweep", "--param", "x=1,2", "--json", "--", "sh", "-c", script], cwd=experiment,
                         timeout=180)
        trials = json.loads(proc.stdout)["trials"]
        assert [t["state"] for t in trials] == ["succeeded", "succeeded"], proc.stderr[-3000:]
        assert trials[0]["machines"] == trials[1]["machines"]
        assert mounts_under(host) == [str(host / "nfs")]
        assert (host / "nfs" / "keep.txt").read_text() == "the team's\n"
        assert processes_under(fleet_home) == []
    finally:
        for point in mounts_under(host) + mounts_under(fleet_home):
            subprocess.run(["umount", "-l", point], timeout=30)
