"""Each node's address is its NodeAddr from `sinfo --Node --nodes=…` (where its sshd listens and the
run connects). sinfo also filters by SINFO_PARTITION from the environment (`man sinfo`): a real
22.05 sinfo with SINFO_PARTITION naming another partition, or set empty, prints nothing for the
lease's nodes, and fleet then used the node's name as its address, one the controller may not
resolve (NodeName=gpu01 NodeAddr=10.0.0.5). Here with a fake sinfo that filters as the real one."""
from __future__ import annotations

import pytest

from fleet.providers.slurm.commands import LocalRunner
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings

FAKE_SINFO = """#!/bin/sh
[ -n "${SINFO_PARTITION+set}" ] && exit 0
echo "gpu01|10.0.0.5"
echo "gpu02|10.0.0.6"
"""


@pytest.mark.parametrize("partition", ["debug", ""])
def test_a_users_sinfo_partition_does_not_change_the_nodes_addresses(tmp_path, monkeypatch, partition):
    (tmp_path / "sinfo").write_text(FAKE_SINFO)
    (tmp_path / "sinfo").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setenv("SINFO_PARTITION", partition)
    provider = SlurmProvider(SlurmSettings(), runner=LocalRunner())
    assert provider._addresses(("gpu01", "gpu02")) == {"gpu01": "10.0.0.5", "gpu02": "10.0.0.6"}
