"""`--keep` and `fleet extend` past max_duration: the real deadline is reported, with what capped it
and why; an extension that can change nothing is refused in one line (it used to exit 0 silently)."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import run_fleet

pytestmark = pytest.mark.timeout(180)


def test_keep_and_extend_say_the_max_duration_cap(tmp_path, fleet_home):
    (tmp_path / "fleet.toml").write_text('project = "capped"\ntemplate = "local-1gpu"\ncommand = "true"\n'
                                         'max_duration = "3m"\n')
    up = run_fleet(["up", "--keep", "1h", "--json", "--allow-dirty"], cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    summary = json.loads(up.stdout)
    kept_until = datetime.fromisoformat(summary["kept_until"])
    now = datetime.now(timezone.utc)
    assert kept_until <= now + timedelta(minutes=3), summary["kept_until"]   # not now + 1h
    assert "not the 1h00m asked: capped by max_duration" in up.stderr, up.stderr
    lease = summary["lease_id"]
    try:
        refused = run_fleet(["extend", lease, "2h"], cwd=tmp_path)
        lines = refused.stderr.strip().splitlines()
        assert refused.returncode == 2 and len(lines) == 1, refused.stderr
        assert lines[0].startswith(f"fleet: error: lease {lease} already ends at its max_duration (")
        assert "nothing was extended" in lines[0] and "--max-duration" in lines[0]
    finally:
        assert run_fleet(["down", lease], cwd=tmp_path).returncode == 0


def kept_lease(directory, project: str, keep: str, max_duration: str, extra: str = "") -> str:
    """`fleet up --keep KEEP` of `true` on one local machine in `directory`: the kept lease's id."""
    (directory / "fleet.toml").write_text(f'project = "{project}"\ntemplate = "local-1gpu"\ncommand = "true"\n'
                                          f'max_duration = "{max_duration}"\n{extra}')
    up = run_fleet(["up", "--keep", keep, "--json", "--allow-dirty"], cwd=directory)
    assert up.returncode == 0, up.stderr
    return json.loads(up.stdout)["lease_id"]


def test_extend_within_the_cap_says_so_when_it_is_cut(tmp_path, fleet_home):
    lease = kept_lease(tmp_path, "capped2", "1m", "10m")
    try:
        fine = run_fleet(["extend", lease, "2m"], cwd=tmp_path)
        assert fine.returncode == 0 and "now ends at" in fine.stdout and "warning" not in fine.stderr, fine.stderr
        ext = run_fleet(["extend", lease, "1h"], cwd=tmp_path)
        assert ext.returncode == 0, ext.stderr
        assert f"fleet: warning: lease {lease} is kept until " in ext.stderr
        assert "not the 1h00m asked: capped by max_duration" in ext.stderr
    finally:
        assert run_fleet(["down", lease], cwd=tmp_path).returncode == 0


def test_extend_of_a_kept_lease_stops_where_the_monthly_budget_does(tmp_path, fleet_home):
    """A kept lease's machines bill until its deadline: `fleet extend` moved it as far as max_duration
    allowed whatever the monthly budget had left (a week's kept A100s on a $100 budget)."""
    lease = kept_lease(tmp_path, "capmonth", "2m", "10h", extra="[budgets]\nproject_monthly = 0.3\n")
    try:
        ext = run_fleet(["extend", lease, "5h"], cwd=tmp_path)
        assert ext.returncode == 0, ext.stderr
        assert "not the 5h00m asked: capped by the monthly budget (project 'capmonth'" in ext.stderr, ext.stderr
        until = datetime.fromisoformat(ext.stdout.split("now ends at ")[1].strip())
        assert until < datetime.now(timezone.utc) + timedelta(hours=1)     # $0.30 at a local-1gpu's list price
        standing = json.loads(run_fleet(["budget", "--json"], cwd=tmp_path).stdout)["budgets"][0]
        assert float(standing["remaining_usd"]) < 0.01, standing                  # all of it held, no more
        again = run_fleet(["extend", lease, "5h"], cwd=tmp_path)
        lines = again.stderr.strip().splitlines()
        assert again.returncode == 6 and len(lines) == 1, again.stderr
        assert "has nothing left to pay for lease" in lines[0] and "nothing was extended" in lines[0]
    finally:
        assert run_fleet(["down", lease], cwd=tmp_path).returncode == 0


def test_two_extends_at_once_never_hold_more_than_the_monthly_budget(tmp_path, fleet_home):
    """Two kept leases extended at the same moment each saw the other's money as free: both were
    capped at the same whole remainder ($0.129 held of a $0.10 budget, red-team finding). The budget
    check and the deadline it allows are one transaction now."""
    import subprocess

    from tests.conftest import FLEET
    extra = "[budgets]\nproject_monthly = 0.3\n"
    leases = [kept_lease(tmp_path / d, "capboth", "1m", "10h", extra=extra)
              for d in ("a", "b") if (tmp_path / d).mkdir() is None]
    try:
        procs = [subprocess.Popen([FLEET, "extend", lease, "5h"], cwd=tmp_path / d, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for lease, d in zip(leases, ("a", "b"))]
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode in (0, 6) for p in procs), outs
        standing = json.loads(run_fleet(["budget", "--json"], cwd=tmp_path / "a").stdout)["budgets"][0]
        assert float(standing["remaining_usd"]) >= -0.005, (standing, outs)      # held within the budget
    finally:
        for lease, d in zip(leases, ("a", "b")):
            assert run_fleet(["down", lease], cwd=tmp_path / d).returncode == 0


def test_an_extend_that_moved_some_machines_keeps_their_deadline_on_record(tmp_path, fleet_home, monkeypatch):
    """The budget-held deadline was put back whenever extending raised, though machines that had
    answered already held the new one: their kept time was then neither billed nor counted by
    others' budget checks (review finding). The record keeps what the machines that moved hold;
    only when none moved is the old deadline (and its keep_until) put back."""
    from fleet import leases as lease_api
    from fleet.config.loader import load_config
    from fleet.errors import InfrastructureError
    from fleet.models import utcnow
    from fleet.money.metering import BudgetLimits
    from fleet.remote import ssh
    from fleet.state import open_state
    (tmp_path / "fleet.toml").write_text('project = "partial"\ntemplate = "local-1gpu"\ncommand = "true"\n'
                                         'gpus = 2\nmax_duration = "10h"\n[budgets]\nproject_monthly = 100\n')
    up = run_fleet(["up", "--keep", "2m", "--json", "--allow-dirty", "--yes"], cwd=tmp_path)
    assert up.returncode == 0, up.stderr
    lease_id = json.loads(up.stdout)["lease_id"]
    limits = BudgetLimits.from_config(load_config(cwd=tmp_path))
    real = ssh.connect
    state = open_state()
    try:
        before = state.get_lease(lease_id)
        first, second = sorted(before.machines, key=lambda m: m.node_rank)

        def refuse(ids):
            def connect(machine, *a, **k):
                if machine.id in ids:
                    raise InfrastructureError(f"machine {machine.id} is unreachable")
                return real(machine, *a, **k)
            return connect
        monkeypatch.setattr(ssh, "connect", refuse({first.id, second.id}))
        with pytest.raises(InfrastructureError):
            lease_api.extend(lease_id, "1h", limits=limits)
        after = state.get_lease(lease_id)
        assert (after.deadline, after.keep_until) == (before.deadline, before.keep_until)   # none moved
        monkeypatch.setattr(ssh, "connect", refuse({second.id}))
        with pytest.raises(InfrastructureError):
            lease_api.extend(lease_id, "1h", limits=limits)
        held = state.get_lease(lease_id).deadline
        assert held > utcnow() + timedelta(minutes=50), held        # the machine that moved holds ~1h
        later = utcnow() + timedelta(hours=3)       # another extend raised it meanwhile: never lowered
        state.set_lease_deadline(lease_id, later, keep_until=later)
        with pytest.raises(InfrastructureError):
            lease_api.extend(lease_id, "1h", limits=limits)
        assert state.get_lease(lease_id).deadline >= later - timedelta(seconds=1)
    finally:
        monkeypatch.setattr(ssh, "connect", real)
        state.close()
        assert run_fleet(["down", lease_id], cwd=tmp_path).returncode == 0
