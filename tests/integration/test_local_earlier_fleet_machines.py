"""A kept local lease an earlier fleet made, seen and ended by this one after an upgrade.

Earlier fleets wrote bare pids into sshd.pid and watchdog.pid. This fleet showed such a machine as
`gone` while its sshd listened, and `fleet down` deleted its directory without ending sshd (the
earlier watchdog then failed writing into the deleted directory): an sshd left for good."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from fleet.providers.local import LocalProvider
from fleet.providers.local.sshd import pid_alive
from fleet.remote.agent import containment
from tests.conftest import wait_until


def _as_an_earlier_fleet_wrote_it(machine_dir: Path) -> int:
    """Bare pids in both files; the watchdog itself gone (an earlier one that fails once its
    directory is deleted ends nothing). Returns the sshd's pid."""
    sshd = containment.read_pid_file(machine_dir / "sshd.pid")[0]
    watchdog_file = machine_dir / "root" / ".fleet" / "watchdog.pid"
    watchdog = containment.read_pid_file(watchdog_file)[0]
    os.kill(watchdog, signal.SIGKILL)
    assert wait_until(lambda: not pid_alive(watchdog), 5)
    (machine_dir / "sshd.pid").write_text(str(sshd))
    watchdog_file.write_text(str(watchdog))
    return sshd


def test_an_earlier_fleets_machine_shows_up_and_down_ends_its_sshd(local_lease, fleet_home, foreign):
    lease = local_lease()
    machine_dir = fleet_home / "machines" / lease.machines[0].id
    sshd = _as_an_earlier_fleet_wrote_it(machine_dir)
    provider = LocalProvider()
    assert [s.state for s in provider.describe(lease)] == ["running"]
    provider.release(lease)
    assert wait_until(lambda: not pid_alive(sshd), 5), "the earlier fleet's sshd still runs"
    assert not machine_dir.exists()
    assert foreign.poll() is None   # nothing not fleet's was signalled


def test_a_bare_pid_of_another_process_is_never_signalled(local_lease, fleet_home, foreign):
    lease = local_lease()
    machine_dir = fleet_home / "machines" / lease.machines[0].id
    _as_an_earlier_fleet_wrote_it(machine_dir)
    (machine_dir / "sshd.pid").write_text(str(foreign.pid))
    (machine_dir / "root" / ".fleet" / "watchdog.pid").write_text(str(foreign.pid))
    provider = LocalProvider()
    assert [s.state for s in provider.describe(lease)] == ["gone"]
    provider.release(lease)
    assert foreign.poll() is None
