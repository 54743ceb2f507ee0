"""Fleet's side of scripts/bench/sync.py, as its own small process: what a `fleet` command that snapshots
a tree and syncs it onto machines does, and nothing of the benchmark's own machinery (its imports, its
proxies) — the rsync side does not pay for them either.

    python scripts/bench/_sync_fleet.py SPEC_JSON     # {"machines": [...], "tree": ..., "dest": ...}

Prints one JSON line: snapshot_s, sync_s, chunk_bytes, id.
"""
import json
import sys
import time


def main(spec: dict) -> None:
    t0 = time.monotonic()
    from fleet.models import Machine
    from fleet.snapshots.sync import Target, sync_lease
    from fleet.snapshots.sync_channel import close_channels, dial
    machines = [Machine.from_dict(m) for m in spec["machines"]]
    channels = dial(machines)                 # connect while the snapshot is made
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


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
