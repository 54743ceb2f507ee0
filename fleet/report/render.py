"""Text renderers for a Report: table (rich), CSV, JSON and Markdown. HTML lives in html.py."""
from __future__ import annotations

import csv
import io
import json

from ..money.budget import format_usd, from_micro
from ..models import to_jsonable
from .build import Report, Row

FORMATS = ("table", "csv", "json", "md", "html")
WOULD_COST_NOTE = ("'would cost' is what simulated machines (the local provider, the AWS sandbox) would have "
                   "cost at the equivalent cloud list price: not money spent")
HEADERS = ("cost_usd", "would_cost_usd", "gpu_hours", "idle_gpu_hours", "idle_cost_usd", "idle_would_cost_usd",
           "mean_gpu_util_percent", "runs", "machine_hours")


def row_dict(row: Row, by: str) -> dict:
    util = row.mean_gpu_util
    return {
        by: row.key,
        "cost_usd": str(from_micro(row.cost_micro)),
        "would_cost_usd": str(from_micro(row.would_cost_micro)),
        "gpu_hours": round(row.gpu_hours, 4),
        "idle_gpu_hours": round(row.idle_gpu_hours, 4),
        "idle_cost_usd": str(from_micro(round(row.idle_billed_micro))),
        "idle_would_cost_usd": str(from_micro(round(row.idle_would_cost_micro))),
        "mean_gpu_util_percent": None if util is None else round(util, 1),
        "runs": len(row.runs),
        "machine_hours": round(row.machine_s / 3600, 4),
    }


def _money(micro: float) -> str:
    return format_usd(micro)


def _cells(row: Row) -> list[str]:
    util = row.mean_gpu_util
    return [_money(row.cost_micro), _money(row.would_cost_micro) if row.would_cost_micro else "-",
            f"{row.gpu_hours:,.2f}", f"{row.idle_gpu_hours:,.2f}", _idle_money(row),
            "n/a" if util is None else f"{util:.0f} %", str(len(row.runs))]


def _idle_money(row: Row) -> str:
    """Billed idle cost; the simulated share apart, so it never reads as money spent."""
    if not row.idle_would_cost_micro:
        return _money(row.idle_billed_micro)
    return f"{_money(row.idle_billed_micro)} (+{_money(row.idle_would_cost_micro)} would)"


_TEXT_HEADERS = ["cost", "would cost", "GPU-h", "idle GPU-h", "idle cost", "GPU util", "runs"]


def period_text(report: Report) -> str:
    since = report.since.strftime("%Y-%m-%d %H:%M") if report.since else "the beginning"
    until = report.until.strftime("%Y-%m-%d %H:%M") if report.until else "now"
    return f"{since} to {until} UTC"


def notes(report: Report) -> list[str]:
    out = []
    if report.empty:
        out.append(f"no ledger entries from {period_text(report)}")
    if report.total.would_cost_micro:
        out.append(WOULD_COST_NOTE)
    if report.corrupt:
        out.append(f"{len(report.corrupt)} damaged ledger row(s) left out of the totals: "
                   + "; ".join(report.corrupt[:3]) + (" …" if len(report.corrupt) > 3 else ""))
    return out


def to_json(report: Report) -> str:
    return json.dumps({
        "by": report.by, "since": to_jsonable(report.since), "until": to_jsonable(report.until),
        "entries": report.entries,
        "rows": [row_dict(r, report.by) for r in report.rows],
        "total": row_dict(report.total, report.by),
        "corrupt_rows": report.corrupt, "notes": notes(report),
    }, indent=2)


def to_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([report.by, *HEADERS])
    for row in [*report.rows, report.total]:
        d = row_dict(row, report.by)
        writer.writerow([d[report.by], *("" if d[h] is None else d[h] for h in HEADERS)])
    return buf.getvalue()


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def to_markdown(report: Report) -> str:
    lines = [f"# fleet cost report by {report.by}", "", f"Period: {period_text(report)}", ""]
    lines.append("| " + " | ".join([report.by, *_TEXT_HEADERS]) + " |")
    lines.append("|" + "---|" * (len(_TEXT_HEADERS) + 1))
    for row in report.rows:
        lines.append("| " + " | ".join([_md_escape(row.key), *_cells(row)]) + " |")
    lines.append("| " + " | ".join(["**total**", *(f"**{c}**" for c in _cells(report.total))]) + " |")
    extra = notes(report)
    if extra:
        lines += ["", *(f"- {n}" for n in extra)]
    return "\n".join(lines) + "\n"


def to_table(report: Report, console=None) -> None:
    from rich.console import Console
    from rich.table import Table
    console = console or Console()
    table = Table(title=f"cost by {report.by}, {period_text(report)}", title_justify="left")
    table.add_column(report.by)
    for h in _TEXT_HEADERS:
        table.add_column(h, justify="right")
    for row in report.rows:
        table.add_row(row.key, *_cells(row))
    table.add_section()
    table.add_row("total", *_cells(report.total), style="bold")
    console.print(table)
    for n in notes(report):
        console.print(f"note: {n}", highlight=False)
