"""Markdown: pipe tables and documents (headings, paragraphs, fields, bullet lists, tables).

Table cells are plain text: `|` and line breaks are escaped here. Paragraph, field and bullet text
is Markdown already: build it with `code()` and `escape()` from anything a user typed.
"""
from __future__ import annotations

from .document import Bullets, Document, Fields, Heading, Paragraph
from .table import LABEL, RIGHT, TOTAL, Table


def escape(text: object) -> str:
    """Plain text safe inside a Markdown table cell or line."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(text: object) -> str:
    """An inline code span; one holding a backtick is fenced with two (CommonMark)."""
    text = str(text)
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _cell(text: str, column, strong: bool) -> str:
    text = escape(text)
    if column.code and text:
        text = code(text)
    return f"**{text}**" if strong and text else text


def table_lines(table: Table) -> list[str]:
    if not table.rows and table.empty:
        return [table.empty]
    cols = table.columns
    lines = ["| " + " | ".join(c.title for c in cols) + " |",
             "|" + "".join("---:|" if c.align == RIGHT else "---|" for c in cols)]
    for row in table.rows:
        cells = [_cell(cell, cols[i], row.emphasis == TOTAL or (row.emphasis == LABEL and i == 0))
                 for i, cell in enumerate(row.cells)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _fields(block: Fields) -> list[str]:
    if block.as_table:
        return ["| | |", "|---|---|", *(f"| {label} | {value} |" for label, value in block.pairs)]
    return [f"- **{label}**: {value}" for label, value in block.pairs]


def to_markdown(doc: Document | Table) -> str:
    """A document (or one table, with its title and notes) as Markdown text ending in a newline."""
    if isinstance(doc, Table):
        doc = Document(doc.title, [doc, Bullets(doc.notes)] if doc.notes else [doc])
    lines: list[str] = []
    if doc.title:
        lines += ["#" * doc.level + " " + doc.title, ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Fields):
            lines += [*_fields(block), ""]
        elif isinstance(block, Bullets):
            if block.items:
                lines += [*(f"- {item}" for item in block.items), ""]
        elif isinstance(block, Table):
            lines += [*table_lines(block), ""]
        else:
            raise TypeError(f"not a document block: {type(block).__name__}")
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
