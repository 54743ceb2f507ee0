"""SIGKILL of the controller *inside* the provider's lease call: machines made, lease() not returned.

The fault matrix found machines made in that window billed nowhere ("machines unbilled"). Here the
window is held open deterministically (tests/faults/hold_lease/sitecustomize.py keeps the local
provider inside lease() once machines of rank >= N exist), the controller is killed, and after the
machines' own deadlines and `fleet down --all` the ledger must hold a closed segment for every
machine that existed, billed for no longer than its first deadline plus the time spent leasing.
"""
from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from .harness import Controller, LedgerWatch, ProviderWatch, Verdict, judge_after, ledger_rows

pytestmark = pytest.mark.timeout(90)

HOLD = Path(__file__).parent / "hold_lease"


def _parse(text: str) -> datetime:
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _wait(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("reported", [1, 0], ids=["rank0-reported-rank1-not", "none-reported"])
def test_controller_killed_inside_provider_lease_bills_every_machine(box, reported):
    box.write_experiment()
    marks = box.root / "held"
    watch, ledger = ProviderWatch(box.home), LedgerWatch(box.home)
    ctl = Controller(box, ["--gpus", "2"], env={"PYTHONPATH": str(HOLD), "FLEET_FAULTS_HOLD_LEASE": str(reported),
                                                "FLEET_FAULTS_HOLD_MARKS": str(marks)})
    try:
        held = [f"-n{r}" for r in range(reported, 2)]
        _wait(lambda: marks.is_dir() and len(list(marks.iterdir())) == len(held), 30,
              f"machines {held} made and held inside lease()")
        # The reported machine is on the ledger before lease() returns (that is the fix).
        _wait(lambda: len({row[3] for row in ledger_rows(box.home).values()}) >= reported, 10,
              "the reported machine's ledger segment")
        assert not ctl.phase_seen["ready"].is_set(), "lease() returned: the fault was not inside it"
        killed_at = datetime.now(timezone.utc)
        ledger.snapshot()
        ctl.kill()
    finally:
        ctl.kill()
    verdict = judge_after(box, Verdict(["kill-controller inside provider.lease"]), watch, ledger,
                          ["\n".join(ctl.lines), ctl.stdout])
    assert not verdict.leaked, verdict.explain()
    assert verdict.state_left == [], verdict.explain()
    assert not verdict.tracebacks, verdict.explain()
    assert verdict.machines_seen == 2, verdict.explain()
    assert verdict.ledger["unbilled_machines"] == [], verdict.explain()
    assert verdict.ledger_lost == 0, verdict.explain()

    conn = sqlite3.connect(box.home / "state.db")
    try:
        lease_id, created_at, meta = conn.execute("SELECT id, created_at, meta FROM leases").fetchone()
        rows = conn.execute("SELECT machine_id, kind, duration_ms, cost_micro, rate_micro, price_source "
                            "FROM ledger ORDER BY id").fetchall()
    finally:
        conn.close()
    first_s = box.ttl_s                      # max_duration 5m, no budget: the first deadline is one TTL
    leasing_s = (killed_at - _parse(created_at)).total_seconds()
    per_machine: dict[str, dict] = {}
    for machine_id, kind, duration_ms, cost, rate, source in rows:
        m = per_machine.setdefault(machine_id, {"ms": 0, "cost": 0, "kinds": [], "rate": rate, "source": source})
        m["ms"] += duration_ms
        m["cost"] += cost
        m["kinds"].append(kind)
    assert sorted(per_machine) == sorted(watch.machines) == [f"{lease_id}-n0", f"{lease_id}-n1"], per_machine
    for machine_id, m in per_machine.items():
        assert m["kinds"][0] == "open" and m["kinds"][-1] == "close", (machine_id, m)
        assert m["rate"] > 0 and m["source"] != "unknown price", (machine_id, m)   # the run's (shadow) price
        seconds = m["ms"] / 1000
        # Billed while it could run: at least until its first deadline less the leasing time, never
        # longer than the first deadline plus the time spent inside lease() (the upper bound).
        assert first_s - leasing_s - 0.5 <= seconds <= first_s + leasing_s + 0.5, (machine_id, seconds, leasing_s)
        assert abs(m["cost"] - m["rate"] * seconds / 3600) <= 2, (machine_id, m)
