"""The controller stopped and continued (SIGSTOP, Ctrl-Z then `fg`, a laptop asleep) for longer than
the machines' deadline: their watchdogs end them meanwhile, and the controller, on waking, must bill
only the time they lived, say in one line why the machines are gone, and leave nothing behind.

SIGSTOP stands for Ctrl-Z too: fleet leaves SIGTSTP's default (stop), and the kernel drops a SIGTSTP
sent to this test's controller, whose process group has no terminal (an orphaned group)."""
from __future__ import annotations

import json
import sqlite3
from datetime import datetime

import pytest

from .harness import ProviderWatch
from .scenarios import StopController, run_case

pytestmark = pytest.mark.timeout(120)
SAID = "fleet itself was not running for"


def _billed_until(home) -> float:
    conn = sqlite3.connect(f"file:{home / 'state.db'}?mode=ro", uri=True)
    try:
        ends = [r[0] for r in conn.execute("SELECT end_at FROM ledger")]
    finally:
        conn.close()
    return max(datetime.fromisoformat(e.replace("Z", "+00:00")).timestamp() for e in ends)


@pytest.mark.parametrize("phase", ["stage", "run"])
def test_stopped_past_the_deadline_bills_only_what_the_machines_lived_and_says_why(box, phase, monkeypatch):
    box.write_experiment(command="echo started; sleep 30; echo finished", setup=None, data=phase == "stage")
    last_deadline: list[float] = []
    stop = ProviderWatch.stop

    def stopped(watch):   # the last deadline any machine held: each ended itself there
        stop(watch)
        last_deadline.append(watch.last_deadline())
    monkeypatch.setattr(ProviderWatch, "stop", stopped)
    fault = StopController(phase=phase, delay_s=0.5 if phase == "run" else 0, for_s=3 * box.ttl_s)
    verdict = run_case(box, [fault])
    assert not verdict.leaked and verdict.state_left == [] and not verdict.tracebacks, verdict.explain()
    assert verdict.ledger_lost == 0, verdict.explain()
    assert verdict.exit_code == 10, verdict.explain()
    assert len(verdict.errors) <= 1 and all(SAID in e for e in verdict.errors), verdict.explain()
    [summary] = (box.exp / "runs").glob("*/summary.json")
    assert json.loads(summary.read_text())["message"].startswith(SAID), verdict.explain()
    # Billed up to the deadline the machines held, not up to the controller's waking 3 TTLs later.
    assert last_deadline[0] < fault.continued_at - box.ttl_s, verdict.explain()
    assert _billed_until(box.home) <= last_deadline[0] + 0.5, verdict.explain()
