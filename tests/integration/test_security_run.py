"""Security checks on a real run (local sshd machines, the CLI as typed): a canary secret never lands
in a file fleet writes, key and state files are private, and per-lease keys die with the lease."""
from __future__ import annotations

import json
import os
import secrets as pysecrets
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(180)


def _files(*roots: Path) -> list[Path]:
    return [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]


def _containing(needle: str, *roots: Path) -> list[str]:
    hits = []
    for p in _files(*roots):
        try:
            if needle.encode() in p.read_bytes():
                hits.append(str(p))
        except OSError:
            pass
    return hits


def _db_dump(home: Path) -> str:
    conn = sqlite3.connect(home / "state.db")
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_canary_secret_never_written_by_fleet(experiment, fleet_home):
    canary = "canary-" + pysecrets.token_hex(12)
    token = "tok-" + pysecrets.token_hex(12)
    (experiment / "fleet.toml").write_text(
        'project = "sec"\ntemplate = "local-1gpu"\nsecrets = ["CANARY"]\n'
        # an experiment that carelessly prints its secrets, in logs and on stderr
        'command = "echo using $CANARY; echo token=$API_TOKEN >&2; test -n \\"$CANARY\\""\n'
        f'[env]\nAPI_TOKEN = "{token}"\nPLAIN = "visible"\n')
    proc = run_fleet(["up", "--gpus", "2", "--json"], cwd=experiment, env={"CANARY": canary})
    assert proc.returncode == 0, proc.stderr          # the machines did get the secret
    summary = json.loads(proc.stdout)
    for needle in (canary, token):
        assert needle not in proc.stdout + proc.stderr, "printed to the terminal"
        assert needle not in _db_dump(fleet_home)
    assert _containing(canary, fleet_home, experiment / "runs") == []
    # A value written literally in fleet.toml is part of the code snapshot (the file is code, see
    # SECURITY.md: use `secrets`); it must still stay out of logs, records and summaries.
    # The code snapshot's chunks live in the store and in the hosts' chunk cache (local machines: under
    # FLEET_HOME), nowhere else.
    assert [p for p in _containing(token, fleet_home, experiment / "runs")
            if "/store/" not in p and "/cache/chunks/" not in p] == []
    record = run_fleet(["runs", "show", summary["run_id"], "--json"], cwd=experiment)
    assert record.returncode == 0 and canary not in record.stdout and token not in record.stdout
    logs = run_fleet(["logs", summary["run_id"]], cwd=experiment)
    assert "using" in logs.stdout and canary not in logs.stdout


def test_keys_and_state_are_private_and_lease_keys_die_with_the_lease(experiment, fleet_home):
    proc = run_fleet(["up", "--gpus", "2", "--keep", "5m", "--json", "--", "true"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    lease_id = json.loads(proc.stdout)["lease_id"]
    try:
        _check_private(fleet_home, lease_id)
    finally:
        down = run_fleet(["down", lease_id], cwd=experiment)
    assert down.returncode == 0, down.stderr
    lease_dir = fleet_home / "leases" / lease_id
    assert not (lease_dir / "id_ed25519").exists() and not lease_dir.exists()
    assert not list((fleet_home / "machines").glob("*/ssh_host_ed25519_key"))
    assert os.stat(fleet_home / "state.db").st_mode & 0o077 == 0


def _check_private(fleet_home: Path, lease_id: str) -> None:
    lease_dir = fleet_home / "leases" / lease_id
    private = [lease_dir / "id_ed25519", *sorted((fleet_home / "machines").glob("*/ssh_host_ed25519_key"))]
    assert len(private) == 3, private
    for path in private + [fleet_home / "state.db"]:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path, oct(path.stat().st_mode))
    for path in [fleet_home / "leases", fleet_home / "machines", lease_dir]:   # (the fixture made FLEET_HOME itself)
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, (path, oct(path.stat().st_mode))
    world_readable = [str(p) for p in _files(fleet_home)
                      if stat.S_IMODE(p.stat().st_mode) & 0o004 and p.suffix != ".pub"
                      and "store" not in p.relative_to(fleet_home).parts[:1]]
    # Files may be world-readable only under private directories; none of them holds a key.
    assert not [p for p in world_readable if "key" in Path(p).name or p.endswith(("id_ed25519", "state.db"))]
