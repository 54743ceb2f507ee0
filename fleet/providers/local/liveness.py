"""Whether a local machine is up, from its recorded provider_ref alone: its sshd (pid, and the pid
file in its directory naming that pid) alive and its watchdog not yet expired. `fleet status` reads
this for every local machine every time (a few stat calls, no Lease or Machine objects);
LocalProvider.describe gives the same answer."""
from __future__ import annotations

import os


def machine_state(ref: dict) -> tuple[str, str]:
    """(state, detail) of the machine whose provider_ref is `ref`: ("running", ""), ("gone", "")
    once its watchdog expired it, or ("gone", "sshd not running")."""
    if not isinstance(ref, dict):
        return "gone", "its recorded provider_ref is not an object"
    directory = str(ref.get("dir", ""))
    try:
        pid = int(ref.get("sshd_pid") or 0)
    except (TypeError, ValueError):   # a damaged or planted row: one machine's answer, not `fleet status`'s end
        return "gone", f"its recorded sshd pid {ref.get('sshd_pid')!r} is not a pid"
    if pid and os.path.exists(directory or ".") and _pid_file_matches(directory, pid):   # proves it alive too
        expired = os.path.exists(os.path.join(directory, "root", ".fleet", "expired"))
        return ("gone", "") if expired else ("running", "")
    return "gone", "sshd not running"


def _pid_file_matches(directory: str, pid: int) -> bool:
    from ...remote.agent.containment import read_small   # a FIFO planted there must not hang `fleet status`
    from ...remote.agent.containment import same_process
    try:
        recorded, start = (int(x) for x in read_small(os.path.join(directory, "sshd.pid")).split()[:2])
    except (ValueError, IndexError):   # "PID STARTTIME"; a bare pid: an earlier fleet's machine (legacy.py)
        from .legacy import proven_pid
        from .sshd import _runs_config
        return proven_pid(os.path.join(directory, "sshd.pid"),
                          lambda p: p == pid and _runs_config(p, os.path.join(directory, "sshd_config"))) is not None
    return recorded == pid and same_process(pid, start)   # a reused pid is not the machine's sshd
