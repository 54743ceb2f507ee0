"""Holds the local provider inside its `lease` call, for the fault matrix only.

Loaded through PYTHONPATH by the `fleet up` under test (tests/faults/test_kill_inside_lease.py):
with FLEET_FAULTS_HOLD_LEASE=N, every machine of rank >= N is fully made (directory, watchdog,
sshd) and then its start-up thread sleeps instead of returning, so `lease()` never returns and the
provider never reports those machines: the window between "the machine exists" and "the
controller knows" is held open until the test SIGKILLs the controller. Each held machine touches
a file in FLEET_FAULTS_HOLD_MARKS. Only the `fleet` process is patched; the variables are removed
so the machines' own processes (watchdog, sshd, agent) run unpatched.
"""
import os
import sys

_rank_from = os.environ.pop("FLEET_FAULTS_HOLD_LEASE", "")
_marks = os.environ.pop("FLEET_FAULTS_HOLD_MARKS", "")
if _rank_from and os.path.basename(sys.argv[0] if sys.argv else "") == "fleet":
    import time
    from pathlib import Path

    # The provider imports start_sshd from this module when it makes machines, so patch it here.
    import fleet.providers.local.sshd as _local

    _real_start_sshd = _local.start_sshd

    def _held_start_sshd(directory, machine_id, *args, **kwargs):
        started = _real_start_sshd(directory, machine_id, *args, **kwargs)
        if int(machine_id.rsplit("-n", 1)[1]) >= int(_rank_from):
            Path(_marks).mkdir(parents=True, exist_ok=True)
            (Path(_marks) / machine_id).write_text("")
            time.sleep(600)
        return started

    _local.start_sshd = _held_start_sshd
