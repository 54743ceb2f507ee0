"""Starting a lease's node steps (fleet/providers/slurm/steps.py) on the real test cluster
(tests/fixtures/slurm.py): the text every node step runs is read once for the lease, not once per node."""
from __future__ import annotations

import pytest

from tests.fixtures.slurm import wait_for
from tests.fixtures.slurm_lease import cluster_plan, cluster_provider

from fleet.ids import new_lease_id
from fleet.remote import mounts

pytestmark = pytest.mark.timeout(300)


def test_a_two_node_lease_reads_the_node_steps_source_once(slurm_env, fleet_home, tmp_path, monkeypatch):
    reads: list[str] = []
    read = mounts.source
    monkeypatch.setattr(mounts, "source", lambda: reads.append("mounts.py") or read())
    provider, _slurm, nodes_dir = cluster_provider(tmp_path, slurm_env)
    lease = provider.lease(cluster_plan(provider, "slurm-1gpu", 2), new_lease_id(), 120)
    try:
        assert [m.provider_ref["node"] for m in lease.machines] == ["n1", "n2"]
        assert reads == ["mounts.py"]
    finally:
        provider.release(lease)
    wait_for(lambda: not list(nodes_dir.iterdir()), 60, "the machines' directories to go")
