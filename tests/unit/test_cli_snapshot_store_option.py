"""`--store ""` (as `--store "$STORE"` types it with STORE unset) silently meant the default store:
`snapshot ls` listed $FLEET_HOME/store, `rm` and `gc` would act on it. Every snapshot command
refuses it in one line, before any store is opened or made."""
from __future__ import annotations

import pytest

from tests.conftest import run_fleet

COMMANDS = {
    "ls": ["snapshot", "ls"],
    "show": ["snapshot", "show", "x"],
    "diff": ["snapshot", "diff", "a", "b"],
    "verify": ["snapshot", "verify"],
    "rm": ["snapshot", "rm", "x"],
    "gc": ["snapshot", "gc"],
    "create": ["snapshot", "create", "data"],                 # fleet/cli/main.py's fast route
    "create-typer": ["snapshot", "create", "data", "--name=n"],   # `--opt=value` goes through typer
}


@pytest.mark.parametrize("store", ["", " "])
@pytest.mark.parametrize("command", COMMANDS)
def test_an_empty_store_option_is_refused_in_one_line(tmp_path, fleet_home, command, store):
    (tmp_path / "data").write_text("x\n")
    proc = run_fleet([*COMMANDS[command], "--store", store], cwd=tmp_path, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert len(lines) == 1 and lines[0].startswith("fleet: error: --store is empty"), proc.stderr
    assert proc.stdout == ""
    assert not (fleet_home / "store").exists()      # the default store was neither read nor made
