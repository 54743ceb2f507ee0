"""A handed-over repository's `.git/config` may set core.worktree to any other checkout on the user's
computer: `fleet up` then ended with `internal error: ValueError` (the experiment is not under the
working tree git named), and a pin that went on would have shipped that other tree to the machines.
It is refused in one line, and the other checkout is not read."""
from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.records.codepin import pin_code
from tests.unit.test_snapshot_codepin import git, store  # noqa: F401 — the fixture


def test_a_worktree_elsewhere_is_refused_in_one_line(store, tmp_path):
    other, repo = tmp_path / "private-project", tmp_path / "handed-over"
    for d in (other, repo):
        d.mkdir()
        git(d, "init", "-q")
    (other / "secret.txt").write_text("mine")
    git(other, "add", ".")
    git(other, "commit", "-qm", "mine")
    (repo / "train.py").write_text("print('hi')\n")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "theirs")
    git(repo, "config", "core.worktree", str(other))
    with pytest.raises(UsageError) as info:
        pin_code(repo, store)
    line = info.value.one_line()
    assert f"git says the working tree of the repository at {repo} is {other} (core.worktree)" in line, line
    assert "git config --unset core.worktree" in line


def _committed(d, name="train.py"):
    d.mkdir(parents=True, exist_ok=True)
    git(d, "init", "-q")
    (d / name).write_text("print('hi')\n")
    git(d, "add", ".")
    git(d, "commit", "-qm", "c")


def test_a_dot_git_file_naming_another_repository_is_refused(store, tmp_path):
    """`.git` may be a file, `gitdir: PATH`: a handed-over one naming another repository on this
    computer pinned that repository's commit (its history, its remote) as the experiment's code."""
    other, repo = tmp_path / "private-project", tmp_path / "handed-over"
    _committed(other, "secret.txt")
    repo.mkdir()
    (repo / "train.py").write_text("print('hi')\n")
    (repo / ".git").write_text(f"gitdir: {other / '.git'}\n")
    with pytest.raises(UsageError) as info:
        pin_code(repo, store, allow_dirty=True)
    line = info.value.one_line()
    assert f"{repo / '.git'} names the git directory {other / '.git'}, which is not" in line, line


def test_worktree_checkouts_and_submodules_still_pin(store, tmp_path):
    main = tmp_path / "main"
    _committed(main)
    git(main, "worktree", "add", "-q", str(tmp_path / "wt"))
    assert pin_code(tmp_path / "wt", store).commit == pin_code(main, store).commit
    (tmp_path / "link").symlink_to(tmp_path / "wt")
    assert pin_code(tmp_path / "link", store).commit == pin_code(main, store).commit
    sup = tmp_path / "super"
    _committed(sup, "README")
    git(sup, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(main), "exp")
    pin = pin_code(sup / "exp", store)                     # an experiment that is a submodule's checkout
    assert pin.commit == pin_code(main, store).commit


def test_a_work_tree_set_in_the_environment_is_named_as_such(store, tmp_path, monkeypatch):
    """GIT_WORK_TREE elsewhere is refused as core.worktree is; the line named core.worktree, and its
    hint (`git config --unset core.worktree`) could not help."""
    other, repo = tmp_path / "elsewhere", tmp_path / "repo"
    _committed(other)
    _committed(repo)
    monkeypatch.setenv("GIT_WORK_TREE", str(other))
    with pytest.raises(UsageError) as info:
        pin_code(repo, store)
    line = info.value.one_line()
    assert f"is {other} (GIT_WORK_TREE)" in line and "unset GIT_WORK_TREE" in line, line
