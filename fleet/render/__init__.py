"""One rendering layer: every table fleet shows (cost report, reconcile, run records, leases,
hosts, snapshots, offers) and every document (audit, CI job summary) is built as data here and
rendered in the form asked for: table (terminal), csv, json, md, html.

Commands choose the form; the library builds the `Table` or `Document`. Importing this package
loads no rich: the terminal form imports it when it prints.
"""
from __future__ import annotations

from .document import Bullets, Document, Fields, Heading, Paragraph
from .table import LABEL, LEFT, RIGHT, TOTAL, Column, Records, Row, Table

FORMATS = ("table", "csv", "json", "md", "html")


def render(table: Table, fmt: str) -> str:
    """`table` as text in form `fmt` (one of FORMATS); an unknown form is a UsageError."""
    if fmt == "table":
        from .text import table_string
        return table_string(table)
    if fmt == "csv":
        from .data import to_csv
        return to_csv(table)
    if fmt == "json":
        from .data import to_json
        return to_json(table) + "\n"
    if fmt == "md":
        from .markdown import to_markdown
        return to_markdown(table)
    if fmt == "html":
        from .html import to_html
        return to_html(table)
    from ..errors import UsageError
    raise UsageError(f"unknown format {fmt!r}", hint="choose one of: " + ", ".join(FORMATS))


def check_format(fmt: str, what: str = "format") -> str:
    if fmt not in FORMATS:
        from ..errors import UsageError
        raise UsageError(f"unknown {what} {fmt!r}", hint="choose one of: " + ", ".join(FORMATS))
    return fmt


__all__ = ["FORMATS", "LABEL", "LEFT", "RIGHT", "TOTAL", "Bullets", "Column", "Document", "Fields", "Heading",
           "Paragraph", "Records", "Row", "Table", "check_format", "render"]
