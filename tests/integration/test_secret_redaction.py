"""A secret's value typed literally into the command, into an [env] value and into setup never
reaches anything fleet stores: state database, run records (nested config too), ledger, logs,
summary.json, reports, `fleet runs` output (issue 13, "Secrets and audit")."""
from __future__ import annotations

import json
import secrets as pysecrets
from pathlib import Path

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(240)


def _hits(needle: str, *roots: Path, skip_store: bool = True) -> list[str]:
    found = []
    for root in roots:
        for p in (q for q in root.rglob("*") if q.is_file()):
            # fleet.toml is code: it is in the code snapshot by contract (SECURITY.md), so in the
            # content-addressed chunks of the store and of the hosts' chunk cache, nowhere else.
            parts = p.relative_to(root).parts
            if skip_store and (parts[:1] == ("store",) or parts[:2] == ("cache", "chunks")):
                continue
            if needle.encode() in p.read_bytes():
                found.append(str(p))
    return found


def test_secret_values_in_command_env_and_setup_are_never_stored(experiment, fleet_home):
    canary = "canary-" + pysecrets.token_hex(12)
    unnamed = "urlpass-" + pysecrets.token_hex(8)     # a password in a URL value no secret names
    (experiment / "fleet.toml").write_text(
        'project = "sec"\ntemplate = "local-1gpu"\nsecrets = ["CANARY"]\nmax_duration = "10m"\n'
        f'setup = "test {canary} = \\"$CANARY\\""\n'
        f'[env]\nDB_URL = "postgres://u:{canary}@db/x"\nTRACKING_URI = "https://me:{unnamed}@mlflow.example/x"\n')
    # The shell expanded the secret into the command line before fleet saw it.
    command = f'test "$CANARY" = {canary} && echo "$DB_URL" | grep -q {canary} && echo ran-ok'
    proc = run_fleet(["up", "--gpus", "1", "--json", "--", "sh", "-c", command], cwd=experiment, env={"CANARY": canary})
    assert proc.returncode == 0, proc.stdout + proc.stderr      # the machine did get the real values
    summary = json.loads(proc.stdout)
    run_id = summary["run_id"]
    assert canary not in proc.stdout + proc.stderr
    # Both carried the value as an argument, which other users of a shared host can read: said once each.
    assert proc.stderr.count("the command holds a secret's value") == 1, proc.stderr
    assert proc.stderr.count("the setup holds a secret's value") == 1, proc.stderr

    # Every file fleet wrote: state.db (+ WAL), records.tip, ledger rows (in the db), logs, summary.json.
    assert (experiment / "runs" / run_id / "summary.json").exists()
    assert _hits(canary, fleet_home, experiment / "runs") == []
    assert _hits(unnamed, fleet_home, experiment / "runs") == []

    outputs = []
    for args in (["runs", "show", run_id, "--json"], ["runs", "ls"], ["logs", run_id],
                 ["report", "--by", "run", "--json"], ["report", "--by", "run", "--format", "md"],
                 ["audit", run_id]):
        out = run_fleet(args, cwd=experiment, env={"CANARY": canary})
        outputs.append(out.stdout + out.stderr)
        assert canary not in out.stdout + out.stderr and unnamed not in out.stdout + out.stderr, args
    assert "ran-ok" in outputs[2]                                   # the logs are really there
    record = json.loads(outputs[0])
    text = json.dumps(record)
    assert "<redacted>" in record["config"]["command"] and "<redacted>" in record["config"]["setup"]
    assert "<redacted>" in record["config"]["env"]["DB_URL"] and "<redacted>" in text


def test_a_url_password_typed_into_setup_or_the_command_is_never_stored(experiment, fleet_home):
    """`pip install -i https://u:pw@index/simple` in setup: no variable names the password, yet it
    is one; it reached the record, the state database, the logs and the terminal as typed."""
    in_setup, in_command = "setuppw-" + pysecrets.token_hex(4), "cmdpw-" + pysecrets.token_hex(4)
    (experiment / "fleet.toml").write_text(
        'project = "sec"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
        f'setup = "echo pip install -i https://alice:{in_setup}@pypi.corp.example/simple"\n')
    proc = run_fleet(["up", "--gpus", "1", "--json", "--", "echo", f"https://bob:{in_command}@db.example/x"],
                     cwd=experiment)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_id = json.loads(proc.stdout)["run_id"]
    for password in (in_setup, in_command):
        assert password not in proc.stdout + proc.stderr
        assert _hits(password, fleet_home, experiment / "runs") == []
    assert "the setup holds a secret's value" in proc.stderr and "the command holds a secret's value" in proc.stderr
    shown = run_fleet(["runs", "show", run_id, "--json"], cwd=experiment)
    logs = run_fleet(["logs", run_id], cwd=experiment)
    for out in (shown.stdout, logs.stdout):
        assert in_setup not in out and in_command not in out
    assert "https://alice:***@pypi.corp.example/simple" in logs.stdout       # the rest of the line is kept
    record = json.loads(shown.stdout)
    assert record["config"]["setup"].endswith("https://alice:<redacted>@pypi.corp.example/simple")
    rerun = run_fleet(["rerun", run_id], cwd=experiment)
    assert rerun.returncode != 0 and "contained a secret that was redacted" in rerun.stderr
