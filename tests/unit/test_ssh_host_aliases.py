"""Which host names are one machine (fleet/providers/ssh/aliases.py), read from ~/.ssh/config: the
same address and port is one machine unless a different jump host reaches each, or both have
pinned host keys that differ (one private address in two sites)."""
from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.providers.ssh.aliases import refuse_aliases
from fleet.providers.ssh.hosts import Host


@pytest.fixture
def ssh_config(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(
        "Host east-a100\n  HostName 10.0.0.5\n  ProxyJump bastion.east\n"
        "Host west-a100\n  HostName 10.0.0.5\n  ProxyJump bastion.west\n"
        "Host gpu1\n  HostName 10.0.0.9\nHost box1\n  HostName 10.0.0.9\n")


def test_one_address_behind_two_jump_hosts_is_two_machines(ssh_config):
    refuse_aliases([Host("east-a100", "east-a100"), Host("west-a100", "west-a100")])


def test_aliases_of_one_address_are_one_machine_unless_their_pinned_keys_differ(ssh_config):
    with pytest.raises(UsageError, match=r"hosts 'box1' and 'gpu1' are one machine \(the same address \(10.0.0.9:22\)\)"):
        refuse_aliases([Host("gpu1", "gpu1"), Host("box1", "box1")])
    refuse_aliases([Host("gpu1", "gpu1", host_key="ssh-ed25519 AAAA1"), Host("box1", "box1", host_key="ssh-ed25519 AAAA2")])
    refuse_aliases([Host("gpu1", "gpu1", port=22), Host("gpu1-b", "gpu1", port=2222)])    # two ports: two sshd


def test_one_pinned_key_under_two_addresses_is_one_machine(ssh_config):
    with pytest.raises(UsageError, match="the same host key"):
        refuse_aliases([Host("a", "10.1.1.1", host_key="ssh-ed25519 KEY x"), Host("b", "10.2.2.2", host_key="ssh-ed25519 KEY y")])


def test_hosts_add_applies_the_same_test_as_a_lease(ssh_config):
    """`fleet hosts add` refused one private address behind a second bastion (another site's machine,
    its own key) as "the same address", while a lease accepted the pair; both now ask one question."""
    from fleet.providers.ssh.enrol import _refuse_same_machine
    east = Host("east-a100", "east-a100", host_key="ssh-ed25519 EAST")
    _refuse_same_machine([east], Host("west-a100", "west-a100", host_key="ssh-ed25519 WEST"))
    with pytest.raises(UsageError, match=r"host 'gpu9' is host 'east-a100' again \(the same host key\)"):
        _refuse_same_machine([east], Host("gpu9", "10.9.9.9", host_key="ssh-ed25519 EAST comment"))
