"""Cost reports for managers: build from the ledger, render as table, CSV, JSON, Markdown or HTML."""
from __future__ import annotations

from .build import GROUPS, Report, Row, build_report, parse_when
from .render import FORMATS, to_csv, to_json, to_markdown, to_table


def render(report: Report, fmt: str) -> str:
    """The report as text in `fmt` (table is rendered by rich to a string)."""
    if fmt == "json":
        return to_json(report)
    if fmt == "csv":
        return to_csv(report)
    if fmt == "md":
        return to_markdown(report)
    if fmt == "html":
        from .html import to_html
        return to_html(report)
    if fmt == "table":
        import io

        from rich.console import Console
        buf = io.StringIO()
        to_table(report, Console(file=buf, width=120, force_terminal=False))
        return buf.getvalue()
    from ..errors import UsageError
    raise UsageError(f"unknown report format {fmt!r}", hint="choose one of: " + ", ".join(FORMATS))


__all__ = ["FORMATS", "GROUPS", "Report", "Row", "build_report", "parse_when", "render"]
