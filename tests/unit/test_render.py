"""fleet/render: one table model, rendered as terminal table, plain text, CSV, JSON, Markdown and
HTML; documents as Markdown. And the rule that nothing else in fleet/ draws tables itself."""
from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest

from fleet.errors import UsageError
from fleet.render import LABEL, RIGHT, TOTAL, Column, Document, Fields, Heading, Records, Row, Table, render
from fleet.render.markdown import to_markdown
from fleet.render.text import print_table, table_string, to_text

FLEET = Path(__file__).resolve().parents[2] / "fleet"


def cost_table() -> Table:
    return Table([Column("project"), Column("cost", align=RIGHT), Column("runs", align=RIGHT)],
                 [("vi|sion", "$7.20", "2"), ("[red]nlp[/]", "$1.80", "1"),
                  Row(("total", "$9.00", "3"), emphasis=TOTAL)],
                 title="cost by project", notes=["<b>would cost</b> is not money spent"])


def test_plain_text_aligns_figures_right_and_rules_off_the_total():
    text = to_text(cost_table())
    assert text.splitlines() == [
        "cost by project",
        "project       cost  runs",
        "-----------  -----  ----",
        "vi|sion      $7.20     2",
        "[red]nlp[/]  $1.80     1",
        "-----------  -----  ----",
        "total        $9.00     3",
        "note: <b>would cost</b> is not money spent",
    ]


def test_terminal_table_shows_names_literally_never_as_markup():
    text = render(cost_table(), "table")
    assert "[red]nlp[/]" in text and "vi|sion" in text and "note: <b>would cost</b>" in text


def test_csv_and_json_carry_the_rows_and_the_total_once():
    rows = list(csv.DictReader(io.StringIO(render(cost_table(), "csv"))))
    assert [r["project"] for r in rows] == ["vi|sion", "[red]nlp[/]", "total"]
    data = json.loads(render(cost_table(), "json"))
    assert [r["project"] for r in data["rows"]] == ["vi|sion", "[red]nlp[/]"]
    assert data["total"] == {"project": "total", "cost": "$9.00", "runs": "3"}
    assert data["notes"] == ["<b>would cost</b> is not money spent"]


def test_records_give_machines_other_figures_than_people_read():
    table = Table(["name", "cost"], [("a", "$1.00")],
                  records=Records(("name", "cost_usd"), [{"name": "a", "cost_usd": "1.0000"}], rows_key="items",
                                  meta={"period": "June"}, after={"corrupt_rows": []}))
    assert list(json.loads(render(table, "json"))) == ["period", "items", "corrupt_rows"]
    assert render(table, "csv") == "name,cost_usd\na,1.0000\n"


def test_markdown_escapes_cells_bolds_the_total_and_right_aligns_figures():
    md = render(cost_table(), "md")
    assert "| project | cost | runs |\n|---|---:|---:|" in md
    assert "| vi\\|sion | $7.20 | 2 |" in md
    assert "| **total** | **$9.00** | **3** |" in md
    assert "| \\[red\\]nlp\\[/\\] | $1.80 | 1 |" in md
    # Notes are text: HTML in them is shown, never passed to whatever renders the Markdown.
    assert md.startswith("# cost by project\n") and md.endswith("- &lt;b&gt;would cost&lt;/b&gt; is not money spent\n")


def test_html_escapes_every_cell_and_marks_the_total():
    page = render(cost_table(), "html")
    assert "<b>would cost</b>" not in page and "&lt;b&gt;would cost&lt;/b&gt;" in page
    assert "<tr class=total><td>total</td><td class=n>$9.00</td>" in page


def test_an_empty_table_says_so_in_every_human_form():
    table = Table(["run"], [], empty="no run records")
    for fmt in ("table", "md", "html"):
        assert "no run records" in render(table, fmt)
    assert render(table, "csv") == "run\n" and json.loads(render(table, "json")) == {"rows": []}


def test_bad_shapes_and_formats_are_refused():
    with pytest.raises(ValueError):
        Table(["a", "b"], [("only one",)])
    with pytest.raises(ValueError):
        Column("a", align="middle")
    with pytest.raises(UsageError):
        render(cost_table(), "xml")


def test_a_document_has_headings_fields_and_tables():
    metrics = Table([Column("rank"), Column("loss", align=RIGHT)], [("0", "0.5")])
    metrics.add("mean", "0.5", emphasis=LABEL)
    doc = Document("Run r-1", [Fields([("Status", "ok")]), Fields([("Cost", "$1")], as_table=True),
                               Heading("Metrics", 3), metrics])
    assert to_markdown(doc) == ("# Run r-1\n\n- **Status**: ok\n\n| | |\n|---|---|\n| Cost | $1 |\n\n"
                                "### Metrics\n\n| rank | loss |\n|---|---:|\n| 0 | 0.5 |\n| **mean** | 0.5 |\n")


def test_a_listing_prints_plain_when_piped():
    out = io.StringIO()
    print_table(Table([Column("lease", no_wrap=True)], [("l-" + "x" * 200,)]), out)
    assert "l-" + "x" * 200 in out.getvalue()           # never cut, whatever the width


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _runs_like_table() -> Table:
    return Table([Column("run", no_wrap=True), Column("project"), Column("status"), Column("exit", align=RIGHT),
                  Column("commit"), Column("data"), Column("outputs"), Column("started"), Column("user")],
                 [("r-20261202-141522-bd35da47b2", "proj", "succeeded", "0", "bb29edbd74", "-", "-",
                   "2026-12-02T14:15:22", "auditor")])


def test_a_table_wider_than_the_terminal_prints_plain_with_every_heading_and_id(monkeypatch):
    """Issue 17: at 80 columns rich squeezed `fleet runs ls` / `fleet status` columns to nothing,
    headings and all; a table that does not fit prints plain (the terminal wraps it, nothing is cut)."""
    table = _runs_like_table()
    monkeypatch.setenv("COLUMNS", "80")
    out = _Terminal()
    print_table(table, out)
    assert out.getvalue() == to_text(table)
    header = out.getvalue().splitlines()[0].split()
    assert header == ["run", "project", "status", "exit", "commit", "data", "outputs", "started", "user"]
    assert out.getvalue().splitlines()[2].split()[:3] == ["r-20261202-141522-bd35da47b2", "proj", "succeeded"]


def test_a_table_that_fits_the_terminal_is_drawn_by_rich_at_its_natural_width(monkeypatch):
    from fleet.render.text import rich_width
    table = _runs_like_table()
    drawn = max(len(line) for line in table_string(table, width=400).splitlines())
    assert rich_width(table) == drawn
    monkeypatch.setenv("COLUMNS", str(drawn))
    out = _Terminal()
    print_table(table, out)
    drawn_here = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())   # a terminal gets colours
    assert "┃ project ┃" in drawn_here and "│ r-20261202-141522-bd35da47b2 │" in drawn_here


# Modules written alongside the rendering layer that still draw their own Markdown tables; listed so
# the rule holds for everything else, and enforced both ways: one that adopts the layer must leave.
NOT_YET_ON_THE_LAYER: set[str] = set()
DRAWS_A_TABLE = re.compile(r"from rich\.table import|[\"']\|---")


def test_only_fleet_render_draws_tables():
    """One rendering layer: no other module builds rich tables or Markdown tables by hand."""
    drawing = {str(path.relative_to(FLEET)) for path in FLEET.rglob("*.py")
               if not path.is_relative_to(FLEET / "render") and DRAWS_A_TABLE.search(path.read_text("utf-8"))}
    assert drawing - NOT_YET_ON_THE_LAYER == set()
    adopted = {m for m in NOT_YET_ON_THE_LAYER if (FLEET / m).exists() and m not in drawing}
    assert adopted == set(), "these render through fleet/render now: take them off NOT_YET_ON_THE_LAYER"


def test_a_plain_table_row_stays_one_line_whatever_a_cell_or_note_holds():
    """Piped (as in a CI job), a line break in a teammate's template name or a damaged row's reason
    started a line of its own: "::add-mask::…" or "::warning …", which the runner obeys."""
    table = Table([Column("lease"), Column("template")], [("l-1", "t\n::add-mask::l-1"), ("l-2", "ok")],
                  title="leases\n::stop-commands::x", notes=["x\n::warning title=fleet::budget raised to $1M"])
    from fleet.render.text import to_text
    plain = to_text(table)
    assert "t^J::add-mask::l-1" in plain and len(plain.splitlines()) == 6
    for text in (plain, render(table, "table")):        # piped, and the rich form (-o FILE)
        assert not any(line.lstrip().startswith("::") for line in text.splitlines()), text
