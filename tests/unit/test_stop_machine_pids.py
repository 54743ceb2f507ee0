"""`fleet down` of a machine with verified-pids isolation (FLEET_ISOLATION=pids, or a host without
cgroup rights) whose watchdog is gone still ends the machine's tagged processes. The local provider
hands stop_machine the path its unit would have, made or not: a unit that was never made counted as
the machine's containment, so the tagged processes were skipped and outlived `fleet down`."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from fleet.remote.agent import agent
from fleet.isolation import namespace
from fleet.remote.agent import containment as c

pytestmark = pytest.mark.skipif(not c.cgroup2_mount(), reason="needs a cgroup v2 mount to name a unit under")


def test_a_unit_that_was_never_made_does_not_hide_the_tagged_processes(tmp_path):
    machine_id = f"l-pidsdown{os.getpid()}-n0"
    state = tmp_path / machine_id / "root" / ".fleet"
    state.mkdir(parents=True)
    (state / "isolation.json").write_text(json.dumps({"level": "pids", "sweep_tagged": False}))
    never_made = c.unit_path(namespace(str(tmp_path)), machine_id)
    assert never_made and not os.path.exists(never_made)
    experiment = subprocess.Popen(["sleep", "300"], env={**os.environ, "FLEET_MACHINE_ID": machine_id})
    try:
        assert agent.stop_machine(str(state), machine_id, unit=never_made, grace_s=0.1)
        assert experiment.wait(timeout=15) is not None, "the machine's tagged process outlived fleet down"
    finally:
        if experiment.poll() is None:
            experiment.kill()
        experiment.wait()
