"""The JSON documents fleet keeps in state rows (a lease's or run's meta, a machine's data), read back.

A shared state is written by every teammate's fleet, and a row can be damaged by a hand edit, a
broken client or a bad restore. A damaged document is named (which row, which column) in one line
a user can act on, never a decoder's traceback; commands that act on many rows (`fleet down --all`,
`fleet reap`) set such a row aside and go on with the rest, and a write that only adds to a damaged
document keeps the unreadable text beside what it adds instead of dropping it.
"""
from __future__ import annotations

import json

from ..errors import IntegrityError

TYPE_CHECKING = False   # `fleet status` with no lease imports neither typing nor models
if TYPE_CHECKING:
    from typing import Any

UNREADABLE_KEY = "unreadable_meta"       # where a damaged meta's text is kept when a write adds to it
FIX_HINT = "a hand edit or another program changed that row; restore it, or delete it from the state database"


class CorruptRecord(IntegrityError):
    """A state row whose JSON document cannot be read."""


def stored_number(value: Any, *, low: float, high: float, default: Any) -> Any:
    """A number from a row (or a row's document) that a teammate's client may have written: int(value),
    or `default` for text, a bool, NaN or a figure outside [low, high], so that one odd row neither
    crashes nor stops a budget check, a release or a sweep for the whole team."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        return default
    return int(value)


def stored_seconds(value: Any, default: int = 300) -> int:
    """A lease's heartbeat TTL: whole seconds within a day, else `default` (the lease is still released,
    billed and swept, as one with the default TTL)."""
    from ..config.values import MAX_HEARTBEAT_TTL_S
    return stored_number(value, low=1, high=MAX_HEARTBEAT_TTL_S, default=default)


def stored_object(text: str | None, what: str) -> dict[str, Any]:
    """The dict a row's document holds ({} for an empty column); CorruptRecord naming `what` (e.g.
    "run r-123's meta") when it is not a JSON object."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except (ValueError, TypeError):
        raise CorruptRecord(f"state: {what} is not valid JSON", hint=FIX_HINT) from None
    if type(value) is not dict:
        raise CorruptRecord(f"state: {what} is not a JSON object", hint=FIX_HINT)
    return value


def object_to_extend(text: str | None, what: str) -> dict[str, Any]:
    """The document a write is about to add to: a damaged one is kept, as text, under
    UNREADABLE_KEY, so the write goes through and nothing that was there is lost."""
    try:
        return stored_object(text, what)
    except CorruptRecord:
        return {UNREADABLE_KEY: text}


def object_or_empty(text: str | None, what: str) -> dict[str, Any]:
    """For a listing that shows every row: a damaged document reads as empty, so one bad row
    neither fails the listing nor gains properties it cannot prove (e.g. "detached")."""
    try:
        return stored_object(text, what)
    except CorruptRecord:
        return {}


_scan_once = json.JSONDecoder().scan_once


def json_objects(texts: list[str], what: str) -> list:
    """json_object of each, decoded in one pass as one array: the JSON scanner then keeps one
    string per key for all of them, not one per document (1,000 machines' documents: 1.3 MB
    instead of 2.5 MB, fewer page faults for `fleet status`). Any document that is not exactly one
    object (a damaged row) is decoded on its own."""
    if texts:
        first, last = texts[0], texts[-1]
        texts[0] = "[" + first                 # brackets on the ends: one copy of them all, not two
        texts[-1] = texts[-1] + "]"
        try:
            values = json.loads(",".join(texts))
        except (ValueError, TypeError):
            values = None
        texts[-1] = last
        texts[0] = first
        if values is not None and len(values) == len(texts) and all(type(v) is dict for v in values):
            return values
    return [json_object(text, what) for text in texts]


def objects_or_errors(texts: list[str], what: str) -> list:
    """json_objects, except that a document that cannot be read is its CorruptRecord in the list (one
    damaged machine row must not take every lease out of `fleet status`)."""
    try:
        return json_objects(texts, what)
    except CorruptRecord:
        out: list = []
        for text in texts:
            try:
                out.append(json_object(text, what))
            except CorruptRecord as exc:
                out.append(exc)
        return out


def json_object(text: str, what: str):
    """stored_object for the documents fleet wrote itself (no whitespace around them): the C scanner
    directly, without json.loads's two Python layers (a thousand machines at every `fleet status`)."""
    if not text:
        raise CorruptRecord(f"state: {what} is empty", hint=FIX_HINT)
    try:
        value, end = _scan_once(text, 0)
    except (StopIteration, ValueError):
        value, end = None, -1
    return value if end == len(text) and type(value) is dict else stored_object(text, what)
