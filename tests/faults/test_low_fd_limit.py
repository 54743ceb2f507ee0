"""The controller under a low open-files limit (`ulimit -n 64`): what it starts it still cleans up."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

_RELEASE = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from fleet.providers.local import LocalProvider
    dirs = [Path(p) for p in sys.argv[1:]]
    # Just above what this process already holds: the release workers (stopping each machine
    # lists /proc, deleting walks its tree with a descriptor per level) cannot all have theirs at
    # once, as under `ulimit -n 64` with a run's SSH connections open; one at a time they fit.
    held = len(__import__("os").listdir("/proc/self/fd"))
    resource.setrlimit(resource.RLIMIT_NOFILE, (held + 12, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    LocalProvider()._release_dirs(dirs)
""")


def _machine_dir(root: Path, name: str) -> Path:
    """A stopped machine's directory as deep as a lease's venv (root/pyenv/lib/python3.X/site-packages/…)."""
    d = root / name
    deep = d.joinpath("root", "pyenv", "lib", "python3.11", "site-packages", "pkg", "sub", "subsub", "leaf")
    deep.mkdir(parents=True)
    for level in [deep, *deep.parents][:8]:
        for i in range(20):
            (level / f"f{i}.py").write_text("x")
    return d


def test_release_under_a_low_open_files_limit_deletes_every_machine_directory(fleet_home):
    root = fleet_home / "machines"
    root.mkdir()
    dirs = [_machine_dir(root, f"l-lowfd-n{rank}") for rank in range(16)]
    proc = subprocess.run([sys.executable, "-c", _RELEASE, *map(str, dirs)], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])})
    assert proc.returncode == 0, proc.stderr
    # Every directory gone: one left behind is a machine's disk (its venv) that nothing frees until a
    # later `fleet down --all`, with no word said.
    assert sorted(p.name for p in root.iterdir()) == []
