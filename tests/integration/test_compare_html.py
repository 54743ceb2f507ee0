"""`fleet runs compare --format html`: the scatter of each parameter against the metric, drawn in
headless Chromium (checked in the rendered DOM) with a screenshot kept under test-artifacts/."""
from __future__ import annotations

from fleet.report.compare import Comparison, ComparedRun
from fleet.report.compare_render import as_html
from tests.integration.test_report_html import chromium, needs_chromium, screenshot


def _grid() -> Comparison:
    runs = []
    for i, (lr, hidden) in enumerate([(l, h) for l in ("1e-3", "3e-4", "1e-4") for h in ("32", "64")]):
        acc = 0.9 - abs(float(lr) - 3e-4) * 100 + int(hidden) / 1000
        runs.append(ComparedRun(run_id=f"r-{i}", status="succeeded", params={"lr": lr, "hidden": hidden},
                                metrics={"acc": acc}, code_commit="abc", code_snapshot="s", data={"train": "d"},
                                command=f"python train.py --lr {lr} --hidden {hidden}", cost_usd="0.01",
                                gpu_hours=0.001, trial=f"t{i + 1:03d}"))
    runs.sort(key=lambda r: r.metrics["acc"], reverse=True)
    return Comparison(runs=tuple(runs), sort="acc", differ=("params", "command"), sweep_id="s-test")


def test_the_html_form_is_self_contained_and_best_first():
    page = as_html(_grid())
    assert "<script" not in page and "http" not in page.replace("http://www.w3.org/2000/svg", "")
    assert page.count('class="point"') == 12                   # 6 runs × 2 parameters
    first_row = page.split("<tbody><tr>")[1].split("</tr>")[0]
    assert "<td>t004</td>" in first_row and "<td>3e-4</td>" in first_row and "<td>64</td>" in first_row


@needs_chromium
def test_the_scatter_renders_in_chromium(tmp_path):
    page = tmp_path / "compare.html"
    page.write_text(as_html(_grid()))
    dom = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert dom.stdout.count("<circle") == 12 and "acc by lr" in dom.stdout and "acc by hidden" in dom.stdout
    assert screenshot(tmp_path, page, "compare-html.png", 900)[:8] == b"\x89PNG\r\n\x1a\n"
