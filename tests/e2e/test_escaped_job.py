"""A job that moves itself out of its machine's cgroup unit (into fleet's namespace directory) and
drops the machine's tag is still ended by `fleet down` while it is still under the machine's sshd (a
red-team finding: the unit was killed first, which ended sshd, and the job, no longer in the unit,
untagged and orphaned, lived on). One that also detaches from its session is beyond this: a job
running as the same user, or as root, can always leave (SECURITY.md)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from fleet import isolation
from fleet.providers.local import LocalProvider
from fleet.remote.agent import containment
from fleet.remote.ssh import connect


def test_a_job_that_leaves_its_unit_and_its_tag_is_still_ended(local_lease, tmp_path):
    lease = local_lease()
    machine = lease.machines[0]
    unit = isolation.unit_for(Path(machine.provider_ref["dir"]))
    if unit is None or not os.path.isdir(unit):
        pytest.skip("no cgroup v2 unit on this host")
    pid_file = tmp_path / "job.pid"
    escape = (f"echo $$ > {os.path.dirname(unit)}/cgroup.procs && echo $$ > {pid_file} && "
              "exec env -u FLEET_MACHINE_ID sleep 300")
    session = connect(machine)

    def run_job() -> None:
        try:
            session.run(["sh", "-c", escape], check=False, timeout=None)
        except Exception:  # noqa: BLE001 — the machine is released under it: its connection ends
            pass
    job = threading.Thread(target=run_job, daemon=True)
    job.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (pid_file.exists() and pid_file.read_text().strip()):
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    start = containment.start_time(pid)
    try:
        assert b"FLEET_MACHINE_ID" not in Path(f"/proc/{pid}/environ").read_bytes()
        assert "/work" not in Path(f"/proc/{pid}/cgroup").read_text()        # it left the unit's leaf
        LocalProvider().release(lease)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and containment.same_process(pid, start):
            time.sleep(0.05)
        assert not containment.same_process(pid, start), "the job that left its unit outlived fleet down"
    finally:
        if containment.same_process(pid, start):
            os.kill(pid, 9)
        session.close()
