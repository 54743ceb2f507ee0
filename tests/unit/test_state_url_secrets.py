"""A state database URL's password is never printed (red-team findings): a URL without a scheme
was quoted by its first 20 characters ("admin:Hunter2pw@db.i…"), a DSN likewise, a password with "/"
in it was left in "cannot connect" messages, and a CI summary's masker did not know the state URL."""
from __future__ import annotations

import pytest

from fleet.masking import Masker
from fleet.state.postgres import redact_url
from tests.conftest import run_fleet


@pytest.mark.parametrize("url", ["admin:Hunter2pw@db.internal:5432/fleet", "password=Hunter2pw host=db",
                                 "mysql://admin:Hunter2pw@db/fleet"])
def test_an_unsupported_state_url_is_refused_without_quoting_its_password(tmp_path, fleet_home, url):
    proc = run_fleet(["runs", "ls"], cwd=tmp_path, env={"FLEET_HOME": str(fleet_home), "FLEET_STATE_URL": url})
    assert proc.returncode == 2 and "is not supported" in proc.stderr
    assert "Hunter2pw" not in proc.stderr + proc.stdout


def test_a_password_holding_a_slash_or_an_at_is_redacted_from_messages():
    assert redact_url("postgresql://u:Hun/ter2pw@127.0.0.1:1/db") == "postgresql://u:***@127.0.0.1:1/db"
    assert redact_url("postgresql://u:a@b/c@127.0.0.1/db") == "postgresql://u:***@127.0.0.1/db"


def test_every_masker_knows_the_state_databases_password():
    masker = Masker.for_config(None, environ={"FLEET_STATE_URL": "postgresql://ci:Hun/ter2pw@db/fleet"})
    assert "Hun/ter2pw" not in masker("cannot connect to postgresql://ci:Hun/ter2pw@db/fleet")
    dsn = Masker.for_config(None, environ={"FLEET_STATE_URL": "host=db password=Hunter2pw"})
    assert "Hunter2pw" not in dsn("fleet: error: password=Hunter2pw rejected")


def test_a_detached_runs_spec_file_is_the_users_alone(tmp_path):
    """spec.json holds the command line a shell expanded (a token typed into it, say): 0600, as
    identity.json beside it, whatever the umask."""
    import os
    import stat

    from fleet.run.supervisor import SupervisorSpec
    old = os.umask(0o022)
    try:
        path = SupervisorSpec(run_id="r-1", cwd=str(tmp_path), overrides={"command": "train --token abc"}).write(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_detached_runs_identity_names_its_state_without_the_password(tmp_path, monkeypatch):
    """identity.json put the state URL on disk with its password, even where it came from
    FLEET_STATE_URL only; the command that reconciles the run takes the password from its own
    configured URL for the same database (else libpq's PGPASSWORD or ~/.pgpass)."""
    import json

    from fleet.run.supervisor import IDENTITY, _write_identity, state_url_of
    url = "postgresql://ci:Hun/ter2pw@db.internal:5432/fleet?sslmode=require"
    _write_identity(tmp_path, "r-1", str(tmp_path), url)
    text = (tmp_path / IDENTITY).read_text()
    assert "Hun/ter2pw" not in text and "ter2pw" not in text
    ident = json.loads(text)
    assert ident["state_url"] == "postgresql://ci@db.internal:5432/fleet?sslmode=require"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FLEET_STATE_URL", url)
    assert state_url_of(ident) == url
    monkeypatch.setenv("FLEET_STATE_URL", "postgresql://ci:other@elsewhere/fleet")    # another database
    assert state_url_of(ident) == ident["state_url"]
    monkeypatch.delenv("FLEET_STATE_URL")
    _write_identity(tmp_path, "r-2", str(tmp_path), "sqlite:////srv/fleet/state.db")
    assert state_url_of(json.loads((tmp_path / IDENTITY).read_text())) == "sqlite:////srv/fleet/state.db"
