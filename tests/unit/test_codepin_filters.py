"""Code pinning with git filters (Git LFS): how often a filter starts, and where its attributes come from."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from fleet.errors import EnvironmentProblem, UsageError
from fleet.records.codepin import pin_code
from fleet.snapshots import materialise


from tests.unit.test_snapshot_codepin import git, store, user_config  # noqa: F401 — the fixture


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    (root / "exp").mkdir(parents=True)
    (root / "exp" / "train.py").write_text("print('v1')\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "v1")
    return root


# A long-running filter (`filter.<x>.process`, as `git lfs install` sets): upper-cases what it smudges
# (cleans leave it as is, so `git status` stays clean),
# and appends a line to a log each time it starts.
_PROCESS_FILTER = r'''
import sys
open(sys.argv[1], "a").write("start\n")
r, w = sys.stdin.buffer, sys.stdout.buffer
def rd():
    n = r.read(4)
    if not n:
        sys.exit(0)
    n = int(n, 16)
    return b"" if n == 0 else r.read(n - 4)
def wr(b):
    w.write(b"%04x" % (len(b) + 4) + b)
def flush():
    w.write(b"0000"); w.flush()
def until_flush():
    out = []
    while True:
        p = rd()
        if p == b"":
            return out
        out.append(p)
until_flush(); wr(b"git-filter-server\n"); wr(b"version=2\n"); flush()
until_flush(); wr(b"capability=clean\n"); wr(b"capability=smudge\n"); flush()
while True:
    smudge = b"command=smudge\n" in until_flush()
    data = b"".join(until_flush())
    wr(b"status=success\n"); flush()
    if data:
        wr(data.upper() if smudge else data)
    flush(); flush()
'''


def test_a_long_running_filter_starts_once_for_all_the_files(store, repo, tmp_path):
    """A reviewer found one git process, so one filter process, per filtered file: 2,000 LFS files
    took minutes. All of them now go through one git process: the filter starts once, not per file."""
    script, log = tmp_path / "filter.py", tmp_path / "starts.log"
    script.write_text(_PROCESS_FILTER)
    (repo / "exp" / ".gitattributes").write_text("*.dat filter=fake\n")
    for i in range(300):
        (repo / "exp" / "w" / f"{i // 100}").mkdir(parents=True, exist_ok=True)
        (repo / "exp" / "w" / f"{i // 100}" / f"{i}.dat").write_text(f"weights {i}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "weights")
    user_config("filter.fake.process", f"{sys.executable} {script} {log}")
    user_config("filter.fake.clean", "cat")
    log.unlink(missing_ok=True)
    pin = pin_code(repo / "exp", store)
    # at most one for the export; `git status` may start it once too, to re-check racily clean files
    assert log.read_text().count("start") <= 2
    out = materialise(store, pin.code_snapshot_id, tmp_path / "out")
    assert (out / "w" / "2" / "299.dat").read_text() == "WEIGHTS 299\n"
    assert (out / "train.py").read_text() == "print('v1')\n"
    assert "git filters apply to 300 file(s)" in pin.warning
    assert not list((repo / ".git").glob("fleet-smudge-*"))      # its scratch space is gone


@pytest.mark.parametrize("where", [".gitattributes", "exp/.gitattributes"])
def test_uncommitted_filter_attributes_are_refused_or_said(store, repo, tmp_path, where):
    """git reads `filter` attributes from the working tree. A reviewer found an uncommitted edit
    dropping `*.dat filter=fake` from the root .gitattributes gave a "clean" pin of the commit
    holding the raw blob, with no warning."""
    (repo / where).write_text("*.dat filter=fake\n")
    (repo / "exp" / "w.dat").write_text("weights\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "weights")
    user_config("filter.fake.smudge", "tr a-z A-Z")
    user_config("filter.fake.clean", "cat")
    (repo / where).write_text("# no filters\n")
    with pytest.raises(UsageError, match=rf"^uncommitted change to {where}: git takes the filters"):
        pin_code(repo / "exp", store)
    pin = pin_code(repo / "exp", store, allow_dirty=True)
    assert (f"git filters were applied as the working tree's attributes say (uncommitted change to {where})"
            in pin.warning)
    assert (materialise(store, pin.code_snapshot_id, tmp_path / "out") / "w.dat").read_text() == "weights\n"


def test_attributes_beside_the_experiment_are_not_its_changes(store, repo):
    (repo / "other").mkdir()
    (repo / "other" / ".gitattributes").write_text("*.dat filter=fake\n")
    assert pin_code(repo / "exp", store).dirty_files == []


def test_scratch_left_by_a_killed_pin_is_swept(tmp_path):
    """A pin SIGKILLed mid-export left .git/fleet-smudge-* behind (GiBs of LFS content) with nothing
    to remove it (review finding): the next filtered export removes day-old ones, not recent ones."""
    import os
    import time

    from fleet.records.codefilters import _sweep_stale
    old, recent = tmp_path / "fleet-smudge-old", tmp_path / "fleet-smudge-new"
    for d in (old, recent):
        (d / "out").mkdir(parents=True)
    day_ago = time.time() - 25 * 3600
    os.utime(old, (day_ago, day_ago))
    _sweep_stale(str(tmp_path))
    assert not old.exists() and recent.exists()


def test_git_lfs_pointers_a_filter_left_as_they_were_are_said(store, repo):
    """With the LFS objects not fetched (or GIT_LFS_SKIP_SMUDGE=1), the smudge gives the pointer back:
    the run read a 130-byte pointer as its weights or its CSV, and the pin said only that filters
    applied."""
    (repo / "exp" / ".gitattributes").write_text("*.csv filter=lfs\n")
    (repo / "exp" / "train.csv").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:" + "4" * 64
                                            + "\nsize 12345\n")
    (repo / "exp" / "small.csv").write_text("a,b\n1,2\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "data")
    user_config("filter.lfs.smudge", "cat")     # what git-lfs does for an object it does not have
    user_config("filter.lfs.clean", "cat")
    pin = pin_code(repo / "exp", store)
    assert ("1 file(s) of the code are still Git LFS pointer files after the filter (e.g. train.csv): their "
            "content is not here (`git lfs pull`; or GIT_LFS_SKIP_SMUDGE is set), so the run reads the pointers"
            in pin.warnings)
    user_config("--unset", "filter.lfs.smudge")   # not configured: said once, by its own line
    pin = pin_code(repo / "exp", store)
    assert "filter=lfs is not configured" in pin.warning and "still Git LFS pointer" not in pin.warning


def test_a_repository_handed_over_with_its_git_dir_runs_none_of_its_commands(store, repo, tmp_path):
    """A red-team round found that a repository unpacked with its .git (a tarball, a shared disk)
    ran its author's commands on the user's computer as fleet pinned the code: `core.fsmonitor`
    on `git status`, the `post-index-change` hook on the smudge's `read-tree`, its own
    `filter.<x>` drivers, and a partial clone's lazy fetch (`remote.<x>.uploadpack`)."""
    ran = tmp_path / "ran"
    ran.mkdir()
    exp = repo / "exp"
    (exp / ".gitattributes").write_text("*.bin filter=evil\n")
    (exp / "w.bin").write_text("weights\n")
    (exp / "lazy.txt").write_text("fetched lazily\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "handed over")
    lazy = subprocess.run(["git", "rev-parse", "HEAD:exp/lazy.txt"], cwd=repo, capture_output=True,
                          text=True).stdout.strip()
    origin = tmp_path / "origin"
    shutil.copytree(repo, origin)
    (repo / ".git" / "objects" / lazy[:2] / lazy[2:]).unlink()     # a partial clone's missing blob
    hook = repo / ".git" / "hooks" / "post-index-change"
    hook.write_text(f"#!/bin/sh\ntouch {ran}/hook\n")
    hook.chmod(0o755)
    for key, value in [("core.fsmonitor", f"touch {ran}/fsmonitor; false"),
                       ("filter.evil.smudge", f"touch {ran}/smudge; cat"),
                       ("filter.evil.clean", f"touch {ran}/clean; cat"),
                       ("filter.evil.process", f"touch {ran}/process"), ("filter.evil.required", "true"),
                       ("core.repositoryformatversion", "1"), ("extensions.partialClone", "origin"),
                       ("remote.origin.url", str(origin)), ("remote.origin.promisor", "true"),
                       ("remote.origin.uploadpack", f"touch {ran}/uploadpack; git-upload-pack"),
                       ("protocol.file.allow", "always")]:
        git(repo, "config", key, value)
    os.utime(exp / "w.bin")                      # stat changed: status would run the clean filter
    with pytest.raises(EnvironmentProblem, match="^git cat-file gave no blob for lazy.txt"):
        pin_code(exp, store)
    shutil.copy(origin / ".git" / "objects" / lazy[:2] / lazy[2:], repo / ".git" / "objects" / lazy[:2])
    pin = pin_code(exp, store)
    assert sorted(p.name for p in ran.iterdir()) == []
    assert (materialise(store, pin.code_snapshot_id, tmp_path / "out") / "w.bin").read_text() == "weights\n"
    assert ("filter=evil is set by the repository's own git config, whose commands fleet does not run on this "
            "computer (a repository handed over with its .git brings them): its files are the commit's blobs "
            "as stored; set filter.evil in your global git config to apply it") in pin.warnings


def test_a_filter_the_user_defines_still_applies_where_the_repository_sets_it_too(store, repo, tmp_path):
    """`git lfs install --local` (or a team's setup script) writes the user's own driver into the
    repository's config as well: that driver, as the user's global config defines it, still smudges.
    Blanking every driver the repository names left the LFS files as pointers."""
    (repo / "exp" / ".gitattributes").write_text("*.dat filter=up\n")
    (repo / "exp" / "w.dat").write_text("weights\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "weights")
    for key, value in [("filter.up.smudge", "tr a-z A-Z"), ("filter.up.clean", "cat")]:
        user_config(key, value)
        git(repo, "config", key, value)
    pin = pin_code(repo / "exp", store)
    assert (materialise(store, pin.code_snapshot_id, tmp_path / "out") / "w.dat").read_text() == "WEIGHTS\n"
    assert "set by the repository's own git config" not in pin.warning


def test_filtered_files_deeper_than_the_stack_are_pinned_and_the_scratch_removed(store, repo, tmp_path):
    """Code holding a tree deeper than Python's stack (a `cp -r . sub/` in a loop, committed), a filtered
    file at its bottom: the scratch directory the filter's export wrote was deleted with shutil.rmtree,
    which recurses once per level, so the pin died on RecursionError and left the scratch in .git."""
    from tests.fixtures.deep_tree import DEPTH, deep_tree, remove
    (repo / "exp" / ".gitattributes").write_text("left-by-the-job filter=fake\n")
    deep_tree(repo / "exp" / "sub")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "a deep tree")
    user_config("filter.fake.smudge", "tr a-z A-Z")
    user_config("filter.fake.clean", "cat")
    try:
        pin = pin_code(repo / "exp", store)
        assert "git filters apply to 1 file(s)" in pin.warning
        assert not list((repo / ".git").glob("fleet-smudge-*"))      # its scratch space is gone
        out = materialise(store, pin.code_snapshot_id, tmp_path / "out")
        assert (out / "sub").joinpath(*["d"] * DEPTH, "left-by-the-job").read_text() == "X"
    finally:
        for left in [repo, tmp_path / "out"]:
            subprocess.run(["chmod", "-R", "u+w", "--", str(left)], check=False, capture_output=True)
            remove(left)
