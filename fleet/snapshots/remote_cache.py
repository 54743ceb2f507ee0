"""A host's chunk cache, for the sync helper (stdlib only; cached on the host ahead of remote_helper.py).

It lives outside every lease's directory (see sync_remote.host_cache_dir) and is shared by all leases of
the user on that host, so a second run with the same data receives nothing. Files named by their
content's sha256 under <root>/<h[:2]>/: a chunk, or a whole file. Entries are copies (a reflink
where the filesystem has them, else an in-kernel copy), never hard links into a lease's tree: a run
that makes its data writable and edits it must not change what other leases get from the cache. index.txt maps each chunk of a cached multi-chunk file to
(file hash, offset, length). manifests/<id>.z holds the snapshots' manifests (zlib), so a manifest
crosses the wire once per host; they count toward the cap and are evicted like chunks (a host that
lacks a manifest asks for it, and a seed host lacking one serves nothing: the controller pushes).

Safe with several syncs on one host at once: every entry appears by one atomic rename or link (a
reader never sees a partial one), every read is verified by hash (a corrupt or tampered entry, or a
wrong index line, is dropped and named), index lines are appended with one write each and read only
when complete, and each sync holds a shared lock on <root>/lock while it relies on the cache.
Bounded: above `max_bytes`, the least recently used entries (chunks, whole files, manifests, and in
helper/ the sync helpers of other fleet versions, never the one running) are evicted by a sync that
can take the lock exclusively (nobody else mid-sync) and added entries itself, never the entries
that sync itself used.
Whether it is above is estimated without walking the cache: size.txt holds what the last walk
counted and added.txt what each sync added since (one appended line each); only an estimate over
the cap walks it. A helper the bootstrap keeps (tens of KB per fleet version) is counted by the walk.
"""
import hashlib
import os

if "write_atomic" not in globals():    # inline, remote_files.py's text comes first (see sync_remote.helper_source)
    from fleet.snapshots.remote_files import clone, hash_file, spread_subdirs, write_all, write_atomic  # noqa: F401

INDEX = "index.txt"
SIZE, ADDED = "size.txt", "added.txt"   # bytes held at the last walk; bytes each sync added since
WALK_EVERY_S = 3600                     # an estimate older than this is checked by a walk
EMPTY = hashlib.sha256(b"").hexdigest()


class Failure(Exception):
    """`dropped`: a corrupt cache entry was removed on the way, so a fresh sync sends it instead."""

    def __init__(self, message, chunk=None, path=None, dropped=False):
        Exception.__init__(self, message)
        self.chunk, self.path, self.dropped = chunk, path, dropped


def sha256_name(h):
    """h, when it is a sha256 in hex (what every name in the cache is); else Failure. The names come
    from manifests, which anyone who can write a shared store can plant: "/home/u/.bashrc" or "../x"
    as a file hash, chunk id or snapshot id had a built file copied, or a "corrupt entry" deleted,
    outside the cache."""
    if not is_sha256(h):
        raise Failure("%r is not a sha256 (a forged manifest?); refusing to use it as a name in the "
                      "machine's cache" % (str(h)[:80],), None, None)
    return h


def is_sha256(h):
    return isinstance(h, str) and len(h) == 64 and _HEX.issuperset(h)


_HEX = frozenset("0123456789abcdef")


class Cache:
    def __init__(self, root, max_bytes, helper=None):
        """`helper`: the running helper's hash (its files in helper/ are never evicted)."""
        self.root, self.max_bytes = os.path.expanduser(root), max_bytes
        self.helper = helper if is_sha256(helper) else None
        self.index, self.new_lines, self.used = {}, [], set()
        self.added = False             # did this sync add an entry? only then can it push the cache over its cap
        self.added_bytes = 0
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        self.fresh = not os.path.isdir(os.path.join(self.root, "ff"))
        if self.fresh:
            spread_subdirs(self.root)
            for i in range(256):       # "ff" last: its presence means all are there
                os.makedirs(os.path.join(self.root, "%02x" % i), exist_ok=True)
        os.makedirs(os.path.join(self.root, "manifests"), exist_ok=True)
        self.lock_fd = os.open(os.path.join(self.root, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            import fcntl
            fcntl.flock(self.lock_fd, fcntl.LOCK_SH)
        except ImportError:
            pass
        self._load_index()

    def _load_index(self):
        try:
            with open(os.path.join(self.root, INDEX)) as f:
                for line in f:
                    parts = line.split()
                    if line.endswith("\n") and len(parts) == 4:   # a line still being appended is skipped
                        self.index.setdefault(parts[0], (parts[1], int(parts[2]), int(parts[3])))
        except OSError:
            pass

    def path(self, h):
        return os.path.join(self.root, sha256_name(h)[:2], h)

    def locate(self, h):
        """(file, offset, length) holding chunk h, or None."""
        p = self.path(h)
        if os.path.exists(p):
            return p, 0, None
        hit = self.index.get(h)
        if hit and is_sha256(hit[0]) and os.path.exists(self.path(hit[0])):
            return self.path(hit[0]), hit[1], hit[2]
        return None

    def has(self, h):
        return self.locate(h) is not None

    def read(self, h, where):
        """The chunk's bytes, verified; a corrupt entry is evicted so the next sync sends it again."""
        loc = self.locate(h)
        if loc is None:
            raise Failure("chunk %s of %s is missing from the machine's cache" % (h[:12], where), h, where)
        p, off, n = loc
        with open(p, "rb") as f:
            if off:
                f.seek(off)
            data = f.read() if n is None else f.read(n)
        os.utime(p)                     # recently used: evicted last
        if hashlib.sha256(data).hexdigest() != h:
            if n is None or hash_file(p) != os.path.basename(p):
                self.evict(p)
            else:
                self.drop_index(h)      # a wrong index line over a good whole file: the line goes, the file stays
            raise Failure("%s does not match its recorded hash (a corrupt cached chunk %s was dropped; "
                          "sync again)" % (where, h[:12]), h, where, True)
        self.used.add(p)
        return data

    def link(self, src, name):
        """Keep a finished, verified file of a tree in the cache: a copy, made whole under a temp
        name and renamed (a reflink or in-kernel copy: no bytes through this process)."""
        dst = self.path(name)
        if os.path.exists(dst):
            self.used.add(dst)
            return
        tmp = "%s.tmp%d" % (dst, os.getpid())
        fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            fd_out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
            try:
                clone(fd_in, fd_out)
            finally:
                os.close(fd_out)
            self.added_bytes += os.fstat(fd_in).st_size
        finally:
            os.close(fd_in)
        os.replace(tmp, dst)
        self.used.add(dst)
        self.added = True

    def copy_out(self, name, fd_out):
        """Copy the cached whole file `name` into fd_out, hashing it on the way: True when it
        matched; a mismatching entry is evicted."""
        p = self.path(name)
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
                write_all(fd_out, block)
        if h.hexdigest() != name:
            self.evict(p)
            return False
        os.utime(p)
        self.used.add(p)
        return True

    def put(self, h, data):
        """A copy, for chunks of writable targets (a run may edit its code in place)."""
        dst = self.path(h)
        if os.path.exists(dst):
            return
        write_atomic(dst, data)
        self.used.add(dst)
        self.added = True
        self.added_bytes += len(data)

    def drop_index(self, h):
        """Forget chunk h's index lines, here and in index.txt, which every later sync reads (the first
        line for a chunk wins, so a right one appended after could never replace it). Rewritten under
        the shared lock: a line another sync appends meanwhile may be lost, which costs that chunk's
        bytes once, never a wrong tree (every read is verified)."""
        self.index.pop(h, None)
        path = os.path.join(self.root, INDEX)
        try:
            with open(path) as f:
                lines = [line for line in f if line.endswith("\n") and line.split(" ", 1)[0] != h]
        except OSError:
            return
        write_atomic(path, "".join(lines).encode(), 0o600)

    def add_index(self, file_hash, chunks):
        off = 0
        for h, n in chunks:
            if h not in self.index:
                self.index[h] = (file_hash, off, n)
                self.new_lines.append("%s %s %d %d\n" % (h, file_hash, off, n))
            off += n

    # -- manifests ------------------------------------------------------------------------------
    def manifest_path(self, sid):
        return os.path.join(self.root, "manifests", sha256_name(sid) + ".z")

    def has_manifest(self, sid):
        return is_sha256(sid) and os.path.exists(self.manifest_path(sid))

    def load_manifest(self, sid):
        """The manifest, verified against its id; None (and dropped) when absent or corrupt."""
        import json
        import zlib
        if not is_sha256(sid):
            return None                 # a damaged record's id: nothing to read (or drop) under it
        p = self.manifest_path(sid)
        try:
            with open(p, "rb") as f:
                raw = zlib.decompress(f.read())
        except (OSError, zlib.error):
            self.evict(p)
            return None
        if hashlib.sha256(raw).hexdigest() != sid:
            self.evict(p)
            return None
        os.utime(p)
        self.used.add(p)
        return json.loads(raw)

    def save_manifest(self, sid, compressed):
        p = self.manifest_path(sid)
        write_atomic(p, compressed)
        self.used.add(p)
        self.added = True
        self.added_bytes += len(compressed)

    def evict(self, p):
        try:
            os.unlink(p)
        except OSError:
            pass

    def finish(self):
        if self.new_lines:
            fd = os.open(os.path.join(self.root, INDEX), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, "".join(self.new_lines).encode())    # one append: never interleaved
            finally:
                os.close(fd)
            self.new_lines = []
        if self.added_bytes:
            self._append(ADDED, "%d\n" % self.added_bytes)
        freed = 0
        # Only a sync that added something can have pushed the cache over its cap.
        if self.max_bytes is not None and self.added and self._exclusive():
            freed = self.trim()
        os.close(self.lock_fd)
        return freed

    def _exclusive(self):
        """True when no other sync holds the cache (they may rely on entries trim would drop)."""
        try:
            import fcntl
            fcntl.flock(self.lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except ImportError:
            return True
        except OSError:
            return False

    def _append(self, name, text):
        fd = os.open(os.path.join(self.root, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, text.encode())           # one append: never interleaved
        finally:
            os.close(fd)

    def estimate(self):
        """Bytes the cache holds: what the last walk counted plus what every sync since added
        (evictions and corrupt entries dropped since only make it high); None before any walk, or
        when that walk is over WALK_EVERY_S old (what an older fleet on the host added is not in
        added.txt: the estimate never trails the cache by longer than that)."""
        import time
        try:
            with open(os.path.join(self.root, SIZE)) as f:
                total = int(f.read())
                if os.fstat(f.fileno()).st_mtime < time.time() - WALK_EVERY_S:
                    return None
        except (OSError, ValueError):
            return None
        try:
            with open(os.path.join(self.root, ADDED)) as f:
                total += sum(int(line) for line in f if line.endswith("\n"))
        except OSError:
            pass
        except ValueError:
            return None
        return total

    def _running(self, name):
        """helper/<hash>.py and its compiled <hash>.py.<tag>.code: those of the helper running now. The
        others (earlier fleet versions') are evicted like any entry: a sync whose helper went is sent it."""
        return self.helper is None or name.split(".", 1)[0] == self.helper

    def trim(self):
        """Evict the least recently written/used entries (not those this sync used) until under the cap.
        Walks the cache only when the running estimate says it may be over (the exclusive lock keeps
        the estimate's files still: every sync appends to them under its shared lock)."""
        est = self.estimate()
        if est is not None and est <= self.max_bytes:
            return 0
        held, total = [], 0
        for sub in os.listdir(self.root):
            d = os.path.join(self.root, sub)
            if (len(sub) != 2 and sub not in ("manifests", "helper")) or not os.path.isdir(d):
                continue
            for entry in os.scandir(d):
                if ".tmp" in entry.name or (sub == "helper" and not entry.name.endswith((".py", ".code"))):
                    continue                   # another sync's entry (or helper) in the making
                st = entry.stat(follow_symlinks=False)
                total += st.st_size
                if entry.path not in self.used and not (sub == "helper" and self._running(entry.name)):
                    held.append((st.st_mtime, st.st_size, entry.path))
        freed = 0
        for _mtime, size, p in sorted(held):
            if total <= self.max_bytes:
                break
            self.evict(p)
            total -= size
            freed += size
        write_atomic(os.path.join(self.root, SIZE), b"%d" % total, 0o600)
        write_atomic(os.path.join(self.root, ADDED), b"", 0o600)
        if not freed:
            return 0
        self._load_index()             # lines other syncs appended since we read it
        live = {h: v for h, v in self.index.items() if os.path.exists(self.path(v[0]))}
        if len(live) != len(self.index):
            write_atomic(os.path.join(self.root, INDEX),
                         "".join("%s %s %d %d\n" % (h, v[0], v[1], v[2]) for h, v in live.items()).encode(), 0o600)
            self.index = live
        return freed
