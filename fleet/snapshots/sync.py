"""Sync snapshots onto machines: only chunks a host lacks cross the wire, verified on arrival.

Per machine, one SSH channel runs the stdlib helper (remote_files + remote_cache + remote_tree + remote_patch +
remote_helper), which the host keeps in its chunk cache by hash (and compiled): a few-line bootstrap
runs it, and fetches it over the same channel only when the host lacks it. The chunk cache is per
host and user, outside every lease (`host_cache_dir`), so a second run with the same data on the
same host receives nothing.

The conversation (see remote_helper): the request names each target's snapshot ids; a machine whose
targets are current answers in that one round trip. Otherwise it asks for the manifests its host
lacks, saying which snapshot its tree holds now; it gets a delta against that one where it can
(sync_manifests: the entries that changed), else the whole manifest (zlib, compressed once per lease
for all machines). It plans the build itself (a read-only tree with a recorded, untouched old
version is patched in place: remote_patch) and answers the chunks it is missing in build order; the
controller then streams those (or the machine pulls them from S3 with presigned GETs).

Fan-out: of the machines that share a host cache, the first is fed alone (it seeds the cache), then
the others at once (they copy from it); so the controller's link carries each chunk once per host,
not once per machine. Where the last sync to that cache carried every snapshot asked for now
(host_hints.py), all of the host's machines are fed at once. Across hosts, the first host is fed
first and then serves the chunks to the first machines of other hosts, a few at a time, and each
host fed serves the next ones (sync_peers.relay), so the link carries each chunk once per lease;
with an S3 store every host pulls from the store instead.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator

from ..errors import FleetError, IntegrityError, MachineUnreachable, UsageError
from . import host_hints
from .sync_channel import OpenSSHChannel, ParamikoChannel, close_channels, use_openssh
from .sync_manifests import Prepared
from .sync_remote import cache_max_bytes, helper_command, helper_hash, helper_source, host_cache_dir

if TYPE_CHECKING:        # imported where used: a caller of sync_channel.dial starts the channels as early as it can
    from ..models import Machine
    from .manifest import Manifest
    from .store import Store

SEND_BATCH = 4 * 1024 * 1024
END_FRAME = b"0" * 64 + b"000000000000\n"
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
    bytes_objects: int = 0        # S3 source objects the machine fetched itself
    bytes_peer: int = 0           # chunk payload the machine pulled from the lease's seed host (sync_peers)
    chunks_peer: int = 0
    peer_seed: str | None = None  # the machine whose host was offered as its seed (sync_peers.relay)
    wire_bytes: int = 0           # everything written to the channel (frames, manifests, request, helper)
    manifest_bytes: int = 0       # compressed manifests sent (a host keeps them)
    helper_sent: bool = False
    targets_current: list[str] = field(default_factory=list)
    targets_written: list[str] = field(default_factory=list)
    files_reused: int = 0         # unchanged files linked from the machine's previous tree
    evicted_bytes: int = 0        # cache entries the host dropped to stay under its cap
    cache_dropped: str | None = None  # a corrupt cache entry the host dropped; sent again on a fresh channel
    direct_error: str | None = None
    seconds: float = 0.0


LOCAL_READ_AHEAD = 8            # chunks read ahead of the one being sent (local store: the disk, not the network)


def _chunks(store: Store, order: list[tuple[str, str, str]]) -> Iterator[bytes]:
    """The chunks' bytes in order, read ahead from a bounded pool so the store's disk (its large
    chunks are written past the page cache) or network works while the channel sends."""
    if not order:
        return
    local = store.chunk_path(order[0][0]) is not None
    window = LOCAL_READ_AHEAD if local else max(2, store.parallel * 2)

    def read(h: str, path: str, sid: str) -> bytes:
        try:     # the bytes only: the machine hashes every chunk on arrival (and names a corrupt one)
            return store.get_chunk(h)
        except FleetError:
            raise IntegrityError(f"snapshot {sid[:12]}: chunk {h[:12]} of {path} is missing from {store.url}") \
                from None
    from concurrent.futures import ThreadPoolExecutor

    from ..parallel import submit_or_thread
    with ThreadPoolExecutor(2 if local else max(1, store.parallel), thread_name_prefix="fleet-sync-read") as pool:
        def ahead(item: tuple[str, str, str]):   # at interpreter shutdown: on plain threads, as many
            return submit_or_thread(pool, read, *item)
        futures = [ahead(item) for item in order[:window]]
        try:
            for i in range(len(order)):
                if i + window < len(order):
                    futures.append(ahead(order[i + window]))
                yield futures[i].result()
                futures[i] = None
        finally:
            for f in futures:
                if f is not None:
                    f.cancel()


def _presign(store: Store, hashes: list[str]) -> dict[str, str]:
    if not hashes or not hasattr(store, "presign_get") or os.environ.get("FLEET_SYNC_DIRECT", "1") == "0":
        return {}
    return {h: store.presign_get(h, PRESIGN_TTL_S) for h in hashes}


class CacheEntryDropped(IntegrityError):
    """The machine found a corrupt entry in its host's cache and dropped it: a fresh sync sends it."""

    def __init__(self, message: str, entry: str):
        super().__init__(message)
        self.entry = entry            # "<path> (chunk <id>)": what the warning names


def _failed(machine: Machine, store: Store, result: dict, owners: dict[str, tuple[str, str]]) -> FleetError:
    """The helper's failure, blamed on the store when the store's own copy of the chunk is bad."""
    h = result.get("chunk")
    if h and h in owners and "arrived corrupt" in (result.get("error") or ""):
        from .restore import read_chunk
        path, sid = owners[h]
        read_chunk(store, h, path, sid)        # raises IntegrityError naming the corrupt store chunk
    message = f"sync to machine {machine.id} failed: {result.get('error')}"
    if result.get("dropped") is True:
        return CacheEntryDropped(message, f"{result.get('path')} (chunk {str(h)[:12]})")
    return IntegrityError(message)


def _stream(ch, machine: Machine, prep: Prepared, targets: list[Target], stats: SyncStats,
            progress: Callable[[int], None] | None, cache_dir: str | None, cache_max: int | None,
            on_expect: Callable[[int], None] | None = None, peer: dict | None = None) -> dict:
    store = prep.store
    request = {"cache": host_cache_dir(machine, cache_dir), "state": f"{machine.state_dir}/materialised",
               "cache_max": cache_max, "helper": helper_hash(),     # its own files stay in the cache
               "targets": [{"dest": t.dest, "ids": t.ids, "read_only": t.read_only} for t in targets]}
    try:
        ch.send([json.dumps(request).encode() + b"\n"])
    except BrokenPipeError:
        pass        # ssh already ended (a dialled channel that never connected): reply() says why
    answer = ch.reply()
    if answer.get("helper") == "need":
        src = helper_source()
        ch.send([b"%d\n" % len(src), src])
        stats.helper_sent = True
        answer = ch.reply()
    stats.targets_current = sorted(answer["current"])
    if "need" not in answer and "missing" not in answer:
        return {"ok": True, "materialised": []}          # every target current: one round trip
    deltas_refused = False
    while answer.get("need"):
        # The manifests the host lacks: a delta against the snapshot a target's tree holds, where the
        # machine has that one cached and this sync can read it; else the whole manifest.
        wanted = [sid for sid in answer["need"] if prep.has(sid)]
        have = {} if deltas_refused else (answer.get("have") or {})
        blobs, header = [], []
        for sid in wanted:
            base = have.get(sid)
            blob = prep.delta(sid, base) if base else None
            if blob is None:
                blob, base = prep.blob(sid), None
            blobs.append(blob)
            header.append([sid, len(blob), base])
        stats.manifest_bytes += sum(map(len, blobs))
        ch.send([json.dumps({"manifests": header}).encode() + b"\n", *blobs])
        answer = ch.reply()
        if answer.get("need"):
            if deltas_refused:
                raise _failed(machine, store, {"error": "the machine asked again for manifests it was sent"},
                              prep.owners)
            deltas_refused = True       # a delta did not reproduce its id there: whole manifests now
        elif "missing" not in answer:
            raise _failed(machine, store, answer, prep.owners)
    unknown = [h for h in answer["missing"] if h not in prep.owners]
    if unknown:
        raise IntegrityError(f"sync to machine {machine.id}: it asked for chunk {unknown[0][:12]}, "
                             "which no snapshot being synced holds")
    push = list(answer["missing"])
    absent = set(push) - store.has_chunks(push)       # refuse before anything is built on the machine
    if absent:
        h = next(h for h in push if h in absent)
        raise IntegrityError(f"snapshot {prep.owners[h][1][:12]}: chunk {h[:12]} of {prep.owners[h][0]} "
                             f"is missing from {store.url}")
    urls = _presign(store, push)
    objects = prep.object_urls(answer.get("objects") or [])
    job = {"urls": urls, "objects": objects, "tick_s": max(0.2, min(5.0, ch.timeout / 4))}
    if peer and push and not urls:
        job["peer"] = peer                 # every missing chunk from the seed host; what it lacks, from here
    ch.send([json.dumps(job).encode() + b"\n"])
    if urls or "peer" in job:
        got = ch.reply()
        while got.get("fetching"):         # the machine is still pulling: alive, within the channel's timeout
            got = ch.reply()
        if "ok" in got:                    # it failed instead (a full disk, say): its error, not a count
            raise _failed(machine, store, got, prep.owners)
        failed = set(got.get("failed", []))
        fetched, count = got.get("fetched", 0), len(urls or push) - len(failed)
        if urls:
            stats.bytes_direct, stats.chunks_direct = fetched, count
        else:
            stats.bytes_peer, stats.chunks_peer = fetched, count
        stats.direct_error = got.get("why")
        push = [h for h in push if h not in urls or h in failed] if urls else [h for h in push if h in failed]
    order = [(h, *prep.owners[h]) for h in push]
    if on_expect:
        on_expect(sum(prep.sizes[h] for h in push))
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
    while result.get("fetching"):          # still building (from S3 objects, from the cache): alive
        result = ch.reply()
    if not result.get("ok"):
        raise _failed(machine, store, result, prep.owners)
    stats.evicted_bytes = result.get("evicted_bytes", 0)
    stats.files_reused = result.get("reused", 0)
    stats.bytes_objects = result.get("objects_fetched", 0)
    return result


def sync_machine(machine: Machine, store: Store, targets: list[Target], manifests: dict[str, Manifest] | None = None,
                 *, session=None, timeout: float = 600, progress: Callable[[int], None] | None = None,
                 prepared: Prepared | None = None, cache_dir: str | None = None,
                 cache_max: str | None = None, on_expect: Callable[[int], None] | None = None,
                 channel: OpenSSHChannel | None = None, peer: dict | None = None) -> SyncStats:
    """Bring `targets` onto one machine; raises IntegrityError naming the chunk/path on any mismatch.
    `channel`: one `dial` started for this machine (used, then closed); `peer`: a seed host's offer
    (sync_peers.Seed.offer) to fetch the missing chunks from."""
    prep = prepared or Prepared(store, {sid for t in targets for sid in t.ids}, manifests)
    stats = SyncStats(machine.id)
    t0 = time.monotonic()
    limit = cache_max_bytes(cache_max)
    if channel is None and session is None and os.environ.get("FLEET_SYNC_TRANSPORT") != "openssh":
        from ..remote.pool import pool_for
        if pool_for(machine.id) is not None:   # a run's pooled connection: a channel on it, not a new ssh
            from ..remote.ssh import connect
            session = connect(machine, timeout=30)
    openssh = session is None and (channel is not None or use_openssh())
    own = session is None and not openssh
    if own:
        from ..remote.ssh import connect          # paramiko: only off the OpenSSH path
        session = connect(machine, timeout=30)
    try:
        # A corrupt host-cache entry the machine dropped is sent on one more try, on a fresh channel
        # (a dialled one is used up); a second corruption fails. A target the first try finished is
        # recorded there: the second answers it current, nothing is sent for it again.
        for attempt in (1, 2):
            command = helper_command(machine, cache_dir)
            ch = channel if channel is not None and attempt == 1 else \
                OpenSSHChannel(machine, command, timeout) if openssh else ParamikoChannel(session, command, timeout)
            try:
                result = _stream(ch, machine, prep, targets, stats, progress, cache_dir, limit, on_expect, peer)
                break
            except CacheEntryDropped as exc:
                if attempt == 2:
                    raise
                stats.cache_dropped, before = exc.entry, stats.targets_current
            finally:
                stats.wire_bytes += ch.sent
                ch.close()
        stats.targets_written = result.get("materialised", [])
        if stats.cache_dropped:        # what the first try finished counts as written, not as current
            stats.targets_written += [d for d in stats.targets_current if d not in before]
            stats.targets_current = before
    except FleetError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise MachineUnreachable(f"sync to machine {machine.id} ({machine.address}) failed: {exc}") from None
    finally:
        if own:
            session.close()
    stats.seconds = time.monotonic() - t0
    return stats


def _remember_warm(group: list[Machine], results: dict[str, SyncStats], ids: set[str], cache_dir: str | None) -> None:
    """Every machine of the group built its targets through the host cache: it holds these snapshots now.
    (A machine whose tree was already current never opened the cache: that says nothing about it.)"""
    if not all(m.id in results for m in group) or not any(results[m.id].targets_written for m in group):
        return
    host_hints.remember(host_hints.cache_key(group[0], cache_dir), ids)


def sync_lease(machines: list[Machine], store: Store, targets_for: Callable[[Machine], list[Target]], *,
               max_workers: int = 8, progress: Callable[[int], None] | None = None, sources: dict | None = None,
               cache_dir: str | None = None, cache_max: str | None = None,
               on_state: Callable[[str, str], None] | None = None,
               on_expect: Callable[[int], None] | None = None,
               channels: dict[str, OpenSSHChannel] | None = None) -> list[SyncStats]:
    """Feed every machine (bounded pool): per host, the first machine seeds the host's cache and the
    others then copy from it (all at once where host_hints says the cache already holds these
    snapshots); raise the first failure after all have finished."""
    channels = channels if channels is not None else {}
    if not machines:
        close_channels(channels)
        return []
    ids = {sid for m in machines for t in targets_for(m) for sid in t.ids}
    prep = Prepared(store, ids, sources=sources)
    try:
        cache_max_bytes(cache_max)             # a bad value fails before any machine is touched
    except UsageError:
        close_channels(channels)
        raise
    results: dict[str, SyncStats] = {}
    errors: list[BaseException] = []

    def one(m: Machine, peer: dict | None = None) -> None:
        if on_state:
            on_state(m.id, "syncing")
        try:
            results[m.id] = sync_machine(m, store, targets_for(m), prepared=prep, progress=progress,
                                         cache_dir=cache_dir, cache_max=cache_max, on_expect=on_expect,
                                         channel=channels.pop(m.id, None), peer=peer)
            if on_state:
                on_state(m.id, "done")
        except Exception as exc:  # noqa: BLE001 — reported after every machine finished
            errors.append(exc)
            if on_state:
                on_state(m.id, "failed")

    groups = host_hints.host_groups(machines, cache_dir)
    if len(machines) == 1:                     # one machine (a no-op re-sync, often): no pool to start
        try:
            one(machines[0])
        finally:
            close_channels(channels)
        if errors:
            raise errors[0]
        _remember_warm([machines[0]], results, ids, cache_dir)
        return [results[machines[0].id]]
    # Per host, the first machine fills the cache before the others copy from it, unless the last
    # sync there carried every snapshot asked for now (host_hints: a hint; wrong, it costs bytes only).
    # With several hosts and a store the machines cannot read themselves, the first host is fed
    # alone, then seeds the first machines of other hosts, which then seed more (sync_peers.relay).
    from concurrent.futures import ThreadPoolExecutor

    from ..parallel import submit_or_thread   # at interpreter shutdown: on plain threads
    from . import sync_peers
    warm = [host_hints.holds_all(host_hints.cache_key(g[0], cache_dir), ids) for g in groups]
    direct = hasattr(store, "presign_get") and os.environ.get("FLEET_SYNC_DIRECT", "1") != "0"
    seeding = (len(groups) > 1 and not all(warm[1:]) and not direct and sync_peers.enabled()
               and not sync_peers.recently_unreachable(host_hints.cache_key(groups[0][0], cache_dir)))
    firsts = [g if len(g) > 1 and at_once else g[:1] for g, at_once in zip(groups, warm)]
    rest = [m for g, f in zip(groups, firsts) for m in g[len(f):]]
    dialling = None
    try:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(machines))) as pool:
            def feed(ms: list[Machine], peer_for: Callable[[Machine], dict | None] = lambda m: None) -> None:
                for f in [submit_or_thread(pool, one, m, peer_for(m)) for m in ms]:
                    f.result()
            if seeding:
                dialling = submit_or_thread(pool, sync_peers.SeedDial, groups[0][0], cache_dir)   # while it is fed
                feed([m for i, f in enumerate(firsts) if i == 0 or warm[i] for m in f])
                later = [m for i, f in enumerate(firsts) if i and not warm[i] for m in f]
                seed_ids = {sid for t in targets_for(groups[0][0]) for sid in t.ids}
                peers = [m for m in later if {sid for t in targets_for(m) for sid in t.ids} <= seed_ids]
                wanted = sorted({sid for m in peers for t in targets_for(m) for sid in t.ids})
                first, dialling = dialling.result(), None
                rests = {g[0].id: g[len(f):] for g, f in zip(groups, firsts)}
                fed = sync_peers.relay(first, results, peers, [m for m in later if m not in peers], wanted, feed,
                                       host_hints.cache_key(groups[0][0], cache_dir), cache_dir,
                                       needs=lambda m: {sid for t in targets_for(m) for sid in t.ids},
                                       rest_of=lambda m: rests.get(m.id, []))
                rest = [m for m in rest if m.id not in fed]
            else:
                feed([m for f in firsts for m in f])
            feed(rest)
    finally:
        if dialling is not None:
            dialling.result().close()      # unused if anything above raised first; else a no-op
        close_channels(channels)
    for g in groups:
        _remember_warm(g, results, ids, cache_dir)
    if errors:
        raise errors[0]
    return [results[m.id] for m in machines]
