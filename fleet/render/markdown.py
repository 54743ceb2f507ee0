"""Markdown: pipe tables and documents (headings, paragraphs, fields, bullet lists, tables).

Table cells, column titles, paragraphs and bullets are plain text, escaped here (markup, HTML,
line breaks). Titles, headings and field values are Markdown already: build them with `code()` and
`escape()` from anything a user typed.
"""
from __future__ import annotations

from .document import Bullets, Document, Fields, Heading, Paragraph
from .table import LABEL, RIGHT, TOTAL, Table


# What Markdown (and the HTML it lets through) could read as markup: backslash-escaped, or an
# entity. Strings here come from a shared state and CI variables a teammate (or a branch name)
# chooses: `<img src=…>`, `![](…)` or a line break must show as text, not fetch or forge anything.
# ( ) and ! need nothing once [ ] are escaped; # only at the start of a line. Emphasis (* _ ~) is
# left as typed: it forges nothing, and `train_accuracy` should read as itself in the raw text too.
_MARKUP = str.maketrans({**{c: "\\" + c for c in "\\`[]|"}, "<": "&lt;", ">": "&gt;", "&": "&amp;"})


def _one_line(text: object) -> str:
    """Control characters shown (^J, ^[, as every listing shows them): a cell or a line stays one
    line, and no escape sequence reaches a terminal that prints the Markdown."""
    from .text import printable_line
    return printable_line(str(text))


def escape(text: object) -> str:
    """Plain text safe inside a Markdown table cell or line: shown as typed, never read as markup."""
    text = _one_line(text).translate(_MARKUP)
    return "\\" + text if text.startswith("#") else text


def code(text: object) -> str:
    """An inline code span, fenced by more backticks than any run inside it (CommonMark), on one
    line; `|` escaped, as a pipe table needs even inside code."""
    text = _one_line(text).replace("|", "\\|")
    run = count = 0
    for ch in text:
        run = run + 1 if ch == "`" else 0
        count = max(count, run)
    fence = "`" * (count + 1)
    pad = " " if text.startswith(("`", " ")) or text.endswith(("`", " ")) or count else ""
    return f"{fence}{pad}{text}{pad}{fence}" if text else ""


def _cell(text: str, column, strong: bool) -> str:
    text = code(text) if column.code and str(text) else escape(text)
    return f"**{text}**" if strong and text else text


def table_lines(table: Table) -> list[str]:
    if not table.rows and table.empty:
        return [table.empty]
    cols = table.columns
    lines = ["| " + " | ".join(escape(c.title) for c in cols) + " |",
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
        doc = Document(escape(doc.title) if doc.title else doc.title, [doc, Bullets(doc.notes)] if doc.notes else [doc])
    lines: list[str] = []
    if doc.title:
        lines += ["#" * doc.level + " " + doc.title, ""]
    for block in doc.blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [escape(block.text), ""]
        elif isinstance(block, Fields):
            lines += [*_fields(block), ""]
        elif isinstance(block, Bullets):
            if block.items:
                lines += [*(f"- {escape(item)}" for item in block.items), ""]
        elif isinstance(block, Table):
            lines += [*table_lines(block), ""]
        else:
            raise TypeError(f"not a document block: {type(block).__name__}")
    while lines and lines[-1] == "":
        lines.pop()
    return "\n".join(lines) + "\n"
