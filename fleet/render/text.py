"""Tables for a terminal: a rich table for people, or a plain aligned one.

rich measures every cell of every row before printing (seconds for a thousand rows) and, in a
pipe, cuts cells to 80 columns; so listings print plain when piped or longer than PLAIN_ABOVE_ROWS,
with the same columns, so scripts and eyes read it the same way.
"""
from __future__ import annotations

import sys

from .table import RIGHT, TOTAL, Table

PLAIN_ABOVE_ROWS = 100
# Control characters shown, never sent: cells hold what teammates wrote into a shared state (owners,
# projects, queue reasons, commands), and a terminal obeys ESC sequences (set the clipboard, clear
# the screen). C0 as ^X (ESC as ^[), DEL as ^?, C1 as U+FFFD; a line break stays (multi-line cells).
# A file name that is not UTF-8 arrives with its bytes as lone surrogates (U+DC80-U+DCFF, Python's
# surrogateescape) and leaves as those bytes: 0x80-0x9F are C1 controls (0x9B is CSI) to a terminal
# reading Latin-1, so they are shown as U+FFFD too.
_SHOWN = {**{i: f"^{chr(i + 64)}" for i in range(32) if i != 10}, 127: "^?", **{i: "\ufffd" for i in range(0x80, 0xa0)},
          **{i: "\ufffd" for i in range(0xdc80, 0xdca0)}}
_SHOWN_IN_A_LINE = {**_SHOWN, 10: "^J"}


def printable(text: str) -> str:
    """`text` with its control characters made visible (see _SHOWN); isprintable, in C, spares the
    translation for the usual cell (a thousand rows of `fleet status`)."""
    return text if text.isprintable() else text.translate(_SHOWN)


_SGR = None   # compiled on first use: ESC [ digits and ';' m, a colour or a style, and nothing else
_KEPT = (9, 13)   # tab; carriage return (progress bars redraw a line with it)


def terminal_line(text: str) -> str:
    """An experiment's log line as a terminal may receive it: its colours (SGR sequences) and progress
    bars' carriage returns pass (reset at the line's end), every other control character is shown (^[…), so a line from a
    machine, or from a teammate's run read with `fleet logs`, cannot set the reader's clipboard (OSC 52),
    retitle or clear the screen, or move the cursor."""
    if text.isprintable():
        return text
    global _SGR
    if _SGR is None:
        import re
        _SGR = re.compile(r"\x1b\[[0-9;]{0,32}m")
    table = {k: v for k, v in _SHOWN_IN_A_LINE.items() if k not in _KEPT}
    out, at, last = [], 0, ""
    for match in _SGR.finditer(text):
        last = match.group()
        out += [text[at:match.start()].translate(table), last]
        at = match.end()
    out.append(text[at:].translate(table))
    if last not in ("", "\x1b[0m", "\x1b[m"):   # a style ends with its line: a "conceal" (ESC[8m) or
        out.append("\x1b[0m")                     # black on black hides no other line
    return "".join(out)


def last_redraw(text: str) -> str:
    """What a terminal ends up showing of a line a progress bar redrew with carriage returns: its last
    part. For a line printed after a prefix (`[0] `) where no terminal reads it (a CI job's log, a
    file): a CI runner reads a carriage return as a line break, so the text after one started a line
    of its own, free of the prefix, that the runner obeys as a workflow command
    (`50%\r::stop-commands::…` hid every later line of the job), and each redraw of a bar was a log line."""
    if "\r" not in text:
        return text
    parts = [part for part in text.split("\r") if part]
    return parts[-1] if parts else ""


def printable_line(text: str) -> str:
    """printable(), a line break shown as ^J too: for a name printed as one line of a listing (a file
    path in `fleet snapshot show`), where a line break would forge a line of its own."""
    return text if text.isprintable() else text.translate(_SHOWN_IN_A_LINE)


def to_text(table: Table) -> str:
    """A plain aligned table: title, headings, a rule, rows (a rule before a total), notes."""
    if not table.rows and table.empty:
        return printable_line(table.empty) + "\n"
    out = _lines(table, [row.cells for row in table.rows])
    # One check of the finished lines instead of every cell (a thousand rows of `fleet status`);
    # a control character anywhere (rare) and the table is made again from cells made printable.
    if not all(map(str.isprintable, out)):
        # A line break too is shown (^J): a plain table's row is one line, and a cell that broke it
        # would start a line of its own (in CI, "::add-mask::…" read by the runner as a command).
        out = _lines(table, [cells if all(map(str.isprintable, cells)) else [printable_line(c) for c in cells]
                             for cells in (row.cells for row in table.rows)])
    return "\n".join(out) + "\n"


def _lines(table: Table, cells_of: list) -> list[str]:
    cols = table.columns
    widths = [len(c.title) for c in cols]
    for i, column in enumerate(zip(*cells_of)):   # column by column, in C
        widths[i] = max(widths[i], max(map(len, column)))
    # One format string for every line (a thousand rows: ~1 ms instead of ~5 ms cell by cell).
    fmt = "  ".join(f"{{:{'>' if c.align == RIGHT else '<'}{w}}}" for c, w in zip(cols, widths)).format
    rule = fmt(*["-" * w for w in widths]).rstrip()
    out = [printable_line(table.title)] if table.title else []
    out += [fmt(*[c.title for c in cols]).rstrip(), rule]
    for row, cells in zip(table.rows, cells_of):
        if row.emphasis == TOTAL:
            out.append(rule)
        out.append(fmt(*cells).rstrip())
    out += [f"note: {printable_line(n)}" for n in table.notes]
    return out


def to_rich(table: Table, console) -> None:
    """Print through rich: headings, right-aligned figures, a section before a total."""
    from rich.markup import escape
    from rich.table import Table as RichTable
    if not table.rows and table.empty:
        console.print(printable_line(table.empty), markup=False, highlight=False)
        return
    out = RichTable(title=escape(printable_line(table.title)) if table.title else None, title_justify="left")
    for c in table.columns:
        out.add_column(c.title, justify=c.align, no_wrap=c.no_wrap, overflow="fold")   # never cut an id
    for row in table.rows:
        if row.emphasis == TOTAL:
            out.add_section()
        cells = [escape(printable(cell)) if not style else f"[{style}]{escape(printable(cell))}[/]"
                 for cell, style in zip(row.cells, row.styles or (None,) * len(row.cells))]
        out.add_row(*cells, style="bold" if row.emphasis == TOTAL else None)
    console.print(out)
    for n in table.notes:
        console.print(f"note: {printable_line(n)}", highlight=False, markup=False)


def table_string(table: Table, width: int = 120) -> str:
    """The rich form as text (for files and tests), at a fixed width, without colour."""
    import io

    from rich.console import Console
    buf = io.StringIO()
    to_rich(table, Console(file=buf, width=width, force_terminal=False))
    return buf.getvalue()


def rich_width(table: Table) -> int:
    """How wide the rich form is with no cell cut or folded: each column's widest cell or heading,
    one space either side, and a border between and around columns."""
    widths = [len(c.title) for c in table.columns]
    for row in table.rows:
        widths = [max(w, *map(len, printable(cell).splitlines() or [""])) for w, cell in zip(widths, row.cells)]
    return sum(widths) + 3 * len(widths) + 1


def print_table(table: Table, stream=None) -> None:
    """A listing on stdout: rich on a terminal, plain when piped, long, or wider than the terminal
    (rich would squeeze columns to nothing there, headings and ids included: issue 17 at 80 columns)."""
    stream = stream or sys.stdout
    if len(table.rows) > PLAIN_ABOVE_ROWS or not stream.isatty():
        stream.write(to_text(table))
        stream.flush()
        return
    from rich.console import Console
    console = Console(file=stream)
    if rich_width(table) > console.width:
        stream.write(to_text(table))
        stream.flush()
        return
    to_rich(table, console)
