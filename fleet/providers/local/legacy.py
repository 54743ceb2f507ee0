"""Local machines an earlier fleet made: a kept lease still up when its team upgrades.

Earlier fleets wrote a bare pid into sshd.pid and watchdog.pid; fleet now writes "PID STARTTIME"
and never signals a bare pid it cannot prove (containment.parse_record). Read that way, `fleet down`
signalled neither process of such a machine and deleted its directory under the old watchdog, which
then failed writing its `expired` file there and never ended sshd: the sshd listened on for good.
Here a bare pid counts only once the process proves which it is (its command line names this
machine's sshd_config or state directory), with its start time read around that proof."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from ...remote.agent import containment


def proven_pid(path, proof) -> tuple[int, int] | None:
    """(pid, start) from an earlier fleet's bare-pid file, if `proof(pid)` holds for that process."""
    text = containment.read_small(path).strip()
    if not text.isdigit() or int(text) <= 1:
        return None
    pid = int(text)
    start = containment.start_time(pid)
    if start is None or not proof(pid) or containment.start_time(pid) != start:
        return None   # gone, another process, or the pid reused while we looked
    return pid, start


def end_watchdog(directory: Path, grace_s: float) -> None:
    """An earlier fleet's watchdog, sent SIGTERM, ends its machine itself (the experiment's tagged
    processes, then sshd) and exits: waited for before the directory it writes into goes."""
    from ...remote.agent.agent_args import is_watchdog
    state = os.path.join(directory, "root", ".fleet")
    watchdog = proven_pid(os.path.join(state, "watchdog.pid"), lambda pid: is_watchdog(pid, state))
    held = containment.verify(*watchdog) if watchdog else None
    if held is None:
        return
    held.signal(signal.SIGTERM)
    held.close()
    deadline = time.monotonic() + grace_s + 3
    while containment.same_process(*watchdog) and time.monotonic() < deadline:
        time.sleep(0.05)
