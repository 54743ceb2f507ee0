"""A plain, aligned text table for long listings.

rich's Table measures every cell of every row before printing (seconds for a thousand rows);
listings that can grow with a team's activity (`fleet status --all-users`) switch to this above
PLAIN_ABOVE_ROWS rows, keeping the same columns so scripts and eyes read it the same way.
"""
from __future__ import annotations

PLAIN_ABOVE_ROWS = 100


def plain_table(title: str, columns: tuple[str, ...] | list[str], rows: list[tuple[str, ...]]) -> str:
    widths = [len(c) for c in columns]
    for row in rows:
        for i, cell in enumerate(row):
            if len(cell) > widths[i]:
                widths[i] = len(cell)

    def line(cells) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(cells)).rstrip()

    out = [title, line(columns), line(["-" * w for w in widths])]
    out.extend(line(row) for row in rows)
    return "\n".join(out) + "\n"
