"""The machine's chunk cache, for the sync helper (stdlib only; sent inline ahead of remote_helper.py).

Files named by their content's sha256 under <root>/<h[:2]>/: a chunk, or a whole read-only file
(hard-linked, not copied, from the tree it was materialised in). index.txt maps each chunk of a
cached multi-chunk file to (file hash, offset, length). Bounded: above `max_bytes` held only by the
cache (link count 1: no live tree shares them) the least recently written/used entries are evicted.
"""
import hashlib
import os
import shutil

INDEX = "index.txt"
EMPTY = hashlib.sha256(b"").hexdigest()


class Failure(Exception):
    def __init__(self, message, chunk=None, path=None):
        Exception.__init__(self, message)
        self.chunk, self.path = chunk, path


def write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def hash_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Cache:
    def __init__(self, root, max_bytes):
        self.root, self.max_bytes = root, max_bytes
        self.index, self.new_lines, self.used = {}, [], set()
        self.fresh = not os.path.isdir(os.path.join(root, "ff"))
        if self.fresh:
            for i in range(256):
                os.makedirs(os.path.join(root, "%02x" % i), exist_ok=True)
        try:
            with open(os.path.join(root, INDEX)) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 4:
                        self.index[parts[0]] = (parts[1], int(parts[2]), int(parts[3]))
        except OSError:
            pass

    def path(self, h):
        return os.path.join(self.root, h[:2], h)

    def locate(self, h):
        """(file, offset, length) holding chunk h, or None."""
        p = self.path(h)
        if os.path.exists(p):
            return p, 0, None
        hit = self.index.get(h)
        if hit and os.path.exists(self.path(hit[0])):
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
            if n is None and os.fstat(f.fileno()).st_nlink == 1:
                os.utime(p)             # recently used: evicted last (linked entries are in use anyway)
        if hashlib.sha256(data).hexdigest() != h:
            self.evict(p)
            raise Failure("%s does not match its recorded hash (a corrupt cached chunk %s was dropped; "
                          "sync again)" % (where, h[:12]), h, where)
        self.used.add(p)
        return data

    def link(self, src, name):
        """Hard-link a finished read-only file into the cache (a copy where links are impossible)."""
        dst = self.path(name)
        if os.path.exists(dst):
            return
        try:
            os.link(src, dst)
        except FileExistsError:
            return
        except OSError:
            shutil.copyfile(src, dst)
        self.used.add(dst)

    def put(self, h, data):
        """A copy, for chunks of writable targets (a run may edit its code in place)."""
        dst = self.path(h)
        if os.path.exists(dst):
            return
        tmp = "%s.tmp%d" % (dst, os.getpid())
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
        try:
            write_all(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, dst)
        self.used.add(dst)

    def add_index(self, file_hash, chunks):
        off = 0
        for h, n in chunks:
            if h not in self.index:
                self.index[h] = (file_hash, off, n)
                self.new_lines.append("%s %s %d %d\n" % (h, file_hash, off, n))
            off += n

    def evict(self, p):
        try:
            os.unlink(p)
        except OSError:
            pass

    def finish(self):
        if self.new_lines:
            with open(os.path.join(self.root, INDEX), "a") as f:
                f.write("".join(self.new_lines))
        if self.max_bytes is None:
            return 0
        return self.trim()

    def trim(self):
        """Evict the least recently written/used entries held only by the cache until under the cap."""
        held, total = [], 0
        for sub in os.listdir(self.root):
            d = os.path.join(self.root, sub)
            if len(sub) != 2 or not os.path.isdir(d):
                continue
            for entry in os.scandir(d):
                st = entry.stat(follow_symlinks=False)
                if st.st_nlink == 1 and entry.path not in self.used:
                    held.append((st.st_mtime, st.st_size, entry.path))
                    total += st.st_size
        if total <= self.max_bytes:
            return 0
        freed = 0
        for _mtime, size, p in sorted(held):
            if total <= self.max_bytes:
                break
            self.evict(p)
            total -= size
            freed += size
        live = {h: v for h, v in self.index.items() if os.path.exists(self.path(v[0]))}
        if len(live) != len(self.index):
            tmp = os.path.join(self.root, INDEX + ".tmp%d" % os.getpid())
            with open(tmp, "w") as f:
                f.write("".join("%s %s %d %d\n" % (h, v[0], v[1], v[2]) for h, v in live.items()))
            os.replace(tmp, os.path.join(self.root, INDEX))
            self.index = live
        return freed
