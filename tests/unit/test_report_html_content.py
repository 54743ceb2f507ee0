"""What the HTML report says, read from its markup: "no data" instead of empty axes, days as
"Dec 2", runs named by project, user and (masked) command, billed and would cost never stacked,
spend against the month's budgets with a forecast, and who pays for idle GPUs."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fleet.money.budget import Price, to_micro
from fleet.money.ledger import Ledger, TickTelemetry
from fleet.masking import Masker
from fleet.report import build_report, render
from fleet.report.budgets import month_budgets
from fleet.state.db import Database
from fleet.state.store import StateStore
from tests.fixtures.ledger import FakeClock, _Lease, _Machine

T0 = datetime(2026, 12, 2, 8, 0, tzinfo=timezone.utc)
AWS = Price(to_micro("3.60"), "aws on-demand table")
LOCAL = Price(to_micro("7.20"), "shadow: g5.12xlarge", shadow=True)


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "state.db")
    yield database
    database.close()


def run(ledger, clock, *, lease_id, project, user, price, gpus, hours, util=None, idle_fraction=None):
    le = _Lease(lease_id, project, user, "t", "aws" if not price.shadow else "local",
                [_Machine(f"{lease_id}-m0", tuple(range(gpus)))])
    segs = [ledger.open_segment(lease=le, machine=le.machines[0], price=price, run_id=f"r-{lease_id}")]
    for _ in range(int(hours * 60)):
        clock.advance(60)
        tel = None if util is None else {le.machines[0].id: TickTelemetry(
            util * 10, None if idle_fraction is None else round(idle_fraction * gpus * 60))}
        ledger.append(segs, telemetry=tel)
    ledger.close(segs)


def section(page: str, name: str) -> str:
    return page.split(f'id="{name}"', 1)[1].split("</section>", 1)[0]


@pytest.fixture
def mixed(db):
    """Billed AWS (busy, and half idle), simulated local (idle), on Dec 2 and Dec 3 2026."""
    clock = FakeClock(T0)
    ledger = Ledger(db, clock)
    run(ledger, clock, lease_id="a", project="vision", user="ana", price=AWS, gpus=4, hours=2, util=90,
        idle_fraction=0.0)                                                      # billed $7.20
    clock.now = T0 + timedelta(days=1)
    run(ledger, clock, lease_id="b", project="vision", user="bo", price=LOCAL, gpus=4, hours=1, util=1,
        idle_fraction=1.0)                                                      # would cost $7.20, all idle
    run(ledger, clock, lease_id="c", project="nlp", user="chen", price=AWS, gpus=2, hours=0.5, util=40,
        idle_fraction=0.5)                                                      # billed $1.80, half idle
    store = StateStore(db)
    store.create_run("r-a", lease_id="a", project="vision", user="ana", log_path="", output_dir="",
                     command="python train.py --wandb-key s3cr3t-t0ken --epochs 3",
                     masker=Masker(["s3cr3t-t0ken"]))
    return ledger


def test_charts_without_telemetry_say_no_data_instead_of_empty_axes(db):
    clock = FakeClock(T0)
    ledger = Ledger(db, clock)
    run(ledger, clock, lease_id="a", project="vision", user="ana", price=AWS, gpus=1, hours=1)   # no telemetry
    page = render(build_report(ledger), "html")
    for name in ("gpu-utilisation", "idle-gpu-hours", "would-cost-over-time"):
        part = section(page, name)
        assert 'class="no-data"' in part and "no data" in part, name
        assert "tick-x" not in part and "<circle" not in part and 'class="bar"' not in part, name
    assert 'class="no-data"' not in section(page, "spend-over-time")        # there is billed spend to draw


def test_days_read_like_dec_2(mixed):
    page = render(build_report(mixed), "html")
    ticks = re.findall(r'class="tick-x"[^>]*>([^<]+)<', section(page, "spend-over-time"))
    assert ticks == ["Dec 2", "Dec 3"]
    assert "00:00:00" not in page and "2026-12-02T" not in page


def test_runs_are_named_by_project_user_and_masked_command(mixed):
    page = render(build_report(mixed), "html")
    runs = section(page, "top-runs")
    row = next(r for r in runs.split("<tr>") if "r-a</code>" in r)
    assert "<td>vision</td>" in row and "<td>ana</td>" in row
    assert "python train.py --wandb-key" in row and "--epochs 3" in row
    assert "s3cr3t-t0ken" not in page                                      # stored masked, shown masked
    assert "r-a (ana, vision)" in runs                                     # the chart's label too
    assert "(not recorded here)" in next(r for r in runs.split("<tr>") if "r-c</code>" in r)


def bars(svg: str) -> list[tuple[float, float, str]]:
    return [(float(x), float(w), tip) for x, w, tip in
            re.findall(r'<rect class="bar" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"[^>]*><title>([^<]*)</title>', svg)]


def test_billed_and_would_cost_are_separate_never_stacked(mixed):
    page = render(build_report(mixed), "html")
    billed_days = section(page, "spend-over-time")
    assert "$7.20" in billed_days and "would" not in billed_days.split("</h2>", 1)[1].lower()
    would_days = section(page, "would-cost-over-time")
    assert [tip for _, _, tip in bars(would_days)] == ["Dec 3, vision: $7.20"]
    vision = [b for b in bars(section(page, "spend-by-project")) if b[2].startswith("vision,")]
    assert {tip for _, _, tip in vision} == {"vision, billed: $7.20", "vision, would cost (simulated): $7.20"}
    assert vision[0][0] == vision[1][0]            # both bars start at zero: side by side, not stacked
    assert 'stroke-dasharray="4 2"' in section(page, "spend-by-project")   # would cost drawn apart


def test_spend_against_budget_per_project_and_user_with_a_forecast(mixed):
    now = datetime(2026, 12, 11, 0, 0, tzinfo=timezone.utc)        # 10 of December's 31 days gone
    b = month_budgets(mixed, project_monthly=Decimal("20"), user_monthly=Decimal("5"), now=now)
    lines = {(x.scope, x.name): x for x in b.lines}
    vision = lines[("project", "vision")]
    assert (vision.limit_micro, vision.billed_micro, vision.would_micro) == (to_micro(20), to_micro("7.20"),
                                                                             to_micro("7.20"))
    assert vision.forecast_micro == to_micro("14.40") * 31 // 10 and vision.forecast_over      # $44.64 > $20
    assert lines[("user", "chen")].forecast_micro == to_micro("1.80") * 31 // 10              # $5.58 > $5
    assert set(lines) == {("project", "vision"), ("project", "nlp"), ("user", "ana"), ("user", "bo"),
                          ("user", "chen")}
    assert month_budgets(mixed, now=datetime(2027, 1, 5, tzinfo=timezone.utc)).lines == []   # a new month
    rep = build_report(mixed)
    rep.budgets = b
    part = section(render(rep, "html"), "budgets")
    row = next(r for r in part.split("<tr") if "<td>vision</td>" in r)
    assert "$20.00" in row and "$44.64" in row and "forecast over budget" in row
    assert "budget $20.00" in part and "forecast $44.64" in part             # the chart's marks
    assert "user" in part and "<td>chen</td>" in part


def test_idle_cost_ranking_says_who_pays_for_idle_gpus(mixed):
    rep = build_report(mixed)
    assert [p.key for p in rep.idle_payers] == ["bo · vision", "chen · nlp"]
    bo, chen = rep.idle_payers
    assert bo.idle_would_cost_micro == pytest.approx(to_micro("7.20")) and bo.idle_billed_micro == pytest.approx(0)
    assert chen.idle_billed_micro == pytest.approx(to_micro("0.90")) and chen.idle_gpu_hours == pytest.approx(0.5)
    part = section(render(rep, "html"), "idle-gpu-hours")
    order = re.findall(r"<td class=n>\d+</td><td>([^<]+)</td>", part)
    assert order == ["bo · vision", "chen · nlp"]
    assert "$0.90" in part and "$7.20" in part
