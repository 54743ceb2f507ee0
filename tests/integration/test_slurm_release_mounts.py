"""A run as root on a Slurm node binds a host directory into its machine's working directory: the
node step's removal of the machine directory went through the bind and deleted that directory's
files, which are not fleet's. The node now detaches what the run mounted first (fleet/remote/mounts.py),
as the local provider, team hosts and the sweep's reset do. Real bind mounts (root); the last test on
the real test cluster (tests/fixtures/slurm.py)."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fleet.remote.mounts import mounts_under

pytestmark = [pytest.mark.timeout(300), pytest.mark.skipif(os.geteuid() != 0, reason="mounting needs root")]


def _host_data(tmp_path: Path) -> Path:
    host = tmp_path / "host-data"
    host.mkdir()
    (host / "keep.txt").write_text("not fleet's\n")
    return host


def _bind(source: Path, point: Path) -> None:
    point.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(source), str(point)], check=True, timeout=30)


def _unmount_all(under: Path) -> None:
    for point in mounts_under(under):
        subprocess.run(["umount", "-l", point], timeout=30)


def test_the_node_removes_a_machine_directory_without_deleting_through_a_bound_host_directory(tmp_path):
    from fleet.providers.slurm import node
    host = _host_data(tmp_path)
    d = tmp_path / "fleet-l-1-n0-abc"
    _bind(host, d / "root" / "outputs" / "bound")
    try:
        node._remove_machine_dir(str(d))
        assert (host / "keep.txt").read_text() == "not fleet's\n"
        assert not d.exists() and mounts_under(tmp_path) == []
    finally:
        _unmount_all(tmp_path)


def test_the_shared_staging_directory_is_removed_without_deleting_through_a_mount(tmp_path):
    from fleet.providers.slurm import node
    host = _host_data(tmp_path)
    shared = tmp_path / "staging"
    _bind(host, shared / "data" / "bound")
    try:
        node._remove_tree(str(shared))
        assert (host / "keep.txt").read_text() == "not fleet's\n"
        assert not shared.exists() and mounts_under(tmp_path) == []
    finally:
        _unmount_all(tmp_path)


def test_releasing_a_slurm_machine_keeps_the_files_of_a_host_directory_the_run_bound_in_it(
        slurm_env, fleet_home, tmp_path):
    from fleet.ids import new_lease_id
    from tests.fixtures.slurm import wait_for
    from tests.fixtures.slurm_lease import cluster_plan, cluster_provider
    host = _host_data(tmp_path)
    provider, _slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    lease = provider.lease(cluster_plan(provider, "slurm-1gpu", 1), new_lease_id(), 120)
    try:
        (machine,) = lease.machines
        _bind(host, Path(machine.workdir) / "outputs" / "bound")
        provider.release(lease)
        machine_dir, kept = Path(machine.workdir).parent, host / "keep.txt"
        wait_for(lambda: not machine_dir.exists() or not kept.exists(), 60, "the machine's directory to go")
        assert kept.read_text() == "not fleet's\n"
        assert not machine_dir.exists() and mounts_under(nodes_dir) == []
    finally:
        _unmount_all(nodes_dir)
