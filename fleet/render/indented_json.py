"""`json.dumps(value, indent=2, sort_keys=True)`, byte for byte, in a third of its time.

With an indent, the standard library encodes in pure Python (its C encoder ignores indents), which
was the largest single cost of `fleet status --json` at 1,000 leases (25 ms of ~95). Here every
container whose members are all plain scalars (a run, a list of GPU slots, most dicts) is encoded
by the C encoder, whose item separator carries the newline and that depth's indent; only containers
holding containers are walked in Python. Anything unusual (a key that is not a string, a value of
another type, a subclass) goes to the standard encoder, indented to its depth: structural
newlines are the only raw newlines JSON text has, so shifting them shifts the whole sub-document.
"""
from __future__ import annotations

import json
from json.encoder import c_make_encoder, encode_basestring_ascii as _string

_SCALARS = frozenset((str, int, float, bool, type(None)))
_INDENT = "  "
_CONSTANTS = {None: "null", True: "true", False: "false"}
_encoders: dict[int, object] = {}


def dumps(value, default=None) -> str:
    """`json.dumps(value, indent=2, sort_keys=True, default=default)`, the same text."""
    out: list[str] = []
    _write(value, 0, out, default)
    return "".join(out)


def _flat(level: int):
    """Encodes a container of scalars whose members sit at `level` (as one string)."""
    enc = _encoders.get(level)
    if enc is None:
        if c_make_encoder is None:    # a Python without the C encoder: the same text, slower
            std = json.JSONEncoder(sort_keys=True, separators=(",\n" + _INDENT * level, ": ")).encode
            enc = _encoders[level] = std
        else:
            # No circular-reference markers: scalars only reach it. (default: never called either.)
            c_enc = c_make_encoder(None, None, _string, None, ": ", ",\n" + _INDENT * level, True, False, True)
            enc = _encoders[level] = lambda value: "".join(c_enc(value, 0))
    return enc


def _write(value, level: int, out: list[str], default) -> None:
    kind = type(value)
    if kind is dict:
        if not value:
            out.append("{}")
            return
        inner = "\n" + _INDENT * (level + 1)
        if all(type(k) is str for k in value):
            if all(type(v) in _SCALARS for v in value.values()):
                out.append("{" + inner + _flat(level + 1)(value)[1:-1] + "\n" + _INDENT * level + "}")
                return
            sep = "{" + inner
            for key in sorted(value):
                out.append(sep + _string(key) + ": ")
                sep = "," + inner
                member = value[key]
                if type(member) is str:
                    out.append(_string(member))
                elif member is None or member is True or member is False:
                    out.append(_CONSTANTS[member])
                elif type(member) is int:
                    out.append(int.__repr__(member))
                else:
                    _write(member, level + 1, out, default)
            out.append("\n" + _INDENT * level + "}")
            return
    elif kind is list:
        if not value:
            out.append("[]")
            return
        inner = "\n" + _INDENT * (level + 1)
        if all(type(v) in _SCALARS for v in value):
            out.append("[" + inner + _flat(level + 1)(value)[1:-1] + "\n" + _INDENT * level + "]")
            return
        sep = "[" + inner
        for member in value:
            out.append(sep)
            sep = "," + inner
            _write(member, level + 1, out, default)
        out.append("\n" + _INDENT * level + "]")
        return
    elif kind is str:
        out.append(_string(value))
        return
    elif value is None or value is True or value is False:
        out.append(_CONSTANTS[value])
        return
    elif kind is int or kind is float:
        out.append(_flat(0)([value])[1:-1])
        return
    # Anything else (tuples, non-string keys, other types through `default`): the standard encoder,
    # shifted to this depth.
    text = json.dumps(value, indent=2, sort_keys=True, default=default)
    out.append(text.replace("\n", "\n" + _INDENT * level) if level else text)
