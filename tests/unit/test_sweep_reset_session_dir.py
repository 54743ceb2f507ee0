"""The reset between trials runs fleet's own Python snippet in an SSH session, whose working directory
is the login's home: on a cloud machine the very $HOME every trial writes in, and not reset between
trials. `python -S -c` puts that directory first on sys.path, so a `re.py` or `json.py` a trial left
there ran inside the reset (which then could say "clean" over the daemons it was to end). The snippet
runs isolated (-I): only the standard library is imported."""
from __future__ import annotations

import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from fleet.models import Machine
from fleet.sweep import reset

PLANTED = ("json", "re", "shutil", "hashlib", "glob", "csv", "stat", "time", "errno")


def _machine(tmp_path: Path) -> Machine:
    workdir = tmp_path / "machine"
    (workdir / ".fleet").mkdir(parents=True)
    agent = Path(reset.__file__).parents[1] / "remote" / "agent"
    for source in agent.glob("*.py"):
        shutil.copy(source, workdir / ".fleet" / source.name)
    return Machine(id="l-test-n0", lease_id="l-test", node_rank=0, host="127.0.0.1", port=22, user="u",
                   key_path="", host_key="", workdir=str(workdir), python=sys.executable)


def sessions_in(monkeypatch, home: Path) -> None:
    """SSH sessions (fleet.remote.ssh.connect) that run each command here, in `home`, as sshd would
    in the login's home directory."""
    @contextmanager
    def session(m, timeout=None):
        def run(command, check=False, timeout=None):
            done = subprocess.run(["sh", "-c", command], cwd=home, capture_output=True, text=True, timeout=60)
            return SimpleNamespace(stdout=done.stdout, stderr=done.stderr, exit_code=done.returncode)
        yield SimpleNamespace(run=run, active=False)
    monkeypatch.setattr("fleet.remote.ssh.connect", session)


def test_modules_a_trial_left_in_the_sessions_directory_do_not_run_in_the_reset(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    marker = tmp_path / "ran"
    for name in PLANTED:   # what a trial wrote in $HOME: the reset says clean, ends nothing
        (home / f"{name}.py").write_text(f"open({str(marker)!r}, 'a').write({name!r} + ' ')\n"
                                         "print('{\"clean\": true, \"ended\": 0}'); raise SystemExit(0)\n")
    machine = _machine(tmp_path)
    outputs = Path(machine.workdir) / "outputs" / "r-1"
    outputs.mkdir(parents=True)
    (outputs / "model.bin").write_text("the last trial's\n")

    sessions_in(monkeypatch, home)
    got = reset.reset_machine(machine, "r-1", "trial-0")
    assert not marker.exists(), f"planted modules ran in the reset: {marker.read_text()}"
    assert got.clean and not outputs.exists()
