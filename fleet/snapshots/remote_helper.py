"""The machine side of snapshot sync. Stdlib only: cached on the host by its hash (sync_remote.BOOTSTRAP
fetches it over the channel once), then started by a few-line inline bootstrap on every sync.

One process, one SSH channel, JSON lines both ways:
  1. read {"cache", "state", "cache_max", "helper" (its own hash), "targets": [{"dest", "ids",
     "read_only"}]}. Targets whose record says they hold those snapshots untouched are current; if
     all are, answer {"current"} and stop: a no-op re-sync is this one round trip, and does not even
     open the host cache (its index, its lock, its size).
  2. manifests the host's cache lacks: answer {"need": [ids], "have": {id: base id}} (base: the
     snapshot a target's tree holds, its manifest cached here), read {"manifests": [[id, n, base]…]}
     and n zlib bytes each: the whole manifest, or (base given) a delta of it against the base, applied
     here and re-encoded canonically. Each is verified against its id and kept in the cache (a
     manifest crosses once per host); a delta that does not reproduce its id is asked for again whole.
  3. plan every target (unchanged files are linked from the old tree), answer {"missing": [chunk
     ids, in the order the build consumes them], "objects": [S3 source objects to fetch]}.
  4. read {"urls", "objects", "peer"}: presigned GETs for store chunks and S3 source objects. Chunks
     with a URL are pulled straight from S3 (verified), answered {"fetched", "failed", "why"}; with
     "peer" (a seed host serving the lease's chunks: remote_peer), every missing chunk is pulled
     from it instead, answered the same way; {"fetching": true} every "tick_s" until then (and
     during step 5, until its answer).
  5. build every target; each chunk still missing arrives, in that same order, as a frame
     "<64 hex id><12 digit length>\\n<bytes>" and goes straight into its file. Answer {"ok": true, …}
     or {"ok": false, "error", "chunk", "path", "dropped"} ("dropped": a corrupt cache entry was
     removed, so the controller tries once more on a fresh channel and sends it).
A chunk is hashed once, when it arrives or is taken from the cache; a multi-chunk file is the
concatenation of chunks each verified against the manifest, whose own hash is its id.
"""
import hashlib
import json
import os
import sys
import zlib

if "Plan" not in globals():   # inline, remote_cache.py, remote_tree.py, remote_patch.py and remote_peer.py come first
    from fleet.snapshots.remote_cache import Cache, Failure, write_all  # noqa: F401
    from fleet.snapshots.remote_peer import fetch_peer, serve_chunks  # noqa: F401
    from fleet.snapshots.remote_tree import (STATE, Plan, is_current, materialise,  # noqa: F401
                                             merged_view, read_record, use_state_dir)

HEADER = 77


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def readline(stream):
    line = stream.readline()
    if not line:
        raise EOFError("controller closed the stream")
    return json.loads(line)


def read_exact(stream, n):
    data = stream.read(n)
    if len(data) != n:
        raise EOFError("stream ended early")
    return data


class Frames:
    """The chunks the controller pushes, in the order the build asks for them. A reader thread takes
    them off the pipe and hashes them while the build thread creates and writes files (hashlib and
    file I/O release the GIL), bounded to a few chunks in flight."""

    def __init__(self, stream, push):
        import queue
        import threading
        self.stream, self.push, self.received = stream, push, 0
        self.queue = queue.Queue(maxsize=16)
        self.threaded = bool(push)
        if self.threaded:
            threading.Thread(target=self._read, daemon=True).start()

    def _read_one(self):
        header = self.stream.read(HEADER)
        if len(header) != HEADER:
            raise EOFError("chunk stream ended early")
        got, n = header[:64].decode(), int(header[64:76])
        if n == 0:
            return None, None, True
        data = self.stream.read(n)
        return got, data, len(data) == n and hashlib.sha256(data).hexdigest() == got

    def _read(self):
        try:
            while True:
                item = self._read_one()
                self.queue.put(item)
                if item[0] is None:
                    return
        except BaseException as exc:  # noqa: BLE001 — handed to the build thread
            self.queue.put((exc, None, False))

    def _next(self):
        got, data, ok = self.queue.get()
        if isinstance(got, BaseException):
            raise got
        return got, data, ok

    def take(self, h, where):
        got, data, ok = self._next()
        if got != h:
            raise Failure("protocol error: expected chunk %s of %s, got %s" % (h[:12], where, str(got)[:12]), h, where)
        if not ok:
            raise Failure("chunk %s of %s arrived corrupt" % (h[:12], where), h, where)
        self.push.discard(h)
        self.received += len(data)
        return data

    def end(self):
        if not self.threaded:
            header = self.stream.read(HEADER)      # nothing was pushed: just the end frame
            if len(header) == HEADER and int(header[64:76]) == 0:
                return
            raise Failure("protocol error: the controller sent chunks the build did not use")
        got, _data, _ok = self._next()
        if got is not None:
            raise Failure("protocol error: the controller sent chunks the build did not use")


def fetch(urls, cache, workers=8):
    """Pull chunks straight from the store (presigned GETs), verifying each; return the failures.
    After the first network or HTTP failure the rest are not tried (a machine that cannot reach the
    store would otherwise wait out a timeout per chunk): they all come through SSH instead."""
    import urllib.request
    from concurrent.futures import ThreadPoolExecutor
    broken = []

    def one(item):
        h, url = item
        if broken:
            return h, broken[0], 0
        try:
            with urllib.request.urlopen(url, timeout=15) as r:
                data = r.read()
        except Exception as exc:  # noqa: BLE001 — any failure falls back to the SSH push
            broken.append("%s: %s" % (type(exc).__name__, exc))
            return h, broken[-1], 0
        if hashlib.sha256(data).hexdigest() != h:
            return h, "chunk %s came back corrupt from the store" % h[:12], 0
        cache.put(h, data)
        return h, None, len(data)
    with ThreadPoolExecutor(max(1, min(workers, len(urls)))) as pool:
        results = list(pool.map(one, sorted(urls.items())))
    return [h for h, err, _ in results if err], sum(n for _, _, n in results), \
        next((err for _, err, _ in results if err), None)


class Objects:
    """S3 source objects (`[data] x = "s3://…"`), fetched by the machine itself into their files.
    Checked against the listing the snapshot id was made from: size, and the MD5 a single-part ETag is."""

    def __init__(self, urls):
        self.urls, self.fetched = urls, 0

    def __call__(self, at, rel, e):
        import urllib.request
        pfd, name = at
        url = self.urls.get(e["key"])
        if url is None:
            raise Failure("no URL for S3 object %s" % e["key"], None, rel)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o444, dir_fd=pfd)
        md5, n = hashlib.md5(), 0
        # If-Match: S3 answers 412 once the object is not the one listed; a multipart ETag is no MD5,
        # so without it a same-size rewrite of such an object passed as the snapshotted one.
        request = urllib.request.Request(url, headers={"If-Match": '"%s"' % e["etag"].strip('"')})
        try:
            with urllib.request.urlopen(request, timeout=60) as r:
                for block in iter(lambda: r.read(1 << 20), b""):
                    md5.update(block)
                    write_all(fd, block)
                    n += len(block)
        except OSError as exc:
            if getattr(exc, "code", None) == 412:
                raise Failure("s3 object %s changed since it was snapshotted (its ETag differs)" % e["key"],
                              None, rel) from None
            raise Failure("could not fetch s3 object %s: %s" % (e["key"], exc), None, rel) from None
        finally:
            os.close(fd)
        etag = e["etag"].strip('"')
        if n != e["size"] or ("-" not in etag and md5.hexdigest() != etag):
            raise Failure("s3 object %s changed since it was snapshotted (size or ETag differs)" % e["key"],
                          None, rel)
        self.fetched += n


def bases(todo, need, cache):
    """needed id → the snapshot a target's tree holds now, when the host has that manifest: the
    controller can then send the difference instead of the whole manifest."""
    have = {}
    for t in todo:
        rec = read_record(t["dest"])
        prev = rec.get("prev") if rec else None
        if len(t["ids"]) == 1 and t["ids"][0] in need and isinstance(prev, list) and len(prev) == 1 \
                and isinstance(prev[0], str) and cache.has_manifest(prev[0]):
            have[t["ids"][0]] = prev[0]
    return have


def canonical(body):
    """(the manifest as its canonical bytes would parse, those bytes): fleet/snapshots/manifest.py's
    form, sorted keys, no whitespace, ASCII, entries sorted by path, `deleted` only when there are some."""
    out = {"format": body["format"], "entries": sorted(body["entries"], key=lambda e: e["path"])}
    if body.get("deleted"):
        out["deleted"] = sorted(body["deleted"])
    return out, json.dumps(out, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def receive_manifests(stream, cache, manifests):
    """Read the manifests the controller sent (whole, or a delta against a base this host holds),
    each checked against its id and kept in the host cache; return the ids a delta failed to
    reproduce (asked for again, whole)."""
    again = []
    for sid, n, base in readline(stream)["manifests"]:
        blob = read_exact(stream, n)
        if base:
            old = manifests.get(base) or cache.load_manifest(base)
            delta = json.loads(zlib.decompress(blob))
            if old is None:
                again.append(sid)
                continue
            manifests[base] = old               # the plan reads the old tree's view from it too
            drop = set(delta["drop"]) | set(e["path"] for e in delta["put"])
            body = {"format": delta["format"], "deleted": delta["deleted"],
                    "entries": [e for e in old["entries"] if e["path"] not in drop] + delta["put"]}
            body, raw = canonical(body)
            if hashlib.sha256(raw).hexdigest() != sid:
                again.append(sid)
                continue
            blob = zlib.compress(raw, 1)
            manifests[sid] = body               # what json.loads(raw) would give, without parsing it
        else:
            raw = zlib.decompress(blob)
            if hashlib.sha256(raw).hexdigest() != sid:
                raise Failure("manifest %s arrived corrupt" % sid[:12])
            manifests[sid] = json.loads(raw)
        cache.save_manifest(sid, blob)
    return again


def plan_targets(todo, manifests, cache):
    plans = []
    for t in todo:
        previous = None
        rec = read_record(t["dest"])
        if rec and t.get("read_only") and isinstance(rec.get("prev"), list):
            olds = {sid: manifests.get(sid) or cache.load_manifest(sid) for sid in rec["prev"]}
            if all(olds.values()):
                previous = (merged_view(rec["prev"], olds), rec.get("files", {}))
        plans.append(Plan(t, manifests, previous))
    missing, objects, seen = [], [], set()
    for p in plans:
        for rel, e in p.files_to_build():
            if e.get("key") is not None:
                objects.append(e["key"])
                continue
            from_old = p.old_chunks(rel)
            for h, _n in e["chunks"]:
                if h not in seen and h not in from_old:
                    seen.add(h)
                    if not cache.has(h):
                        missing.append(h)
    return plans, missing, objects


def ticking(job, fetch_all, *args):
    """fetch_all(*args), saying {"fetching": true} every job["tick_s"] meanwhile: the controller
    waits on this channel with a timeout, and a large pull from S3 or a peer, or a build from the
    cache or from S3 objects, may outlast it."""
    import threading
    stop = threading.Event()

    def tick():
        while not stop.wait(float(job.get("tick_s") or 5)):
            send({"fetching": True})
    t = threading.Thread(target=tick, daemon=True)
    t.start()
    try:
        return fetch_all(*args)
    finally:
        stop.set()
        t.join()


def main(stream=None, first=None, root=None):
    os.umask(0o022)                        # manifest modes are 0o644/0o755 (or their read-only forms)
    stream = stream or os.fdopen(0, "rb", buffering=1 << 20)
    try:
        req = json.loads(first) if first else readline(stream)
    except EOFError:
        return                             # a dialled channel the controller did not need (sync_channel.dial)
    if root:                               # the bootstrap's checked, resolved cache (sync_remote.BOOTSTRAP)
        (req.get("serve") or req)["cache"] = root
    if "serve" in req:
        try:
            serve_chunks(req["serve"], stream, send)  # this host seeds the lease's other hosts
        except Failure as exc:
            send({"ok": False, "error": str(exc)})
        return
    try:
        import fcntl
        fcntl.fcntl(0, 1031, 1 << 20)      # F_SETPIPE_SZ: sshd hands us data in bigger pieces
    except (ImportError, OSError):
        pass
    use_state_dir(os.path.expanduser(req["state"]))
    STATE["fixed"] = True
    current = [t["dest"] for t in req["targets"] if is_current(t)]
    todo = [t for t in req["targets"] if t["dest"] not in current]
    if not todo:
        send({"current": current})
        return                             # a no-op re-sync ends here, without opening the cache
    cache = Cache(req["cache"], req.get("cache_max"), req.get("helper"))
    try:
        manifests, need = {}, []
        for sid in dict.fromkeys(sid for t in todo for sid in t["ids"]):
            m = cache.load_manifest(sid)
            if m is None:
                need.append(sid)
            else:
                manifests[sid] = m
        have = bases(todo, need, cache)
        while need:
            send({"current": current, "need": need, "have": have})
            need, have = receive_manifests(stream, cache, manifests), {}
        plans, missing, objects = plan_targets(todo, manifests, cache)
        send({"current": current, "missing": missing, "objects": objects})
        job = readline(stream)
        push, fetched = set(missing), 0
        if job.get("urls"):
            failed, fetched, why = ticking(job, fetch, job["urls"], cache)
            push = (push - set(job["urls"])) | set(failed)
            send({"fetched": fetched, "failed": failed, "why": why})
        elif job.get("peer") and missing:
            failed, fetched, why = ticking(job, fetch_peer, job["peer"], missing, cache)
            push = set(failed)
            send({"fetched": fetched, "failed": failed, "why": why})
        frames = Frames(stream, push)
        fetch_object = Objects(job.get("objects") or {})

        def build():
            done = []
            for plan in plans:
                materialise(plan.target, manifests, cache, frames, plan, fetch_object)
                done.append(plan.target["dest"])
            frames.end()
            return done
        done = ticking(job, build)         # long without a word when nothing is pushed (S3 objects, a big copy)
        evicted = cache.finish()
        send({"ok": True, "received": frames.received, "fetched": fetched, "materialised": done,
              "evicted_bytes": evicted, "objects_fetched": fetch_object.fetched,
              "reused": sum(len(p.reuse) for p in plans)})
    except Failure as exc:
        send({"ok": False, "error": str(exc), "chunk": exc.chunk, "path": exc.path, "dropped": exc.dropped})
    except (ValueError, OSError, EOFError, zlib.error) as exc:
        send({"ok": False, "error": str(exc)})


if __name__ == "__main__":
    main(globals().get("STREAM"), globals().get("FIRST"), globals().get("ROOT"))
    if "STREAM" in globals():
        # Run by the bootstrap on a sync channel: every answer is written and flushed, and nothing
        # else needs tearing down; the channel (and the controller waiting for it) closes sooner.
        sys.stdout.flush()
        os._exit(0)
