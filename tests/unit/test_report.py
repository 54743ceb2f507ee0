"""`fleet report`: grouping, periods, billed vs would-cost, idle GPU-hours, renderers, empty and
damaged data, and the CLI's one-line errors."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from fleet.money.budget import Price, cost_micro, to_micro
from fleet.money.ledger import Ledger, TickTelemetry
from fleet.report import build_report, parse_when, render
from fleet.report.build import build_report_rowwise
from fleet.state.db import Database
from tests.fixtures.ledger import FakeClock, _Lease, _Machine, seed

T0 = datetime(2025, 6, 2, 8, 0, tzinfo=timezone.utc)
AWS = Price(to_micro("3.60"), "aws on-demand table")
LOCAL = Price(to_micro("7.20"), "shadow: g5.12xlarge", shadow=True)


@pytest.fixture
def db(tmp_path):
    database = Database(tmp_path / "home" / "state.db")
    yield database
    database.close()


def run_segment(ledger, clock, *, lease_id, project, user, template, provider, price, gpus, hours, util=None,
                idle_fraction=0.0, run_id=None):
    le = _Lease(lease_id, project, user, template, provider, [_Machine(f"{lease_id}-m0", tuple(range(gpus)))])
    segs = [ledger.open_segment(lease=le, machine=le.machines[0], price=price, run_id=run_id or f"r-{lease_id}")]
    for _ in range(int(hours * 60)):
        clock.advance(60)
        tel = TickTelemetry(None if util is None else util * 10, round(idle_fraction * gpus * 60))
        ledger.append(segs, telemetry={le.machines[0].id: tel})
    ledger.close(segs)


@pytest.fixture
def known(db):
    """Three runs with figures worked out by hand."""
    clock = FakeClock(T0)
    ledger = Ledger(db, clock)
    run_segment(ledger, clock, lease_id="a", project="vision", user="ana", template="p3", provider="aws",
                price=AWS, gpus=4, hours=2, util=90)                               # $7.20, 8 GPU-h
    clock.now = T0 + timedelta(days=1)
    run_segment(ledger, clock, lease_id="b", project="vision", user="bo", template="local-4gpu",
                provider="local", price=LOCAL, gpus=4, hours=1, util=2, idle_fraction=1.0)   # would $7.20
    clock.now = T0 + timedelta(days=2)
    run_segment(ledger, clock, lease_id="c", project="nlp", user="bo", template="p3", provider="aws",
                price=AWS, gpus=2, hours=0.5, util=50, idle_fraction=0.5)         # $1.80, 1 GPU-h, 0.5 idle
    return ledger


def test_by_project_splits_billed_from_would_cost(known):
    rep = build_report(known, by="project")
    rows = {r.key: r for r in rep.rows}
    assert [r.key for r in rep.rows] == ["vision", "nlp"]                        # biggest first
    vision, nlp = rows["vision"], rows["nlp"]
    assert vision.cost_micro == to_micro("7.20") and vision.would_cost_micro == to_micro("7.20")
    assert vision.gpu_hours == pytest.approx(12) and vision.idle_gpu_hours == pytest.approx(4)
    assert vision.idle_cost_micro == pytest.approx(to_micro("7.20"))
    assert vision.mean_gpu_util == pytest.approx((90 * 8 + 2 * 4) / 12)
    assert nlp.cost_micro == to_micro("1.80") and nlp.idle_gpu_hours == pytest.approx(0.5)
    assert nlp.idle_cost_micro == pytest.approx(to_micro("0.90"))
    assert rep.total.cost_micro == to_micro("9.00") and rep.total.would_cost_micro == to_micro("7.20")
    assert len(rep.total.runs) == 3 and not rep.corrupt


@pytest.mark.parametrize("by, keys", [("user", {"ana", "bo"}), ("template", {"p3", "local-4gpu"}),
                                      ("run", {"r-a", "r-b", "r-c"}),
                                      ("day", {"2025-06-02", "2025-06-03", "2025-06-04"})])
def test_other_groupings(known, by, keys):
    rep = build_report(known, by=by)
    assert {r.key for r in rep.rows} == keys
    assert sum(r.total_micro for r in rep.rows) == rep.total.total_micro == to_micro("16.20")


def test_since_until_and_an_empty_period(known):
    rep = build_report(known, since=T0 + timedelta(days=1), until=T0 + timedelta(days=2))
    assert [r.key for r in rep.rows] == ["vision"] and rep.total.cost_micro == 0
    empty = build_report(known, since=datetime(2030, 1, 1, tzinfo=timezone.utc))
    assert empty.empty and empty.rows == [] and empty.total.total_micro == 0
    for fmt in ("table", "csv", "json", "md", "html"):
        assert render(empty, fmt)                                   # an empty report, not an error
    assert "no ledger entries" in render(empty, "md")


def test_renderers_agree(known):
    rep = build_report(known, by="project")
    data = json.loads(render(rep, "json"))
    assert [r["project"] for r in data["rows"]] == ["vision", "nlp"]
    assert Decimal(data["total"]["cost_usd"]) == Decimal("9.00")
    assert Decimal(data["total"]["would_cost_usd"]) == Decimal("7.20")
    rows = list(csv.DictReader(io.StringIO(render(rep, "csv"))))
    assert [r["project"] for r in rows] == ["vision", "nlp", "total"]
    assert Decimal(rows[0]["idle_gpu_hours"]) == Decimal("4.0")
    md = render(rep, "md")
    assert "| vision | $7.20 | $7.20 |" in md and "would cost" in md
    table = render(rep, "table")
    assert "vision" in table and "$9.00" in table and "would have cost" in table


def test_html_is_one_self_contained_file(known):
    page = render(build_report(known), "html")
    assert page.startswith("<!DOCTYPE html>") and page.count("<html") == 1
    assert 'src="http' not in page
    assert "<script" not in page and "<link" not in page        # inline SVG charts: nothing to load or run
    assert len(page) < 100_000
    for section in ("spend-over-time", "would-cost-over-time", "spend-by-project", "budgets", "gpu-utilisation",
                    "idle-gpu-hours", "top-runs"):
        assert f'id="{section}"' in page
        assert "<svg" in page.split(f'id="{section}"', 1)[1].split("</section>", 1)[0]
    assert "<script>alert" not in render(build_report(known, by="user"), "html")


def test_keys_are_escaped_in_html_and_markdown(db):
    clock = FakeClock(T0)
    ledger = Ledger(db, clock)
    run_segment(ledger, clock, lease_id="x", project="<script>alert(1)</script>|pipe", user="u", template="t",
                provider="aws", price=AWS, gpus=1, hours=0.1)
    rep = build_report(ledger)
    assert "<script>alert(1)</script>" not in render(rep, "html")
    assert "\\|pipe" in render(rep, "md")


def test_damaged_rows_are_noted_and_left_out(known, db):
    first_tick = db.execute("SELECT id FROM ledger WHERE kind = 'tick' ORDER BY id LIMIT 1")[0]["id"]
    db.execute("UPDATE ledger SET cost_micro = cost_micro * 100 WHERE id = ?", (first_tick,))
    rep = build_report(known)
    assert len(rep.corrupt) == 1
    assert rep.total.cost_micro == to_micro("9.00") - cost_micro(AWS.per_hour_micro, 60)
    assert "1 damaged ledger row(s)" in render(rep, "md")
    assert json.loads(render(rep, "json"))["corrupt_rows"][0].startswith(f"ledger row {first_tick}")


def test_parse_when():
    now = datetime(2025, 6, 10, tzinfo=timezone.utc)
    assert parse_when("7d", now=now) == now - timedelta(days=7)
    assert parse_when("12h", now=now) == now - timedelta(hours=12)
    assert parse_when("2025-06-01") == datetime(2025, 6, 1, tzinfo=timezone.utc)
    assert parse_when("2025-06-01T05:00:00+02:00") == datetime(2025, 6, 1, 3, tzinfo=timezone.utc)
    assert parse_when(None) is None


@pytest.mark.parametrize("text", ["99999999999999d", "999999999h", "9999999999999m", "800000d",
                                  "0001-01-01T00:00+01:00", "9999-12-31T23:59:59-14:00"])
def test_a_time_datetime_cannot_hold_in_utc_is_a_usage_error(text, tmp_path, fleet_home):
    """`fleet report --since 99999999999999d` (before year 1), `0001-01-01T00:00+01:00` (before year 1
    in UTC) and `9999-12-31T23:59:59-14:00` (after 9999 in UTC) were `internal error: OverflowError`."""
    from fleet.errors import UsageError
    from tests.conftest import run_fleet
    with pytest.raises(UsageError, match="outside 0001-01-02…9999-12-30 UTC"):
        parse_when(text)
    for flag in ("--since", "--until"):
        proc = run_fleet(["report", flag, text, "--json"], cwd=tmp_path)
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.strip().splitlines() == [f"fleet: error: cannot read time {text!r}: outside "
                                                    "0001-01-02…9999-12-30 UTC (use a date like 2025-06-01, an ISO "
                                                    "time, or 7d)"]


@pytest.mark.parametrize("by", ["project", "run", "day"])
def test_sql_aggregation_matches_summing_row_by_row(db, by, monkeypatch):
    written = seed(db, 3000)
    db.execute("UPDATE ledger SET cost_micro = cost_micro + 1 WHERE id = 77")
    rep = build_report(Ledger(db), by=by)
    slow = build_report_rowwise(Ledger(db), by=by)
    assert rep.entries == slow.entries == written - 1 and len(rep.corrupt) == len(slow.corrupt) == 1
    assert sum(r.total_micro for r in rep.rows) == rep.total.total_micro
    for fast_row, slow_row in zip([*rep.rows, rep.total], [*slow.rows, slow.total], strict=True):
        assert (fast_row.key, fast_row.cost_micro, fast_row.would_cost_micro, fast_row.runs) == \
            (slow_row.key, slow_row.cost_micro, slow_row.would_cost_micro, slow_row.runs)
        assert fast_row.gpu_s == pytest.approx(slow_row.gpu_s)
        assert fast_row.idle_gpu_s == pytest.approx(slow_row.idle_gpu_s)
        assert fast_row.idle_cost_micro == pytest.approx(slow_row.idle_cost_micro)
        assert fast_row.mean_gpu_util == pytest.approx(slow_row.mean_gpu_util)
    monkeypatch.setattr("fleet.report.build.MAX_EXCLUDED", 0)       # many damaged rows: row by row
    assert build_report(Ledger(db), by=by).total.cost_micro == slow.total.cost_micro


def cli(*args, home):
    env = {**os.environ, "FLEET_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "fleet.cli.main", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def test_cli_report_formats_and_errors(known, tmp_path):
    home = tmp_path / "home"
    out = cli("report", "--json", "--by", "user", home=home)
    assert out.returncode == 0, out.stderr
    assert {r["user"] for r in json.loads(out.stdout)["rows"]} == {"ana", "bo"}
    html_path = tmp_path / "r.html"
    out = cli("report", "--format", "html", "-o", str(html_path), home=home)
    assert out.returncode == 0 and html_path.read_text().startswith("<!DOCTYPE html>")
    for bad in (["--by", "month"], ["--format", "pdf"], ["--since", "last tuesday"],
                ["--since", "2025-06-05", "--until", "2025-06-01"]):
        out = cli("report", *bad, home=home)
        assert out.returncode == 2 and out.stderr.startswith("fleet: error: ")
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


def test_cli_verify_finds_rows_damaged_after_sealing(known, db, tmp_path):
    home = tmp_path / "home"
    assert cli("report", "--json", home=home).returncode == 0            # seals every row
    ok = cli("report", "--verify", home=home)
    assert ok.returncode == 0 and "every ledger row matches its digest" in ok.stdout
    first_tick = db.execute("SELECT id FROM ledger WHERE kind = 'tick' ORDER BY id LIMIT 1")[0]["id"]
    db.execute("UPDATE ledger SET cost_micro = 0 WHERE id = ?", (first_tick,))
    again = json.loads(cli("report", "--json", home=home).stdout)
    assert Decimal(again["total"]["cost_usd"]) == Decimal("9.00")          # sealed sums are unaffected
    bad = cli("report", "--verify", "--json", home=home)
    assert bad.returncode == 5 and json.loads(bad.stdout)["damaged"][0]["id"] == first_tick
    assert bad.stderr.startswith("fleet: error: 1 damaged ledger row(s)")
