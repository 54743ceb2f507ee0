"""Budgets enforced on real local sshd machines, through `fleet up` as a user types it.

Prices are set in fleet.toml so a budget is crossed in seconds: local-1gpu at $36/h = $0.01/s per
machine. "One tick" is the controller's 1 s budget tick.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timezone
from decimal import Decimal

from fleet.run.budget import STOP_MARGIN_S
from fleet.money.ledger import Ledger, parse_iso
from fleet.state import open_state
from tests.conftest import FLEET, processes_under, run_fleet, wait_until

TICK_S = 1.0
GRACE_S = 2.0
PER_MACHINE_S = Decimal("0.01")        # $36/h
# Uses its whole grace period: outputs written at SIGTERM, then it keeps going until killed.
STUBBORN = ("trap 'mkdir -p $FLEET_OUTPUT_DIR; echo stopped > $FLEET_OUTPUT_DIR/term.txt; T=1' TERM; "
            "echo started; mkdir -p $FLEET_OUTPUT_DIR; echo partial > $FLEET_OUTPUT_DIR/partial.txt; "
            "while true; do sleep 0.1; done")


def write_config(d, budget: str, command: str = STUBBORN) -> None:
    (d / "fleet.toml").write_text(
        f'project = "budgeted"\ntemplate = "local-1gpu"\nmax_duration = "10m"\nbudget = {budget}\n'
        f'command = {json.dumps(command)}\n\n[budgets]\ngrace = "{int(GRACE_S)}s"\n\n'
        f'[prices]\n"local-1gpu" = 36\n')


def ledger_rows(lease_id: str):
    state = open_state()
    try:
        read = Ledger(state.db).read(lease_id=lease_id)
        assert not read.corrupt
        return read.entries
    finally:
        state.close()


def test_crossing_the_budget_stops_fetches_outputs_releases_and_exits_11(experiment, fleet_home):
    write_config(experiment, "0.40")                     # 20 s: the stop begins 15 s in, after a slow start
    proc = run_fleet(["up", "--gpus", "2", "--json"], cwd=experiment, timeout=120)
    assert proc.returncode == 11, proc.stderr
    summary = json.loads(proc.stdout)
    assert "[0] started" in proc.stderr, f"budget ran out before the run phase: {proc.stderr[-1500:]}"
    assert summary["status"] == "budget-stopped" and summary["released"]
    assert "budget for run reached" in summary["message"] and "budget for run reached" in proc.stderr
    run_dir = experiment / "runs" / summary["run_id"]
    for node in (0, 1):                                  # outputs written at SIGTERM came home
        assert (run_dir / f"node-{node}" / "term.txt").read_text().strip() == "stopped"
    assert processes_under(fleet_home) == []             # every machine (sshd, watchdog) is gone
    telemetry = (run_dir / "telemetry" / "node-0.jsonl").read_text().splitlines()   # streamed home
    header = json.loads(telemetry[0])
    assert header["event"] == "start"
    if header["source"] == "proc":                                                   # no GPU here: says why
        assert "NVML" in header["why"]
    assert any("mem_total_mb" in json.loads(x) for x in telemetry[1:])               # and CPU/memory figures
    assert json.loads(run_fleet(["status", "--json"], cwd=experiment).stdout)["leases"] == []

    rows = ledger_rows(summary["lease_id"])
    total = sum(r.cost_micro for r in rows) / Decimal(1_000_000)
    burn = 2 * PER_MACHINE_S                             # dollars per second, both machines
    budget = Decimal("0.40")
    # never over by more than one tick; under by at most the reserve kept for grace + margin + a tick
    assert total <= budget + burn * Decimal(TICK_S)
    assert total >= budget - burn * Decimal(GRACE_S + STOP_MARGIN_S + TICK_S)
    assert Decimal(summary["would_cost_usd"]) == total
    # stopped within one tick plus grace of the crossing (plus collecting and releasing)
    opened = min(parse_iso(r.start_at) for r in rows)
    closed = max(parse_iso(r.end_at) for r in rows if r.kind == "close")
    crossing_s = float((budget - burn * Decimal(GRACE_S + STOP_MARGIN_S)) / burn)
    assert (closed - opened).total_seconds() - crossing_s <= TICK_S + GRACE_S + STOP_MARGIN_S
    assert [r.kind for r in rows if r.kind != "tick"] == ["open", "open", "close", "close"]


def test_budget_that_cannot_pay_is_refused_before_leasing(experiment, fleet_home):
    write_config(experiment, "0.0001")                   # < 1 s of two machines at $0.01/s each
    proc = run_fleet(["up", "--gpus", "2"], cwd=experiment)
    assert proc.returncode == 6, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fleet: error:")]
    assert len(errors) == 1 and "budget for run has $0.0001 left" in errors[0] and "minimum billing" in errors[0]
    assert not (fleet_home / "machines").exists() or not any((fleet_home / "machines").iterdir())


def test_killed_controller_machines_end_by_the_budget_deadline(experiment, fleet_home, tmp_path):
    """SIGKILL the controller mid-run: with a 10-minute heartbeat TTL the machines would live on,
    but their own deadline was capped at budget exhaustion, so they end by then."""
    write_config(experiment, "0.50")                     # 25 s of two machines: room for a slow start
    out = open(tmp_path / "up.out", "w")
    env = {**os.environ, "FLEET_HEARTBEAT_TTL": "600s"}
    controller = subprocess.Popen([FLEET, "up", "--gpus", "2"], cwd=experiment, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        assert wait_until(lambda: "started" in (tmp_path / "up.out").read_text(), 60), \
            (tmp_path / "up.out").read_text()
        os.kill(controller.pid, signal.SIGKILL)
        killed_at = datetime.now(timezone.utc)
        controller.wait(10)
    finally:
        if controller.poll() is None:
            controller.kill()
            controller.wait(10)
        out.close()
    state = open_state()
    try:
        lease = state.list_leases(active_only=True)[0]
    finally:
        state.close()
    left_s = (lease.deadline - killed_at).total_seconds()
    assert left_s < 60, f"deadline {left_s:.0f}s away: not capped by the budget"
    assert processes_under(fleet_home), "machines should still be up right after the kill"
    gone = wait_until(lambda: not processes_under(fleet_home), timeout=left_s + 15, interval=0.5)
    gone_at = datetime.now(timezone.utc)
    assert gone, f"machines still up {left_s + 15:.0f}s after the kill: {processes_under(fleet_home)}"
    assert (gone_at - lease.deadline).total_seconds() <= 20      # watchdog poll + teardown on a busy machine
    # `fleet down` closes the orphaned ledger segments at the machines' deadline
    proc = run_fleet(["down", "--all"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    rows = ledger_rows(lease.id)
    closes = [r for r in rows if r.kind == "close"]
    assert len(closes) == 2
    total = sum(r.cost_micro for r in rows) / Decimal(1_000_000)
    assert total <= Decimal("0.50") + 2 * PER_MACHINE_S * Decimal(TICK_S)
    assert all(parse_iso(r.end_at) <= lease.deadline for r in closes)


def test_monthly_budget_is_reserved_while_a_run_lives_and_settled_when_it_ends(experiment, fleet_home):
    """`fleet up` under a project budget: while another live run's reservation holds the month's
    money the lease is refused (exit 6, one line naming scope, limit, spent, reserved); a run that
    gets in reserves, and its reservation is settled with its cost when it ends."""
    (experiment / "fleet.toml").write_text(
        'project = "shared"\ntemplate = "local-1gpu"\nmax_duration = "10m"\ncommand = "echo ok"\n\n'
        '[budgets]\nproject_monthly = 5\n\n[prices]\n"local-1gpu" = 36\n')
    from fleet.money.reservations import Reservations
    state = open_state()
    try:   # someone else's lease, still being made, that reserved $4.99 of the $5
        state.db.execute("INSERT INTO leases (id, provider, template, project, owner, status, created_at,"
                         " deadline, max_deadline, heartbeat_ttl_s) VALUES (?,?,?,?,?,?,?,?,?,?)",
                         ("l-other", "local", "local-1gpu", "shared", "colleague", "leasing",
                          datetime.now(timezone.utc).isoformat(), datetime.now(timezone.utc).isoformat(),
                          "2999-01-01T00:00:00+00:00", 60))
        Reservations(state.db).reserve(lease_id="l-other", run_id=None, project="shared", owner="colleague",
                                       amount_micro=4_990_000, minimum_micro=10_000, lifetime_s=600)
    finally:
        state.close()
    proc = run_fleet(["up", "--gpus", "2"], cwd=experiment)          # minimum: 1 s of 2 × $36/h = $0.02
    assert proc.returncode == 6, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("fleet: error:")]
    assert len(errors) == 1, proc.stderr
    assert "project 'shared'" in errors[0] and "has $0.01 left" in errors[0]
    assert "($5.00 limit, $0.00 spent, $4.99 reserved by other live runs)" in errors[0]
    state = open_state()
    try:   # the other lease is released (`fleet down` on its laptop): its money comes back
        state.set_lease_status("l-other", "released")
    finally:
        state.close()
    proc = run_fleet(["up", "--gpus", "2", "--json"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    state = open_state()
    try:
        rows = state.db.execute("SELECT amount_micro, released_at, spent_micro FROM budget_reservations"
                                " WHERE lease_id = ?", (summary["lease_id"],))
        assert Reservations(state.db).held_micro(project="shared") == 0
    finally:
        state.close()
    # 10 min of two machines at $36/h is $12: capped by the $5 left; settled with the run's real cost.
    assert len(rows) == 1 and rows[0]["amount_micro"] == 5_000_000 and rows[0]["released_at"]
    assert rows[0]["spent_micro"] == int(Decimal(summary["would_cost_usd"]) * 1_000_000) > 0


def test_a_budget_that_runs_out_while_the_controller_is_stopped_is_never_overspent(experiment, fleet_home, tmp_path):
    """Ctrl-Z (SIGSTOP here) while the machines run, for longer than the budget lasts, with a 10-minute
    heartbeat TTL: the machines' own deadline, capped by the budget, ends them; on waking the controller
    billed every second it slept ($0.73 of a $0.50 budget before the fix), now up to that deadline."""
    write_config(experiment, "0.25")                     # one machine, 25 s
    out = open(tmp_path / "up.out", "w")
    controller = subprocess.Popen([FLEET, "up", "--gpus", "1", "--json"], cwd=experiment, stdout=subprocess.PIPE,
                                  stderr=out, env={**os.environ, "FLEET_HEARTBEAT_TTL": "600s"},
                                  start_new_session=True, text=True)
    try:
        assert wait_until(lambda: "started" in (tmp_path / "up.out").read_text(), 60), \
            (tmp_path / "up.out").read_text()
        os.killpg(controller.pid, signal.SIGSTOP)
        assert wait_until(lambda: not processes_under(fleet_home), timeout=45, interval=0.5), \
            "the machine outlived its budget-capped deadline"
        time.sleep(4)                                    # asleep on: 4 s ($0.04) of nobody's machine time
        os.killpg(controller.pid, signal.SIGCONT)
        stdout, _ = controller.communicate(timeout=60)
    finally:
        if controller.poll() is None:
            os.killpg(controller.pid, signal.SIGKILL)
            controller.wait(10)
        out.close()
    summary = json.loads(stdout)
    assert (controller.returncode, summary["status"]) == (11, "budget-stopped"), (tmp_path / "up.out").read_text()
    total = sum(r.cost_micro for r in ledger_rows(summary["lease_id"])) / Decimal(1_000_000)
    assert total <= Decimal("0.25") + PER_MACHINE_S * Decimal(TICK_S), total
    assert Decimal(summary["would_cost_usd"]) == total
    assert processes_under(fleet_home) == []
