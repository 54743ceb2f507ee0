"""The AWS sandbox releases a lease's machines by the ids its lease row names (`release_machines`,
e.g. a sweep giving machines back early). Those rows are the team's to write: an id that is a path
(`../../x`) must never have the sandbox stop and delete a directory outside its machines."""
from __future__ import annotations

from fleet.providers.aws.sandbox import Sandbox


def test_a_machine_id_that_is_a_path_deletes_nothing_outside_the_sandbox(fleet_home, tmp_path):
    sandbox = Sandbox(root=tmp_path / "sandbox" / "machines")
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    own = sandbox.root / "i-0123456789abcdef0"
    own.mkdir()
    sandbox.unbind(["../../victim", str(victim), "..", "i-0123456789abcdef0"])
    assert (victim / "keep.txt").read_text() == "mine"
    assert sandbox.root.is_dir() and not own.exists()     # a real machine id is still unbound
