"""fleet's Python on a machine runs from the login's home, where runs and sweep trials write, as
`python -c`, which puts that directory first on sys.path. A json.py a trial left there ran inside the
probe that pins the environment (and could write the record it liked), and a hashlib.py inside the
state read between sweep trials (which could call a changed machine unchanged)."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

from fleet.environment.capture import probe_script

PLANTED = 'import sys\nsys.stdout.write("PLANTED")\nsys.exit(0)\n'


def _plant(home):
    for name in ("json", "hashlib", "glob", "platform"):
        (home / f"{name}.py").write_text(PLANTED)


def test_the_environment_probe_never_imports_what_a_run_left_in_its_working_directory(tmp_path):
    home, code = tmp_path / "home", tmp_path / "code"
    home.mkdir(), code.mkdir()
    _plant(home)
    out = subprocess.run([sys.executable, "-c", probe_script(), "probe", str(code)], cwd=home,
                         capture_output=True, text=True, timeout=120)
    assert "PLANTED" not in out.stdout
    assert json.loads(out.stdout)["python"]


def test_the_sweep_state_read_never_imports_what_a_trial_left_in_the_login_home(tmp_path, monkeypatch):
    from fleet.sweep import trial_env
    home = tmp_path / "home"
    home.mkdir()
    _plant(home)

    class Session:          # runs the command here, from the login's home, as sshd would
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def run(self, command, check, timeout):
            done = subprocess.run(command, shell=True, cwd=home, capture_output=True, text=True, timeout=timeout)
            return SimpleNamespace(stdout=done.stdout, returncode=done.returncode)
    monkeypatch.setattr("fleet.remote.ssh.connect", lambda machine, timeout: Session())
    monkeypatch.setattr(trial_env, "env_paths", lambda lease, machine: ("", str(tmp_path / "code"), ""))
    (tmp_path / "code").mkdir()
    got = trial_env.read_state(None, SimpleNamespace(python=sys.executable, agent_path=str(tmp_path / "a" / "agent.py")))
    assert got.code is not None and len(got.code) == 64
