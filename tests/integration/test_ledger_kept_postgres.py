"""A kept lease on a PostgreSQL state, settled by the start-up check of a later `fleet` command
(fleet/money/kept.py). Its marker cannot hold the URL's password, so it used to name no state at
all: the command opened whichever state its own directory and environment named, found nothing
of the lease there, and deleted the marker, so the kept time stayed open on the team's ledger."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from fleet.money.budget import Price, cost_micro, to_micro
from fleet.money.kept import hand_over
from fleet.money.ledger import KEPT_SUFFIX, Ledger, iso
from fleet.state import open_state
from tests.conftest import run_fleet
from tests.fixtures.ledger import T0, FakeClock, _Lease, _Machine
from tests.fixtures.postgres import create_database, drop_database

RATE = Price(to_micro("3.60"), "aws on-demand table")   # $0.001 per second
PER_S = cost_micro(RATE.per_hour_micro, 1)
PASSWORD = "s3cret-pw"


def _with_password(url: str) -> str:
    # The test server trusts every local connection, so a password in the URL is carried and ignored.
    return url.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@", 1)


def _kept_lease(url: str, lease_id: str, deadline: datetime, opened: datetime) -> None:
    """A run on `lease_id` ended at `opened` and the lease was kept: its kept segments open."""
    state = open_state(url)
    try:
        state.db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
                         " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         (lease_id, "aws", "p4d.24xlarge", "vision", "ana", "active", iso(T0), iso(deadline),
                          iso(deadline + timedelta(hours=1)), 60))
        le = _Lease(lease_id, "vision", "ana", "p4d.24xlarge", "aws", [_Machine(f"{lease_id}-m0", (0,))])
        ledger = Ledger(state.db, FakeClock(T0))
        run = [ledger.open_segment(lease=le, machine=m, price=RATE, run_id="r-1", at=T0) for m in le.machines]
        hand_over(ledger, run, le, opened)     # writes the lease's marker
    finally:
        state.close()


def _kept_closes(url: str) -> dict[str, list[str]]:
    """Each lease's kept segments' close times on that database's ledger (none while open)."""
    state = open_state(url)
    try:
        closes: dict[str, list[str]] = {}
        for e in Ledger(state.db).read().entries:
            if e.segment_id.endswith(KEPT_SUFFIX):
                closes.setdefault(e.lease_id, [])
                if e.kind == "close":
                    closes[e.lease_id].append(e.end_at)
        return closes
    finally:
        state.close()


def test_the_next_command_for_its_database_settles_a_kept_postgres_lease_at_its_deadline(
        fleet_home, tmp_path, postgres_url):
    url = _with_password(postgres_url)
    deadline = T0 + timedelta(seconds=60)
    _kept_lease(url, "l-1", deadline, T0 + timedelta(seconds=10))
    marker = fleet_home / "kept" / "l-1"
    elsewhere, team = tmp_path / "elsewhere", tmp_path / "team"
    elsewhere.mkdir()
    team.mkdir()
    (team / "fleet.toml").write_text(f'state_url = "{url}"\n')
    # A command run where nothing names the team's database: this computer's own state is not where
    # the lease lives, so nothing is settled there and the marker stays for a command that can.
    proc = run_fleet(["status"], cwd=elsewhere)
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    assert marker.exists() and _kept_closes(url) == {"l-1": []}
    proc = run_fleet(["status"], cwd=team)          # the team's fleet.toml holds the password
    assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
    assert _kept_closes(url) == {"l-1": [iso(deadline)]}
    assert not marker.exists()
    written = [p.read_bytes() for p in fleet_home.rglob("*") if p.is_file()]
    assert not any(PASSWORD.encode() in data for data in written)


def test_a_marker_for_one_postgres_database_never_settles_into_another(fleet_home, tmp_path, postgres_server):
    url_a, url_b = create_database(postgres_server), create_database(postgres_server)
    try:
        deadline = T0 + timedelta(seconds=60)
        _kept_lease(url_a, "l-1", deadline, T0 + timedelta(seconds=10))
        later = datetime.now(timezone.utc) + timedelta(hours=1)   # B's own kept lease: not due
        _kept_lease(url_b, "l-2", later, T0 + timedelta(seconds=10))
        before_b = _kept_closes(url_b)
        proc = run_fleet(["status"], cwd=tmp_path, env={"FLEET_STATE_URL": url_b})
        assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
        assert _kept_closes(url_b) == before_b == {"l-2": []}
        assert _kept_closes(url_a) == {"l-1": []} and (fleet_home / "kept" / "l-1").exists()
        proc = run_fleet(["status"], cwd=tmp_path, env={"FLEET_STATE_URL": url_a})
        assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
        assert _kept_closes(url_a) == {"l-1": [iso(deadline)]}
        assert not (fleet_home / "kept" / "l-1").exists() and (fleet_home / "kept" / "l-2").exists()
        assert _kept_closes(url_b) == {"l-2": []}
    finally:
        drop_database(postgres_server, url_a)
        drop_database(postgres_server, url_b)


def test_a_url_that_reaches_another_database_from_this_environment_settles_nothing_there(
        fleet_home, tmp_path, postgres_server, monkeypatch):
    """The same URL, no database in it: libpq takes PGDATABASE, which names another one now."""
    url_a, url_b = create_database(postgres_server), create_database(postgres_server)
    name_a, name_b = (u.split("/")[3].split("?")[0] for u in (url_a, url_b))
    url = url_a.replace(f"/{name_a}?", "/?", 1)
    try:
        deadline = T0 + timedelta(seconds=60)
        monkeypatch.setenv("PGDATABASE", name_a)
        _kept_lease(url, "l-1", deadline, T0 + timedelta(seconds=10))
        proc = run_fleet(["status"], cwd=tmp_path, env={"FLEET_STATE_URL": url, "PGDATABASE": name_b})
        assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
        assert _kept_closes(url_b) == {} and (fleet_home / "kept" / "l-1").exists()
        proc = run_fleet(["status"], cwd=tmp_path, env={"FLEET_STATE_URL": url, "PGDATABASE": name_a})
        assert proc.returncode == 0 and "warning" not in proc.stderr, proc.stderr
        assert _kept_closes(url_a) == {"l-1": [iso(deadline)]} and not (fleet_home / "kept" / "l-1").exists()
    finally:
        drop_database(postgres_server, url_a)
        drop_database(postgres_server, url_b)
