"""The machine side of a checkpoint upload. Stdlib only (pyfastcdc when the machine has it).

Run as `python -c <this source> DIR` over one SSH channel; JSON lines and frames on stdout:
  1. scan DIR: every file is cut into chunks and each chunk hashed (sha256); answer
     {"entries": [...], "cdc": bool} (manifest entries, paths relative to DIR);
  2. read {"want": [chunk ids]}: the chunks the store lacks;
  3. send each wanted chunk as a frame "<64 hex id><12 digit length>\\n<bytes>", then {"done": true}.
Files stay open from scan to send, so a checkpoint the experiment replaces (write, then rename)
meanwhile still uploads the version that was scanned; the controller verifies every chunk. Past the
descriptors this process may hold (a sharded checkpoint of 21,000 files failed every upload with
"Too many open files"), files are closed after the scan and reopened to send, by path, checked to be
the same file (device and inode): one replaced meanwhile fails this upload in one line.

Chunk boundaries: FastCDC with the store's own parameters when the machine has pyfastcdc (the
same cuts the controller makes, so chunks dedupe with every other snapshot); otherwise fixed
blocks of the average chunk size, which find every block a checkpoint rewrites in place.
"""
import errno
import hashlib
import json
import os
import stat
import sys

AVG, MIN, MAX = 256 * 1024, 128 * 1024, 1024 * 1024      # = fleet.snapshots.chunking (store format 3)


def _cutter():
    try:
        from pyfastcdc import FastCDC
    except ImportError:
        return None
    return FastCDC(AVG, min_size=MIN, max_size=MAX, normalized_chunking=1)


def _blocks(fh, cdc):
    if cdc is not None:
        offset = 0
        for c in cdc.cut_stream(fh):
            data = bytes(c.data)
            yield offset, data
            offset += len(data)
        return
    offset = 0
    while True:
        data = fh.read(AVG)
        if not data:
            return
        yield offset, data
        offset += len(data)


_SKIPPED = [0]


def _skipped(rel, why):
    _SKIPPED[0] += 1
    if _SKIPPED[0] <= 10:      # a directory of a million FIFOs must not fill the channel's stderr window
        sys.stderr.write("fleet: %s not checkpointed: %s\n" % (rel, why))


def _fd_budget():
    try:
        import resource
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, ValueError, OSError):
        return 900
    return max(16, (soft if soft != resource.RLIM_INFINITY else 1 << 20) - 64)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _listing(root):
    """(path, rel, kind) of every name under root ("link", "dir" or "other"), each directory's names
    sorted. Not os.walk: before Python 3.12 it recurses once per level, and a checkpoint deeper than
    the stack (a job's `cp -r . sub/` in a loop) was never uploaded. Never follows a link: each
    directory is opened O_NOFOLLOW, so one replaced by a link since it was listed is skipped."""
    todo = [(root, ".")]
    while todo:
        base, rel_base = todo.pop()
        try:
            # The root itself may be a link, as os.walk allowed; nothing below it is followed.
            fd = os.open(base, _DIR_FLAGS if base != root else _DIR_FLAGS & ~os.O_NOFOLLOW)
        except OSError as exc:
            if base == root or exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                raise       # unreadable (EACCES …): the upload fails, as for a file, rather than leave it out
            _skipped(rel_base, exc.strerror)      # gone since the listing, or a link put in its place
            continue
        try:
            # Each name's kind while the descriptor is open: where the filesystem gives no type,
            # DirEntry asks relative to it.
            with os.scandir(fd) as it:
                found = sorted((e.name, "link" if e.is_symlink() else "dir" if e.is_dir(follow_symlinks=False)
                                else "other") for e in it)
        except OSError as exc:
            exc.filename = base
            raise
        finally:
            os.close(fd)
        below = []
        for name, kind in found:
            path = os.path.join(base, name)
            rel = name if rel_base == "." else rel_base + "/" + name
            yield path, rel, kind
            if kind == "dir":
                below.append((path, rel))
        todo.extend(reversed(below))      # the first name first, as os.walk goes


def scan(root, cdc):
    entries, where, handles, keep = [], {}, [], _fd_budget()
    for path, rel, kind in _listing(root):
        if kind == "link":
            entries.append({"path": rel, "type": "symlink", "target": os.readlink(path)})
            continue
        if kind == "dir":
            entries.append({"path": rel, "type": "dir", "mode": 0o755})
            continue
        # Never blocks on a FIFO or a device the job left there; only regular files are checkpoint.
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENXIO):
                raise       # unreadable (EACCES …): the upload fails, the last checkpoint stays the latest
            _skipped(rel, exc.strerror)      # gone since the listing, or a link put in its place
            continue
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            _skipped(rel, "not a regular file")
            continue
        os.set_blocking(fd, True)
        fh = os.fdopen(fd, "rb", buffering=0)
        held = len(handles) < keep
        source = fh if held else (path, st.st_dev, st.st_ino)
        if held:
            handles.append(fh)
        whole, chunks, size = hashlib.sha256(), [], 0
        for offset, data in _blocks(fh, cdc):
            h = hashlib.sha256(data).hexdigest()
            whole.update(data)
            chunks.append([h, len(data)])
            where.setdefault(h, (source, offset, len(data)))
            size += len(data)
        if not held:
            fh.close()
        entries.append({"path": rel, "type": "file", "mode": 0o755 if st.st_mode & 0o111 else 0o644,
                        "size": size, "sha256": whole.hexdigest(), "chunks": chunks})
    return entries, where


def _cannot_read(root, exc):
    name = exc.filename or root
    if exc.errno == errno.ENAMETOOLONG:     # the whole path would be thousands of characters of d/d/d/…
        depth = os.path.relpath(name, root).count("/") + 1
        return "cannot read %s: a path %d levels deep in it is too long for the filesystem (%s)" % (
            root, depth, exc.strerror)
    return "cannot read %s: %s" % (name, exc.strerror or exc)


def _remove(root):
    import shutil
    try:
        shutil.rmtree(root, ignore_errors=True)
    except RecursionError:       # a tree deeper than Python's stack: rm walks any depth by descriptors
        import subprocess
        subprocess.run(["rm", "-rf", "--", root], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)      # stdout is the channel; errors ignored, as rmtree's are


def _more_open_files():
    # Every file stays open from scan to send: a sharded checkpoint of thousands of files needs more
    # than the usual soft limit of 1,024 descriptors.
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
    except (ImportError, ValueError, OSError):
        pass


def _reopen(path, dev, ino):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        st = os.fstat(fd)
    except OSError as exc:
        sys.stderr.write("cannot read %s: %s\n" % (path, exc.strerror or exc))
        sys.exit(1)
    if (st.st_dev, st.st_ino) != (dev, ino) or not stat.S_ISREG(st.st_mode):
        os.close(fd)
        sys.stderr.write("%s was replaced while it was being checkpointed\n" % path)
        sys.exit(1)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb", buffering=0)


def main():
    root = sys.argv[1]
    out = sys.stdout.buffer
    os.makedirs(root, exist_ok=True)
    _more_open_files()
    cdc = _cutter()
    try:
        entries, where = scan(root, cdc)
    except OSError as exc:      # one line for the controller's warning, not a traceback
        sys.stderr.write(_cannot_read(root, exc) + "\n")
        sys.exit(1)
    out.write(json.dumps({"entries": entries, "cdc": cdc is not None, "skipped": _SKIPPED[0]}).encode() + b"\n")
    out.flush()
    want = json.loads(sys.stdin.buffer.readline() or b"{}").get("want", [])
    reopened = [None, None]       # (path, dev, ino) and its handle: sends go file by file
    for h in want:
        fh, offset, n = where[h]
        if isinstance(fh, tuple):
            if reopened[0] != fh:
                if reopened[1] is not None:
                    reopened[1].close()
                reopened[:] = [fh, _reopen(*fh)]
            fh = reopened[1]
        fh.seek(offset)
        data = fh.read(n)
        out.write(f"{h}{len(data):012d}\n".encode())
        out.write(data)
    if "--remove" in sys.argv[2:]:      # a sweep trial's: sent, and no later trial may find it
        _remove(root)
    out.write(json.dumps({"done": True}).encode() + b"\n")
    out.flush()


if __name__ == "__main__":
    main()
