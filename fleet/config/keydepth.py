"""A bound on dotted keys, checked before tomllib reads a fleet.toml.

tomllib's time grows with the square of a dotted key's parts: a 100 KB line `a.a.a… = 1` kept
`fleet up` parsing for minutes. No fleet.toml needs a key of more than a few parts, so a key (at a
line's start, in a table header, or in an inline table) of more than MAX_KEY_PARTS is refused. The
file is read as tokens (strings, comments and the few characters that shape keys): dots inside a
string, a comment or a value are never key parts.
"""
from __future__ import annotations

import re

from ..errors import ConfigError

MAX_KEY_PARTS = 128

_TOKEN = re.compile(r'"""(?:\\.|[^\\])*?"""|\'\'\'.*?\'\'\'|"(?:\\.|[^"\\\n])*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}=,.\n]',
                    re.S)


def check_key_depth(text: str, shown: str) -> None:
    """Raise ConfigError at the line of the first key of more than MAX_KEY_PARTS dotted parts."""
    if text.count(".") <= MAX_KEY_PARTS:
        return
    line, stack = 1, []            # stack: "[" an array, "{" an inline table (their keys count)
    expect_key, header, dots = True, False, 0
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token == "\n":
            line += 1
            if not stack:
                expect_key, header, dots = True, False, 0
        elif token == ".":
            if expect_key or header:
                dots += 1
                if dots > MAX_KEY_PARTS:
                    raise ConfigError(f"a key of more than {MAX_KEY_PARTS} dotted parts", path=shown, line=line)
        elif token == "=":
            expect_key, dots = False, 0
        elif token == "[":
            if header or (expect_key and not stack):
                header = True
            else:
                stack.append("[")
        elif token == "]":
            if header:
                expect_key = False
                if match.end() >= len(text) or text[match.end()] != "]":
                    header, dots = False, 0
            elif stack and stack[-1] == "[":
                stack.pop()
        elif token == "{":
            stack.append("{")
            expect_key, dots = True, 0
        elif token == "}":
            if stack and stack[-1] == "{":
                stack.pop()
            expect_key = False
        elif token == ",":
            if stack and stack[-1] == "{":
                expect_key, dots = True, 0
        else:                          # a string (a quoted key part, or a value) or a comment
            line += token.count("\n") if token[0] != "#" else 0
