"""HTML: a table element (for pages that lay out more, like the cost report) or a whole page."""
from __future__ import annotations

from html import escape as esc

from .table import RIGHT, TOTAL, Table

PAGE_STYLE = """body { font-family: system-ui, sans-serif; margin: 24px auto; max-width: 960px; padding: 0 16px; }
table { border-collapse: collapse; margin: 12px 0 24px; font-size: 0.92em; }
th, td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: left; vertical-align: top; }
td.n { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.total td { font-weight: bold; }"""


def _td(text: str, column) -> str:
    body = f"<code>{esc(text)}</code>" if column.code and text else esc(text)
    return f"<td class=n>{body}</td>" if column.align == RIGHT else f"<td>{body}</td>"


def table_html(table: Table) -> str:
    """`<table>`: headings, rows, a total row marked class=total; figures (right-aligned) class=n."""
    if not table.rows and table.empty:
        return f"<p>{esc(table.empty)}</p>"
    head = "".join(f"<th>{esc(c.title)}</th>" for c in table.columns)
    body = "".join(("<tr class=total>" if row.emphasis == TOTAL else "<tr>")
                   + "".join(_td(cell, table.columns[i]) for i, cell in enumerate(row.cells)) + "</tr>"
                   for row in table.rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def to_html(table: Table) -> str:
    """A whole self-contained page: title, the table, its notes."""
    title = table.title or "fleet"
    notes = "".join(f"<li>{esc(n)}</li>" for n in table.notes)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">\n<title>{esc(title)}</title>\n'
            f"<style>\n{PAGE_STYLE}\n</style></head><body>\n<h1>{esc(title)}</h1>\n{table_html(table)}\n"
            + (f"<ul>{notes}</ul>\n" if notes else "") + "</body></html>\n")
