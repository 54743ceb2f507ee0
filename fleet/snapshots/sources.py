"""Where a `[data]` entry comes from: a local path (snapshotted into the store), a snapshot already in
the store (`snapshot:train-v3`, `snapshot:<id or prefix>`, or a bare 64-hex id), or an S3 prefix
(`s3://bucket/prefix`).

An S3 prefix is snapshotted in place: the listing (key, size, ETag of every object) is written as a
canonical JSON whose sha256 is the source's id, so a changed, added or removed object changes the id.
Nothing is copied into the store; each machine GETs the objects itself (presigned URLs) and checks
size and, for single-part uploads, the MD5 the ETag is. A rerun lists the prefix again and refuses
when the id no longer matches.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError, UsageError
from .manifest import check_relpath
from .store import HEX64, Store

S3 = "s3://"
SNAPSHOT = "snapshot:"
LISTING_FORMAT = "s3-source-1"
PRESIGN_TTL_S = 6 * 3600


@dataclass
class S3Listing:
    url: str
    bucket: str
    prefix: str
    objects: list[tuple[str, str, int, str]]     # (path under the prefix, key, size, etag)

    def canonical_bytes(self) -> bytes:
        entries = [{"path": rel, "type": "file", "mode": 0o644, "size": size, "etag": etag,
                    "key": f"s3://{self.bucket}/{key}", "sha256": f"etag:{etag}:{size}", "chunks": []}
                   for rel, key, size, etag in sorted(self.objects)]
        return json.dumps({"format": LISTING_FORMAT, "source": self.url, "entries": entries},
                          sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    @property
    def id(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    @property
    def total_size(self) -> int:
        return sum(o[2] for o in self.objects)

    def presign(self, keys: list[str]) -> dict[str, str]:
        from ..boto_sessions import new_session
        from .s3_store import bucket_region, presigning_client
        client = presigning_client(new_session(), bucket_region(_client(), self.bucket))
        mine = f"s3://{self.bucket}/"
        return {k: client.generate_presigned_url("get_object", Params={"Bucket": self.bucket,
                                                 "Key": k[len(mine):]}, ExpiresIn=PRESIGN_TTL_S)
                for k in keys if k.startswith(mine)}


def _client():
    from ..boto_sessions import new_session
    return new_session().client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)


def list_s3(url: str) -> S3Listing:
    bucket, _, prefix = url[len(S3):].partition("/")
    if not bucket:
        raise UsageError(f"[data] source {url!r} names no bucket", hint="use s3://bucket/prefix")
    prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
    from botocore.exceptions import BotoCoreError, ClientError
    objects = []
    try:
        for page in _client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for o in page.get("Contents", []):
                key = o["Key"]
                if key.endswith("/"):
                    continue                         # a console "folder" marker, not data
                rel = key[len(prefix):]
                try:
                    check_relpath(rel)
                except IntegrityError:
                    raise UsageError(f"[data] {url}: object key {key!r} is not a clean relative path under the prefix") \
                        from None
                _holdable(url, key, rel)
                objects.append((rel, key, int(o["Size"]), o["ETag"].strip('"')))
    except (BotoCoreError, ClientError) as exc:
        raise UsageError(f"[data] {url}: cannot list the prefix: {exc}") from None
    if not objects:
        raise UsageError(f"[data] {url}: no objects under that prefix")
    _no_object_is_a_prefix(url, objects)
    return S3Listing(url, bucket, prefix, objects)


NAME_MAX = 255   # bytes in one path component: ext4, xfs, btrfs, zfs alike


def _holdable(url: str, key: str, rel: str) -> None:
    """A key S3 holds but no machine's filesystem can as a path (S3 keys may hold NUL and run to 1024
    bytes): refused here, before anything is leased, not by the sync on every machine after it."""
    why = "a NUL" if "\0" in rel else \
        "a part longer than 255 bytes" if any(len(p.encode()) > NAME_MAX for p in rel.split("/")) else None
    if why:
        shown = key if len(key) <= 80 else key[:80] + "…"
        raise UsageError(f"[data] {url}: object key {shown!r} has {why}, which no filesystem holds in a path",
                         hint="rename the object, or name a prefix that leaves it out")


def _no_object_is_a_prefix(url: str, objects: list[tuple[str, str, int, str]]) -> None:
    """"logs" and "logs/a" in one bucket would be a file and a directory at one path on the machine:
    refused here, before anything is leased, rather than by the sync on the machines."""
    keys = {rel: key for rel, key, _, _ in objects}
    for rel, key, _, _ in objects:
        parts = rel.split("/")
        for i in range(1, len(parts)):
            above = keys.get("/".join(parts[:i]))
            if above is not None:
                raise UsageError(f"[data] {url}: object key {above!r} is both an object and the prefix of {key!r}",
                                 hint="S3 allows it, a directory tree cannot hold both: move one, or name a "
                                      "narrower prefix")


def resolve_snapshot(store: Store, ref: str) -> str:
    from .catalog import resolve
    return resolve(store, ref)


def _data_excludes(path: Path, base_dir: Path) -> tuple[str, ...]:
    """The default excludes, and the experiment's runs/ when the data directory holds it (`"."`): the
    outputs fleet brings home there would otherwise become the next run's data, a new snapshot every
    run (and this run's outputs land in it while it is being pinned)."""
    from .create import DEFAULT_EXCLUDES
    runs = (base_dir / "runs").resolve()
    if path.is_dir() and runs != path and runs.is_relative_to(path):
        return (*DEFAULT_EXCLUDES, runs.relative_to(path).as_posix() + "/")
    return DEFAULT_EXCLUDES


def _entry(name: str, value: str, base_dir: Path) -> tuple[str, Path | None]:
    """("s3" | "snapshot" | "path", the local path) of one `[data]` entry; what no run could use is
    refused here (pin_data, and a dry run through check_data)."""
    if not value.strip():   # base_dir / "" is base_dir: the whole experiment, runs/ and all, as data
        raise UsageError(f"[data] {name} is an empty string", hint="a path, s3://bucket/prefix, snapshot:NAME, "
                         "or \".\" for the experiment directory itself")
    if value.startswith(S3):
        return "s3", None
    if value.startswith(SNAPSHOT):
        return "snapshot", None
    try:
        path = (base_dir / value).resolve()
    except (RuntimeError, OSError) as exc:   # RuntimeError: a symlink loop (Python < 3.13)
        raise UsageError(f"[data] {name} = {value!r}: cannot be resolved ({exc})",
                         hint="a local path, s3://bucket/prefix, or snapshot:NAME") from None
    if HEX64.match(value) and not path.exists():
        return "snapshot", None
    if not path.exists():
        raise UsageError(f"[data] {name} = {value!r}: no such file or directory ({path})",
                         hint="a local path, s3://bucket/prefix, or snapshot:NAME")
    from .own_state import private_place
    place = private_place(path)
    if place is not None:
        raise UsageError(f"[data] {name} = {value!r} ({path}) is or holds {place}, which fleet never ships to "
                         "the store and the machines", hint="copy what the run needs into a directory of its own; "
                         "credentials go in `secrets`")
    return "path", path


def _snapshot_ref(value: str) -> str:
    return value[len(SNAPSHOT):] if value.startswith(SNAPSHOT) else value   # snapshot:NAME, or a bare id


def check_data(data: dict[str, str], base_dir: Path, store_url: str | None) -> None:
    """What pin_data would refuse, without reading any data or writing anything: `fleet up
    --dry-run`'s check. The store is opened only to look a snapshot up, and never created. (An S3
    prefix is listed by the run itself.)"""
    store = None
    for name, value in sorted(data.items()):
        kind, _ = _entry(name, value, base_dir)
        if kind == "snapshot":
            if store is None:
                from . import open_store
                store = open_store(store_url, existing=True)
            resolve_snapshot(store, _snapshot_ref(value))


def pin_data(data: dict[str, str], base_dir: Path, store: Store, *, progress=None,
             warn=None) -> tuple[dict[str, str], dict]:
    """name → snapshot (or source) id for every `[data]` entry, and the S3 listings by id; `warn`
    gets what a snapshot left out (a FIFO, a socket, a device), as `fleet snapshot create` prints it."""
    from .create import create_snapshot
    from .links import secret_files_note
    pins, sources = {}, {}
    for name, value in sorted(data.items()):
        kind, path = _entry(name, value, base_dir)
        if kind == "s3":
            listing = list_s3(value)
            pins[name], sources[listing.id] = listing.id, listing
        elif kind == "snapshot":
            pins[name] = resolve_snapshot(store, _snapshot_ref(value))
        else:
            made = create_snapshot(path, store, excludes=_data_excludes(path, base_dir),
                                   **({"progress": progress} if progress else {}))
            # Not git's to filter: `[data] all = "."` took the experiment's git-ignored .env along. Said
            # when the tree was read (an unchanged tree's second snapshot reads no manifest: data.md).
            note = secret_files_note([e.path for e in made.manifest.entries], "move them out of the data "
                                     "directory") if made.built else ""
            for w in [*made.warnings, *([note] if note else [])] if warn is not None else ():
                warn(f"[data] {name}: {w}")
            pins[name] = made.id
    return pins, sources


def recheck(data: dict[str, str], pins: dict[str, str], run_id: str) -> dict:
    """For a rerun: list every S3 source again; refuse when it no longer matches what the run used."""
    sources = {}
    for name, value in sorted(data.items()):
        if not value.startswith(S3) or name not in pins:
            continue
        listing = list_s3(value)
        if listing.id != pins[name]:
            raise IntegrityError(f"cannot rerun {run_id}: data {name} ({value}) changed since the run "
                                 f"(listing {listing.id[:12]}, the run used {pins[name][:12]})",
                                 hint="objects were added, removed or rewritten under that prefix")
        sources[listing.id] = listing
    return sources
