"""The store interface: chunks by hash, manifests by id, names (refs). Local disk or S3.

Layout (both stores): chunks/<h[:2]>/<h>, manifests/<id>, refs/<name>, and `format` (JSON: the
store format and the chunker that cut its newest chunks). Write order makes creation atomic: chunks
first, the manifest last (a snapshot exists only once its manifest does), the name after that.

Store formats: 1 (no `format` file; manifests of format 1, cut by the old pure-Python chunker), 2
(FastCDC, 1 MiB average chunks) and 3 (FastCDC, 256 KiB average chunks). The chunk layout is the same
in all, chunk ids are sha256 of the bytes in all, so a store keeps serving every older snapshot it
holds (old run records still rerun and verify); a writable older store's `format` file is brought
up to the current format when it is opened (it names the chunker of the newest chunks). A store of a
newer format than this code knows is refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Iterable, Iterator, Mapping, Protocol, runtime_checkable

from ..errors import UsageError

STORE_FORMAT = 3
MAX_CHUNK_BYTES = 64 * 1024 * 1024    # no chunk of any store format is larger
READABLE_FORMATS = (1, 2, 3)
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}\Z")
HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


def is_snapshot_id(value: object) -> bool:
    """A snapshot id as stores name manifests: 64 lowercase hex digits, nothing else (no path)."""
    return isinstance(value, str) and HEX64.fullmatch(value) is not None


def manifest_name(snapshot_id: str, where: str) -> str:
    """`snapshot_id` as a manifest's file or key name. An id is also what a machine's sync answer or
    a record names: one that is a path ("/dev/zero", "../x") must never be opened, so anything but
    an id is a snapshot the store does not hold."""
    if not is_snapshot_id(snapshot_id):
        from ..errors import NotFound
        raise NotFound(f"no snapshot {str(snapshot_id)[:64]!r} in the store {where}: not a snapshot id")
    return snapshot_id


@dataclass(frozen=True)
class ManifestInfo:
    id: str
    size: int
    created_at: datetime | None


class Store(Protocol):
    url: str
    parallel: int          # how many puts/gets are worth running at once

    def has_chunks(self, hashes: Iterable[str] | Mapping[str, int]) -> set[str]: ...   # sizes given: of that size
    def put_chunk(self, h: str, data: bytes) -> bool: ...   # True: stored now; False: it was there
    def get_chunk(self, h: str) -> bytes: ...            # raises NotFound
    def chunk_path(self, h: str) -> str | None: ...      # a local file path, if the store has one
    def delete_chunk(self, h: str) -> None: ...
    def iter_chunks(self, older_than_s: float = 0) -> Iterator[str]: ...
    def put_manifest(self, snapshot_id: str, data: bytes) -> None: ...
    def get_manifest(self, snapshot_id: str) -> bytes: ...   # raises NotFound
    def has_manifest(self, snapshot_id: str) -> bool: ...
    def list_manifests(self) -> list[ManifestInfo]: ...
    def get_ref(self, name: str) -> str | None: ...
    def set_ref(self, name: str, snapshot_id: str) -> None: ...
    def delete_ref(self, name: str) -> None: ...
    def delete_manifest(self, snapshot_id: str) -> None: ...
    def list_refs(self) -> dict[str, str]: ...
    def flush(self) -> None: ...     # make every chunk written so far durable


def format_record() -> bytes:
    import json

    from .chunking import CHUNKER
    return json.dumps({"format": STORE_FORMAT, "chunker": CHUNKER}, sort_keys=True).encode() + b"\n"


def parse_format(data: bytes | None, where: str) -> int:
    """The format a store's `format` file names (None: a store from before formats were recorded)."""
    import json

    from ..errors import EnvironmentProblem
    if data is None:
        return 1
    try:
        fmt = int(json.loads(data)["format"])
    except (ValueError, KeyError, TypeError):
        raise EnvironmentProblem(f"snapshot store {where} has an unreadable format file") from None
    if fmt not in READABLE_FORMATS:
        raise EnvironmentProblem(f"snapshot store {where} is format {fmt}; this fleet reads formats "
                                 f"{', '.join(map(str, READABLE_FORMATS))}", hint="upgrade fleet")
    return fmt


def looks_like_id_prefix(text: str) -> bool:
    """What `resolve` reads as an id prefix: 4 or more lowercase hex digits."""
    return len(text) >= 4 and all(c in "0123456789abcdef" for c in text)


def check_name(name: str) -> str:
    """A name as the store keeps it (read, listed, removed): a hex name made before new names were
    checked stays readable and removable."""
    if not NAME_RE.match(name) or HEX64.match(name):
        raise UsageError(f"invalid snapshot name {name!r}",
                         hint="use letters, digits, . _ - @ + (up to 100), not a 64-hex id")
    return name


def read_ref_file(path) -> str | None:
    """A local store's name file: its text, None when there is none. Only a regular file, opened
    without following a link or blocking: refs/ of a store on a shared path is every writer's, and a
    FIFO there hung `snapshot ls` (and every `snapshot:NAME`) for everyone, a directory stopped it."""
    import os

    from ..errors import IntegrityError
    from ..regular_files import NOT_REGULAR_ERRNOS, open_regular
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno not in NOT_REGULAR_ERRNOS:   # unreadable (EACCES, EIO): not "damaged", and `rm` must stop
            raise
        raise IntegrityError(f"snapshot name {path.name!r} in the store {path.parent.parent} is not a name file "
                             "(a link, FIFO, directory or device stands there)",
                             hint=f"remove {path}: fleet writes only regular files there") from None
    with os.fdopen(fd, "rb") as handle:
        return handle.read(4096).decode(errors="replace").strip() or None


def check_new_name(name: str) -> str:
    """A name being given: one that reads as an id prefix would shadow the snapshots it prefixes (in
    a shared store, someone's name `1f3a` redirecting a teammate's `snapshot:1f3a`)."""
    if looks_like_id_prefix(check_name(name)):
        raise UsageError(f"invalid snapshot name {name!r}",
                         hint="not hex digits alone: that reads as a snapshot id (add a letter past f)")
    return name


# Names fleet gives itself, and trusts to mean something: env-<package set hash> (a run's wheels,
# fleet/environment/). A user's name there would stand for a package set it does not hold.
RESERVED_PREFIXES = ("env-",)


def check_user_name(name: str) -> str:
    """A name a user gives (`fleet snapshot create --name`): a new name, outside fleet's own."""
    reserved = next((p for p in RESERVED_PREFIXES if name.lower().startswith(p)), None)
    if reserved:
        raise UsageError(f"invalid snapshot name {name!r}: names starting {reserved!r} are fleet's own "
                         "(a run's package set)", hint="pick another name")
    return check_new_name(name)


@runtime_checkable
class CreatesRefs(Protocol):
    """A store that can create a name only if nobody has (S3's conditional put, If-None-Match: *)."""

    def create_ref(self, name: str, snapshot_id: str) -> str:
        """Point `name` at `snapshot_id` unless it exists; returns what it names now."""
        ...


def claim_ref(store: Store, name: str, snapshot_id: str) -> str:
    """Point `name` at `snapshot_id` unless it already names another snapshot; returns what it names now.

    Checking then writing let two `snapshot create --name N` of different trees, at the same moment,
    both succeed and print their ids while N named only the last: a local store now creates the name
    with a hard link, which fails when another process made it first. (S3: a conditional put, CreatesRefs.)"""
    inner = getattr(store, "inner", store)        # a GuardedStore's store
    held = inner.get_ref(check_new_name(name))
    if held is not None:
        return held
    if isinstance(inner, CreatesRefs):
        return inner.create_ref(name, snapshot_id)
    root = getattr(inner, "root", None)
    if root is None:
        inner.set_ref(name, snapshot_id)
        return snapshot_id
    import os
    import tempfile
    fd, tmp = tempfile.mkstemp(dir=root / "tmp", prefix=check_new_name(name)[:16] + ".")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(snapshot_id.encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o444)
        os.link(tmp, root / "refs" / name)
        dfd = os.open(root / "refs", os.O_RDONLY)   # durable, as set_ref is
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except FileExistsError:
        return inner.get_ref(name) or snapshot_id
    except OSError:                                # a filesystem without hard links: as before
        inner.set_ref(name, snapshot_id)
    finally:
        os.unlink(tmp)
    return snapshot_id


def open_store(url: str | None = None, *, existing: bool = False) -> Store:
    """`None`/"" → the local store under $FLEET_HOME/store; `s3://bucket/prefix`; or a local path.
    `existing`: a local path that is not there is NotFound rather than a new empty store (`snapshot ls
    --store typo` made the directory and answered "no snapshots")."""
    if url and url.startswith("s3://"):
        from .s3_store import S3Store
        return S3Store(url)
    from pathlib import Path

    from .local_store import LocalStore
    if not url:
        from ..paths import subdir
        return LocalStore(subdir("store"))     # 0700, like everything under FLEET_HOME
    if "://" in url and not url.startswith("file://"):
        raise UsageError(f"unsupported store URL {url!r}", hint="use s3://bucket/prefix or a local directory")
    root = Path(url.removeprefix("file://")).expanduser()
    # A store has a manifests/ directory from its first open on. Any other directory is not one: `snapshot
    # ls --store typo` made an empty store there, and `snapshot gc --store /` made chunks/ refs/ … in /
    # and then removed every file older than an hour in /tmp, which it took for the store's tmp/.
    if not (root / "manifests").is_dir():
        import os
        other = os.path.isdir(root) and any(os.scandir(root))
        if other:       # writing too: a new store goes in a new or empty directory
            raise UsageError(f"{root}: not a snapshot store (it holds other files, no manifests/)",
                             hint="check --store (or `store` in fleet.toml); a new store needs an empty directory")
        if existing:
            from ..errors import NotFound
            raise NotFound(f"{root}: no snapshot store there", hint="check --store (or `store` in fleet.toml)")
    return LocalStore(root)
