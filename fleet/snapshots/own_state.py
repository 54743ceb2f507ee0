"""fleet's own state is never data or code: a FLEET_HOME inside the tree being snapshotted (the
state database, the store itself, caches, lease keys) and a file:// store inside it are left out, as
a run's `runs/` is (sources._data_excludes). Else each run shipped state.db to its machines and
wrote the store into itself: a new snapshot every run."""
from __future__ import annotations

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
