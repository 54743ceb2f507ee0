"""`fleet reap` ends a detached run whose supervisor is gone. A supervisor that is only silent (it
has not reached the state for STALE_BEATS periods: the state restarting, a network cut between the
login node and the database) but still runs its run is not gone: reap asked it to stop (SIGTERM,
as `fleet down` does), which cancelled a healthy run, and reap does not resume a cancelled one. A
supervisor reap proves is still running (the same proof `fleet down` makes before signalling) is
left alone with a line saying so."""
from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest

from fleet.models import Lease, Machine, utcnow
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings
from fleet.run.login_launch import SUPERVISOR_DIR
from tests.unit.test_stop_on_login_node import SUPERVISOR_CODE, HereShell


@pytest.fixture
def supervisor(tmp_path):
    remote = str(tmp_path / SUPERVISOR_DIR / "r-l-slurm")
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR_CODE, remote])
    time.sleep(0.3)
    yield proc, remote
    proc.kill()
    proc.wait()


def test_a_silent_supervisor_that_still_runs_is_left_alone(fleet_home, monkeypatch, supervisor):
    from fleet.run.reap_silent import silent_runs
    from fleet.state import open_state
    proc, remote = supervisor

    class Here(SlurmProvider):
        def login_shell(self, lease=None):
            return HereShell([])

    monkeypatch.setattr("fleet.providers.registry.get", lambda name, **kw: Here(SlurmSettings(login="me@here")))
    state = open_state()
    now = utcnow()
    machine = Machine(id="l-slurm-n0", lease_id="l-slurm", node_rank=0, host="node1", port=0, user="u",
                      key_path="", host_key="", workdir="/w", provider_ref={"job_id": "7"})
    state.save_lease(Lease(id="l-slurm", provider="slurm", template="t", machines=[machine], created_at=now,
                           deadline=now + timedelta(minutes=5), max_deadline=now + timedelta(minutes=10),
                           user="tester", meta={"slurm_login": "me@here"}))
    state.create_run("r-l-slurm", lease_id="l-slurm", project="p", user="tester", command="train", log_path="l",
                     output_dir="o", meta={"detached": True, "supervised_on": "login node", "supervisor_dir": remote,
                                           "controller": {"pid": proc.pid}})
    state.db.execute("INSERT INTO supervisor_beats (run_id, host, pid, period_s, beat_epoch) VALUES (?, ?, ?, ?, ?)",
                     ("r-l-slurm", "login", proc.pid, 10.0, 1.0))   # not heard from for decades
    found, left = silent_runs(state, None)
    assert found == [] and len(left) == 1, (found, left)
    assert left[0].startswith("lease l-slurm (run r-l-slurm: its supervisor") and "still runs" in left[0], left
    time.sleep(0.2)
    assert proc.poll() is None   # not signalled
