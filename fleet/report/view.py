"""A built cost report (build.py) as the shared table model: what each row shows people, what CSV
and JSON carry, the notes. fleet/render renders it in every form; html.py lays out the page."""
from __future__ import annotations

from ..models import to_jsonable
from ..money.budget import format_usd, from_micro
from ..render import RIGHT, TOTAL, Bullets, Column, Document, Paragraph, Records, Row, Table
from .build import Report
from .build import Row as ReportRow

WOULD_COST_NOTE = ("'would cost' is what machines with a shadow price would have cost, not money spent: simulated "
                   "machines (the local provider, the AWS sandbox) at the equivalent cloud list price, Slurm "
                   "allocations at [slurm] price_per_gpu_hour (the cluster bills nothing)")
# CSV and JSON: exact figures, one field each; the display columns format and combine them.
FIELDS = ("cost_usd", "would_cost_usd", "gpu_hours", "idle_gpu_hours", "idle_cost_usd", "idle_would_cost_usd",
          "mean_gpu_util_percent", "runs", "machine_hours")
TEXT_HEADERS = ("cost", "would cost", "GPU-h", "idle GPU-h", "idle cost", "GPU util", "runs")


def row_dict(row: ReportRow, by: str) -> dict:
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


def cells(row: ReportRow) -> list[str]:
    util = row.mean_gpu_util
    return [format_usd(row.cost_micro), format_usd(row.would_cost_micro) if row.would_cost_micro else "-",
            f"{row.gpu_hours:,.2f}", f"{row.idle_gpu_hours:,.2f}", _idle_money(row),
            "n/a" if util is None else f"{util:.0f} %", str(len(row.runs))]


def _idle_money(row: ReportRow) -> str:
    """Billed idle cost; the simulated share apart, so it never reads as money spent."""
    if not row.idle_would_cost_micro:
        return format_usd(row.idle_billed_micro)
    return f"{format_usd(row.idle_billed_micro)} (+{format_usd(row.idle_would_cost_micro)} would)"


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


def report_table(report: Report) -> Table:
    """One row per group and a total; CSV/JSON carry the exact figures (FIELDS) instead of the text."""
    columns = [Column(report.by), *(Column(h.replace(" ", "_"), h, align=RIGHT) for h in TEXT_HEADERS)]
    rows = [Row([r.key, *cells(r)]) for r in report.rows]
    rows.append(Row(["total", *cells(report.total)], emphasis=TOTAL))
    said = notes(report)
    records = Records((report.by, *FIELDS), [row_dict(r, report.by) for r in report.rows],
                      total=row_dict(report.total, report.by),
                      meta={"by": report.by, "since": to_jsonable(report.since),
                            "until": to_jsonable(report.until), "entries": report.entries},
                      after={"corrupt_rows": report.corrupt, "notes": said})
    return Table(columns, rows, title=f"cost by {report.by}, {period_text(report)}", notes=said, records=records)


def report_document(report: Report) -> Document:
    """The Markdown form: a heading, the period, the table, the notes."""
    return Document(f"fleet cost report by {report.by}",
                    [Paragraph(f"Period: {period_text(report)}"), report_table(report), Bullets(notes(report))])
