"""The machine side of snapshot sync. Stdlib only: it is sent inline (`python -c`) on every sync.

One process, one SSH channel:
  1. read {"cache", "cache_max", "targets"}; answer {"current"}: targets already materialised from
     the same snapshot(s). If every target is current, that is all. Otherwise read {"want"} (the
     chunks of the other targets) and answer {"missing"}: those the cache lacks.
  2. read the job {"manifests", "targets", "urls"}. With urls (S3 store), pull those chunks straight
     from S3 (presigned GETs), verify each, answer {"fetched", "failed"}. Then build every target,
     file by file in a fixed order; each chunk the cache still lacks arrives, in that same order,
     as a frame "<64 hex id><12 digit length>\\n<bytes>" and goes straight into its file. Answer
     {"ok": true, ...} or {"ok": false, "error", "chunk", "path"}.

Why it is shaped like this (first sync used to write every chunk twice and hash it twice):
  - a chunk is hashed once, when it arrives or is taken from the cache; a single-chunk file's chunk
    hash is its file hash, and a multi-chunk file is the concatenation of chunks each verified
    against the manifest, whose own hash is the snapshot id the controller checked;
  - files are created once, with their final mode; the cache keeps hard links to read-only files
    (named by the file's sha256, plus an index line per chunk of multi-chunk files), so caching costs
    a link instead of a copy, and an unchanged file in a new snapshot is linked, not rewritten;
  - writable targets (code the run may edit) get copies in the cache, never links.
The cache is bounded: above `cache_max` bytes held only by the cache (link count 1), the least
recently written or used entries are evicted after a sync.
"""
import hashlib
import json
import errno
import os
import shutil
import stat
import sys

if "Cache" not in globals():   # inline, remote_cache.py's text is sent first (see sync.helper_source)
    from fleet.snapshots.remote_cache import EMPTY, Cache, Failure, hash_file, write_all  # noqa: F401

MARKER = ".fleet-snapshot"   # where older fleets marked a tree, inside it: ignored, gone once rebuilt
STATE = {"dir": None}        # records of materialised targets: beside the chunk cache, never in the tree
HEADER = 77


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def readline(stream):
    line = stream.readline()
    if not line:
        raise EOFError("controller closed the stream")
    return json.loads(line)


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


def make_writable(root):
    for dirpath, _dirs, _files in os.walk(root):
        try:
            os.chmod(dirpath, 0o755)
        except OSError:
            pass


def remove_tree(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.exists(path):
        make_writable(path)
        shutil.rmtree(path)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class Tree:
    """Writes under one root without ever following a link: every path component is opened relative
    to its parent's descriptor with O_NOFOLLOW | O_DIRECTORY (and made with mkdir relative to it),
    so a symlink the snapshot itself put down (`sub -> /elsewhere`) can never carry a later entry
    (`sub/x`) outside the root. Entries arrive sorted by path, so only the descriptors of the
    current directory's ancestors are kept open."""

    def __init__(self, root):
        self.root = root
        self.open = [("", os.open(root, _DIR_FLAGS))]    # (rel dir, fd): the chain to the current dir

    def close(self):
        while self.open:
            os.close(self.open.pop()[1])

    def _refuse(self, rel, where):
        return Failure("%s: %s is a symlink or a file in the snapshot, not a directory; refusing to write "
                       "through it" % (where, rel), None, where)

    def dir_fd(self, rel, where, create=True):
        """The descriptor of directory `rel` ("" is the root), made if missing; None when `create`
        is false and it is missing or not a real directory."""
        while not (rel == self.open[-1][0] or self.open[-1][0] == "" or rel.startswith(self.open[-1][0] + "/")):
            os.close(self.open.pop()[1])
        have = self.open[-1][0]
        rest = rel[len(have):].lstrip("/")
        for name in rest.split("/") if rest else []:
            parent_rel, parent_fd = self.open[-1]
            sub = parent_rel + "/" + name if parent_rel else name
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(name, 0o755, dir_fd=parent_fd)
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
            except OSError as exc:             # ELOOP: a symlink; ENOTDIR: a file (or a link to one)
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                if not create:
                    return None
                raise self._refuse(sub, where) from None
            self.open.append((sub, fd))
        return self.open[-1][1]

    def forget(self, rel):
        """`rel` is about to go: drop its descriptor and its descendants' from the open chain."""
        while len(self.open) > 1 and (self.open[-1][0] == rel or self.open[-1][0].startswith(rel + "/")):
            os.close(self.open.pop()[1])

    def remove(self, rel, create_parent=False):
        """Remove whatever `rel` is (a link itself, never what it points at). Returns (parent fd, name)."""
        parent, _, name = rel.rpartition("/")
        pfd = self.dir_fd(parent, rel, create=create_parent)
        if pfd is None:
            return None, name
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return pfd, name
        if stat.S_ISDIR(st.st_mode):
            self.forget(rel)
            path = os.path.join(self.root, rel)   # its parents were just opened without following links
            make_writable(path)
            shutil.rmtree(path)
        else:
            os.unlink(name, dir_fd=pfd)
        return pfd, name


def clean(rel):
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("unsafe path %r in manifest" % rel)
    return rel


def marker_of(target):
    return "+".join(target["ids"])


def use_state_dir(cache_root):
    STATE["dir"] = os.path.join(os.path.dirname(cache_root.rstrip("/")), "materialised")
    os.makedirs(STATE["dir"], exist_ok=True)


def state_file(dest):
    return os.path.join(STATE["dir"], hashlib.sha256(os.path.abspath(dest).encode()).hexdigest()[:32])


def dest_record(target):
    st = os.lstat(target["dest"])
    return {"dest": os.path.abspath(target["dest"]), "dev": st.st_dev, "ino": st.st_ino, "ids": marker_of(target)}


def is_current(target):
    dest = target["dest"]
    try:
        with open(state_file(dest)) as f:
            if json.load(f) != dest_record(target):   # same path, same directory (dev, inode), same ids
                return False
    except (OSError, ValueError):
        return False
    # Cheap re-check that nothing was removed or truncated since (files are read-only anyway).
    for path, size in target.get("sizes", {}).items():
        try:
            if os.lstat(os.path.join(dest, path)).st_size != size:
                return False
        except OSError:
            return False
    return True


def link_cached(at, e, mode, cache, frames):
    """An unchanged file of a new snapshot: verify its cached copy and link it instead of writing."""
    pfd, name = at
    whole = cache.path(e["sha256"])
    if any(h in frames.push for h, _ in e["chunks"]):
        return False
    try:
        st = os.stat(whole)
    except OSError:
        return False
    if st.st_mode & 0o7777 != mode:
        return False
    if hash_file(whole) != e["sha256"]:
        cache.evict(whole)
        raise Failure("%s does not match its recorded hash (a corrupt cached copy was dropped; sync again)"
                      % e["path"], e["sha256"], e["path"])
    os.link(whole, name, dst_dir_fd=pfd)
    cache.used.add(whole)
    return True


def build_file(at, path, e, mode, cache, frames, read_only):
    """Create the file `name` in directory `pfd` (at = (pfd, name); `path` is where that is)."""
    pfd, name = at
    chunks = e["chunks"]
    if read_only and chunks and link_cached(at, e, mode, cache, frames):
        return
    if not chunks and e["sha256"] != EMPTY:
        raise Failure("%s does not match its recorded hash" % e["path"], None, e["path"])
    fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=pfd)
    try:
        here = {}                       # chunks already written into this file: offset
        off = 0
        for h, n in chunks:
            if h in frames.push:
                data = frames.take(h, e["path"])
            elif h in here:
                data = os.pread(fd, n, here[h])
            else:
                data = cache.read(h, e["path"])
            if len(chunks) == 1 and h != e["sha256"]:
                raise Failure("%s does not match its recorded hash" % e["path"], h, e["path"])
            write_all(fd, data)
            if not read_only:
                cache.put(h, data)
            here.setdefault(h, off)
            off += n
    finally:
        os.close(fd)
    if read_only and chunks:
        cache.link(path, e["sha256"])
        if len(chunks) > 1:
            cache.add_index(e["sha256"], chunks)


def write_entries(tree, manifest, cache, frames, read_only):
    for e in sorted(manifest["entries"], key=lambda e: e["path"]):
        rel = clean(e["path"])
        if e["type"] == "dir":
            parent, _, name = rel.rpartition("/")
            try:
                st = os.stat(name, dir_fd=tree.dir_fd(parent, rel), follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    tree.remove(rel)   # an overlay turns a link or file of the base into a directory
            except FileNotFoundError:
                pass
            tree.dir_fd(rel, rel)
            continue
        at = tree.remove(rel, create_parent=True)
        if e["type"] == "symlink":
            os.symlink(e["target"], at[1], dir_fd=at[0])
            continue
        mode = (e["mode"] & ~0o222) if read_only else e["mode"]
        build_file(at, os.path.join(tree.root, rel), e, mode & 0o7777, cache, frames, read_only)
    for rel in manifest.get("deleted", []):
        tree.remove(clean(rel))


def materialise(target, manifests, cache, frames):
    dest = target["dest"].rstrip("/")
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, ".%s.partial-%d" % (os.path.basename(dest), os.getpid()))
    remove_tree(tmp)
    os.makedirs(tmp)
    use_state_dir(cache.root)
    try:
        os.unlink(state_file(dest))      # the tree is about to change: never current until rebuilt
    except FileNotFoundError:
        pass
    read_only = bool(target.get("read_only"))
    try:
        tree = Tree(tmp)
        try:
            for sid in target["ids"]:      # a base snapshot, then overlays (dirty code) in order
                write_entries(tree, manifests[sid], cache, frames, read_only)
        finally:
            tree.close()
        if read_only:
            for dirpath, _dirs, _files in os.walk(tmp, topdown=False):
                os.chmod(dirpath, 0o555)
        old = os.path.join(parent, ".%s.old-%d" % (os.path.basename(dest), os.getpid()))
        if os.path.lexists(dest):
            os.replace(dest, old)
        os.replace(tmp, dest)
        remove_tree(old)
        record = state_file(dest) + ".%d" % os.getpid()
        with open(record, "w") as f:
            json.dump(dest_record(target), f)
        os.replace(record, state_file(dest))
    except BaseException:
        remove_tree(tmp)
        raise


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


def main():
    os.umask(0o022)                        # manifest modes are 0o644/0o755 (or their read-only forms)
    stream = os.fdopen(0, "rb", buffering=1 << 20)
    req = readline(stream)
    try:
        import fcntl
        fcntl.fcntl(0, 1031, 1 << 20)      # F_SETPIPE_SZ: sshd hands us data in bigger pieces
    except (ImportError, OSError):
        pass
    cache = Cache(req["cache"], req.get("cache_max"))
    use_state_dir(req["cache"])
    current = [t["dest"] for t in req["targets"] if is_current(t)]
    send({"current": current, "fresh": cache.fresh})
    if len(current) == len(req["targets"]):
        return                             # a no-op re-sync ends here
    if not cache.fresh:                    # a brand-new cache lacks everything: no need to ask
        missing = [h for h in readline(stream)["want"] if not cache.has(h)]
        send({"missing": missing})
    try:
        job = readline(stream)
        if cache.fresh:
            missing = [h for t in job["targets"] for sid in t["ids"] for e in job["manifests"][sid]["entries"]
                       if e["type"] == "file" for h, _n in e["chunks"]]
        push = set(missing)
        fetched = 0
        if job.get("urls"):
            failed, fetched, why = fetch(job["urls"], cache)
            push = (push - set(job["urls"])) | set(failed)
            send({"fetched": fetched, "failed": failed, "why": why})
        frames = Frames(stream, push)
        done = []
        for target in job["targets"]:
            materialise(target, job["manifests"], cache, frames)
            done.append(target["dest"])
        frames.end()
        evicted = cache.finish()
        send({"ok": True, "received": frames.received, "fetched": fetched, "materialised": done,
              "evicted_bytes": evicted})
    except Failure as exc:
        send({"ok": False, "error": str(exc), "chunk": exc.chunk, "path": exc.path})
    except (ValueError, OSError, EOFError) as exc:
        send({"ok": False, "error": str(exc)})


if __name__ == "__main__":
    main()
