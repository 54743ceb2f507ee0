"""A lease's meta says how other computers reach its Slurm cluster (`slurm_login`, `slurm_jump`):
`fleet down LEASE` and `fleet status` elsewhere build their ssh command line from it. Lease rows
live in the shared PostgreSQL state, which any teammate can write: a planted lease whose
slurm_login starts with '-' was read by ssh as an option (-oProxyCommand=…), running a command on
the computer of whoever ran `fleet down` on it. [slurm] login in fleet.toml is refused at parse
time; the same values from a lease are refused before ssh runs."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from fleet.errors import FleetError
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings


@pytest.mark.parametrize("key", ["slurm_login", "slurm_jump"])
def test_a_planted_lease_login_or_jump_that_ssh_would_read_as_an_option_runs_nothing(tmp_path, key):
    canary = tmp_path / "pwned"
    meta = {"slurm_login": "me@login.example", key: f"-oProxyCommand=touch {canary}"}
    lease = SimpleNamespace(id="l-x", meta=meta, machines=[])
    here = SlurmProvider(SlurmSettings())
    with pytest.raises(FleetError, match="refused"):
        here.login_shell(lease).run("true", check=False, timeout=20)
    assert not canary.exists()
    with pytest.raises(FleetError, match="refused"):
        here._commands_for(lease).queue()
    assert not canary.exists()
