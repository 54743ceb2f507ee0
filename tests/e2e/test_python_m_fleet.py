"""`python -m fleet` runs the CLI, as `python -m pip` does: for a venv whose bin/ is not on PATH."""
from __future__ import annotations

import subprocess
import sys


def test_python_m_fleet_is_the_fleet_command():
    got = subprocess.run([sys.executable, "-m", "fleet", "--help"], capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and "Usage: fleet" in got.stdout, got.stderr
    bad = subprocess.run([sys.executable, "-m", "fleet", "nosuchcommand"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr


def test_python_m_fleet_imports_nothing_from_the_directory_it_is_run_in(tmp_path):
    """A red-team round: `python -m fleet up` in a cloned repository holding json.py or typer.py ran
    them (`-m` puts the working directory first on sys.path), code of the repository's on this computer."""
    import os
    from pathlib import Path
    ran = tmp_path / "ran"
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("json", "typer", "click", "tomllib", "yaml"):
        (repo / f"{name}.py").write_text(f"open({str(ran / name)!r}, 'w')\nraise SystemExit(99)\n")
    (repo / "fleet.toml").write_text('command = "true"\ntemplate = "local-1gpu"\n')
    ran.mkdir()
    src = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "FLEET_HOME": str(tmp_path / "home"), "PYTHONPATH": src}
    got = subprocess.run([sys.executable, "-m", "fleet", "up", "--dry-run"], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=120)
    assert got.returncode == 0 and "nothing was leased" in got.stdout, got.stderr
    assert sorted(p.name for p in ran.iterdir()) == []


def test_python_m_fleet_in_a_directory_removed_under_it_answers(tmp_path):
    """Dropping the working directory from sys.path asked for it: in one removed under the shell
    (another terminal's `rm -rf`), `python -m fleet --version` ended in a FileNotFoundError traceback."""
    import os
    from pathlib import Path
    gone = tmp_path / "gone"
    gone.mkdir()
    src = str(Path(__file__).resolve().parents[2])
    code = (f"import os, subprocess, sys; os.chdir({str(gone)!r}); os.rmdir({str(gone)!r}); "
            "sys.exit(subprocess.run([sys.executable, '-m', 'fleet', '--version']).returncode)")
    got = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": src},
                         capture_output=True, text=True, timeout=60)
    assert got.returncode == 0 and got.stdout.startswith("fleet "), got.stderr
    assert "Traceback" not in got.stderr, got.stderr
