"""What a supervisor leaves on a host that stays up (a team host's node 0, a Slurm login node) goes
however deep the run made it: the outputs it fetched (exp/) were deleted with shutil.rmtree, which
recurses once per level, so a run's tree 1,500 levels deep ended the supervisor on RecursionError and
left its package, outputs and FLEET_HOME on the host."""
from __future__ import annotations

from pathlib import Path

from fleet.providers.ssh.handoff import SSHHandoff
from fleet.run import node_supervisor
from tests.fixtures.deep_tree import deep_tree, remove


def _supervisor_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "supervisor"
    for name in ("home", "pkg"):
        (directory / name).mkdir(parents=True)
    deep_tree(directory / "exp" / "outputs")
    (directory / "events.jsonl").write_text("{}\n")
    return directory


def test_a_team_hosts_supervisor_removes_fetched_outputs_deeper_than_the_stack(tmp_path):
    directory = _supervisor_dir(tmp_path)
    try:
        SSHHandoff().finish(None, directory)
        assert sorted(p.name for p in directory.iterdir()) == ["events.jsonl"]
    finally:
        remove(directory)


def test_a_login_nodes_supervisor_removes_fetched_outputs_deeper_than_the_stack(tmp_path):
    directory = _supervisor_dir(tmp_path)
    try:
        node_supervisor._tidy(directory)
        assert sorted(p.name for p in directory.iterdir()) == ["events.jsonl"]
    finally:
        remove(directory)
