"""Building a target's tree on the machine (stdlib only; cached on the host with the sync helper).

A target is one or more snapshots (a base, then overlays) merged into one view: path → entry. The
tree is built in a sibling temp directory and renamed into place only once whole, so a run never
sees half a tree. Incremental: when the machine's record says the old tree holds snapshot X and its
files are untouched (same inode, size, mtime), every unchanged file of the new view is hard-linked
from the old tree — only changed paths are written, nothing unchanged is read or hashed again.

Never follows a link while writing: every path component is opened relative to its parent with
O_NOFOLLOW | O_DIRECTORY, so a symlink the snapshot itself put down (`sub -> /elsewhere`) cannot
carry a later entry (`sub/x`) outside the root. Which snapshot a tree holds is recorded in the
machine's fleet state dir, never as a file inside the tree.
"""
import errno
import hashlib
import json
import os
import stat

if "Cache" not in globals():   # inline, remote_cache.py's text comes first (see sync_remote.helper_source)
    from fleet.snapshots.remote_cache import EMPTY, Cache, Failure, spread_subdirs, write_all  # noqa: F401

STATE = {"dir": None, "fixed": False}   # records of materialised targets (the machine's .fleet/materialised)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
FILE_MODES = (0o644, 0o755)           # all a manifest's files may have (fleet/snapshots/manifest.normal_mode)


def make_writable(root):
    todo = [root]      # not os.walk: before Python 3.12 it recurses once per level
    while todo:
        top = todo.pop()
        try:
            os.chmod(top, 0o755)
            with os.scandir(top) as it:
                todo += [e.path for e in it if e.is_dir(follow_symlinks=False)]
        except OSError:
            pass


def lock_dirs(root):
    """Every directory of a tree made read-only, the deepest first, never through a link. Not
    os.walk: before Python 3.12 it recurses once per level, and a snapshot of what a job wrote
    (a `cp -r . sub/` in a loop) can be deeper than the stack."""
    dirs, todo = [], [root]
    while todo:
        top = todo.pop()
        dirs.append(top)
        with os.scandir(top) as it:
            todo += [e.path for e in it if e.is_dir(follow_symlinks=False)]
    for path in reversed(dirs):
        os.chmod(path, 0o555)


def remove_tree(path):
    if os.path.islink(path) or os.path.isfile(path):
        os.unlink(path)
    elif os.path.exists(path):
        import shutil
        make_writable(path)
        try:
            shutil.rmtree(path)
        except RecursionError:
            rm_rf(path)


def rm_rf(path, pass_fds=()):
    """`rm -rf`, for a tree deeper than Python's stack (a run's `cp -r . sub/` in a loop): rmtree and
    a walk of our own recurse once per level. What it leaves raises, as rmtree would."""
    import subprocess
    rm = subprocess.run(["rm", "-rf", "--", path], pass_fds=pass_fds, stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if os.path.lexists(path):
        said = (rm.stderr.decode(errors="replace").strip().splitlines() or ["it failed"])[-1]
        raise OSError(errno.ENOTEMPTY, "rm -rf: " + said, path)


def clean(rel):
    parts = rel.split("/")
    if not rel or rel.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError("unsafe path %r in manifest" % rel)
    return rel


class Tree:
    """Writes under one root without ever following a link (see the module notes). Entries arrive
    sorted by path, so only the descriptors of the current directory's ancestors are kept open."""

    def __init__(self, root):
        self.root = root
        self.open = [("", os.open(root, _DIR_FLAGS))]    # (rel dir, fd): the chain to the current dir

    def close(self):
        while self.open:
            os.close(self.open.pop()[1])

    def dir_fd(self, rel, where, create=True):
        """The descriptor of directory `rel` ("" is the root), made if missing; None when `create`
        is false and it is missing or not a real directory."""
        while not (rel == self.open[-1][0] or self.open[-1][0] == "" or rel.startswith(self.open[-1][0] + "/")):
            os.close(self.open.pop()[1])
        rest = rel[len(self.open[-1][0]):].lstrip("/")
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
                raise Failure("%s: %s is a symlink or a file in the snapshot, not a directory; refusing to "
                              "write through it" % (where, sub), None, where) from None
            self.open.append((sub, fd))
        return self.open[-1][1]

    def place(self, rel):
        """(parent fd, name) for a new entry at `rel`."""
        parent, _, name = rel.rpartition("/")
        return self.dir_fd(parent, rel), name


def merged_view(ids, manifests):
    """path → entry of the snapshots applied in order: a later layer replaces a path (and, unless
    it is a directory, whatever was under it); its `deleted` paths go with everything under them."""
    view = {}
    for layer, sid in enumerate(ids):
        m = manifests[sid]
        for e in m["entries"]:
            rel = clean(e["path"])
            if e["type"] == "file" and (type(e.get("mode")) is not int or e["mode"] not in FILE_MODES):
                # a forged manifest's 0o4755 would be a setuid file of this user here (see manifest.py)
                raise Failure("%s: mode %s is not a snapshot file's mode (0o644 or 0o755); refusing a forged "
                              "manifest" % (rel, oct(e["mode"]) if isinstance(e.get("mode"), int) else repr(e.get("mode"))),
                              None, rel)
            if layer and e["type"] != "dir":   # overlays are small: this scan stays cheap
                _drop_under(view, rel)
            view[rel] = e
        for rel in m.get("deleted", []):
            view.pop(clean(rel), None)
            _drop_under(view, rel)
    return view


def _drop_under(view, rel):
    for p in [p for p in view if p.startswith(rel + "/")]:
        del view[p]


def same_file(a, b):
    return a is not None and b is not None and a["type"] == b["type"] == "file" and \
        a["sha256"] == b["sha256"] and a.get("mode") == b.get("mode") and a.get("chunks") == b.get("chunks")


# -- records: which snapshots a tree holds, kept in the state dir --------------------------------------
def use_state_dir(path):
    STATE["dir"] = path
    os.makedirs(path, exist_ok=True)


def state_file(dest):
    return os.path.join(STATE["dir"], hashlib.sha256(os.path.abspath(dest).encode()).hexdigest()[:32])


def read_record(dest):
    try:
        with open(state_file(dest)) as f:
            rec = json.load(f)
        st = os.lstat(dest)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(rec, dict) or rec.get("dest") != os.path.abspath(dest) or \
            [rec.get("dev"), rec.get("ino")] != [st.st_dev, st.st_ino]:
        return None
    return rec


def untouched(dest, rel, stamp):
    try:
        st = os.lstat(os.path.join(dest, rel))
    except OSError:
        return False
    return [st.st_ino, st.st_size, st.st_mtime_ns] == stamp


def in_real_dirs(dest, rel, seen):
    """Every directory above `rel` in the tree is a directory, not a link. A file found by its path
    through a link (a run moved `sub` out of its data and left `sub -> /scratch/sub`) keeps its
    stamp but is not in the tree: the patch removes the link, and a file it took as kept was gone.
    `seen` memoises the answer per directory (one lstat each)."""
    parts = rel.split("/")[:-1]
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if sub not in seen:
            try:
                seen[sub] = stat.S_ISDIR(os.lstat(os.path.join(dest, sub)).st_mode)
            except OSError:
                seen[sub] = False
        if not seen[sub]:
            return False
    return True


def is_current(target):
    """The tree at dest holds exactly these snapshots and no recorded file was changed since."""
    dest = target["dest"]
    rec = read_record(dest)
    if rec is None or rec.get("ids") != "+".join(target["ids"]):
        return False
    for rel, stamp in rec.get("files", {}).items():
        if not untouched(dest, rel, stamp):
            return False
    for rel, size in target.get("sizes", {}).items():
        try:
            if os.lstat(os.path.join(dest, rel)).st_size != size:
                return False
        except OSError:
            return False
    return True


def write_record(target, stamps):
    st = os.lstat(target["dest"])
    rec = {"dest": os.path.abspath(target["dest"]), "dev": st.st_dev, "ino": st.st_ino,
           "ids": "+".join(target["ids"]), "prev": list(target["ids"]), "files": stamps}
    tmp = state_file(target["dest"]) + ".%d" % os.getpid()
    with open(tmp, "w") as f:
        f.write(json.dumps(rec))        # dumps: the C encoder (json.dump writes piece by piece in Python)
    os.replace(tmp, state_file(target["dest"]))


# -- planning and building -------------------------------------------------------------------------
class Plan:
    """What building one target takes: its view; with a read-only target whose old tree is recorded
    and untouched, which files stay as they are (`reuse`) and which large changed files are rebuilt
    from their old copy's unchanged chunks (`old`: path → old entry). Such a target is patched where
    it stands (remote_patch.py) rather than rebuilt beside the old tree."""

    def __init__(self, target, manifests, previous=None):
        self.target, self.view = target, merged_view(target["ids"], manifests)
        self.read_only = bool(target.get("read_only"))
        self.reuse, self.old, self.stamps = set(), {}, None
        if previous and self.read_only:        # writable trees (code a run may edit) are rebuilt
            old_view, self.stamps = previous
            dirs = {}
            for rel, e in self.view.items():
                was = old_view.get(rel)
                if rel not in self.stamps or e["type"] != "file" or not untouched(target["dest"], rel, self.stamps[rel]) \
                        or not in_real_dirs(target["dest"], rel, dirs):
                    continue
                if same_file(e, was):
                    self.reuse.add(rel)
                elif len(e.get("chunks") or ()) > 1 and e.get("key") is None and was and was.get("chunks"):
                    self.old[rel] = was

    def old_chunks(self, rel):
        """Chunks of file `rel` its old copy holds (taken from there, never asked for)."""
        was = self.old.get(rel)
        return {h for h, _n in was["chunks"]} if was else ()

    def files_to_build(self):
        return [(rel, e) for rel, e in sorted(self.view.items()) if e["type"] == "file" and rel not in self.reuse]


def copy_cached(at, e, mode, cache, frames):
    """A file whose whole copy is in the host cache: copy it out, verifying it on the way."""
    pfd, name = at
    if any(h in frames.push for h, _ in e["chunks"]) or not os.path.exists(cache.path(e["sha256"])):
        return False
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=pfd)
    try:
        ok = cache.copy_out(e["sha256"], fd)
    finally:
        os.close(fd)
    if not ok:
        raise Failure("%s does not match its recorded hash (a corrupt cached copy was dropped; sync again)"
                      % e["path"], e["sha256"], e["path"], True)
    return True


def build_file(at, path, e, mode, cache, frames):
    """Create the file `name` in directory `pfd` (at = (pfd, name); `path` is where that is), then
    keep a copy of it in the host cache."""
    pfd, name = at
    chunks = e["chunks"]
    if chunks and copy_cached(at, e, mode, cache, frames):
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
            here.setdefault(h, off)
            off += n
    finally:
        os.close(fd)
    if chunks:
        cache.link(path, e["sha256"])
        if len(chunks) > 1:
            cache.add_index(e["sha256"], chunks)


def build(plan, tree, cache, frames, extra=None):
    """Every entry of the view into `tree`, sorted by path (parents before children)."""
    dest = plan.target["dest"]
    for rel, e in sorted(plan.view.items()):
        if e["type"] == "dir":
            tree.dir_fd(rel, rel)
            continue
        pfd, name = tree.place(rel)
        if e["type"] == "symlink":
            os.symlink(e["target"], name, dir_fd=pfd)
        elif rel in plan.reuse:
            os.link(os.path.join(dest, rel), name, dst_dir_fd=pfd, follow_symlinks=False)
        elif extra is not None and e.get("key") is not None:
            extra((pfd, name), rel, e)         # an object fetched from S3 (see remote_helper)
        else:
            mode = (e["mode"] & ~0o222) if plan.read_only else e["mode"]
            build_file((pfd, name), os.path.join(tree.root, rel), e, mode & 0o7777, cache, frames)


def materialise(target, manifests, cache, frames, plan=None, extra=None):
    dest = target["dest"].rstrip("/")
    target = dict(target, dest=dest)
    plan = plan or Plan(target, manifests)
    if not STATE["fixed"]:
        use_state_dir(os.path.join(os.path.dirname(cache.root.rstrip("/")), "materialised"))
    if plan.stamps is not None and os.path.isdir(dest) and not os.path.islink(dest):
        patch_tree = globals().get("patch")            # inline: remote_patch.py's text follows this one
        if patch_tree is None:
            from fleet.snapshots.remote_patch import patch as patch_tree
        return patch_tree(plan, cache, frames, extra)   # only what changed is written
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, ".%s.partial-%d" % (os.path.basename(dest), os.getpid()))
    remove_tree(tmp)
    os.makedirs(tmp)
    spread_subdirs(tmp)                       # a tree of many files: see remote_cache.spread_subdirs
    try:
        tree = Tree(tmp)
        try:
            build(plan, tree, cache, frames, extra)
        finally:
            tree.close()
        stamps = {}
        for rel, e in plan.view.items():
            if e["type"] == "file":
                st = os.lstat(os.path.join(tmp, rel))
                stamps[rel] = [st.st_ino, st.st_size, st.st_mtime_ns]
        if plan.read_only:
            lock_dirs(tmp)
        try:
            os.unlink(state_file(dest))      # the tree is about to change: never current until recorded
        except FileNotFoundError:
            pass
        old = os.path.join(parent, ".%s.old-%d" % (os.path.basename(dest), os.getpid()))
        if os.path.lexists(dest):
            os.replace(dest, old)
        os.replace(tmp, dest)
        remove_tree(old)
        write_record(target, stamps)
    except BaseException:
        remove_tree(tmp)
        raise
