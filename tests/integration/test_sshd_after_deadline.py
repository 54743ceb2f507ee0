"""A machine whose watchdog has already expired never gets an sshd: under load the leasing loop can
reach start_sshd after the machine's deadline, and an sshd started then has nothing to end it."""
from __future__ import annotations

import pytest

from fleet.errors import InfrastructureError
from fleet.keys import generate_ed25519
from fleet.providers.local.sshd import start_sshd
from tests.conftest import processes_under


def test_start_sshd_refuses_a_machine_whose_watchdog_expired(fleet_home, tmp_path):
    machine = fleet_home / "machines" / "l-expired0-n0"
    (machine / "root" / ".fleet").mkdir(parents=True)
    (machine / "root" / ".fleet" / "expired").write_text('{"reason": "deadline"}')
    public = generate_ed25519(tmp_path / "lease_key", comment="test")
    with pytest.raises(InfrastructureError, match="reached its deadline"):
        start_sshd(machine, "l-expired0-n0", public)
    assert not (machine / "sshd_config").exists()
    assert processes_under(machine) == []
