"""The HTML report opened in headless Chromium with no network: one small file whose inline SVG
charts are drawn (checked in the rendered DOM), screenshots kept under test-artifacts/; and
`fleet report --format html` as a user runs it: without plotly, without -o, in a project directory."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from fleet.money.budget import utc_clock
from fleet.money.ledger import Ledger
from fleet.report import build_report, render
from fleet.report.budgets import month_budgets
from fleet.state.db import Database
from fleet.state.store import StateStore
from tests.fixtures.ledger import seed

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=10000"]
SECTIONS = ("spend-over-time", "would-cost-over-time", "spend-by-project", "budgets", "gpu-utilisation",
            "idle-gpu-hours", "top-runs")

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180)


def screenshot(tmp_path, page: Path, name: str, height: int) -> bytes:
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)
    done = chromium(tmp_path, f"--screenshot={shot}", f"--window-size=1100,{height}", page.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    return shot.read_bytes()


@pytest.fixture
def report_html(tmp_path):
    db = Database(tmp_path / "state.db")
    start = utc_clock().replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    seed(db, 4000, start=start - timedelta(days=7))          # a week of last month and some of this one
    store = StateStore(db)
    for n in range(1, 60):
        store.create_run(f"r-{n:05d}", lease_id=f"l-{n:05d}", project="p", user="u", log_path="", output_dir="",
                         command=f"torchrun --nproc-per-node 8 train.py --config configs/exp{n}.yaml --seed {n}")
    ledger = Ledger(db)
    rep = build_report(ledger, by="project")
    rep.budgets = month_budgets(ledger, project_monthly=Decimal("2000"), user_monthly=Decimal("900"))
    page = render(rep, "html")
    db.close()
    path = tmp_path / "report.html"
    path.write_text(page)
    return path


@needs_chromium
def test_html_report_is_small_and_draws_every_chart_offline(tmp_path, report_html):
    assert report_html.stat().st_size < 150_000                 # was 4.8 MB with plotly.js inlined
    dom = chromium(tmp_path, "--dump-dom", report_html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in SECTIONS:
        part = dom.stdout.split(f'id="{name}"', 1)[1].split("</section>", 1)[0]
        assert "<svg" in part and 'class="no-data"' not in part, f"{name} drew nothing"
        assert 'class="bar"' in part or 'class="point"' in part, f"{name} has no marks"
    assert "<script" not in dom.stdout
    data = screenshot(tmp_path, report_html, "report-html.png", 4200)
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100_000    # charts and tables, not a blank page


@needs_chromium
def test_an_empty_report_says_no_data_in_chromium(tmp_path):
    db = Database(tmp_path / "state.db")
    page = tmp_path / "empty.html"
    page.write_text(render(build_report(Ledger(db)), "html"))
    db.close()
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    for name in SECTIONS:
        part = dom.stdout.split(f'id="{name}"', 1)[1].split("</section>", 1)[0]
        assert 'class="no-data"' in part and 'class="tick-x"' not in part, name
    assert screenshot(tmp_path, page, "report-html-empty.png", 1400)[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_html_needs_no_plotly_and_writes_under_runs_reports(tmp_path):
    """Run where a user runs it: a project directory with a fleet.toml and budgets, plotly
    unimportable. The report goes to runs/reports/ (which code pinning leaves out), never into the
    working tree, and its path is printed."""
    project = tmp_path / "proj"
    project.mkdir()
    (project / "fleet.toml").write_text('project = "vision"\ncommand = "true"\n'
                                        '[budgets]\nproject_monthly = 40\nuser_monthly = 15\n')
    blocker = tmp_path / "no-plotly"
    (blocker / "plotly").mkdir(parents=True)
    (blocker / "plotly" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'plotly'\")\n")
    home = tmp_path / "home"
    db = Database(home / "state.db")
    seed(db, 300, start=utc_clock().replace(day=1, hour=0, minute=0, second=0, microsecond=0), days=1)
    db.close()
    env = {**os.environ, "FLEET_HOME": str(home), "PYTHONPATH": os.pathsep.join([str(blocker), str(REPO)])}
    before = set(project.iterdir())
    out = subprocess.run([sys.executable, "-m", "fleet.cli.main", "report", "--format", "html"], cwd=project,
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    written = list((project / "runs" / "reports").glob("fleet-report-*.html"))
    assert len(written) == 1 and set(project.iterdir()) - before == {project / "runs"}
    assert str(written[0].relative_to(project)) in out.stderr
    page = written[0].read_text()
    assert page.startswith("<!DOCTYPE html>") and "budget $40.00" in page and "budget $15.00" in page
    target = tmp_path / "elsewhere" / "r.html"
    target.parent.mkdir()
    out = subprocess.run([sys.executable, "-m", "fleet.cli.main", "report", "--format", "html", "-o", str(target)],
                         cwd=project, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and target.is_file() and str(target) in out.stderr
    assert len(list((project / "runs" / "reports").iterdir())) == 1


def test_cli_html_from_a_subdirectory_writes_beside_the_experiments_fleet_toml(tmp_path):
    """Red-team finding: from src/ the report went to src/runs/reports/, which code pinning does not
    leave out (the next `fleet up` refused the dirty tree), and the budgets section was empty."""
    project = tmp_path / "proj"
    (project / "src").mkdir(parents=True)
    (project / ".git").mkdir()
    (project / "fleet.toml").write_text('project = "vision"\ncommand = "true"\n[budgets]\nproject_monthly = 40\n')
    home = tmp_path / "home"
    db = Database(home / "state.db")
    seed(db, 50, start=utc_clock().replace(day=1, hour=0, minute=0, second=0, microsecond=0), days=1)
    db.close()
    env = {**os.environ, "FLEET_HOME": str(home), "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-m", "fleet.cli.main", "report", "--format", "html"], cwd=project / "src",
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert list((project / "src").iterdir()) == []
    written, = (project / "runs" / "reports").glob("fleet-report-*.html")
    assert "budget $40.00" in written.read_text()
