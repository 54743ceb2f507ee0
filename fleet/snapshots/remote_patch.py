"""Patching a read-only target's tree where it stands (stdlib only; cached on the host with the sync
helper, after remote_tree.py).

When the machine's record says the tree at dest holds snapshot X and its recorded files are
untouched, a sync to snapshot Y changes only what differs: entries Y lacks (and anything else found
on disk that Y does not hold as it is) are removed, new and changed entries are written, and every
unchanged file stays the inode it was: nothing unchanged is read, hashed, linked or stamped again.
A large file changed inside, its layout kept (the same chunks at the same offsets but for the
change), is overwritten where it stands: only the changed chunks are written. Any other large
changed file is rebuilt under a temp name from its old copy's unchanged chunks (an in-kernel copy,
where the old way read each from the host cache and hashed it) plus the chunks that arrive, then
renamed over the old one. This replaces rebuilding the whole
tree beside the old one (O(files) links, stats and unlinks for a 1 % change).

The record is removed first, so the tree is never "current" until the patch has finished and is
recorded again; a patch that fails half way leaves a tree no record vouches for, and the next sync
rebuilds it whole. As in remote_tree, nothing is written through a link: every directory is opened
relative to its parent with O_NOFOLLOW, removals are unlinkat/rmdir relative to those descriptors.
"""
import os

if "Tree" not in globals():   # inline, remote_cache.py and remote_tree.py come first
    from fleet.snapshots.remote_cache import Failure  # noqa: F401
    from fleet.snapshots.remote_tree import (  # noqa: F401
        _DIR_FLAGS, Tree, build_file, make_writable, rm_rf, state_file, write_record)

_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def _remove_dir(parent_fd, name):
    """Remove directory `name` (under parent_fd) and everything in it, never following a link."""
    try:
        _remove_below(parent_fd, name)
    except RecursionError:    # a tree deeper than Python's stack: rm walks any depth, by the same descriptor
        where = "/proc/self/fd/%d/%s" % (parent_fd, name)
        make_writable(where)
        rm_rf(where, pass_fds=(parent_fd,))


def _remove_below(parent_fd, name):
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    try:
        os.fchmod(fd, 0o755)                    # a read-only tree's directories are 0555
        with os.scandir(fd) as it:
            items = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for sub, is_dir in items:
            if is_dir:
                _remove_below(fd, sub)
            else:
                os.unlink(sub, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def _clear(fd, prefix, plan):
    """Make every directory writable and remove what the new view does not hold as it is on disk:
    entries it lacks or holds as another type, links pointing elsewhere, files to be rebuilt (except
    those rebuilt from their old copy, replaced by a rename later)."""
    os.fchmod(fd, 0o755)
    with os.scandir(fd) as it:
        items = [(e.name, e.is_dir(follow_symlinks=False), e.is_symlink()) for e in it]
    for name, is_dir, is_link in items:
        rel = prefix + name
        want = plan.view.get(rel)
        kind = want["type"] if want is not None else None
        if is_dir:
            if kind == "dir":
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                try:
                    _clear(sub, rel + "/", plan)
                finally:
                    os.close(sub)
            else:
                _remove_dir(fd, name)
        elif is_link:
            if kind != "symlink" or os.readlink(name, dir_fd=fd) != want["target"]:
                os.unlink(name, dir_fd=fd)
        elif kind != "file" or (rel not in plan.reuse and rel not in plan.old):
            os.unlink(name, dir_fd=fd)


def _copy_range(src, dst, n, src_off, dst_off):
    while n > 0:
        try:
            done = os.copy_file_range(src, dst, n, src_off, dst_off)
        except (AttributeError, OSError):
            done = 0
        if done <= 0:                           # no copy_file_range here: through this process
            data = os.pread(src, n, src_off)
            if len(data) != n:
                raise Failure("the old copy of a file changed while it was read", None, None)
            while data:
                k = os.pwrite(dst, data, dst_off)
                data, dst_off, src_off, n = data[k:], dst_off + k, src_off + k, n - k
            return
        n, src_off, dst_off = n - done, src_off + done, dst_off + done


def rebuild_from_old(pfd, name, path, e, was, mode, cache, frames):
    """File `name` (in pfd; `path` is where that is) as entry e, its old copy there holding entry
    `was`: chunks the old copy has are copied from it in the kernel (it is untouched, like a reused
    file: not hashed again), the rest arrive (hashed on arrival) or come from the host cache; then it
    is renamed over the old copy. The host cache keeps the chunks that arrived (or, when most of the
    file is new, the whole file, as build_file keeps what it builds)."""
    at, off = {}, 0
    for h, n in was["chunks"]:
        at.setdefault(h, off)
        off += n
    # Mostly the old file: keep only the chunks that arrived (the rest are in the host cache since
    # the old copy was built); mostly new: keep the whole file, as build_file does.
    by_chunk = sum(n for h, n in e["chunks"] if h in at) * 2 >= e["size"]
    tmp = ".%s.fleet-patch-%d" % (name, os.getpid())
    src = os.open(name, _FILE_FLAGS, dir_fd=pfd)
    try:
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=pfd)
        try:
            here, off = {}, 0                   # chunks already written into the new file: offset
            for h, n in e["chunks"]:
                if h in at:
                    _copy_range(src, fd, n, at[h], off)
                elif h in here:
                    _copy_range(fd, fd, n, here[h], off)
                else:
                    if h in frames.push:
                        data = frames.take(h, e["path"])
                        if by_chunk:
                            cache.put(h, data)
                    else:
                        data = cache.read(h, e["path"])
                    view, pos = memoryview(data), off
                    while view:
                        k = os.pwrite(fd, view, pos)
                        view, pos = view[k:], pos + k
                here.setdefault(h, off)
                off += n
            os.ftruncate(fd, off)
        finally:
            os.close(fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=pfd)
        except OSError:
            pass
        raise
    finally:
        os.close(src)
    os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)
    if not by_chunk:
        cache.link(path, e["sha256"])
        cache.add_index(e["sha256"], e["chunks"])


def overwrite_in_place(pfd, name, e, was, mode, cache, frames):
    """Entry e written over its old copy (holding `was`) where it stands, when that is exact: every
    chunk the old copy also holds sits at the same offset in both (a change that kept the file's
    layout, as an update inside a fixed-size file does), the old copy is not linked elsewhere, and
    most of its bytes stay. Only the other chunks are written; nothing else is read or copied.
    False (nothing touched) when it is not exact."""
    old_at, off = set(), 0
    for h, n in was["chunks"]:
        old_at.add((h, off))
        off += n
    held = {h for h, _off in old_at}
    writes, kept, off = [], 0, 0
    for h, n in e["chunks"]:
        if (h, off) in old_at:
            kept += n
        elif h in held:
            return False                        # moved within the file: rebuild_from_old copies it
        else:
            writes.append((h, off))
        off += n
    if kept * 2 < e["size"]:
        return False
    fd = os.open(name, _FILE_FLAGS, dir_fd=pfd)
    try:
        st = os.fstat(fd)
        if st.st_nlink != 1:
            return False
        os.fchmod(fd, 0o600)                    # a read-only tree's file: writable by us for a moment
        wfd = os.open(name, os.O_WRONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=pfd)
    finally:
        os.close(fd)
    try:
        if os.fstat(wfd).st_ino != st.st_ino:
            raise Failure("%s changed while it was patched" % e["path"], None, e["path"])
        for h, at in writes:
            if h in frames.push:
                data = frames.take(h, e["path"])
                cache.put(h, data)              # the old copy's chunks are cached since it was built
            else:
                data = cache.read(h, e["path"])
            view = memoryview(data)
            while view:
                k = os.pwrite(wfd, view, at)
                view, at = view[k:], at + k
        os.ftruncate(wfd, off)
        os.fchmod(wfd, mode)
    finally:
        os.close(wfd)
    return True


def patch(plan, cache, frames, extra=None):
    """Bring the tree at the target's dest from the recorded old view to plan.view in place."""
    dest = plan.target["dest"]
    try:
        os.unlink(state_file(dest))             # the tree is about to change: never current until recorded
    except FileNotFoundError:
        pass
    root = os.open(dest, _DIR_FLAGS)
    try:
        _clear(root, "", plan)
    finally:
        os.close(root)
    stamps = {rel: plan.stamps[rel] for rel in plan.reuse}
    tree = Tree(dest)
    try:
        os.fchmod(tree.dir_fd("", dest), 0o755)
        for rel, e in sorted(plan.view.items()):
            if e["type"] == "dir":
                tree.dir_fd(rel, rel)
                continue
            if rel in plan.reuse:
                continue
            pfd, name = tree.place(rel)
            if e["type"] == "symlink":
                try:
                    os.symlink(e["target"], name, dir_fd=pfd)
                except FileExistsError:         # _clear kept it: it already points there
                    pass
                continue
            mode = (e["mode"] & ~0o222) & 0o7777
            if rel in plan.old:
                if not overwrite_in_place(pfd, name, e, plan.old[rel], mode, cache, frames):
                    rebuild_from_old(pfd, name, os.path.join(dest, rel), e, plan.old[rel], mode, cache, frames)
            elif extra is not None and e.get("key") is not None:
                extra((pfd, name), rel, e)      # an object fetched from S3 (see remote_helper)
            else:
                build_file((pfd, name), os.path.join(dest, rel), e, mode, cache, frames)
            st = os.lstat(name, dir_fd=pfd)
            stamps[rel] = [st.st_ino, st.st_size, st.st_mtime_ns]
        for rel in sorted(r for r, e in plan.view.items() if e["type"] == "dir"):
            os.fchmod(tree.dir_fd(rel, rel, create=False), 0o555)
        os.fchmod(tree.dir_fd("", dest), 0o555)
    finally:
        tree.close()
    write_record(plan.target, stamps)
