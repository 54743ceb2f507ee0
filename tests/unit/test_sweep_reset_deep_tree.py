"""The reset between two trials removes the last trial's outputs however deep it made them: the
snippet deleted them with shutil.rmtree, which recurses once per level, so a trial that left a tree
1,500 levels deep (a `cp -r . sub/` in a loop) ended the reset on RecursionError, and the sweep took
the machine for not clean (its outputs left for the next trial to find)."""
from __future__ import annotations

from pathlib import Path

from fleet.sweep import reset
from tests.fixtures.deep_tree import deep_tree, remove
from tests.unit.test_sweep_reset_session_dir import _machine, sessions_in


def test_a_trials_outputs_deeper_than_the_stack_are_removed_and_the_machine_is_clean(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    machine = _machine(tmp_path)
    outputs = Path(machine.workdir) / "outputs" / "r-1"
    deep_tree(outputs)
    sessions_in(monkeypatch, home)
    try:
        got = reset.reset_machine(machine, "r-1", "trial-0")
        assert got.clean, "the reset took the machine for not clean"
        assert not outputs.exists()
    finally:
        remove(outputs)
