"""Cost reports for managers: build from the ledger (build.py), view as the shared table model
(view.py), render as table, CSV, JSON, Markdown (fleet/render) or an HTML page (html.py)."""
from __future__ import annotations

from ..render import FORMATS, check_format
from .build import GROUPS, Report, Row, build_report, parse_when


def render(report: Report, fmt: str) -> str:
    """The report as text in `fmt`: one of FORMATS."""
    check_format(fmt, "report format")
    if fmt == "html":
        from .html import to_html
        return to_html(report)
    from .view import report_document, report_table
    if fmt == "md":
        from ..render.markdown import to_markdown
        return to_markdown(report_document(report))
    from ..render import render as render_table
    return render_table(report_table(report), fmt)


__all__ = ["FORMATS", "GROUPS", "Report", "Row", "build_report", "parse_when", "render"]
