"""Files of the pinned code under a git `filter` (Git LFS): their blobs are pointers, not the code,
so they are smudged as a checkout would, and the pin says so.

All of them go through ONE `git checkout-index` (a temporary index of the commit, files written
under a directory in the git dir): one git process, so a long-running filter (`filter.<x>.process`,
what `git lfs install` sets) starts once, not once per file. Not `git cat-file --batch --filters`:
its header gives the blob's size, not the filtered content's, so the answers cannot be split.
When a filter fails, each file is smudged alone (`git cat-file --filters`), so the failure is
attributed to the file it happened on.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from pathlib import Path

from ..deep_trees import rmtree
from ..errors import EnvironmentProblem
from ..snapshots.create import SnapshotBuilder
from . import gitsafe

@contextlib.contextmanager
def smudged_tree(root: Path, commit: str, full_paths: list[str]):
    """A directory holding each of `full_paths` (paths in the repository) as a checkout of `commit`
    writes it, or None when a filter failed on any of them (the caller then goes file by file)."""
    if not full_paths:
        yield None
        return
    git_dir = gitsafe.run(root, ["rev-parse", "--absolute-git-dir"]).stdout.strip()
    # In the git dir, not /tmp: the smudged files (model weights, for LFS) can be large, and /tmp may be RAM.
    _sweep_stale(git_dir)
    work = tempfile.mkdtemp(prefix="fleet-smudge-", dir=git_dir or None)
    try:
        env = gitsafe.env(GIT_INDEX_FILE=os.path.join(work, "index"))
        read = subprocess.run(gitsafe.argv(root, ["read-tree", commit]), cwd=root, capture_output=True, env=env)
        if read.returncode != 0:
            raise EnvironmentProblem(f"git read-tree {commit[:12]} failed: "
                                     f"{read.stderr.decode(errors='replace').strip()}")
        with tempfile.TemporaryFile() as err:   # a filter may say a lot: a pipe could fill and stall it
            rc = subprocess.run(gitsafe.argv(root, ["checkout-index", "-f", "-z", "--stdin", f"--prefix={work}/out/"]),
                                cwd=root, stdout=subprocess.DEVNULL, stderr=err, env=env,
                                input=b"\0".join(p.encode(errors="surrogateescape") for p in full_paths)
                                ).returncode
            err.seek(0)
            said = err.read().decode(errors="replace")
        yield None if rc != 0 or _says_failed(said) else Path(work, "out")
    finally:
        rmtree(work, ignore_errors=True)     # as deep as the code's filtered files: deep_trees.rmtree goes any depth


STALE_S = 24 * 3600   # a scratch directory this old was left by a pin that was killed (no pin lasts a day)


def _sweep_stale(git_dir: str) -> None:
    """Remove scratch directories of pins killed part way (SIGKILL skips their cleanup; an LFS
    export can be GiBs); a recent one may be another pin's, still working."""
    import time
    if not git_dir:
        return
    with contextlib.suppress(OSError):
        for entry in os.scandir(git_dir):
            if entry.name.startswith("fleet-smudge-") and entry.is_dir(follow_symlinks=False) and \
                    time.time() - entry.stat(follow_symlinks=False).st_mtime > STALE_S:
                rmtree(entry.path, ignore_errors=True)


# What a Git LFS pointer file starts with (https://github.com/git-lfs/git-lfs/blob/main/docs/spec.md);
# one is at most 1024 bytes.
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1\n"


def add_from_tree(tree: Path, builder: SnapshotBuilder, full: str, path: str, mode: int) -> bool:
    """True when what the filter left is still a Git LFS pointer (its object not fetched here, or
    GIT_LFS_SKIP_SMUDGE set): the run would read the pointer where it expects the file."""
    real = tree / full
    if not real.is_file():
        raise EnvironmentProblem(f"git checkout-index wrote no file for {full}")
    with open(real, "rb") as f:
        pointer = os.fstat(f.fileno()).st_size <= 1024 and f.read(len(LFS_POINTER)) == LFS_POINTER
        f.seek(0)
        builder.add_stream(path, 0o755 if mode & 0o111 else 0o644, f)
    real.unlink()                               # the space back as the snapshot goes on
    return pointer


def add_smudged(root: Path, builder: SnapshotBuilder, oid: str, full: str, path: str, mode: int) -> bool:
    """The blob as a checkout holds it (`git cat-file --filters`, attributes matched by `full`, its
    path in the repository); True when git said the filter failed (the raw blob is then what it gave)."""
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(gitsafe.argv(root, ["cat-file", "--filters", f"--path={full}", oid]), cwd=root,
                                stdout=subprocess.PIPE, stderr=err, env=gitsafe.env())
        try:
            builder.add_stream(path, 0o755 if mode & 0o111 else 0o644, proc.stdout)
            proc.stdout.read()
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        finally:
            proc.stdout.close()
        rc = proc.wait()
        err.seek(0)
        said = err.read().decode(errors="replace")
    if rc != 0:
        last = (said.strip().splitlines() or ["no reason given"])[-1]
        raise EnvironmentProblem(f"git could not apply the filter to {full}: {last}")
    return _says_failed(said)


def _says_failed(said: str) -> bool:
    return "filter" in said and "failed" in said


def filtered(root: Path, prefix: str, paths: list[str]) -> dict[str, str]:
    """path → filter driver of the paths a git `filter` attribute applies to (Git LFS: `lfs`),
    looked up by their path in the repository (`prefix` + path), as a checkout does."""
    if not paths:
        return {}
    res = gitsafe.run(root, ["check-attr", "-z", "--stdin", "filter"], binary=True,
                      input="\0".join(prefix + p for p in paths).encode(errors="surrogateescape"))
    fields = res.stdout.split(b"\0")
    out = {}
    for i in range(0, len(fields) - 2, 3):
        value = fields[i + 2].decode(errors="replace")
        if value not in ("unspecified", "unset", "set", ""):
            out[fields[i].decode(errors="surrogateescape")[len(prefix):]] = value
    return out


def filter_notes(root: Path, filtered: dict[str, str], failed: list[str], pointers: list[str] = ()) -> list[str]:
    """What the filters did to the code, said as it is: the pin is no longer the commit's blobs.
    `pointers`: the files a configured filter left as Git LFS pointers."""
    if not filtered:
        return []
    path, driver = next(iter(filtered.items()))
    notes = [f"git filters apply to {len(filtered)} file(s) of the code (e.g. {path}: filter={driver}): the "
             "snapshot holds what they produce here, as a checkout does, not the commit's blobs"]
    unconfigured = set()
    repo_own = gitsafe.repo_filters(root)
    for name in sorted(set(filtered.values())):
        if name in repo_own:
            unconfigured.add(name)
            notes.append(f"filter={name} is set by the repository's own git config, whose commands fleet does not "
                         "run on this computer (a repository handed over with its .git brings them): its files are "
                         f"the commit's blobs as stored; set filter.{name} in your global git config to apply it")
            continue
        if not any(gitsafe.run(root, ["config", "--get", f"filter.{name}.{key}"]).stdout.strip()
                   for key in ("smudge", "process")):
            unconfigured.add(name)
            notes.append(f"filter={name} is not configured in this repository (for Git LFS: git lfs install): "
                         "its files are the commit's blobs as stored (pointer files, for Git LFS)")
    pointers = [p for p in pointers if filtered.get(p) not in unconfigured]     # said just above
    if pointers:
        notes.append(f"{len(pointers)} file(s) of the code are still Git LFS pointer files after the filter (e.g. "
                     f"{pointers[0]}): their content is not here (`git lfs pull`; or GIT_LFS_SKIP_SMUDGE is set), "
                     "so the run reads the pointers")
    if failed:
        notes.append(f"a git filter failed on {len(failed)} file(s) (e.g. {failed[0]}): the snapshot holds "
                     "their blobs as stored")
    return notes


def attribute_changes(root: Path, subdir: str) -> list[str]:
    """Uncommitted .gitattributes files (repository paths) at the root or in a directory above the
    experiment dir (subdir): git reads a checkout's `filter` attributes from the working tree,
    never from the commit (no --attr-source before git 2.40), so such a change changes which files
    are smudged. Those inside the experiment dir are among its own uncommitted changes."""
    if not subdir:
        return []
    parts = subdir.split("/")
    files = [f":(literal){'/'.join(parts[:i] + ['.gitattributes'])}" for i in range(len(parts))]
    res = gitsafe.run(root, ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--ignore-submodules=dirty", "--",
                             *files], binary=True)
    return sorted(item[3:].decode(errors="surrogateescape") for item in res.stdout.split(b"\0") if len(item) > 3)
