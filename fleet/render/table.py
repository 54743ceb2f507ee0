"""The one table model every listing and report renders from.

A `Table` is what a reader sees (column headings and cell text) plus, when a machine reader needs
other figures than the display text (raw numbers, more columns), a `Records` view for CSV and JSON.
Plain classes with __slots__, not dataclasses: `fleet status` builds one on every call and
importing dataclasses would cost more than rendering it.
"""
from __future__ import annotations

LEFT, RIGHT = "left", "right"
# Row emphasis: a total line (every cell bold, after a rule) or a labelled summary (bold label only).
TOTAL, LABEL = "total", "label"


class Column:
    """One column: `key` names it for CSV/JSON, `title` is the heading people read (default: key)."""

    __slots__ = ("key", "title", "align", "no_wrap", "code")

    def __init__(self, key: str, title: str | None = None, *, align: str = LEFT, no_wrap: bool = False,
                 code: bool = False) -> None:
        if align not in (LEFT, RIGHT):
            raise ValueError(f"align must be {LEFT!r} or {RIGHT!r}, not {align!r}")
        self.key = key
        self.title = key if title is None else title
        self.align = align
        self.no_wrap = no_wrap      # terminal tables never wrap this column (ids, statuses)
        self.code = code            # an identifier: `code` in Markdown, <code> in HTML


class Row:
    """The text of one line, one cell per column; `style` colours a cell on a terminal only."""

    __slots__ = ("cells", "emphasis", "styles")

    def __init__(self, cells, *, emphasis: str = "", styles: tuple[str | None, ...] = ()) -> None:
        if emphasis not in ("", TOTAL, LABEL):
            raise ValueError(f"unknown row emphasis {emphasis!r}")
        self.cells: tuple[str, ...] = tuple(cells)
        self.emphasis = emphasis
        self.styles = styles


class Records:
    """What CSV and JSON carry when it differs from the display text: named fields per row, an
    optional total, and extra top-level JSON keys (a period, notes, …) in `meta` and `after`."""

    __slots__ = ("fields", "rows", "total", "meta", "after", "rows_key")

    def __init__(self, fields, rows: list[dict], *, total: dict | None = None, meta: dict | None = None,
                 after: dict | None = None, rows_key: str = "rows") -> None:
        self.fields: tuple[str, ...] = tuple(fields)
        self.rows = rows
        self.total = total
        self.meta = meta or {}        # JSON keys before the rows
        self.after = after or {}      # JSON keys after the rows and total
        self.rows_key = rows_key


class Table:
    """Columns, rows, a title and notes; `empty` is said instead of the table when it has no rows."""

    __slots__ = ("columns", "rows", "title", "notes", "empty", "records")

    def __init__(self, columns, rows=(), *, title: str = "", notes=(), empty: str = "",
                 records: Records | None = None) -> None:
        self.columns: tuple[Column, ...] = tuple(c if isinstance(c, Column) else Column(c) for c in columns)
        self.rows: list[Row] = [r if isinstance(r, Row) else Row(r) for r in rows]
        for row in self.rows:
            if len(row.cells) != len(self.columns):
                raise ValueError(f"a row has {len(row.cells)} cells for {len(self.columns)} columns")
        self.title = title
        self.notes: list[str] = list(notes)
        self.empty = empty
        self.records = records

    def add(self, *cells: str, emphasis: str = "", styles: tuple[str | None, ...] = ()) -> None:
        row = Row(cells, emphasis=emphasis, styles=styles)
        if len(row.cells) != len(self.columns):
            raise ValueError(f"a row has {len(row.cells)} cells for {len(self.columns)} columns")
        self.rows.append(row)

    def data(self) -> Records:
        """The machine-readable view: the explicit Records, or the display text keyed by column."""
        if self.records is not None:
            return self.records
        keys = tuple(c.key for c in self.columns)
        body = [dict(zip(keys, r.cells)) for r in self.rows if r.emphasis != TOTAL]
        total = next((dict(zip(keys, r.cells)) for r in self.rows if r.emphasis == TOTAL), None)
        return Records(keys, body, total=total)
