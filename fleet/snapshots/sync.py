"""Sync snapshots onto machines: only chunks a machine lacks cross the wire, verified on arrival.

Per machine, one SSH channel runs the stdlib helper (`remote_helper.py`, sent inline), which keeps a
chunk cache at <workdir>/.fleet/chunks. Round trip 1 asks which targets are already materialised
from the same snapshot; if every target is current, that is all (a no-op re-sync sends no chunk
list). Round trip 2 asks which chunks of the other targets the cache lacks.
Otherwise the controller sends the manifests, then streams the missing chunks in exactly the order
the helper builds the files, so each chunk goes straight into its file (see the helper's notes).
With an S3 store the machine first pulls missing chunks from S3 itself (presigned GETs), and only
what it could not fetch comes through SSH. All machines of a lease are fed from a bounded pool.
"""
from __future__ import annotations

import json
import os
import shlex
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Iterator

from ..errors import FleetError, IntegrityError, MachineUnreachable, UsageError
from ..models import Machine
from .catalog import load
from .manifest import Manifest
from .restore import read_chunk
from .store import Store
from .sync_channel import OpenSSHChannel, ParamikoChannel, use_openssh

SEND_BATCH = 4 * 1024 * 1024
END_FRAME = b"0" * 64 + b"000000000000\n"
DEFAULT_CACHE_MAX = 8 * 1024 ** 3      # bytes held only by a machine's chunk cache (not by live trees)
PRESIGN_TTL_S = 3600


@dataclass
class Target:
    dest: str                     # absolute path on the machine
    ids: list[str]                # a snapshot, then overlays applied in order (dirty code)
    read_only: bool = False


@dataclass
class SyncStats:
    machine_id: str
    bytes_sent: int = 0           # chunk payload pushed through SSH
    chunks_sent: int = 0
    bytes_direct: int = 0         # chunk payload the machine pulled from the store itself (S3)
    chunks_direct: int = 0
    wire_bytes: int = 0           # everything written to the channel (frames, manifests, request)
    targets_current: list[str] = field(default_factory=list)
    targets_written: list[str] = field(default_factory=list)
    evicted_bytes: int = 0        # cache entries the machine dropped to stay under its cap
    direct_error: str | None = None
    seconds: float = 0.0


def helper_source() -> str:
    pkg = resources.files("fleet.snapshots")
    return pkg.joinpath("remote_cache.py").read_text() + "\n" + pkg.joinpath("remote_helper.py").read_text()


def chunk_cache(machine: Machine) -> str:
    return f"{machine.state_dir}/chunks"


def data_dir(machine: Machine, name: str) -> str:
    return f"{machine.workdir}/data/{name}"


def cache_max_bytes() -> int | None:
    """FLEET_CHUNK_CACHE_MAX: bytes (K/M/G/T suffixes) or "none"; default 8 GiB."""
    raw = os.environ.get("FLEET_CHUNK_CACHE_MAX", "").strip().lower()
    if not raw:
        return DEFAULT_CACHE_MAX
    if raw in ("none", "unlimited", "off"):
        return None
    mult = {"k": 1024, "m": 1024 ** 2, "g": 1024 ** 3, "t": 1024 ** 4}.get(raw.rstrip("ib")[-1:], 1)
    try:
        return int(float(raw.rstrip("ib").rstrip("kmgt")) * mult)
    except ValueError:
        raise UsageError(f"FLEET_CHUNK_CACHE_MAX={raw!r} is not a size", hint="e.g. 20G, 500M or none") from None


def _request(targets: list[Target], manifests: dict[str, Manifest], cache: str, cache_max: int | None) -> dict:
    reqs = []
    for t in targets:
        sizes: dict[str, int] = {}
        for sid in t.ids:
            for e in manifests[sid].files():
                sizes[e.path] = e.size
        for sid in t.ids:
            for p in manifests[sid].deleted:
                sizes.pop(p, None)
        reqs.append({"dest": t.dest, "ids": t.ids, "sizes": sizes})
    return {"cache": cache, "cache_max": cache_max, "targets": reqs}


def build_order(todo: list[Target], manifests: dict[str, Manifest]) -> Iterator[tuple[str, str, str]]:
    """(chunk, path, snapshot) in the order the helper consumes chunks: targets, snapshots (base then
    overlays), files sorted by path, chunks in file order. Must match remote_helper.write_entries."""
    for t in todo:
        for sid in t.ids:
            for e in sorted(manifests[sid].files(), key=lambda e: e.path):
                for h, _ in e.chunks:
                    yield h, e.path, sid


def _read_local(store: Store, h: str, path: str, sid: str) -> bytes:
    """The bytes only: the machine hashes every chunk on arrival (and names a corrupt one)."""
    p = store.chunk_path(h)
    try:
        with open(p, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise IntegrityError(f"snapshot {sid[:12]}: chunk {h[:12]} of {path} is missing from {store.url}") from None


def _chunks(store: Store, order: list[tuple[str, str, str]]) -> Iterator[bytes]:
    """The chunks' bytes in order; remote stores are read ahead from a bounded pool."""
    if not order or store.chunk_path(order[0][0]) is not None:
        for h, path, sid in order:
            yield _read_local(store, h, path, sid)
        return
    window = max(2, store.parallel * 2)
    with ThreadPoolExecutor(max(1, store.parallel)) as pool:
        futures = [pool.submit(store.get_chunk, h) for h, _, _ in order[:window]]
        for i, (h, path, sid) in enumerate(order):
            if i + window < len(order):
                futures.append(pool.submit(store.get_chunk, order[i + window][0]))
            try:
                yield futures[i].result()
            except FleetError:
                raise IntegrityError(f"snapshot {sid[:12]}: chunk {h[:12]} of {path} is missing from {store.url}") \
                    from None
            futures[i] = None


def _presign(store: Store, hashes: list[str]) -> dict[str, str]:
    if not hashes or not hasattr(store, "presign_get") or os.environ.get("FLEET_SYNC_DIRECT", "1") == "0":
        return {}
    return {h: store.presign_get(h, PRESIGN_TTL_S) for h in hashes}


def _failed(machine: Machine, store: Store, result: dict, owners: dict[str, tuple[str, str]]) -> FleetError:
    """The helper's failure, blamed on the store when the store's own copy of the chunk is bad."""
    h = result.get("chunk")
    if h and h in owners and "arrived corrupt" in (result.get("error") or ""):
        path, sid = owners[h]
        read_chunk(store, h, path, sid)        # raises IntegrityError naming the corrupt store chunk
    return IntegrityError(f"sync to machine {machine.id} failed: {result.get('error')}")


def _stream(ch, machine: Machine, store: Store, targets: list[Target], manifests: dict[str, Manifest],
            stats: SyncStats, progress: Callable[[int], None] | None) -> dict:
    ch.send([json.dumps(_request(targets, manifests, chunk_cache(machine), cache_max_bytes())).encode() + b"\n"])
    answer = ch.reply()
    current = set(answer["current"])
    stats.targets_current = sorted(current)
    todo = [t for t in targets if t.dest not in current]
    if not todo:
        return {"ok": True, "materialised": []}
    owners: dict[str, tuple[str, str]] = {}
    for h, path, sid in build_order(todo, manifests):
        owners.setdefault(h, (path, sid))
    if answer.get("fresh"):
        missing = set(owners)              # a brand-new cache: the helper does not ask
    else:
        ch.send([json.dumps({"want": list(owners)}).encode() + b"\n"])
        missing = set(ch.reply()["missing"])
    push = {h for h in missing if h in owners}
    absent = set(push) - store.has_chunks(push)       # refuse before anything is built on the machine
    if absent:
        h = next(h for h, _, _ in build_order(todo, manifests) if h in absent)
        raise IntegrityError(f"snapshot {owners[h][1][:12]}: chunk {h[:12]} of {owners[h][0]} is missing from {store.url}")
    urls = _presign(store, sorted(push))
    job = {"manifests": {sid: json.loads(manifests[sid].canonical_bytes()) for t in todo for sid in t.ids},
           "targets": [{"dest": t.dest, "ids": t.ids, "read_only": t.read_only} for t in todo], "urls": urls}
    ch.send([json.dumps(job).encode() + b"\n"])
    if urls:
        got = ch.reply()
        failed = set(got.get("failed", []))
        stats.bytes_direct, stats.chunks_direct = got.get("fetched", 0), len(urls) - len(failed)
        stats.direct_error = got.get("why")
        push = (push - set(urls)) | failed
    order, seen = [], set()
    for h, path, sid in build_order(todo, manifests):
        if h in push and h not in seen:
            seen.add(h)
            order.append((h, path, sid))
    batch, size = [], 0
    try:
        for (h, _, _), data in zip(order, _chunks(store, order)):
            batch += [b"%s%012d\n" % (h.encode(), len(data)), data]
            size += len(data)
            stats.bytes_sent += len(data)
            stats.chunks_sent += 1
            if size >= SEND_BATCH:
                ch.send(batch)
                batch, size = [], 0
            if progress:
                progress(len(data))
        ch.send(batch + [END_FRAME])
    except BrokenPipeError:
        pass        # the helper stopped reading: its answer says why
    result = ch.reply()
    if not result.get("ok"):
        raise _failed(machine, store, result, owners)
    stats.evicted_bytes = result.get("evicted_bytes", 0)
    return result


def sync_machine(machine: Machine, store: Store, targets: list[Target], manifests: dict[str, Manifest], *,
                 session=None, timeout: float = 600,
                 progress: Callable[[int], None] | None = None) -> SyncStats:
    """Bring `targets` onto one machine; raises IntegrityError naming the chunk/path on any mismatch."""
    from ..remote.ssh import connect
    stats = SyncStats(machine.id)
    t0 = time.monotonic()
    openssh = session is None and use_openssh()
    own = session is None and not openssh
    if own:
        session = connect(machine, timeout=30)
    try:
        # -S: the helper needs only the standard library; skipping site saves start-up time.
        command = shlex.join([machine.python, "-S", "-c", helper_source()])
        ch = OpenSSHChannel(machine, command, timeout) if openssh else ParamikoChannel(session, command, timeout)
        try:
            result = _stream(ch, machine, store, targets, manifests, stats, progress)
            stats.wire_bytes = ch.sent
        finally:
            ch.close()
        stats.targets_written = result.get("materialised", [])
    except FleetError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise MachineUnreachable(f"sync to machine {machine.id} ({machine.address}) failed: {exc}") from None
    finally:
        if own:
            session.close()
    stats.seconds = time.monotonic() - t0
    return stats


def sync_lease(machines: list[Machine], store: Store, targets_for: Callable[[Machine], list[Target]], *,
               max_workers: int = 8, progress: Callable[[int], None] | None = None) -> list[SyncStats]:
    """Feed every machine in parallel (bounded pool); raise the first failure after all have finished."""
    ids = {sid for m in machines for t in targets_for(m) for sid in t.ids}
    manifests = {sid: load(store, sid) for sid in ids}
    if not machines:
        return []
    with ThreadPoolExecutor(max_workers=min(max_workers, len(machines))) as pool:
        futures = [pool.submit(sync_machine, m, store, targets_for(m), manifests, progress=progress)
                   for m in machines]
        results, errors = [], []
        for f in futures:
            try:
                results.append(f.result())
            except Exception as exc:  # noqa: BLE001 — reported after every machine finished
                errors.append(exc)
    if errors:
        raise errors[0]
    return results
