"""`fleet status` (table and --json) prints, byte for byte, what it printed before its per-lease
speed work (docs/control-plane-speed.md, issue 20), for a varied state with the clock frozen: local
leases (machines gone), a lease still leasing, AWS leases with remembered answers (spot, zones,
several machines out of rank order, prices, a passed deadline answered after it), detached and
finished runs, kept leases, and a teammate's control characters in the untrusted fields, which the
table shows as ^[ and never sends. The expected texts in data/status_output/ were written by the
code before that work (commit e11c6fc) from this same state, on SQLite; PostgreSQL state prints the same."""
from __future__ import annotations

import io
import os
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest

import fleet.lease_status
import fleet.leases
import fleet.status_table
from fleet.cli.status_view import show
from fleet.models import Lease, Machine
from fleet.state import open_state

NOW = datetime(2030, 1, 1, 12, 0, 0, 123456, tzinfo=timezone.utc)
EXPECTED = Path(__file__).parent / "data" / "status_output"


class _Frozen(datetime):
    @classmethod
    def now(cls, tz=None):
        return NOW if tz is not None else NOW.replace(tzinfo=None)


def _machine(lease_id: str, rank: int, provider: str, **extra) -> Machine:
    ref = ({"dir": f"/nonexistent/{lease_id}", "sshd_pid": 0, "simulated_gpus": True} if provider == "local"
           else {"region": "us-east-1", "instance_id": f"i-{lease_id}-{rank}"})
    return Machine(id=f"{lease_id}-n{rank}", lease_id=lease_id, node_rank=rank, host=f"10.0.0.{rank + 1}",
                   port=22 + rank, user="fleet", key_path="/nonexistent/key", host_key="ssh-ed25519 AAAA",
                   workdir="/nonexistent", gpu_slots=extra.pop("gpu_slots", (0,)), provider_ref=ref, **extra)


def _seed(state) -> None:
    leases = []
    for i in range(12):                                   # local leases of one or two machines, gone
        lease_id = f"l-local-{i:02d}"
        machines = [_machine(lease_id, r, "local", gpu_slots=tuple(range(i % 3 + 1))) for r in range(1 + i % 2)]
        leases.append(Lease(id=lease_id, provider="local", template="local-4gpu", machines=machines,
                            created_at=NOW - timedelta(minutes=90 - i), deadline=NOW + timedelta(seconds=37 * i - 60),
                            max_deadline=NOW + timedelta(hours=4), project=f"p{i % 3}", user=f"user{i % 4}",
                            keep_until=NOW + timedelta(hours=1) if i == 3 else None))
    leases.append(Lease(id="l-leasing", provider="local", template="local-4gpu", machines=[], status="leasing",
                        created_at=NOW - timedelta(minutes=5), deadline=NOW + timedelta(hours=2),
                        max_deadline=NOW + timedelta(hours=4), project="evil\x1b]52;c;aGk=\x07", user="mallory\x1b[2J"))
    aws = [("l-aws-spot", 3, dict(instance_type="g6.12xlarge", spot=True, zone="us-east-1a",
                                  price_per_hour=Decimal("1.2345"), gpu_slots=(0, 1, 2, 3))),
           ("l-aws-mixed", 2, dict(instance_type="g5.xlarge", zone="us-east-1b", price_per_hour=Decimal("0.50"))),
           ("l-aws-plain", 1, dict(instance_type="", price_per_hour=Decimal("1E+1"))),
           ("l-aws-orphan", 1, dict(instance_type="aws-1gpu", zone="us-east-1c"))]
    for j, (lease_id, count, extra) in enumerate(aws):
        machines = [_machine(lease_id, r, "aws", **dict(extra)) for r in reversed(range(count))]
        if lease_id == "l-aws-mixed":
            machines[0].spot = True
        passed = lease_id == "l-aws-orphan"
        leases.append(Lease(id=lease_id, provider="aws", template="aws-1gpu", machines=machines,
                            created_at=NOW - timedelta(minutes=30 + j),
                            deadline=NOW - timedelta(minutes=2) if passed else NOW + timedelta(hours=3, minutes=j),
                            max_deadline=NOW + timedelta(hours=8), project="team", user="user1",
                            meta={"region": "us-east-1"}))
    for lease in leases:
        state.save_lease(lease)
    observations = []
    for lease in leases[13:]:
        for m in lease.machines:
            said = "gone" if (lease.id == "l-aws-mixed" and m.node_rank == 1) else "running"
            observations.append((m.id, lease.id, said, "", (NOW - timedelta(seconds=20)).isoformat(),
                                 (NOW + timedelta(seconds=40)).isoformat()))
    state.save_observations(observations)
    for k, lease in enumerate(leases):
        for n in range(k % 4):
            run_id = f"r-{lease.id}-{n}"
            state.create_run(run_id, lease_id=lease.id, project=lease.project, user=lease.user,
                             command="python train.py", log_path="/nonexistent", output_dir="/nonexistent",
                             meta={"detached": True} if n == 1 else None)
            if n == 2:
                state.finish_run(run_id, "failed", 3)
    # Run start times as stored are the real clock's: give them a fixed order instead.
    for number, (run_id,) in enumerate(state.db.rows("SELECT id FROM runs ORDER BY id")):
        state.db.execute("UPDATE runs SET started_at = ? WHERE id = ?",
                         ((NOW - timedelta(seconds=1000 - number)).isoformat(), run_id))


@pytest.fixture(params=["sqlite", "postgresql"])
def seeded(request, fleet_home, monkeypatch):
    if request.param == "postgresql":
        monkeypatch.setenv("FLEET_STATE_URL", request.getfixturevalue("postgres_url"))
    state = open_state()
    _seed(state)
    state.close()
    monkeypatch.setattr(fleet.lease_status, "datetime", _Frozen)
    monkeypatch.setattr(fleet.status_table, "datetime", _Frozen)
    return fleet_home


def _count_general_path(monkeypatch) -> list:
    calls: list = []
    real = fleet.leases.status

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)
    monkeypatch.setattr(fleet.leases, "status", counted)
    return calls


def _printed(monkeypatch, **flags) -> str:
    out = io.StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    assert show(all_users=True, **flags) == 0
    monkeypatch.setattr(sys, "stdout", sys.__stdout__)
    return out.getvalue()


@pytest.mark.parametrize("form", ["table", "json"])
def test_status_prints_what_it_printed_before(seeded, monkeypatch, form):
    general = _count_general_path(monkeypatch)
    printed = _printed(monkeypatch, json_out=form == "json")
    # The table on SQLite comes straight from the state's rows (fleet/state/status_rows.py); --json
    # and PostgreSQL from the lease views.
    sqlite = "FLEET_STATE_URL" not in os.environ
    assert general == ([] if form == "table" and sqlite else [1])
    expected = EXPECTED / f"{form}.txt"
    if os.environ.get("FLEET_WRITE_STATUS_EXPECTED") == "1":    # only to record the code before the change
        expected.parent.mkdir(parents=True, exist_ok=True)
        expected.write_text(printed)
    assert printed == expected.read_text()


def test_the_table_never_sends_control_characters(seeded, monkeypatch):
    printed = _printed(monkeypatch)
    assert "\x1b" not in printed and "\x07" not in printed
    assert "mallory^[[2J" in printed


def test_a_lease_whose_provider_is_asked_takes_the_views_path(seeded, monkeypatch):
    """A lease of a provider that is asked at every status (the fake: no remembered answers) is
    not in the rows the table is made from: the whole table then comes from the views, as before."""
    from fleet.providers.fake import FakeProvider
    from fleet.status_table import status_notes, status_table
    from fleet.render.text import to_text
    state = open_state()
    machine = _machine("l-fake", 0, "fake")
    state.save_lease(Lease(id="l-fake", provider="fake", template=next(iter(FakeProvider().templates())),
                           machines=[machine], created_at=NOW, deadline=NOW + timedelta(hours=1),
                           max_deadline=NOW + timedelta(hours=2), user="user0"))
    views = fleet.lease_status.status(state, user=None)
    state.close()
    general = _count_general_path(monkeypatch)
    printed = _printed(monkeypatch)
    assert general == [1]
    assert "l-fake" in printed
    assert printed == to_text(status_table(views)) + "".join(n + "\n" for n in status_notes(views))


def test_a_document_without_a_zone_takes_the_views_path(seeded, monkeypatch):
    """A machine document from before zones (no key: the views read it as "") is read whole, by the
    views' path, which tells it from a null zone; what is printed is what that path prints."""
    from fleet.render.text import to_text
    from fleet.status_table import status_notes, status_table
    state = open_state()
    state.db.execute("UPDATE machines SET data = ? WHERE id = ?",
                     ('{"id": "l-aws-plain-n0", "lease_id": "l-aws-plain", "node_rank": 0, "host": "h", "port": 22,'
                      ' "user": "u", "gpu_slots": [0], "instance_type": "g5.xlarge", "provider_ref": {}}',
                      "l-aws-plain-n0"))
    views = fleet.lease_status.status(state, user=None)
    state.close()
    general = _count_general_path(monkeypatch)
    printed = _printed(monkeypatch)
    assert general == [1]
    assert "1 × g5.xlarge (aws-1gpu)" in printed
    assert printed == to_text(status_table(views)) + "".join(n + "\n" for n in status_notes(views))
