"""Reading snapshots back: verify every chunk, materialise a tree (atomically, read-only if asked)."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import time
from pathlib import Path

from ..deep_trees import rmtree
from ..errors import FleetError, IntegrityError, NotFound
from ..parallel import parallel   # also at interpreter shutdown
from .catalog import load
from .manifest import Manifest, check_relpath
from .store import Store

MARKER = ".fleet-snapshot"   # where older fleets marked a tree, inside it: ignored, gone once rebuilt


def _state_file(dest: Path) -> Path:
    """Which snapshot a materialised tree holds: kept under $FLEET_HOME, keyed by the tree's path."""
    from ..paths import subdir
    return subdir("cache") / "materialised" / hashlib.sha256(str(dest.absolute()).encode()).hexdigest()[:32]


def _walk(root: Path):
    """(rel, path, lstat) of root ("") and of every name under it, never following a link. Not
    os.walk: before Python 3.12 it recurses once per level, so a tree deeper than the stack (a job's
    `cp -r . sub/` in a loop) raised RecursionError."""
    todo = [("", os.fspath(root))]
    while todo:
        rel, path = todo.pop()
        st = os.lstat(path)
        yield rel, path, st
        if stat.S_ISDIR(st.st_mode):
            with os.scandir(path) as it:
                todo += [(f"{rel}/{e.name}" if rel else e.name, e.path) for e in it]


def _record(dest: Path, snapshot_id: str) -> dict:
    """What a second call checks, one lstat per name: every name in the tree, with its mode; a
    file's or link's inode, size, mtime and ctime too (ctime: an edit that kept the size and put the
    mtime back, as `rsync -t` or `touch -r` do, still changes it). A directory's own times are left
    out: a name added and removed again leaves its listing as it was."""
    st = dest.lstat()
    tree = {rel: [s.st_mode] if stat.S_ISDIR(s.st_mode) else
            [s.st_mode, s.st_ino, s.st_size, s.st_mtime_ns, s.st_ctime_ns] for rel, _path, s in _walk(dest)}
    return {"dest": str(dest.absolute()), "dev": st.st_dev, "ino": st.st_ino, "snapshot": snapshot_id, "tree": tree}


def _holds(dest: Path, snapshot_id: str, state: Path) -> bool:
    try:
        rec = json.loads(state.read_text())
        return rec.get("snapshot") == snapshot_id and rec == _record(dest, snapshot_id)   # walked only if it may hold it
    except (OSError, ValueError, AttributeError):    # no record, an older fleet's, no tree, an unreadable one
        return False


def _past_tick(dest: Path, record: dict) -> None:
    """Returns once the filesystem's clock has moved past the last change the record holds. A file
    edited later within that same tick (a jiffy, where the kernel stamps times coarsely) would keep
    size, mtime and ctime, and a second call take the edited tree for the snapshot."""
    last = max([s[4] for s in record["tree"].values() if len(s) > 1] or [0])
    probe = dest.parent / f".{dest.name}.tick-{os.getpid()}"
    try:
        for _ in range(300):        # 3 s: a filesystem with 2-second times (FAT) still settles
            probe.touch()
            if probe.stat().st_mtime_ns > last:
                return
            time.sleep(0.01)
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()


def read_chunk(store: Store, h: str, path: str, snapshot_id: str) -> bytes:
    try:
        data = store.get_chunk(h)
    except NotFound:
        raise IntegrityError(f"snapshot {snapshot_id[:12]}: chunk {h[:12]} of {path} is missing from {store.url}") from None
    if hashlib.sha256(data).hexdigest() != h:
        raise IntegrityError(f"snapshot {snapshot_id[:12]}: chunk {h[:12]} of {path} is corrupt in {store.url}")
    return data


def verify(store: Store, snapshot_id: str, *, deep: bool = True) -> list[str]:
    """Every problem, one line each (chunk and path named); empty when the snapshot is whole.
    deep=False checks presence only."""
    try:
        manifest = load(store, snapshot_id)
    except FleetError as exc:
        return [exc.one_line()]
    owners: dict[str, str] = {}
    sizes: dict[str, int] = {}
    for e in manifest.files():
        for h, n in e.chunks:
            owners.setdefault(h, e.path)
            sizes[h] = n
    if not deep:
        present = store.has_chunks(sizes)     # with their sizes: one cut short is not whole
        named = store.has_chunks([h for h in owners if h not in present])
        return [f"snapshot {snapshot_id[:12]}: chunk {h[:12]} of {p} "
                + (f"is corrupt in {store.url} (not its size)" if h in named else f"is missing from {store.url}")
                for h, p in owners.items() if h not in present]

    def check(item: tuple[str, str]) -> str | None:
        try:
            read_chunk(store, item[0], item[1], snapshot_id)
        except IntegrityError as exc:
            return exc.one_line()
        return None
    return [p for p in parallel(list(owners.items()), check, max(1, store.parallel)) if p]


def verify_or_raise(store: Store, snapshot_id: str, *, deep: bool = True) -> None:
    problems = verify(store, snapshot_id, deep=deep)
    if problems:
        more = f" (+{len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise IntegrityError(problems[0] + more)


def _make_writable(root: Path) -> None:
    todo = [os.fspath(root)]      # not os.walk: see _walk
    while todo:
        top = todo.pop()
        with contextlib.suppress(OSError):
            os.chmod(top, 0o755)
            with os.scandir(top) as it:
                todo += [e.path for e in it if e.is_dir(follow_symlinks=False)]


def remove_tree(root: Path) -> None:
    if root.is_symlink() or root.is_file():
        root.unlink()
    elif root.exists():
        _make_writable(root)
        rmtree(root)       # rm -rf taking over a tree deeper than Python's stack


def _placed(manifest: Manifest, snapshot_id: str) -> list:
    """The entries sorted by path (parents first), refused when one lies under another that is not a
    directory: a manifest is anyone's JSON (a shared store), and `x -> /elsewhere` then `x/f` would
    otherwise write `f` outside the destination through the link this very loop put down."""
    entries = sorted(manifest.entries, key=lambda e: e.path)
    leaves: dict[str, str] = {}
    seen: set[str] = set()
    for e in entries:
        parts = check_relpath(e.path).split("/")
        if e.path in seen:
            raise IntegrityError(f"snapshot {snapshot_id[:12]}: {e.path!r} is listed twice")
        for i in range(1, len(parts)):
            above = "/".join(parts[:i])
            if above in leaves:
                raise IntegrityError(f"snapshot {snapshot_id[:12]}: {e.path!r} lies under {above!r}, a "
                                     f"{leaves[above]} in the snapshot, not a directory; refusing to write through it")
        seen.add(e.path)
        if e.type != "dir":
            leaves[e.path] = e.type
    return entries


def materialise(store: Store, snapshot_id: str, dest: str | Path, *, read_only: bool = False,
                manifest: Manifest | None = None) -> Path:
    """Write the snapshot's tree at dest, replacing what was there only once the new tree is whole
    and verified (built in a sibling temp dir, then renamed into place). A record under $FLEET_HOME
    says which snapshot the tree holds and how each of its names looked when written: a second call
    for the same snapshot returns the tree as it is only while every name still looks so (nothing
    edited, removed, added or made writable), and rebuilds it otherwise."""
    dest = Path(dest)
    manifest = manifest or load(store, snapshot_id)
    state = _state_file(dest)
    if _holds(dest, snapshot_id, state):
        return dest
    with contextlib.suppress(FileNotFoundError):
        state.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.partial-{os.getpid()}"
    remove_tree(tmp)
    tmp.mkdir()
    try:
        for e in _placed(manifest, snapshot_id):
            target = tmp / e.path
            if e.type == "dir":
                target.mkdir(parents=True, exist_ok=True)
            elif e.type == "symlink":
                target.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(e.target, target)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                whole = hashlib.sha256()
                with open(target, "xb") as f:     # x: never through whatever is already there
                    for h, _ in e.chunks:
                        data = read_chunk(store, h, e.path, snapshot_id)
                        whole.update(data)
                        f.write(data)
                if whole.hexdigest() != e.sha256:
                    raise IntegrityError(f"snapshot {snapshot_id[:12]}: {e.path} does not match its recorded hash")
                os.chmod(target, (e.mode & ~0o222) if read_only else e.mode)
        if read_only:
            for path in [path for _rel, path, st in _walk(tmp) if stat.S_ISDIR(st.st_mode)]:
                os.chmod(path, 0o555)
        old = dest.parent / f".{dest.name}.old-{os.getpid()}"
        if dest.exists() or dest.is_symlink():
            os.replace(dest, old) if not dest.is_symlink() else dest.unlink()
        os.replace(tmp, dest)
        remove_tree(old)
        record = _record(dest, snapshot_id)
        _past_tick(dest, record)
        state.parent.mkdir(parents=True, exist_ok=True)
        state.write_text(json.dumps(record))
    except BaseException:
        remove_tree(tmp)
        raise
    return dest


def file_hashes(store: Store, snapshot_id: str) -> dict[str, str]:
    """path → sha256 for every file: what "same outputs" means when comparing runs."""
    return {e.path: e.sha256 for e in load(store, snapshot_id).files()}


def is_readonly(path: Path) -> bool:
    return not (path.stat().st_mode & stat.S_IWUSR)
