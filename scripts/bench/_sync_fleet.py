"""Fleet's side of scripts/bench/sync.py, as its own small process: what a `fleet` command that snapshots
a tree and syncs it onto machines does, and nothing of the benchmark's own machinery (its imports, its
proxies) — the rsync side does not pay for them either.

    python scripts/bench/_sync_fleet.py SPEC_JSON     # {"machines": [...], "tree": ..., "dest": ...}

Prints one JSON line: snapshot_s, sync_s, chunk_bytes, id.

With "ceiling": {"store": DIR, "id": ID} in the spec (DIR a store already holding snapshot ID of the
same tree), it measures what overlapping snapshot creation with sending could reach at best, not
what fleet does: the tree is snapshotted into a fresh store while, at the same time, ID is synced from
DIR, as if every chunk were ready to send the moment the sync wants it. sync_s then counts from the
first import, as snapshot_s does.
"""
import json
import sys
import threading
import time


def main(spec: dict) -> None:
    t0 = time.monotonic()
    from fleet.models import Machine
    from fleet.snapshots.sync import Target, sync_lease
    from fleet.snapshots.sync_channel import close_channels, dial
    machines = [Machine.from_dict(m) for m in spec["machines"]]
    channels = dial(machines)                 # connect while the snapshot is made
    if "ceiling" in spec:
        return ceiling(spec, machines, channels, t0)
    try:
        from fleet.snapshots.create import create_snapshot
        from fleet.snapshots.store import open_store
        store = open_store(None)
        snap = create_snapshot(spec["tree"], store)
    except BaseException:
        close_channels(channels)              # no sync after all: end the helpers now
        raise
    t1 = time.monotonic()
    stats = sync_lease(machines, store, lambda m: [Target(f"{m.workdir}/data/{spec['dest']}", [snap.id],
                                                          read_only=True)], channels=channels)
    print(json.dumps({"snapshot_s": t1 - t0, "sync_s": time.monotonic() - t1,
                      "chunk_bytes": sum(s.bytes_sent for s in stats),
                      "peer_bytes": sum(s.bytes_peer for s in stats), "id": snap.id}))


def ceiling(spec: dict, machines: list, channels: dict, t0: float) -> None:
    from fleet.snapshots.create import create_snapshot
    from fleet.snapshots.store import open_store
    from fleet.snapshots.sync import Target, sync_lease
    sid, made = spec["ceiling"]["id"], {}

    def snapshot() -> None:
        made["id"] = create_snapshot(spec["tree"], open_store(None)).id
        made["s"] = time.monotonic() - t0
    creating = threading.Thread(target=snapshot)
    creating.start()
    stats = sync_lease(machines, open_store("file://" + spec["ceiling"]["store"]),
                       lambda m: [Target(f"{m.workdir}/data/{spec['dest']}", [sid], read_only=True)], channels=channels)
    t1 = time.monotonic()
    creating.join()
    if made.get("id") != sid:
        raise SystemExit(f"the snapshot made beside the sync is {made.get('id')}, not {sid}")
    print(json.dumps({"snapshot_s": made["s"], "sync_s": t1 - t0, "chunk_bytes": sum(s.bytes_sent for s in stats),
                      "peer_bytes": 0, "id": sid}))


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
