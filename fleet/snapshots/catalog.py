"""Finding and describing snapshots: resolve a name/id/prefix, list, show, diff, gc."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from ..errors import IntegrityError, NotFound, UsageError
from .manifest import Manifest
from .store import HEX64, Store, looks_like_id_prefix


def resolve(store: Store, ref: str) -> str:
    """A full id, a unique id prefix (>= 4 hex chars) or a name → the full snapshot id."""
    ref = ref.strip()
    if HEX64.match(ref):
        if store.has_manifest(ref):
            return ref
        raise NotFound(f"no snapshot {ref[:12]} in the store {store.url}", hint="see `fleet snapshot ls`")
    target = None
    try:
        target = store.get_ref(ref)
    except UsageError:
        pass
    if target and looks_like_id_prefix(ref) and any(m.id.startswith(ref) and m.id != target
                                                    for m in store.list_manifests()):
        # A hex name (made before names were checked, or planted in a shared store) never shadows
        # the ids it prefixes: both readings are refused, the user picks.
        raise UsageError(f"{ref!r} is both a snapshot name and the prefix of another snapshot's id",
                         hint="give more of the id; `fleet snapshot rm` with the full id the name points to "
                              "drops the name")
    if target:
        if not HEX64.match(target):    # a ref file is anyone's text in a shared store; an id becomes a path
            raise UsageError(f"snapshot name {ref!r} in the store {store.url} points to {target[:80]!r}, "
                             "which is not a snapshot id", hint=f"`fleet snapshot rm {ref}`, then name it again")
        return target
    if looks_like_id_prefix(ref):
        matches = [m.id for m in store.list_manifests() if m.id.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UsageError(f"snapshot prefix {ref!r} is ambiguous ({len(matches)} matches)", hint="give more characters")
    raise NotFound(f"no snapshot named or prefixed {ref!r} in the store {store.url}", hint="see `fleet snapshot ls`")


def load(store: Store, snapshot_id: str) -> Manifest:
    return Manifest.from_bytes(store.get_manifest(snapshot_id), expected_id=snapshot_id)


def names_by_id(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, sid in store.list_refs().items():
        out.setdefault(sid, []).append(name)
    return out


def list_snapshots(store: Store) -> list[dict[str, Any]]:
    names = names_by_id(store)
    rows = []
    for info in store.list_manifests():
        created = info.created_at.isoformat() if info.created_at else None
        try:
            m = load(store, info.id)
        except NotFound:                # removed since the listing (another user's `rm`): gone
            continue
        except IntegrityError as exc:   # one corrupt (or planted) manifest: listed as such, not the end of `ls`
            rows.append({"id": info.id, "names": names.get(info.id, []), "files": 0, "size": 0, "chunks": 0,
                         "created_at": created, "damaged": exc.one_line()})
            continue
        rows.append({"id": info.id, "names": names.get(info.id, []), "files": len(m.files()),
                     "size": m.total_size, "chunks": len(m.chunk_ids()), "created_at": created})
    return rows


def show(store: Store, snapshot_id: str) -> dict[str, Any]:
    m = load(store, snapshot_id)
    return {"id": snapshot_id, "names": names_by_id(store).get(snapshot_id, []), "files": len(m.files()),
            "size": m.total_size, "chunks": len(m.chunk_ids()), "unique_chunk_bytes": m.unique_chunk_bytes(),
            "deleted": m.deleted, "entries": [e.to_json() for e in m.entries]}


@dataclass
class Diff:
    added: list[str]
    removed: list[str]
    changed: list[str]
    unchanged: int
    shared_bytes: int      # bytes of B's chunks already present in A (what a sync from A→B saves)
    new_bytes: int

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def diff(store: Store, a: str, b: str) -> Diff:
    ma, mb = load(store, a).by_path(), load(store, b).by_path()
    added = sorted(set(mb) - set(ma))
    removed = sorted(set(ma) - set(mb))
    changed, same = [], 0
    for p in sorted(set(ma) & set(mb)):
        ea, eb = ma[p], mb[p]
        if (ea.type, ea.mode, ea.sha256, ea.target) != (eb.type, eb.mode, eb.sha256, eb.target):
            changed.append(p)
        else:
            same += 1
    a_chunks = {h for e in ma.values() for h, _ in e.chunks}
    b_chunks = {h: n for e in mb.values() for h, n in e.chunks}
    shared = sum(n for h, n in b_chunks.items() if h in a_chunks)
    return Diff(added, removed, changed, same, shared, sum(b_chunks.values()) - shared)


def gc(store: Store, *, grace_s: float = 3600, dry_run: bool = False) -> dict[str, int]:
    """Delete chunks no manifest references. Chunks younger than `grace_s` are kept: a create still in
    progress has written its chunks but not yet its manifest. Refused while a write is announced
    (store_guard: a writer may have found an unreferenced chunk present and not written it); a
    writer that starts meanwhile waits for gc to end. A dry run deletes nothing and takes no part."""
    import math
    if not (isinstance(grace_s, (int, float)) and math.isfinite(grace_s) and grace_s >= 0):
        # -1, nan or -inf made every unreferenced chunk and temporary file "old": a create in progress lost them
        raise UsageError(f"--grace must be a finite number of seconds ≥ 0, got {grace_s!r}")
    if dry_run:
        return _collect(store, grace_s, None)
    from .store_guard import GcGuard
    with GcGuard(store) as guard:
        return _collect(store, grace_s, guard)


def _collect(store: Store, grace_s: float, guard) -> dict[str, int]:
    live: set[str] = set()
    for info in store.list_manifests():
        if guard is not None:
            guard.touch()
        try:
            live |= load(store, info.id).chunk_ids()
        except NotFound:                # removed since the listing: its chunks are no longer its
            continue
    deleted = 0
    for h in list(store.iter_chunks(older_than_s=grace_s)):
        if h not in live:
            if guard is not None:
                guard.touch()
                store.delete_chunk(h)
            deleted += 1
    tmp = 0 if guard is None else store.clean_tmp(grace_s)
    return {"deleted_chunks": deleted, "live_chunks": len(live), "temp_files_removed": tmp}


def remove(store: Store, ref: str, referenced_by: Callable[[str], list[str]]) -> dict[str, Any]:
    """`snapshot rm`: a name drops that name; an id (or prefix) drops every name of that snapshot.
    A snapshot left without names loses its manifest too, unless a run record references it (a
    rerun must stay possible); its chunks are freed by a later `gc` (which keeps every chunk any
    remaining snapshot uses)."""
    try:
        named = store.get_ref(ref)
    except UsageError:
        named = None
    if named and looks_like_id_prefix(ref):
        resolve(store, ref)   # refused when the name shadows another snapshot's id: which one was meant?
    sid = named or resolve(store, ref)
    names = names_by_id(store).get(sid, [])
    dropped = [ref] if named else names
    for name in dropped:
        store.delete_ref(name)
    left = [n for n in names if n not in dropped]
    runs = referenced_by(sid)
    removed = not left and not runs and store.has_manifest(sid)
    if removed:
        store.delete_manifest(sid)
    return {"id": sid, "names_removed": dropped, "names_left": left, "manifest_removed": removed,
            "kept_for_runs": runs}


def snapshots_table(rows: list[dict]):
    """`fleet snapshot ls` (list_snapshots' rows) as the shared table model."""
    from ..render import Column, Table
    from ..render.units import human_size
    return Table([Column("id", no_wrap=True), Column("names"), Column("files"), Column("size"), Column("created")],
                 [(r["id"][:12], ("DAMAGED: " + r["damaged"]) if r.get("damaged") else ", ".join(r["names"]) or "-",
                   str(r["files"]), human_size(r["size"]), (r["created_at"] or "-")[:19]) for r in rows],
                 empty="no snapshots")
