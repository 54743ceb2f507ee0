"""A machine row whose pinned host key is empty or damaged (a hostile or broken row in a team's
shared state) is refused in one line before any connection is made: `fleet extend` on such a lease
printed "internal error: ValueError: not enough values to unpack"."""
from __future__ import annotations

import pytest

from fleet.errors import InfrastructureError
from fleet.models import Machine
from fleet.remote.ssh import open_connection


@pytest.mark.parametrize("host_key", ["", "ssh-ed25519", "ssh-ed25519 not-base64!!", "no-such-type AAAA"])
def test_a_machine_with_no_usable_host_key_is_refused_in_one_line(host_key):
    machine = Machine(id="l-x-n0", lease_id="l-x", node_rank=0, host="127.0.0.1", port=1, user="u",
                      key_path="/nonexistent", host_key=host_key, workdir="/tmp/w")
    with pytest.raises(InfrastructureError) as err:
        open_connection(machine, timeout=1)
    line = str(err.value)
    assert "machine l-x-n0 has no usable host key recorded" in line and "\n" not in line
