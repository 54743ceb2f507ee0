"""The HTML report opened in headless Chromium with no network: the inlined plotly draws every
chart (checked in the rendered DOM), and a screenshot is kept under test-artifacts/."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from fleet.ledger import Ledger
from fleet.report import build_report, render
from fleet.state.db import Database
from tests.fixtures.ledger import seed

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--virtual-time-budget=10000"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")


def chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    profile = tmp_path / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.fixture
def report_html(tmp_path):
    db = Database(tmp_path / "state.db")
    seed(db, 4000)
    page = render(build_report(Ledger(db), by="project"), "html")
    db.close()
    path = tmp_path / "report.html"
    path.write_text(page)
    return path


def test_html_report_renders_offline_in_chromium(tmp_path, report_html):
    dom = chromium(tmp_path, "--dump-dom", report_html.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    # every chart was drawn by plotly (it adds its own SVG roots); nothing was fetched
    for section in ("spend-over-time", "spend-by-project", "gpu-utilisation", "idle-gpu-hours", "top-runs"):
        part = dom.stdout.split(f'id="{section}"', 1)[1]
        assert 'class="main-svg"' in part.split("</section>", 1)[0], f"{section} was not drawn"
    assert len(re.findall(r'class="(?:point|bars)', dom.stdout)) >= 5
    artifacts = REPO / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shot = artifacts / "report-html.png"
    shot.unlink(missing_ok=True)
    done = chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", report_html.as_uri())
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000    # charts, not a blank page
