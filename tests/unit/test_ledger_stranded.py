"""A controller killed mid-run leaves its cost segments open; its machines run on to the lease's
recorded deadline. Budget checks must count that time (fleet/money/stranded.py) from the moment
the run's reservation stops holding it, without counting it twice once `fleet down` closes it."""
from __future__ import annotations

from datetime import timedelta

from fleet.money.budget import cost_micro
from fleet.money.kept import hand_over
from fleet.money.ledger import Ledger, iso
from fleet.money.reservations import STALE_S, Reservations
from tests.fixtures.ledger import T0, FakeClock, _Lease, _Machine
from tests.unit.test_ledger_kept import RATE, clock, db  # noqa: F401 — the fixtures: a state, a fake clock

PER_S = cost_micro(RATE.per_hour_micro, 1)
DEADLINE_S = 120


def _lease(db, lease_id: str = "l-1") -> _Lease:
    le = _Lease(lease_id, "vision", "ana", "p4d.24xlarge", "aws", [_Machine(f"{lease_id}-m{i}", (0,)) for i in range(2)])
    db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
               " max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
               (le.id, le.provider, le.template, le.project, le.user, "active", iso(T0),
                iso(T0 + timedelta(seconds=DEADLINE_S)), iso(T0 + timedelta(hours=1)), 60))
    return le


def _killed_after_a_minute(db, clock) -> tuple[Ledger, list]:
    """A run on 2 machines ticks at 60 s, then its controller is SIGKILLed: no more rows."""
    ledger = Ledger(db, clock)
    le = _lease(db)
    segments = [ledger.open_segment(lease=le, machine=m, price=RATE, run_id="r-1", at=clock()) for m in le.machines]
    clock.advance(60)
    ledger.append(segments, clock())
    return ledger, segments


def test_a_dead_controllers_machines_count_once_its_rows_go_silent_netting_its_reservation(db, clock):
    ledger, _ = _killed_after_a_minute(db, clock)
    db.execute("UPDATE leases SET deadline = ? WHERE id = 'l-1'", (iso(T0 + timedelta(seconds=300)),))
    amount = 2 * 3600 * PER_S
    Reservations(db, clock).reserve(lease_id="l-1", run_id="r-1", project="vision", owner="ana",
                                    amount_micro=amount, minimum_micro=0, lifetime_s=3600, now=T0)

    def seen() -> tuple[int, int]:
        return ledger.spent_micro(project="vision"), Reservations(db, clock).held_micro(project="vision")
    clock.advance(STALE_S - 1)                                   # silent, but not for long
    assert seen() == (2 * 60 * PER_S, amount - 2 * 60 * PER_S)
    clock.advance(2)                                             # silent too long: its time counts up to now
    spent, held = seen()
    assert spent == 2 * (60 + STALE_S + 1) * PER_S and spent + held == amount   # counted once
    assert ledger.spent_micro(project="nlp") == 0
    clock.advance(3600)                                          # never past the machines' deadline…
    assert ledger.spent_micro(project="vision") == 2 * 300 * PER_S
    assert Reservations(db, clock).held_micro(project="vision") == 0   # …and its lease's end frees the rest


def test_a_checker_whose_clock_runs_ahead_never_counts_a_live_run_below_its_reservation(db, clock):
    """Rows look silent to a teammate whose clock is 65 s ahead: spend plus reservation must still
    be what the run reserved (dropping the reservation let others take $36 the run was about to spend)."""
    ledger, segments = _killed_after_a_minute(db, clock)
    db.execute("UPDATE leases SET deadline = ? WHERE id = 'l-1'", (iso(T0 + timedelta(hours=1)),))
    amount = 2 * 3600 * PER_S
    Reservations(db, clock).reserve(lease_id="l-1", run_id="r-1", project="vision", owner="ana",
                                    amount_micro=amount, minimum_micro=0, lifetime_s=3600, now=T0)
    ahead = FakeClock(clock() + timedelta(seconds=65))           # the run wrote a row just now, by its clock
    spent = Ledger(db, ahead).spent_micro(project="vision")
    held = Reservations(db, ahead).held_micro(project="vision")
    assert spent + held == amount and held > 0


def test_a_dead_controller_on_a_kept_lease_counts_as_it_goes_not_at_the_kept_deadline(db, clock):
    """A kept lease has no heartbeat: its deadline is the kept one, hours away. The reviewer's case:
    killed after a minute, two hours later a $5 reservation was all that was counted."""
    ledger, _ = _killed_after_a_minute(db, clock)
    db.execute("UPDATE leases SET deadline = ? WHERE id = 'l-1'", (iso(T0 + timedelta(hours=8)),))
    Reservations(db, clock).reserve(lease_id="l-1", run_id="r-1", project="vision", owner="ana",
                                    amount_micro=5_000_000, minimum_micro=0, lifetime_s=8 * 3600, now=T0)
    clock.advance(2 * 3600)
    assert Reservations(db, clock).held_micro(project="vision") == 0
    assert ledger.spent_micro(project="vision") == 2 * (60 + 2 * 3600) * PER_S


def test_closing_the_segments_later_does_not_count_the_time_twice(db, clock):
    ledger, _ = _killed_after_a_minute(db, clock)
    clock.advance(1000)
    before = ledger.spent_micro(project="vision")
    ledger.close_orphans("l-1", at=T0 + timedelta(seconds=DEADLINE_S))   # what `fleet down` does
    db.execute("UPDATE leases SET status = 'released' WHERE id = 'l-1'")
    assert before == ledger.spent_micro(project="vision") == 2 * DEADLINE_S * PER_S


def test_a_live_controller_moving_its_deadline_has_nothing_stranded(db, clock):
    ledger, segments = _killed_after_a_minute(db, clock)
    for _ in range(5):                                           # heartbeats push the deadline; ticks follow
        clock.advance(60)
        db.execute("UPDATE leases SET deadline = ? WHERE id = 'l-1'", (iso(clock() + timedelta(seconds=60)),))
        ledger.append(segments, clock())
    assert ledger.spent_micro(project="vision") == 2 * 360 * PER_S


def test_kept_idle_time_is_counted_once(db, clock):
    """A kept lease's open idle segment is the kept accrual's (up to min(now, deadline)), not stranded."""
    ledger, segments = _killed_after_a_minute(db, clock)
    le = _Lease("l-1", "vision", "ana", "p4d.24xlarge", "aws", [_Machine(f"l-1-m{i}", (0,)) for i in range(2)])
    hand_over(ledger, segments, le, clock())
    clock.advance(1000)
    assert ledger.spent_micro(project="vision") == 2 * DEADLINE_S * PER_S


def test_machines_a_killed_leasing_made_count_up_to_their_first_deadline(db, clock):
    """Killed inside leasing: the lease stays `leasing`, the machines reported so far have open
    segments and end at the first deadline they were given."""
    import json
    import subprocess
    from fleet.lost_runs import _start_ticks, controller_identity
    ledger, _ = _killed_after_a_minute(db, clock)
    db.execute("UPDATE leases SET status = 'leasing' WHERE id = 'l-1'")
    clock.advance(1000)
    # a controller not known dead (another computer's): its reservation holds the time (to max_deadline)
    assert ledger.spent_micro(project="vision") == 2 * 60 * PER_S
    dead = subprocess.Popen(["sleep", "60"])
    ident = {**controller_identity(), "pid": dead.pid, "start": _start_ticks(dead.pid)}
    dead.kill()
    dead.wait()
    db.execute("INSERT INTO runs (id, lease_id, project, owner, command, status, started_at, meta)"
               " VALUES (?,?,?,?,?,?,?,?)", ("r-1", "l-1", "vision", "ana", "true", "running", iso(T0),
                                             json.dumps({"controller": ident})))
    assert ledger.spent_micro(project="vision") == 2 * DEADLINE_S * PER_S


def test_a_damaged_rate_or_deadline_never_fails_a_budget_check(db, clock):
    ledger, _ = _killed_after_a_minute(db, clock)
    db.execute("UPDATE ledger SET rate_micro = 'x' WHERE kind = 'tick'")
    clock.advance(1000)
    assert ledger.spent_micro(project="vision") >= 0
    db.execute("UPDATE leases SET deadline = 'garbage'")
    assert ledger.spent_micro(project="vision") >= 0


def test_a_run_starting_on_a_kept_lease_takes_over_a_dead_runs_segments_never_billing_twice(db, clock):
    """Run A on the kept lease was killed; run B starts there 10 minutes later: A's segments end
    where B's begin (the reviewer's case billed $36.00 for $28.80 of machine time)."""
    from fleet.money.kept import close_kept
    ledger, _ = _killed_after_a_minute(db, clock)
    db.execute("UPDATE leases SET deadline = ? WHERE id = 'l-1'", (iso(T0 + timedelta(hours=8)),))
    le = _Lease("l-1", "vision", "ana", "p4d.24xlarge", "aws", [_Machine(f"l-1-m{i}", (0,)) for i in range(2)])
    clock.advance(540)                                            # B starts at 10 minutes
    close_kept(ledger, le, clock())
    b = [ledger.open_segment(lease=le, machine=m, price=RATE, run_id="r-2", at=clock()) for m in le.machines]
    clock.advance(600)
    ledger.close(b, clock())
    assert not [s for s in ledger.open_segments("l-1")]
    assert ledger.spent_micro(project="vision") == 2 * 1200 * PER_S   # 20 minutes on 2 machines, once


def test_fleet_down_closes_a_segment_whose_last_row_is_damaged(db, clock):
    """open_segments skipped the damaged row and rebuilt the segment with an old seq: every close
    collided with it (UNIQUE segment_id, seq), so `fleet down` lost the dead controller's time."""
    ledger, _ = _killed_after_a_minute(db, clock)
    db.execute("UPDATE ledger SET digest = 'tampered' WHERE kind = 'tick'")
    clock.advance(100)
    ledger.close_orphans("l-1", at=clock())
    assert not ledger.open_segments("l-1")
    kinds = [r["kind"] for r in db.execute("SELECT kind FROM ledger ORDER BY segment_id, seq")]
    assert kinds.count("close") == 2


def test_a_run_taking_over_a_kept_lease_frees_the_dead_runs_reservation(db, clock):
    """Run 2 bills the machines from its start; the dead run's reservation held money for hours more."""
    from fleet.money.kept import close_kept
    ledger, _ = _killed_after_a_minute(db, clock)
    db.execute("UPDATE leases SET deadline = ? WHERE id = 'l-1'", (iso(T0 + timedelta(hours=8)),))
    Reservations(db, clock).reserve(lease_id="l-1", run_id="r-1", project="vision", owner="ana",
                                    amount_micro=2 * 3600 * PER_S, minimum_micro=0, lifetime_s=8 * 3600, now=T0)
    le = _Lease("l-1", "vision", "ana", "p4d.24xlarge", "aws", [_Machine(f"l-1-m{i}", (0,)) for i in range(2)])
    clock.advance(540)
    close_kept(ledger, le, clock())
    assert Reservations(db, clock).held_micro(project="vision") == 0
    assert ledger.spent_micro(project="vision") == 2 * 600 * PER_S


def test_fleet_report_counts_a_dead_controllers_running_machines_as_fleet_budget_does(db, clock):
    """The report showed such a run at its last row (its machines still running, free) while `fleet
    budget` counted them; and once `fleet down` closes the segments, the time is counted once."""
    from fleet.report.build import build_report
    ledger, _ = _killed_after_a_minute(db, clock)

    def report_cost() -> int:
        return build_report(ledger, by="run", now=clock()).total.cost_micro
    clock.advance(STALE_S - 1)                    # silent, but not for long: its controller may be alive
    assert report_cost() == 2 * 60 * PER_S
    clock.advance(40)
    assert report_cost() == ledger.spent_micro(project="vision") == 2 * DEADLINE_S * PER_S   # to its deadline
    ledger.close_orphans("l-1", at=T0 + timedelta(seconds=DEADLINE_S))   # what `fleet down` does
    db.execute("UPDATE leases SET status = 'released' WHERE id = 'l-1'")
    assert report_cost() == 2 * DEADLINE_S * PER_S
