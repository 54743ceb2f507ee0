"""A package set's wheels in the store are checked before they are trusted.

The snapshot is found by its name, `env-<set hash>`, and set hashes are predictable: anyone who can
write a shared store could name a snapshot of other wheels so, and every run and rerun with that set
would record and install them. So a snapshot is used for a set only when its content is that set:
`constraints.txt` is the set's pins, and every wheel, read from its bytes (its RECORD must list
exactly its files with their true hashes, all going into site-packages), is one recorded package
with the recorded version and content hash (probe.py's `wheel_package`, the hash the probe reports
once it is installed); the set hash of those equals the recorded one.

A snapshot id is the hash of its manifest, which names every chunk by hash: a verdict on an id holds
for good, so it is remembered under $FLEET_HOME (a torch set's GiBs are read once per computer). The
default store inside a private FLEET_HOME is not checked: no one else can write a name there.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from .model import MachineEnvironment, Package, package_set_hash

CONSTRAINTS = "constraints.txt"


def _verdict_file(snapshot_id: str) -> Path:
    from ..paths import subdir
    return subdir("cache") / "env-wheels" / snapshot_id


def remember(snapshot_id: str, env: MachineEnvironment) -> None:
    """Best effort (a verdict not kept is only checked again): a unique temporary name, since two
    runs on one computer (sweep trials) may finish the same check at once."""
    import os
    path = _verdict_file(snapshot_id)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(prefix=f".{snapshot_id[:16]}.", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            fh.write(env.packages_hash + "\n")
        os.replace(tmp, path)
    except OSError:
        pass


def _private(store) -> bool:
    """The store is this user's alone (inside FLEET_HOME, and every directory from FLEET_HOME down
    to it this user's and writable by no one else): no one else can have named a snapshot in it,
    so there is nothing to check."""
    import os
    import stat

    from ..paths import fleet_home
    root = getattr(store, "root", None)
    if root is None:
        return False
    try:
        home, where = fleet_home().resolve(), Path(root).resolve()
        if not where.is_relative_to(home):
            return False
        rel = where.relative_to(home).parts
        for part in [home] + [home.joinpath(*rel[:n + 1]) for n in range(len(rel))]:
            st = os.stat(part)
            if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) & 0o022:
                return False      # a directory on the way someone else may write: not private
        return True
    except (OSError, ValueError):
        return False


def wheels_problem(store, snapshot_id: str, env: MachineEnvironment) -> str | None:
    """Why snapshot `snapshot_id` does not hold exactly `env`'s package set; None when it does."""
    if _private(store):
        return None
    try:
        if _verdict_file(snapshot_id).read_text().strip() == env.packages_hash:
            return None
    except OSError:
        pass
    problem = _check(store, snapshot_id, env)
    if problem is None:
        remember(snapshot_id, env)
    return problem


def _check(store, snapshot_id: str, env: MachineEnvironment) -> str | None:
    from ..errors import FleetError
    from ..snapshots import load
    from ..snapshots.restore import read_chunk
    from .probe import wheel_package
    try:
        manifest = load(store, snapshot_id)
    except FleetError as exc:
        return exc.one_line()
    odd = [e.path for e in manifest.entries if e.type != "file" or "/" in e.path
           or (e.path != CONSTRAINTS and not e.path.endswith(".whl"))]
    if odd:
        return f"it holds {odd[0][:80]!r}, which is not a wheel of the set"
    got: list[Package] = []
    constraints = None
    with tempfile.TemporaryDirectory(prefix="fleet-wheels-check-") as tmp:
        for e in manifest.files():
            try:
                if e.path == CONSTRAINTS:
                    constraints = b"".join(read_chunk(store, h, e.path, snapshot_id) for h, _ in e.chunks)
                    continue
                path = Path(tmp) / e.path
                with open(path, "wb") as fh:    # one wheel at a time: torch's is GiBs
                    for h, _ in e.chunks:
                        fh.write(read_chunk(store, h, e.path, snapshot_id))
                w = wheel_package(str(path), strict=True)
                path.unlink()
            except FleetError as exc:
                return exc.one_line()
            except ValueError as exc:   # wheel_package's own: what is wrong with the wheel
                return str(exc)
            except Exception as exc:  # noqa: BLE001 — a wheel that is not one (bad zip, no METADATA)
                return f"{e.path[:80]} is not a readable wheel ({type(exc).__name__}: {str(exc)[:120]})"
            got.append(Package(w["name"], w["version"], w["sha256"]))
    if constraints != "".join(f"{p.pin}\n" for p in env.packages).encode():
        return "its constraints.txt is not the recorded package list"
    if package_set_hash(got) != env.packages_hash:
        theirs = {(p.name.lower(), p.version, p.sha256) for p in got}
        other = next((p for p in env.packages if (p.name.lower(), p.version, p.sha256) not in theirs), None)
        return (f"it has no wheel of {other.name} {other.version} with the recorded content" if other
                else "it holds wheels of packages the set does not have")
    return None
