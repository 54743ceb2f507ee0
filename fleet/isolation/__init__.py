"""Per-machine containment, as the controller sees it: which isolation a machine gets, and its unit.

The mechanics live in fleet/remote/agent/containment.py (standard library only, shipped onto every
machine next to the agent); this package decides the level for machines this process starts
(the local provider, the AWS sandbox) and finds their units again to end or sweep them.

Levels: "cgroup" (a cgroup v2 unit per machine: nothing escapes, nothing foreign is touched) and
"pids" (pids verified by start time plus the machine's tag: nothing foreign is touched, but a
process that drops the tag and leaves its parent's tree escapes). FLEET_ISOLATION=pids forces the
fallback (to test it, or where cgroups are managed by something else); =cgroup makes its absence an
error; unset or "auto" takes the best available.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import EnvironmentProblem, UsageError
from ..remote.agent import containment

CGROUP = containment.CGROUP
PIDS = containment.PIDS
LEVELS = ("auto", CGROUP, PIDS)


def namespace(key: str) -> str:
    """A short, stable directory name under <cgroup2>/fleet/ for everything under one FLEET_HOME
    (or one team host's lease root). Named here, by the controller: the agent only checks names."""
    import hashlib
    return "h-" + hashlib.sha256(str(key).encode()).hexdigest()[:12]


def requested() -> str:
    value = (os.environ.get("FLEET_ISOLATION") or "auto").strip().lower()
    if value not in LEVELS:
        raise UsageError(f"FLEET_ISOLATION={value!r} is not one of {', '.join(LEVELS)}")
    return value


def _machines_key(machines_dir: Path) -> str | None:
    """What names the namespace of a machines directory: its path and the directory itself (device
    and inode). The path alone is shared by two containers on one host that see the host's cgroup
    hierarchy (each with FLEET_HOME=/root/.fleet): `fleet down --all` in one swept the other's running
    machines as orphans. None when the directory is not there (so no unit of its is either)."""
    d = Path(machines_dir).resolve()
    try:
        st = os.stat(d)
    except OSError:
        return None
    return f"{d}\0{st.st_dev}:{st.st_ino}"


def unit_for(machine_dir: Path) -> str | None:
    """Where the cgroup unit of a machine directory lives (whether or not it exists): derived from
    the directory and its parent alone, so any process that can see them can find the unit again."""
    d = Path(machine_dir).resolve()
    key = _machines_key(d.parent)
    return None if key is None else containment.unit_path(namespace(key), d.name)


def prepare_local_unit(machine_dir: Path) -> str | None:
    """The machine's cgroup unit, created (idempotently) when cgroup isolation is possible here and
    wanted; None means verified pids. FLEET_ISOLATION=cgroup without a writable cgroup v2 fails."""
    wanted = requested()
    if wanted == PIDS:
        return None
    unit = unit_for(machine_dir)
    try:
        if unit is None:
            raise OSError("no cgroup v2 hierarchy is mounted")
        return containment.create_unit(unit)
    except OSError as exc:
        if unit and os.path.isdir(unit):
            containment.remove_unit(unit)
        if wanted == CGROUP:
            raise EnvironmentProblem(f"FLEET_ISOLATION=cgroup, but no writable cgroup v2 here: {exc}",
                                     hint="run as root, or delegate a cgroup subtree; unset FLEET_ISOLATION "
                                          "to fall back to verified pids") from None
        return None


def existing_unit(machine_dir: Path) -> str | None:
    unit = unit_for(machine_dir)
    return unit if unit and os.path.isdir(unit) else None


def namespace_dir(machines_dir: Path) -> str | None:
    """The cgroup directory holding the units of every machine directory in `machines_dir`."""
    mount, key = containment.cgroup2_mount(), _machines_key(Path(machines_dir))
    if not mount or key is None:
        return None
    return os.path.join(mount, containment.BASE, namespace(key))


def leftover_units(machines_dir: Path) -> list[str]:
    ns = namespace_dir(machines_dir)
    if not ns or not os.path.isdir(ns):
        return []
    return sorted(os.path.join(ns, name) for name in os.listdir(ns) if os.path.isdir(os.path.join(ns, name)))


def sweep_units(machines_dir: Path) -> list[str]:
    """End and remove every unit under `machines_dir`'s namespace (machines whose directory is gone).
    Returns the units that were there."""
    found = leftover_units(machines_dir)
    for unit in found:
        containment.kill_unit(unit, timeout=30)
        containment.remove_unit(unit)
    return found
