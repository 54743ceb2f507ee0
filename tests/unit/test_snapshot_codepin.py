"""Code pinning: the commit's tree lands, not the working dir; dirty trees refused or captured."""
from __future__ import annotations

import os
import subprocess

import pytest

from fleet.records.codepin import pin_code
from fleet.errors import UsageError
from fleet.snapshots import load, materialise, open_store


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                   env={"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@x", "HOME": str(cwd), "PATH": "/usr/bin:/bin"})


def user_config(*args):
    """The user's own (global) git config, where fleet takes the filter drivers it runs from."""
    subprocess.run(["git", "config", "--file", os.environ["GIT_CONFIG_GLOBAL"], *args], check=True)


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "user.gitconfig"))
    return open_store(None)


@pytest.fixture
def repo(tmp_path):
    root = tmp_path / "repo"
    exp = root / "exp"
    exp.mkdir(parents=True)
    (root / "top.txt").write_text("outside the experiment\n")
    (exp / "train.py").write_text("print('v1')\n")
    (exp / ".gitignore").write_text("outputs/\n*.log\n")
    git(root, "init", "-q")
    git(root, "add", ".")
    git(root, "commit", "-qm", "v1")
    return root


def test_clean_tree_pins_commit_subtree(store, repo, tmp_path):
    (repo / "exp" / "outputs").mkdir()
    (repo / "exp" / "outputs" / "big.bin").write_text("ignored")
    (repo / "top.txt").write_text("dirty outside the experiment dir is not our business\n")
    pin = pin_code(repo / "exp", store)
    assert len(pin.commit) == 40 and pin.dirty_snapshot_id is None and pin.subdir == "exp"
    paths = {e.path for e in load(store, pin.code_snapshot_id).entries}
    assert paths == {"train.py", ".gitignore"}


def test_dirty_tree_refused_naming_files(store, repo):
    (repo / "exp" / "train.py").write_text("print('v2')\n")
    (repo / "exp" / "new.py").write_text("x = 1\n")
    (repo / "exp" / "debug.log").write_text("ignored file is not dirt\n")
    with pytest.raises(UsageError, match=r"uncommitted changes in .*: new.py, train.py|train.py, new.py"):
        pin_code(repo / "exp", store)


def test_allow_dirty_lands_commit_and_records_overlay(store, repo, tmp_path):
    (repo / "exp" / "train.py").write_text("print('v2 uncommitted')\n")
    (repo / "exp" / "new.py").write_text("x = 1\n")
    pin = pin_code(repo / "exp", store, allow_dirty=True)
    out = materialise(store, pin.code_snapshot_id, tmp_path / "code")
    assert (out / "train.py").read_text() == "print('v1')\n"       # the commit, not the working dir
    overlay = load(store, pin.dirty_snapshot_id)
    assert {e.path for e in overlay.files()} == {"train.py", "new.py"}
    assert sorted(pin.dirty_files) == ["new.py", "train.py"]


def test_deleted_file_in_overlay(store, repo):
    (repo / "exp" / "train.py").unlink()
    pin = pin_code(repo / "exp", store, allow_dirty=True)
    assert load(store, pin.dirty_snapshot_id).deleted == ["train.py"]


def test_outside_git_snapshots_directory_with_warning(store, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "a.py").write_text("print(1)\n")
    pin = pin_code(d, store)
    assert pin.commit is None and "not in a git repository" in pin.warning
    assert {e.path for e in load(store, pin.code_snapshot_id).files()} == {"a.py"}
    assert "credentials" not in pin.warning


def test_credential_files_that_go_with_the_code_are_named(store, repo, tmp_path):
    """They land in the store (maybe a team's bucket) and on every machine: the user is told which."""
    d = tmp_path / "plain"
    (d / "keys").mkdir(parents=True)
    (d / "a.py").write_text("print(1)\n")
    (d / ".env").write_text("HF_TOKEN=x\n")
    (d / "keys" / "server.pem").write_text("-----BEGIN-----\n")
    pin = pin_code(d, store)
    assert "usually keep credentials (.env, keys/server.pem)" in pin.warning
    (repo / "exp" / ".env.local").write_text("HF_TOKEN=x\n")
    (repo / "exp" / "new.py").write_text("x = 1\n")
    dirty = pin_code(repo / "exp", store, allow_dirty=True)
    assert dirty.warning.startswith("the uncommitted changes recorded with the run include files that usually "
                                    "keep credentials (.env.local)")
    (repo / "exp" / ".env.local").unlink()
    (repo / "exp" / ".env.example").write_text("HF_TOKEN=\n")       # a template, not a secret
    assert pin_code(repo / "exp", store, allow_dirty=True).warning is None
    (repo / "exp" / "KEYS.PEM").write_text("x")
    assert "(KEYS.PEM)" in pin_code(repo / "exp", store, allow_dirty=True).warning


def test_a_deleted_credential_file_is_not_said_to_go_with_the_run(store, repo):
    (repo / "exp" / ".env").write_text("HF_TOKEN=x\n")
    git(repo, "add", "-f", "exp/.env")
    git(repo, "commit", "-qm", "oops")
    (repo / "exp" / ".env").unlink()
    pin = pin_code(repo / "exp", store, allow_dirty=True)
    assert pin.dirty_files == [".env"] and pin.warning is None


def test_local_attributes_never_change_the_pinned_code(store, repo, tmp_path):
    """A red-team finding: `git archive` applied export-ignore from .git/info/attributes, which `git
    status` does not show, so the code that ran lacked a committed file while the record named the
    clean commit. Without filters, the pin is the commit's blobs as git stores them."""
    (repo / "exp" / "extra.txt").write_text("data the run needs\n")
    (repo / "exp" / "tool.sh").write_text("#!/bin/sh\necho hi\n")
    (repo / "exp" / "tool.sh").chmod(0o755)
    (repo / "exp" / "link").symlink_to("train.py")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "more")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "attributes").write_text("extra.txt export-ignore\ntrain.py export-subst\n")
    assert subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout == ""
    pin = pin_code(repo / "exp", store)
    out = tmp_path / "out"
    materialise(store, pin.code_snapshot_id, out)
    assert (out / "train.py").read_text() == "print('v1')\n" and pin.warning is None
    assert (out / "extra.txt").read_text() == "data the run needs\n"
    assert (out / "tool.sh").stat().st_mode & 0o111 and (out / "link").is_symlink()
    assert str((out / "link").readlink()) == "train.py"


def test_files_under_a_git_filter_are_exported_filtered_and_said_so(store, repo, tmp_path):
    """Git LFS: the commit holds pointer files, and its smudge filter makes the code. A reviewer found
    pointer files shipped as the code once the blobs were read raw. Filtered files are smudged, and
    the pin says which filter applied (a local filter changes what runs)."""
    (repo / "exp" / ".gitattributes").write_text("*.bin filter=lfs\n")
    (repo / "exp" / "weights.bin").write_text("pointer\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "weights")
    user_config("filter.lfs.smudge", "tr a-z A-Z")
    user_config("filter.lfs.clean", "cat")
    pin = pin_code(repo / "exp", store)
    out = tmp_path / "out"
    materialise(store, pin.code_snapshot_id, out)
    assert (out / "weights.bin").read_text() == "POINTER\n"
    assert "git filters apply to 1 file(s)" in pin.warning and "weights.bin: filter=lfs" in pin.warning


def test_filters_anchored_at_the_repo_root_apply_to_an_experiment_subdir(store, repo, tmp_path):
    """`git lfs track` in a monorepo writes `exp/*.dat filter=…` at the root. A reviewer found the
    subtree export matched such patterns without the `exp/` prefix: pointer files shipped while the
    pin said the filter had applied."""
    (repo / ".gitattributes").write_text("exp/*.dat filter=up\n")
    (repo / "exp" / "weights.dat").write_text("data\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "weights")
    user_config("filter.up.smudge", "tr a-z A-Z")
    user_config("filter.up.clean", "cat")
    pin = pin_code(repo / "exp", store)
    out = materialise(store, pin.code_snapshot_id, tmp_path / "out")
    assert (out / "weights.dat").read_text() == "DATA\n"
    assert "git filters apply to 1 file(s) of the code (e.g. weights.dat: filter=up)" in pin.warning


def test_a_filtered_file_changes_nothing_else_in_the_export(store, repo, tmp_path):
    """A reviewer found any filtered file switched the whole export to `git archive`: export-ignore
    files vanished and export-subst rewrote others. Only the filtered files are smudged."""
    (repo / "exp" / ".gitattributes").write_text("*.dat filter=up\nconf.py export-ignore\nsubst.py export-subst\n")
    (repo / "exp" / "weights.dat").write_text("data\n")
    (repo / "exp" / "conf.py").write_text("lr = 1\n")
    (repo / "exp" / "subst.py").write_text("# $Format:%H$\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "weights")
    user_config("filter.up.smudge", "tr a-z A-Z")
    pin = pin_code(repo / "exp", store)
    out = materialise(store, pin.code_snapshot_id, tmp_path / "out")
    assert (out / "weights.dat").read_text() == "DATA\n"
    assert (out / "conf.py").read_text() == "lr = 1\n"
    assert (out / "subst.py").read_text() == "# $Format:%H$\n"


def test_a_filter_with_no_driver_here_is_said_to_leave_the_blobs(store, repo, tmp_path):
    """Git LFS not installed: the commit's pointer files are what lands, and the pin says so."""
    (repo / "exp" / ".gitattributes").write_text("*.bin filter=lfs\n")
    (repo / "exp" / "weights.bin").write_text("pointer\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "weights")
    pin = pin_code(repo / "exp", store)
    out = materialise(store, pin.code_snapshot_id, tmp_path / "out")
    assert (out / "weights.bin").read_text() == "pointer\n"
    assert "filter=lfs is not configured in this repository" in pin.warning
    user_config("filter.lfs.smudge", "false")       # fails, not required: git gives the blob
    assert "a git filter failed on 1 file(s) (e.g. weights.bin)" in pin_code(repo / "exp", store).warning


def _nested_repo(path):
    path.mkdir(parents=True)
    (path / "lib.py").write_text("x = 1\n")
    git(path, "init", "-q")
    git(path, "add", ".")
    git(path, "commit", "-qm", "lib")


def test_a_submodule_is_said_to_be_left_out_never_dropped_silently(store, repo, tmp_path):
    """A reviewer found a submodule shipped as an empty directory with no word, and with
    --allow-dirty a dirty submodule or an untracked nested repository vanished from the overlay."""
    _nested_repo(repo / "exp" / "lib")
    git(repo, "add", "exp/lib")                  # a gitlink, as `git submodule add` leaves
    git(repo, "commit", "-qm", "with lib")
    pin = pin_code(repo / "exp", store)
    assert pin.warnings == ["submodule lib is not part of the pinned code (fleet pins one repository): it "
                            "lands as an empty directory"]
    (repo / "exp" / "lib" / "lib.py").write_text("x = 2\n")       # dirty inside the submodule
    _nested_repo(repo / "exp" / "vendored")                        # untracked, a repository of its own
    pin = pin_code(repo / "exp", store, allow_dirty=True)
    assert pin.warnings[0].startswith("submodule lib is not part of the pinned code")
    assert pin.warnings[1:] == ["vendored is a git repository of its own (fleet pins one repository): the "
                                "uncommitted changes recorded with the run leave it out"]


def test_many_submodules_are_named_a_few_then_counted(store, repo):
    for name in "abcde":
        _nested_repo(repo / "exp" / name)
        git(repo, "add", f"exp/{name}")
    git(repo, "commit", "-qm", "five")
    warnings = pin_code(repo / "exp", store).warnings
    assert len(warnings) == 4 and warnings[-1] == "(+2 more submodules are not part of the pinned code)"


def test_committed_links_out_of_the_pinned_code_are_named(store, repo, tmp_path):
    """A reviewer found `params.txt -> /abs/outside` made "pinned" code read live content: a rerun
    read the changed target. The pin names each such link; one inside the code is fine."""
    outside = tmp_path / "outside.txt"
    outside.write_text("lr = 1\n")
    (repo / "exp" / "params.txt").symlink_to(outside)
    (repo / "exp" / "shared").symlink_to("../top.txt")      # in the repository, not in the pinned code
    (repo / "exp" / "alias.py").symlink_to("train.py")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "links")
    pin = pin_code(repo / "exp", store)
    assert pin.warnings == [
        f"params.txt is a link to {outside}, outside the pinned code: its target is not pinned (what it "
        "holds when read is what runs)",
        "shared is a link to ../top.txt, outside the pinned code: its target is not pinned (what it holds "
        "when read is what runs)"]
    (repo / "exp" / "new").symlink_to("/etc/hostname")                # uncommitted, --allow-dirty
    dirty = pin_code(repo / "exp", store, allow_dirty=True)
    assert dirty.warnings[2].startswith("new is a link to /etc/hostname, outside the pinned code")


def test_a_new_experiment_dir_is_one_line_or_all_overlay(store, repo, tmp_path):
    """A reviewer found a directory not yet in the commit failed with a raw `git ls-tree … failed`,
    even with --allow-dirty."""
    new = repo / "exp2"
    new.mkdir()
    (new / "train.py").write_text("print('new')\n")
    with pytest.raises(UsageError) as err:
        pin_code(new, store)
    assert str(err.value).startswith("exp2/ is not in commit ") and "commit it, or pass --allow-dirty" in str(err.value)
    pin = pin_code(new, store, allow_dirty=True)
    assert load(store, pin.code_snapshot_id).entries == [] and pin.dirty_files == ["train.py"]
    out = materialise(store, pin.dirty_snapshot_id, tmp_path / "out")
    assert (out / "train.py").read_text() == "print('new')\n"
    (repo / ".gitignore").write_text("exp2/\n")
    for allow_dirty in (False, True):
        with pytest.raises(UsageError, match=r"^exp2/ is ignored by git, so no commit holds it"):
            pin_code(new, store, allow_dirty=allow_dirty)


def test_data_inside_the_experiment_is_not_uncommitted_code(store, repo, tmp_path, monkeypatch):
    """A reviewer found `[data] train = "data/train"` (untracked, not ignored) made `fleet up` refuse
    "uncommitted changes …: data/train/a.csv" in a git repository (outside git the same path is left
    out as data), and with --allow-dirty the data went into the code's overlay as well."""
    from fleet.config.loader import load_config
    from fleet.run.context import SilentEvents
    from fleet.run.inputs import Inputs
    from fleet.run.types import RunOptions
    monkeypatch.delenv("FLEET_RECORDS_KEY", raising=False)
    monkeypatch.delenv("FLEET_RECORDS_KEY_FILE", raising=False)
    exp = repo / "exp"
    (exp / "fleet.toml").write_text('project = "t"\ncommand = "true"\n[data]\ntrain = "data/train"\n')
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "config")
    (exp / "data" / "train").mkdir(parents=True)
    (exp / "data" / "train" / "a.csv").write_text("1\n")
    (exp / "data" / "notes.txt").write_text("beside the data: code\n")
    with pytest.raises(UsageError, match=r"uncommitted changes in .*: data/notes.txt \(commit them"):
        Inputs(load_config(cwd=exp)).pin(RunOptions(), SilentEvents())
    (exp / "data" / "notes.txt").unlink()
    pins = Inputs(load_config(cwd=exp)).pin(RunOptions(), SilentEvents())
    assert pins.code_dirty_snapshot is None and set(pins.data_snapshots) == {"train"}
    (exp / "train.py").write_text("print('v2')\n")
    pins = Inputs(load_config(cwd=exp)).pin(RunOptions(allow_dirty=True), SilentEvents())
    assert [e.path for e in load(store, pins.code_dirty_snapshot).files()] == ["train.py"]


def test_a_required_filter_that_fails_is_one_line(store, repo):
    from fleet.errors import EnvironmentProblem
    (repo / "exp" / ".gitattributes").write_text("*.bin filter=lfs\n")
    (repo / "exp" / "weights.bin").write_text("pointer\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "weights")
    user_config("filter.lfs.smudge", "false")
    user_config("filter.lfs.clean", "cat")
    user_config("filter.lfs.required", "true")
    with pytest.raises(EnvironmentProblem, match=r"^git could not apply the filter to exp/weights.bin: fatal: "
                                                 r"exp/weights.bin: smudge filter lfs failed$"):
        pin_code(repo / "exp", store)


def test_a_runs_link_that_came_with_the_repository_is_refused_a_users_own_is_not(store, repo, tmp_path):
    """A red-team round: a cloned repository's committed `runs -> /elsewhere` had fleet write every
    run's logs and outputs (names and contents the experiment chose) there, outside the experiment."""
    from fleet.run.inputs import RUN_DIR_ROOT
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (repo / "exp" / RUN_DIR_ROOT).symlink_to(elsewhere)
    pin_code(repo / "exp", store, ignore=(RUN_DIR_ROOT,))           # the user's own link: not committed
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "runs elsewhere")
    with pytest.raises(UsageError, match=rf"^runs is a link committed in the repository \(to {elsewhere}\): fleet "
                                         "writes each run's logs and outputs under runs/") as exc:
        pin_code(repo / "exp", store, ignore=(RUN_DIR_ROOT,))
    assert exc.value.hint == "remove the link (git rm exp/runs), or make runs/ a directory"
