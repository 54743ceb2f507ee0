"""fleet's own state is never data or code: a FLEET_HOME inside the tree being snapshotted (the
state database, the store itself, caches, lease keys) and a file:// store inside it are left out, as
a run's `runs/` is (sources._data_excludes). Else each run shipped state.db to its machines and
wrote the store into itself: a new snapshot every run."""
from __future__ import annotations

import os
from pathlib import Path


def own_state_under(root: Path, store=None) -> tuple[str, ...]:
    """Excludes (relative paths ending in "/", as scan_tree takes them) for FLEET_HOME and the store's
    root where they lie inside `root`, a directory."""
    from ..paths import fleet_home
    from .local_store import LocalStore
    try:
        top = root.resolve()
        if not top.is_dir():
            return ()
        inside = [fleet_home(create=False).resolve()]
        if isinstance(store, LocalStore):
            inside.append(store.root.resolve())
    except (OSError, RuntimeError):
        return ()
    return tuple(sorted({p.relative_to(top).as_posix() + "/" for p in inside if p != top and p.is_relative_to(top)}))


# Where the user's credentials live (relative to the home directory): no `[data]` entry may be, lie
# in or hold one. A fleet.toml is often someone else's (a cloned repository): `[data] k = "/home/me/.aws"`
# or a committed link to it would ship the user's keys to the store, perhaps a team's, and to every machine.
CREDENTIAL_PLACES = (".ssh", ".aws", ".gnupg", ".config/gcloud", ".azure", ".kube", ".docker", ".netrc",
                     ".git-credentials", ".pgpass", ".config/gh", ".password-store")


def private_place(path: Path) -> str | None:
    """The credential place or fleet state that the resolved `path` is, lies in or (credentials)
    holds, said as the user knows it; None when it is none of them."""
    from ..paths import fleet_home
    home = Path.home()
    try:
        state = fleet_home(create=False).resolve()
        if path == state or path.is_relative_to(state):     # lease keys, the state database, the store
            return f"{state} (FLEET_HOME: lease keys, the state database)"
        for place in CREDENTIAL_PLACES:
            full = home / place
            if not os.path.lexists(full):
                continue
            for where in {full.absolute(), full.resolve()}:
                if path == where or path.is_relative_to(where) or where.is_relative_to(path):
                    return f"~/{place}"
    except (OSError, RuntimeError):
        return None
    return None
