"""A Slurm machine whose job left a directory tree deeper than Python's stack is still deleted when
the machine ends: the node step deleted its directory with shutil.rmtree, which recurses once per
level, so the step died on RecursionError with the directory (the job's data, on the node's disk)
left behind, and the machine's sshd not ended by it. The same goes for the lease's shared staging
directory. The last test on the real test cluster (tests/fixtures/slurm.py)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.deep_tree import deep_tree, remove

pytestmark = pytest.mark.timeout(300)


def test_the_node_removes_a_machine_directory_holding_a_tree_deeper_than_the_stack(tmp_path):
    from fleet.providers.slurm import node
    d = tmp_path / "fleet-l-1-n0-abc"
    deep_tree(d / "root" / "outputs")
    try:
        node._remove_machine_dir(str(d))
        assert not d.exists(), "the machine's directory was left behind"
    finally:
        remove(d)


def test_the_shared_staging_directory_holding_a_tree_deeper_than_the_stack_is_removed(tmp_path):
    from fleet.providers.slurm import node
    shared = tmp_path / "staging"
    deep_tree(shared / "data")
    try:
        node._remove_tree(str(shared))
        assert not shared.exists(), "the staging directory was left behind"
    finally:
        remove(shared)


def test_releasing_a_slurm_machine_deletes_a_tree_deeper_than_the_stack(slurm_env, fleet_home, tmp_path):
    from fleet.ids import new_lease_id
    from tests.fixtures.slurm import wait_for
    from tests.fixtures.slurm_lease import cluster_plan, cluster_provider
    provider, _slurm, _nodes_dir = cluster_provider(tmp_path, slurm_env)
    lease = provider.lease(cluster_plan(provider, "slurm-1gpu", 1), new_lease_id(), 120)
    (machine,) = lease.machines
    machine_dir = Path(machine.workdir).parent
    try:
        deep_tree(Path(machine.workdir) / "outputs")
        provider.release(lease)
        wait_for(lambda: not machine_dir.exists(), 60, "the machine's directory to go")
    finally:
        remove(machine_dir)
