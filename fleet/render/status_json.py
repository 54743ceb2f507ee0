"""`fleet status --json`'s text: json.dumps({"leases": views}, indent=2, sort_keys=True), byte for
byte, for the lease views' own shape (fleet/lease_status.py `view`), in a fraction of the time of
json.dumps, whose indented form is pure Python.

At 1,000 leases that document is ~1 MB of indented text, and writing it was the largest single cost
of `fleet status --json` (docs/control-plane-speed.md). Every view has the same keys, so the text is
a skeleton that depends only on how many machines, GPU slots and runs each lease has (cached per
such shape, with a %s for each scalar) filled with the scalars' JSON text. All the scalars are
encoded in ONE call of the standard library's C encoder, as a list whose item separator is a raw
newline: JSON text has none outside its structure (strings escape theirs), so splitting on it gives
each value exactly as json.dumps writes it. A view of any other shape or with a value that is not a
plain scalar (a provider's oddity) is written by json.dumps itself: the same text, slower.
"""
from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring_ascii
from operator import itemgetter

_SCALARS = frozenset((str, int, float, bool, type(None)))
# Sorted, as sort_keys writes them; the containers ("gpus" of a machine, "machines", "runs") apart.
_LEASE_KEYS = ("created_at", "deadline", "gpus", "health", "id", "keep_until", "machines", "max_deadline",
               "project", "provider", "runs", "status", "template", "user")
_MACHINE_KEYS = ("address", "gpus", "id", "instance_type", "isolation", "lifecycle", "observed_at",
                 "price_per_hour", "rank", "simulated_gpus", "state", "zone")
_RUN_KEYS = ("detached", "exit_code", "id", "status")
_GONE_RUN_KEYS = (*_RUN_KEYS, "supervisor_gone")     # a detached run whose supervisor went silent
_BEFORE_MACHINES = itemgetter(*_LEASE_KEYS[:6])
_BEFORE_RUNS = itemgetter(*_LEASE_KEYS[7:10])
_AFTER_RUNS = itemgetter(*_LEASE_KEYS[11:])
_MACHINE_REST = itemgetter(*_MACHINE_KEYS[2:])
_RUN, _GONE_RUN = itemgetter(*_RUN_KEYS), itemgetter(*_GONE_RUN_KEYS)
_LEASE_SET, _MACHINE_SET, _RUN_SET = frozenset(_LEASE_KEYS), frozenset(_MACHINE_KEYS), frozenset(_RUN_KEYS)
_GONE_RUN_SET = frozenset(_GONE_RUN_KEYS)


def dumps_leases(views: list[dict], default=None) -> str:
    """json.dumps({"leases": views}, indent=2, sort_keys=True, default=default)'s text."""
    out: list[str] = []
    write_leases(views, out.append, default)
    return "".join(out)


def write_leases(views: list[dict], write, default=None, block: int = 25) -> None:
    """That text, handed to `write` in pieces of `block` leases: the whole of it for 1,000 leases
    (~1 MB, and as much again in the pieces it is made of) is never in memory at once, and each
    piece reuses the memory the one before it freed (fewer page faults: half the cost here). 25
    leases, not 100: a piece and what it is made of (~150 KB) then stay in the CPU's cache, and its
    first piece takes fewer fresh pages (1,000 leases: ~500 -> ~190 page faults, ~7.0 -> ~6.3 ms)."""
    blocks = _scalars_and_skeletons(views, block)
    if blocks is None:
        from ..models import to_jsonable     # strict JSON: a NaN or infinity in a view is written null
        write(json.dumps({"leases": to_jsonable(views)}, indent=2, sort_keys=True, default=default, allow_nan=False))
        return
    if not blocks:
        write('{\n  "leases": []\n}')
        return
    write('{\n  "leases": [\n    ')
    for i, (skeleton, scalars) in enumerate(blocks):
        encoded = "".join(_encode_lines(scalars, 0))[1:-1].split("\n")
        write(("" if i == 0 else ",\n    ") + skeleton % tuple(encoded))
    write("\n  ]\n}")


def _scalars_and_skeletons(views: list[dict], block: int) -> list[tuple[str, list]] | None:
    """Per `block` leases: their skeleton (a %s per scalar) and their scalars in that order; None
    when a view is not of the known shape or holds a value that is not a plain scalar."""
    blocks: list[tuple[str, list]] = []
    shapes = _shapes
    for first in range(0, len(views), block):
        scalars: list = []
        add, extend = scalars.append, scalars.extend
        skeleton: list[str] = []
        for view in views[first:first + block]:
            if type(view) is not dict or view.keys() != _LEASE_SET:
                return None
            machines, runs = view["machines"], view["runs"]
            if type(machines) is not list or type(runs) is not list:
                return None
            extend(_BEFORE_MACHINES(view))
            slots = []
            for m in machines:
                if type(m) is not dict or m.keys() != _MACHINE_SET or type(m["gpus"]) is not list:
                    return None
                add(m["address"])
                extend(m["gpus"])
                extend(_MACHINE_REST(m))
                slots.append(len(m["gpus"]))
            extend(_BEFORE_RUNS(view))
            gone = []
            for r in runs:
                if type(r) is not dict:
                    return None
                if r.keys() == _RUN_SET:
                    extend(_RUN(r))
                    gone.append(False)
                elif r.keys() == _GONE_RUN_SET:
                    extend(_GONE_RUN(r))
                    gone.append(True)
                else:
                    return None
            extend(_AFTER_RUNS(view))
            shape = (tuple(slots), tuple(gone))
            text = shapes.get(shape)
            if text is None:
                text = shapes[shape] = _lease_skeleton(*shape)
            skeleton.append(text)
        if not set(map(type, scalars)) <= _SCALARS:     # a value json.dumps would indent, or call default for
            return None
        if any(type(v) is float and v - v != 0 for v in scalars):     # NaN or infinity: strict JSON has neither
            scalars = [None if type(v) is float and v - v != 0 else v for v in scalars]
        blocks.append((",\n    ".join(skeleton), scalars))
    return blocks


# -- skeletons: the text of one lease with a %s for each scalar, per shape: (GPU slots per machine,
# whether each run says its supervisor is gone) ------------------------------------------------------
_shapes: dict[tuple, str] = {}
# One JSON text per line: c_make_encoder(markers, default, encoder, indent, key_separator,
# item_separator, sort_keys, skipkeys, allow_nan), as json.dumps calls it but for the separator.
_encode_lines = c_make_encoder(None, None, encode_basestring_ascii, None, ": ", "\n", True, False, True) \
    if c_make_encoder is not None else (lambda values, _: ["[" + "\n".join(json.dumps(v) for v in values) + "]"])


def _members(keys, level: int, values: dict[str, str] | None = None) -> str:
    """`"key": %s` lines of a dict whose members sit at `level`, braces included; `values` gives the
    text of the members that are not scalars."""
    pad = "  " * level
    lines = [f'{encode_basestring_ascii(k)}: {(values or {}).get(k, "%s")}' for k in keys]
    return "{\n" + pad + (",\n" + pad).join(lines) + "\n" + "  " * (level - 1) + "}"


def _list(items: list[str], level: int) -> str:
    if not items:
        return "[]"
    pad = "  " * level
    return "[\n" + pad + (",\n" + pad).join(items) + "\n" + "  " * (level - 1) + "]"


def _lease_skeleton(slots: tuple[int, ...], gone: tuple[bool, ...]) -> str:
    # {"leases": [ {lease members: level 3} ]}; a machine's or run's members: level 5; GPU slots: 6.
    machines = [_members(_MACHINE_KEYS, 5, {"gpus": _list(["%s"] * n, 6)}) for n in slots]
    runs = [_members(_GONE_RUN_KEYS if g else _RUN_KEYS, 5) for g in gone]
    return _members(_LEASE_KEYS, 3, {"machines": _list(machines, 4), "runs": _list(runs, 4)})
