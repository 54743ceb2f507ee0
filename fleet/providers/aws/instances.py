"""EC2 instances as fleet sees them: a lease's machine states from DescribeInstances, the UTC tag
format, and waiting for a new instance's sshd."""
from __future__ import annotations

import socket
import time
from datetime import datetime, timezone
from typing import Any, Callable

from ...errors import MachineUnreachable
from ...models import Lease, MachineState


def lease_states(lease: Lease, found: dict[str, dict[str, Any]]) -> list[MachineState]:
    """The lease's machines as EC2 reports them (`found`: its instances by id), and any instance
    tagged with the lease that fleet never recorded (launched by a controller killed inside lease())."""
    states = []
    recorded = {m.id for m in lease.machines}
    for iid, inst in sorted(found.items()):
        if iid not in recorded:
            name = inst["State"]["Name"]
            states.append(MachineState(iid, {"running": "running", "pending": "pending"}.get(name, "gone"),
                                       f"{name}; not in fleet's state", unrecorded=True,
                                       started_at=utc(inst.get("LaunchTime"))))
    for m in lease.machines:
        inst = found.get(m.id)
        if inst is None:
            states.append(MachineState(m.id, "gone", "no such instance"))
            continue
        name = inst["State"]["Name"]
        mapped = {"running": "running", "pending": "pending"}.get(name, "gone")
        states.append(MachineState(m.id, mapped, "" if mapped != "gone" else
                                   f"{name}: {inst.get('StateReason', {}).get('Message', '')}".strip(": ")))
    return states


def iso_tag(when: datetime) -> str:
    return when.astimezone(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def utc(value) -> datetime | None:
    """botocore gives LaunchTime as an aware datetime; be lenient with text."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str) and value:
        try:
            return utc(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def wait_tcp(host: str, port: int, timeout_s: float, sleep: Callable[[float], None]) -> None:
    """Real instances only: sshd answers a minute or so after "running"."""
    end = time.monotonic() + timeout_s
    delay = 1.0
    while True:
        try:
            with socket.create_connection((host, port), timeout=5):
                return
        except OSError as exc:
            if time.monotonic() >= end:
                raise MachineUnreachable(f"{host}:{port} did not answer within {timeout_s:.0f}s ({exc})",
                                         hint="check the security group allows SSH from this address") from None
        sleep(delay)
        delay = min(delay * 2, 10.0)
