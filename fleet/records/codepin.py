"""Pin a run's code to a git commit, so what lands on machines is exactly that commit.

The experiment directory may be a subdirectory of a larger repository: we pin the commit, export
that commit's tree *of the experiment directory* (its blobs as git stores them, so neither the
working tree, ignored files nor export attributes leak in; only files under a git filter, such as
Git LFS, are smudged, said in a warning), and snapshot it. A dirty tree is refused unless
`allow_dirty`, which captures tracked changes and untracked, non-ignored files (plus deletions) as an
overlay snapshot of its own.
Outside a git repository the directory itself becomes the code snapshot, with a warning.
"""
from __future__ import annotations

import contextlib
import io
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EnvironmentProblem, UsageError
from ..snapshots.create import DEFAULT_EXCLUDES, SnapshotBuilder, create_snapshot
from ..snapshots.links import outside_links, secret_files_note
from ..snapshots.store import Store
from . import codefilters, gitsafe


@dataclass
class CodePin:
    commit: str | None                 # None outside a git repository
    dirty_snapshot_id: str | None      # overlay of uncommitted changes (allow_dirty only)
    code_snapshot_id: str
    warnings: list[str] = field(default_factory=list)      # each one line, for the user
    repo_root: str | None = None
    subdir: str = ""                   # experiment dir relative to the repo root ("" = root)
    dirty_files: list[str] = field(default_factory=list)

    @property
    def warning(self) -> str | None:
        return "\n".join(self.warnings) or None


def _git(args: list[str], cwd: Path, *, binary: bool = False) -> subprocess.CompletedProcess:
    return gitsafe.run(cwd, args, binary=binary)


def _repo_root(directory: Path) -> Path | None:
    res = _git(["rev-parse", "--show-toplevel"], directory)
    return Path(res.stdout.strip()) if res.returncode == 0 and res.stdout.strip() else None


def _check_git_dir_is_this_trees(root: Path) -> None:
    """`.git` as a file (`gitdir: PATH`) names a git directory, which must name this tree back:
    a handed-over one naming another repository on this computer pinned that repository's commit
    (its history and remote in the record) as the experiment's code. `git worktree add` leaves a
    `gitdir` file in it naming this `.git`; a submodule's has core.worktree (the existing check
    above already holds that to a tree that contains the experiment)."""
    dotgit = root / ".git"
    if os.environ.get("GIT_DIR") or not dotgit.is_file():
        return                            # a directory of its own, or the user chose the repository
    res = _git(["rev-parse", "--absolute-git-dir"], root)
    git_dir = Path(res.stdout.strip()).resolve() if res.returncode == 0 and res.stdout.strip() else None
    if git_dir is None:
        return
    with contextlib.suppress(OSError):
        back = (git_dir / "gitdir").read_text(errors="replace").strip()
        if back and (git_dir / back).resolve() == dotgit.resolve():
            return
    if _git(["config", "core.worktree"], root).stdout.strip():
        return
    raise UsageError(f"{dotgit} names the git directory {git_dir}, which is not this tree's (no worktree or "
                     "submodule of it names this directory): fleet will not pin another repository's code",
                     hint="remove that .git file and `git init` here, or run from that repository's own checkout")


def dirty_files(root: Path, subdir: str) -> list[tuple[str, str]]:
    """(status, path relative to subdir) for uncommitted changes under subdir, untracked non-ignored included."""
    res = _git(["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--ignore-submodules=dirty", "--", subdir or "."],
               root, binary=True)
    if res.returncode != 0:
        raise EnvironmentProblem(f"git status failed in {root}: {res.stderr.decode(errors='replace').strip()}")
    out = []
    for item in res.stdout.split(b"\0"):
        if len(item) < 4:
            continue
        status, path = item[:2].decode(), item[3:].decode(errors="surrogateescape")
        rel = path[len(subdir) + 1:] if subdir and path.startswith(subdir + "/") else path
        out.append((status, rel))
    return out


def _export_commit(root: Path, commit: str, subdir: str, store: Store) -> tuple[str, list[str], list[str]]:
    """Snapshot exactly the commit's tree under subdir: its blobs as git stores them (`git ls-tree`,
    `git cat-file --batch`), never the working dir. Not `git archive`: it applies attributes and
    filters a clean `git status` does not show (a smudge filter in .git/config, export-ignore in
    .git/info/attributes), so the code that ran could differ from the recorded commit. The one
    exception is a file under a git `filter` (Git LFS): its blob is a pointer, not the code, so it
    is smudged (codefilters: all of them by one git process, as a checkout would).
    Returns the snapshot id, warnings, and the submodules (gitlinks) it holds as empty directories."""
    treeish = f"{commit}:{subdir}" if subdir else commit
    listing = _git(["ls-tree", "-r", "-t", "-z", treeish], root, binary=True)
    if listing.returncode != 0:
        raise EnvironmentProblem(f"git ls-tree {treeish} failed: {listing.stderr.decode(errors='replace').strip()}")
    entries = []
    for item in listing.stdout.split(b"\0"):
        if item:
            meta, _, path = item.partition(b"\t")
            mode, kind, oid = meta.decode().split()
            entries.append((int(mode, 8), kind, oid, path.decode(errors="surrogateescape")))
    prefix = f"{subdir}/" if subdir else ""
    filtered = codefilters.filtered(root, prefix, [p for mode, kind, _o, p in entries
                                                   if kind == "blob" and mode != 0o120000])
    with codefilters.smudged_tree(root, commit, [prefix + p for p in filtered]) as smudged:
        return _export_entries(root, entries, prefix, filtered, smudged, store)


def _export_entries(root: Path, entries: list, prefix: str, filtered: dict[str, str], smudged: Path | None,
                    store: Store) -> tuple[str, list[str], list[str]]:
    builder = SnapshotBuilder(store)
    proc = subprocess.Popen(gitsafe.argv(root, ["cat-file", "--batch"]), cwd=root, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=gitsafe.env())
    failed: list[str] = []
    pointers: list[str] = []
    submodules: list[str] = []
    with _exporting(proc, builder):
        for mode, kind, oid, path in entries:
            if kind == "tree" or kind == "commit":     # a directory; a submodule stays one, empty
                builder.add_dir(path, 0o755)
                submodules += [path] if kind == "commit" else []
                continue
            if path in filtered and smudged is not None:
                if codefilters.add_from_tree(smudged, builder, prefix + path, path, mode):
                    pointers.append(path)
                continue
            if path in filtered:        # a filter failed: file by file, to know on which
                if codefilters.add_smudged(root, builder, oid, prefix + path, path, mode):
                    failed.append(path)
                continue
            proc.stdin.write(oid.encode() + b"\n")
            proc.stdin.flush()
            head = proc.stdout.readline().split()
            if len(head) != 3 or head[1] != b"blob":
                raise EnvironmentProblem(f"git cat-file gave no blob for {path} ({oid[:12]})")
            blob = _Exactly(proc.stdout, int(head[2]))
            if mode == 0o120000:
                builder.add_symlink(path, blob.read().decode(errors="surrogateescape"))
            else:
                builder.add_stream(path, 0o755 if mode & 0o111 else 0o644, blob)
            blob.read()                                 # whatever the builder left of it
            proc.stdout.read(1)                         # the newline after each object
        proc.stdin.close()
        if proc.wait() != 0:
            raise EnvironmentProblem(f"git cat-file failed: {proc.stderr.read().decode(errors='replace').strip()}")
    notes = codefilters.filter_notes(root, filtered, failed, pointers) + _few(
        [f"submodule {p} is not part of the pinned code (fleet pins one repository): it lands as an empty "
         "directory" for p in submodules], "submodules are not part of the pinned code")
    notes += outside_links(builder.entries, "the pinned code")
    return builder.publish().id, notes, submodules


@contextlib.contextmanager
def _exporting(proc, builder):
    """A git process feeding a snapshot: on any failure both end, and nothing is published."""
    try:
        yield
    except BaseException:
        builder.abort()
        proc.kill()
        proc.wait()
        raise


class _Exactly(io.RawIOBase):
    """The next `n` bytes of `stream`, as a file."""

    def __init__(self, stream, n: int):
        self.stream, self.left = stream, n

    def readable(self) -> bool:
        return True

    def readinto(self, buf) -> int:
        if self.left <= 0:
            return 0
        got = self.stream.read(min(len(buf), self.left))
        if not got:
            raise EnvironmentProblem("git cat-file ended in the middle of an object")
        buf[:len(got)] = got
        self.left -= len(got)
        return len(got)

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            parts = []
            while self.left > 0:
                parts.append(super().read(min(self.left, 1 << 20)))
            return b"".join(parts)
        return super().read(size)


def _dirty_overlay(base: Path, changes: list[tuple[str, str]], store: Store,
                   submodules: list[str]) -> tuple[str, list[str]]:
    """The uncommitted changes as a snapshot, and a line for each one it cannot hold: a nested
    repository (git lists it as one entry; fleet pins one repository), a FIFO or socket."""
    builder = SnapshotBuilder(store)
    left_out = []
    for status, rel in sorted(changes, key=lambda c: c[1]):
        real = base / rel
        if "D" in status and not real.exists():
            builder.deleted.append(rel)
            continue
        st = real.lstat()
        if os.path.islink(real):
            builder.add_symlink(rel, os.readlink(real))
        elif real.is_file():
            builder.add_file(rel, real, st)
        elif real.is_dir():
            if rel.rstrip("/") not in submodules:       # a submodule's line is said already
                left_out.append(f"{rel.rstrip('/')} is a git repository of its own (fleet pins one repository): "
                                "the uncommitted changes recorded with the run leave it out")
        else:
            left_out.append(f"the uncommitted changes recorded with the run leave out {rel}: not a regular file "
                            "or symlink")
    left_out = _few(left_out, "entries left out of the uncommitted changes")
    return builder.publish().id, left_out + outside_links(builder.entries, "the pinned code")


def _few(lines: list[str], what: str, shown: int = 3) -> list[str]:
    return lines[:shown] + ([f"(+{len(lines) - shown} more {what})"] if len(lines) > shown else [])


def pin_code(experiment_dir: str | Path, store: Store, *, allow_dirty: bool = False,
             excludes: tuple[str, ...] = DEFAULT_EXCLUDES, ignore: tuple[str, ...] = (),
             data: tuple[str, ...] = ()) -> CodePin:
    """`ignore`: top-level names under the experiment dir that fleet itself writes (runs/, outputs/):
    never counted as uncommitted changes, never part of a directory snapshot. `data`: paths under
    the experiment dir that `[data]` pins on their own: their changes are not the code's (outside
    git, `excludes` leaves them out)."""
    directory = Path(experiment_dir).resolve()
    if not directory.is_dir():
        raise UsageError(f"experiment directory {directory} does not exist")
    root = _repo_root(directory)
    if root is None:
        snap = create_snapshot(directory, store, excludes=tuple(excludes) + tuple(ignore))
        return CodePin(None, None, snap.id, warnings=[f"{directory} is not in a git repository: "
                       "the directory itself was snapshotted as the code (commit it to pin a version)"
                       + _with("; it holds ", secret_files_note([e.path for e in snap.manifest.entries]))]
                       + snap.warnings)
    root = root.resolve()
    if directory != root and root not in directory.parents:
        # core.worktree (or GIT_WORK_TREE) puts the working tree elsewhere: a handed-over repository's
        # config could point the pin at any other checkout on this computer and ship it to machines.
        by_env = bool(os.environ.get("GIT_WORK_TREE"))
        raise UsageError(f"git says the working tree of the repository at {directory} is {root} "
                         f"({'GIT_WORK_TREE' if by_env else 'core.worktree'}), which does not hold the "
                         "experiment: fleet will not pin it",
                         hint="unset GIT_WORK_TREE" if by_env else
                         "unset core.worktree (`git config --unset core.worktree`) or run from that tree")
    _check_git_dir_is_this_trees(root)
    subdir = "" if directory == root else directory.relative_to(root).as_posix()
    head = _git(["rev-parse", "--verify", "HEAD^{commit}"], root)
    if head.returncode != 0:
        raise UsageError(f"git repository {root} has no commits yet", hint="commit your code, then run again")
    commit = head.stdout.strip()
    _no_committed_links(root, commit, subdir, directory, RUNS)
    changes = [(s, p) for s, p in dirty_files(root, subdir) if p.split("/", 1)[0] not in set(ignore)
               and not any(p.rstrip("/") == d or p.startswith(d + "/") for d in data)]
    names = [rel for _s, rel in changes]
    in_commit = _in_commit(root, commit, subdir, allow_dirty)
    attrs = codefilters.attribute_changes(root, subdir) + [(f"{subdir}/" if subdir else "") + p for p in names
                                                           if p.rsplit("/", 1)[-1] == ".gitattributes"]
    if attrs and not allow_dirty:
        raise UsageError(f"uncommitted change to {attrs[0]}: git takes the filters (Git LFS) the code is "
                         "exported through from the working tree's attributes, not the commit's",
                         hint="commit it, or pass --allow-dirty to apply the filters as the working tree says")
    if changes and not allow_dirty:
        shown = ", ".join(names[:5]) + (f" (+{len(names) - 5} more)" if len(names) > 5 else "")
        raise UsageError(f"uncommitted changes in {directory}: {shown}",
                         hint="commit them, or pass --allow-dirty to record the diff with the run")
    if in_commit:
        code_id, warnings, submodules = _export_commit(root, commit, subdir, store)
    else:       # a new directory, all of it uncommitted: the overlay is the code
        code_id, warnings, submodules = SnapshotBuilder(store).publish().id, [], []
    warnings += [f"git filters were applied as the working tree's attributes say (uncommitted change to "
                 f"{attrs[0]}), not the commit's"] if attrs else []
    dirty_id = None
    if changes:
        dirty_id, left_out = _dirty_overlay(directory, changes, store, submodules)
        warnings += left_out
    note = secret_files_note([rel for status, rel in changes if "D" not in status])
    warnings += [_with("the uncommitted changes recorded with the run include ", note)] if note else []
    return CodePin(commit, dirty_id, code_id, warnings, repo_root=str(root), subdir=subdir, dirty_files=names)


RUNS = ("runs",)   # fleet.run.inputs.RUN_DIR_ROOT: each run's logs and outputs come home there


def _no_committed_links(root: Path, commit: str, subdir: str, directory: Path, names: tuple[str, ...]) -> None:
    """The directories fleet writes into in the experiment (runs/) must not be links that
    came with the repository: a cloned one's `runs -> ~/somewhere` had fleet write there, outside the
    experiment, files whose names and contents the experiment chose. A link of the user's own (not
    committed: a scratch disk) is theirs to make."""
    for name in names:
        if not os.path.islink(directory / name):
            continue
        path = f"{subdir}/{name}" if subdir else name
        listed = _git(["ls-tree", "-z", commit, "--", path], root, binary=True).stdout.split(b"\0")[0]
        if listed.startswith(b"120000 "):
            raise UsageError(f"{name} is a link committed in the repository (to {os.readlink(directory / name)}): "
                             f"fleet writes each run's logs and outputs under {name}/, so they would land outside "
                             "the experiment", hint=f"remove the link (git rm {path}), or make {name}/ a directory")


def _in_commit(root: Path, commit: str, subdir: str, allow_dirty: bool) -> bool:
    """Whether the commit holds the experiment directory; one clear line when that cannot be pinned."""
    if not subdir or _git(["cat-file", "-t", f"{commit}:{subdir}"], root).stdout.strip() == "tree":
        return True
    if _git(["check-ignore", "-q", subdir], root).returncode == 0:
        raise UsageError(f"{subdir}/ is ignored by git, so no commit holds it and nothing of it can be pinned",
                         hint=f"un-ignore it and commit it (`git check-ignore -v {subdir}` names the rule)")
    if not allow_dirty:
        raise UsageError(f"{subdir}/ is not in commit {commit[:12]}", hint="commit it, or pass --allow-dirty")
    return False


def _with(prefix: str, note: str) -> str:
    return prefix + note if note else ""
