"""fleet's own programs on a warm pool's machine (agent.py and the modules beside it, in .fleet/) are
writable by the login every trial runs as. The reset between trials imported them: a trial that
appended to agent.py ran its code inside the reset, which could then call the machine clean over the
trial's daemons, and inside every later trial's start. Now the reset checks them against the pool's
state after setup before any of them runs, deletes their byte code (a planted .pyc ran the same way),
and a machine whose programs changed runs no more trials (fleet/sweep/retire.py)."""
from __future__ import annotations

from pathlib import Path

from fleet.sweep import reset, trial_env
from fleet.sweep.retire import Retirements
from fleet.sweep.trial_env import TrialEnvironments
from tests.unit.test_sweep_reset_session_dir import _machine, sessions_in


def _pool_machine(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    sessions_in(monkeypatch, home)
    machine = _machine(tmp_path)
    monkeypatch.setattr(trial_env, "env_paths", lambda lease, m: ("", str(tmp_path / "code"), ""))
    (tmp_path / "code").mkdir()
    baseline = trial_env.read_state(None, machine)
    assert baseline.agent is not None
    return machine, baseline, Path(machine.workdir) / ".fleet"


def test_resets_of_an_untouched_machine_keep_it(tmp_path, monkeypatch):
    machine, baseline, _ = _pool_machine(tmp_path, monkeypatch)
    for run_id in ("r-1", "r-2", "r-3"):     # each reset compiles the agent again: no change of the trial's
        got = reset.reset_machine(machine, run_id, "trial-0", agent_state=baseline.agent)
        assert got.clean and not got.agent_changed


def test_an_agent_a_trial_changed_runs_nowhere_and_the_machine_runs_no_more_trials(tmp_path, monkeypatch):
    machine, baseline, fleet_dir = _pool_machine(tmp_path, monkeypatch)
    marker = tmp_path / "planted-ran"
    with open(fleet_dir / "agent.py", "a") as fh:     # what a trial appends: the reset then says clean
        fh.write(f"\nopen({str(marker)!r}, 'w').write('ran')\n")
    got = reset.reset_machine(machine, "r-1", "trial-0", agent_state=baseline.agent)
    assert not marker.exists(), "the trial's code ran inside the reset"
    assert got.agent_changed and not got.clean
    env = TrialEnvironments()
    warned = Retirements().found(env, got, "r-1")
    assert warned == [f"machine {machine.id}: r-1 changed fleet's own programs there: no more trials on it "
                      "(the reset after it ran none of them, so nothing it left was ended)"]


def test_a_module_a_trial_added_beside_the_agent_is_a_change(tmp_path, monkeypatch):
    machine, baseline, fleet_dir = _pool_machine(tmp_path, monkeypatch)
    (fleet_dir / "signal.py").write_text("raise SystemExit('planted')\n")     # imported before the stdlib's
    assert reset.reset_machine(machine, "r-1", "trial-0", agent_state=baseline.agent).agent_changed


def test_byte_code_a_trial_planted_for_the_agent_is_deleted_before_anything_imports_it(tmp_path, monkeypatch):
    machine, baseline, fleet_dir = _pool_machine(tmp_path, monkeypatch)
    reset.reset_machine(machine, "r-0", "trial-0", agent_state=baseline.agent)     # compiles the agent
    cache = fleet_dir / "__pycache__"
    assert any(cache.glob("agent.*.pyc"))
    marker = tmp_path / "planted-ran"
    for pyc in cache.glob("*.pyc"):      # the same header (source mtime and size), the trial's code
        header = pyc.read_bytes()[:16]
        pyc.write_bytes(header + __import__("marshal").dumps(
            compile(f"open({str(marker)!r}, 'w').write('ran')\n", "x", "exec")))
    got = reset.reset_machine(machine, "r-1", "trial-0", agent_state=baseline.agent)
    assert not marker.exists(), "planted byte code ran inside the reset"
    assert got.clean and not got.agent_changed


def test_a_link_in_place_of_the_agents_byte_code_is_removed_not_followed(tmp_path, monkeypatch):
    machine, baseline, fleet_dir = _pool_machine(tmp_path, monkeypatch)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep.txt").write_text("a teammate's\n")
    (fleet_dir / "__pycache__").symlink_to(elsewhere)
    got = reset.reset_machine(machine, "r-1", "trial-0", agent_state=baseline.agent)
    assert got.clean and not got.agent_changed
    assert (elsewhere / "keep.txt").read_text() == "a teammate's\n"


def test_byte_code_an_agent_run_beside_the_reset_writes_again_is_no_change(tmp_path, monkeypatch):
    # A heartbeat (`agent.py extend`) or another slot's trial start imports the agent's modules while
    # this reset runs, writing __pycache__ again right after the reset removed it: the machine was
    # retired for fleet's own byte code. Here the first removal is followed by such a write.
    machine, baseline, fleet_dir = _pool_machine(tmp_path, monkeypatch)
    reset.reset_machine(machine, "r-0", "trial-0", agent_state=baseline.agent)     # compiles the agent
    hook = ("import shutil as _s, os as _o\n_rm = _s.rmtree\n"
            "def _again(p, *a, **k):\n    _rm(p, *a, **k)\n    _s.rmtree = _rm\n"
            "    _o.mkdir(p)\n    open(_o.path.join(p, 'containment.cpython-3.pyc'), 'wb').close()\n"
            "_s.rmtree = _again\n")
    monkeypatch.setattr(reset, "_SNIPPET", reset._SNIPPET.replace("import json, os, shutil, sys\n",
                                                                  "import json, os, shutil, sys\n" + hook, 1))
    got = reset.reset_machine(machine, "r-1", "trial-0", agent_state=baseline.agent)
    assert got.clean and not got.agent_changed
