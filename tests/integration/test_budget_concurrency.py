"""Concurrent budget checks against one project's monthly budget, on SQLite and on a real PostgreSQL.

Eight `fleet up`s start at the same moment (threads released by a barrier, each with its own state
connection, as separate laptops would have) through the real budget gate (BudgetGate.grant). Each lease
needs a $6 minimum billing (1 machine at $360/h, 60 s) and reserves its $6 run budget; the project
has $23 this month, so exactly 3 may lease. Without the locked reservation all 8 passed the check.
Then: a finished run's reservation is settled (RunBudget.finish), a released lease's and a dead
controller's (active lease past its deadline) stop counting, and each frees room for one more.
"""
from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest

from fleet.config.model import BudgetsConfig, Config
from fleet.errors import BudgetRefused, ExitCode
from fleet.ids import new_lease_id, new_run_id
from fleet.models import Template, utcnow
from fleet.run.budget import BudgetGate, RunBudget
from fleet.run.context import RunContext, SilentEvents
from fleet.run.types import Offer
from fleet.state import open_state

REQUESTS, FITS = 8, 3
BOX = Template("gpu-box", "aws", 1, price_per_hour=Decimal(360), price_source="price table")


@pytest.fixture(params=["sqlite", "postgresql"])
def state_url(request, tmp_path):
    if request.param == "postgresql":
        return request.getfixturevalue("postgres_url")
    return f"sqlite:///{tmp_path / 'state.db'}"


def make_config(tmp_path, state_url) -> Config:
    return Config(path=None, base_dir=tmp_path, project="team", name="team", command="true", provider="aws",
                  template=BOX.name, budget=Decimal(6), budgets=BudgetsConfig(project_monthly=Decimal(23)),
                  state_url=state_url)


def attempt(config, state, tmp_path, user="ana"):
    """What `fleet up` does up to recording the lease: the budget gate, then begin_lease."""
    offer = Offer(provider="aws", template=BOX, gpus=1, machine_count=1, max_duration_s=3600, heartbeat_ttl_s=60,
                  project="team", user=user)
    run_id, lease_id = new_run_id(), new_lease_id()
    grant = BudgetGate(config, state).grant(offer, run_id=run_id, lease_id=lease_id)
    ctx = RunContext(config=config, offer=offer, plan=offer.to_plan(run_id=run_id), run_id=run_id,
                     lease_id=lease_id, state=state, events=SilentEvents(), run_dir=tmp_path / run_id,
                     started_at=utcnow())
    state.begin_lease(ctx.lease_id, ctx.plan)
    return RunBudget(grant, state, lease_id=lease_id, run_dir=ctx.run_dir), ctx


def live_reserved(state) -> int:
    from fleet.money.reservations import Reservations
    return Reservations(state.db).held_micro(project="team")


def test_concurrent_checks_admit_exactly_what_the_project_budget_pays(state_url, tmp_path):
    config = make_config(tmp_path, state_url)
    barrier = threading.Barrier(REQUESTS)
    admitted, refused, crashed = [], [], []
    guard = threading.Lock()

    def one(i: int) -> None:
        state = None
        try:
            state = open_state(state_url)        # its own connection, as another laptop would have
            barrier.wait(timeout=60)
            try:
                hook, ctx = attempt(config, state, tmp_path, user=f"user{i % 3}")
            except BudgetRefused as exc:
                with guard:
                    refused.append(exc)
                return
            with guard:
                admitted.append(ctx.lease_id)
        except BaseException as exc:  # noqa: BLE001 — reported by the assertion below
            barrier.abort()   # the others must not wait out the timeout for a thread that will never come
            with guard:
                crashed.append(exc)
        finally:
            if state is not None:
                state.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    # the cause first: the others only saw the barrier broken because of it
    assert not crashed, sorted(crashed, key=lambda e: isinstance(e, threading.BrokenBarrierError))[:3]
    assert len(admitted) == FITS and len(refused) == REQUESTS - FITS
    for exc in refused:
        line = str(exc)
        assert exc.exit_code == ExitCode.BUDGET_REFUSED == 6 and "\n" not in line
        assert "project 'team'" in line and "$23.00 limit" in line and "$0.00 spent" in line
        assert "$18.00 reserved by other live runs" in line and "$5.00 left" in line
    state = open_state(state_url)
    try:
        assert live_reserved(state) == 18_000_000
        rows = state.db.execute("SELECT lease_id, amount_micro FROM budget_reservations")
        assert sorted(r["lease_id"] for r in rows) == sorted(admitted)   # refusals reserved nothing
    finally:
        state.close()


def test_reservations_are_freed_by_the_run_ending_a_release_or_a_dead_controller(state_url, tmp_path):
    config = make_config(tmp_path, state_url)
    state = open_state(state_url)
    try:
        runs = [attempt(config, state, tmp_path) for _ in range(FITS)]
        with pytest.raises(BudgetRefused, match=r"\$18.00 reserved"):
            attempt(config, state, tmp_path)

        # 1. The run ended (here: leasing failed, so no machine and no meter): finish settles it.
        budget, ctx = runs[0]
        assert budget.finish(ctx) is None
        assert live_reserved(state) == 12_000_000
        attempt(config, state, tmp_path)                          # the freed $6 admits one more
        with pytest.raises(BudgetRefused):
            attempt(config, state, tmp_path)

        # 2. Released by someone else (`fleet down`, the reaper) while its controller is gone.
        state.set_lease_status(runs[1][1].lease_id, "released")
        attempt(config, state, tmp_path)
        with pytest.raises(BudgetRefused):
            attempt(config, state, tmp_path)

        # 3. A killed controller: its lease still says active, but its deadline (no heartbeat pushed
        #    it further) is long past, so its machines ended and the money is free again.
        dead = runs[2][1].lease_id
        state.db.execute("UPDATE leases SET status = 'active' WHERE id = ?", (dead,))
        state.set_lease_deadline(dead, utcnow() - timedelta(minutes=5))
        attempt(config, state, tmp_path)
        with pytest.raises(BudgetRefused):
            attempt(config, state, tmp_path)
        assert live_reserved(state) == 18_000_000
    finally:
        state.close()
