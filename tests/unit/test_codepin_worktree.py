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
