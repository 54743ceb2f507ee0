"""Markdown that fleet writes (CI job summaries, `fleet report --format md`, `runs diff --md`,
`runs compare --format md`, `audit`) shows what a teammate or a branch name typed as text (a red-team
finding: `<img src=…>` in a project name, `![](…)` in a branch name closing its code span, a metric
name with a line break forged headings and images fetching external URLs)."""
from __future__ import annotations

import re

from fleet.ci_report import markdown
from fleet.render import Column, Table
from fleet.render.markdown import code, escape, to_markdown

IMG = "<img src=http://evil.example/b.png>"


def _markup_free(md: str) -> None:
    assert "<img" not in md and "<script" not in md
    assert not re.search(r"(?<!\\)!\[", md) and not re.search(r"(?<!\\)\]\(", md)


def test_text_is_escaped_and_stays_on_one_line():
    text = escape(f"a|b\n## pwn ![t](http://evil.example/a.png) {IMG}\r| x |")
    assert "\n" not in text and "\r" not in text
    _markup_free(text)
    assert escape("# heading?").startswith("\\#")


def test_a_code_span_cannot_be_closed_by_what_it_holds():
    for text in ("x``![i](//evil.example/c.png)``y", "`", "a | b", "```"):
        span = code(text)
        fence = re.match(r"`+", span).group()
        assert span.endswith(fence) and max(map(len, re.findall(r"`+", text)), default=0) < len(fence)
        assert "|" not in span.replace("\\|", "")


def test_a_ci_summary_with_hostile_values_has_no_markup_of_theirs():
    summary = {"status": "failed", "exit_code": 1, "run_id": "r-1", "message": f"boom {IMG}", "machines": 1,
               "template": f"t {IMG}", "gpus": 1, "provider": f"local {IMG}", "budget_usd": f"5 {IMG}",
               "ci": {"sha": "a" * 40, "branch": "x``![i](//evil.example/c.png)``y",
                      "run_url": f"https://ci.example/run {IMG}"}}
    rows = [("0", {"loss|x\n## pwn ![t](http://evil.example/a.png)": 0.5, "note": IMG})]
    md = markdown(summary, rows)
    _markup_free(md.replace(code("x``![i](//evil.example/c.png)``y"), ""))
    assert not any(line.startswith("## pwn") for line in md.splitlines())
    metric_rows = [line for line in md.splitlines() if line.startswith("| 0 |")]
    assert len(metric_rows) == 1


def test_table_titles_cells_and_notes_are_text():
    table = Table([Column(f"p {IMG}"), Column("cost")], [(f"proj {IMG}\r| forged | row |", "$1")],
                  title="report", notes=[f"damaged: {IMG}"])
    md = to_markdown(table)
    _markup_free(md)
    assert len([line for line in md.splitlines() if line.startswith("|")]) == 3
