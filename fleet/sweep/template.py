"""A sweep's shell command template with `{name}` placeholders, each replaced by its value quoted for
the place it stands in, so the shell that runs the line (`sh -c`: dash or bash) hands the program the
value as written and never runs any of it.

Where a placeholder stands is found by a small scan of the template's own shell syntax: quotes
('…', "…", $'…'), command substitutions ($(…) and `…`, each with quotes of its own: `"$(echo "{v}")"`
has the value inside the inner double quotes), comments (a line break in a value would end one and
run the rest) and here-documents (whose body is neither quoted nor unquoted text, and which a line
in a value could end early). A placeholder in a here-document body, or where dash and bash read the
quotes differently (after `\\'` inside `$'…'`), is refused with one line: there the value's
environment variable (`$FLEET_PARAM_NAME`) is the safe way to use it. So is a value other than a
plain word (letters, digits, `_@%+=:,./-`) in the script of a shell the line starts (`bash -c "…"`,
`sh -c`, `eval`): that shell reads the value again, where it ran or split into words.
"""
from __future__ import annotations

import re
import shlex
from typing import Callable

from ..errors import UsageError

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_WORD_START = " \t\n;&|()"
_SHELLS = {"sh", "bash", "dash", "zsh", "ksh", "ash", "mksh", "busybox"}
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]*\Z")


class _Level:
    """The template at one nesting: the whole line, or inside one $(…) or `…`."""

    def __init__(self, kind: str, start: int = 0):
        self.kind, self.quote, self.parens = kind, None, 0    # quote: None, "'", '"' or "$'"
        self.cases = 0                    # open `case … esac`: its patterns' ")" closes nothing
        self.command = self.word = start  # where the current simple command and its current word begin


def check_reread(name: str, value: str, words_before: list[str]) -> None:
    """Refuses a value that is not a plain word where a shell the command starts reads it again as
    code: in the script after `sh -c` (bash, zsh …; `-lc`, `-ec` alike), or anywhere after `eval`.
    Its quoting was for the outer shell only: `bash -c "train --name {v}"` gave train two words for
    "my run", and ran `$(…)`."""
    if _PLAIN.match(value):
        return
    names = [w.rsplit("/", 1)[-1] for w in words_before]
    shell = next((n for k, n in enumerate(names[:-1]) if n in _SHELLS and _options_only(words_before[k + 1:-1])),
                 None) if names and re.fullmatch(r"-[A-Za-z]*c[A-Za-z]*", names[-1]) else None
    # eval is a builtin: it reads code only as the command itself (after assignments, `command`,
    # `builtin`), not as an argument (`python main.py eval --name "{v}"`, `--split eval`).
    lead = next((n for n in names if not re.match(r"[A-Za-z_][A-Za-z0-9_]*=", n) and n not in ("command", "builtin")),
                None)
    if shell or lead == "eval":
        raise UsageError(f"the command's {{{name}}} stands in a script that {shell or 'eval'} "
                         f"reads again as shell code, where its value {value!r} would not stay one word",
                         hint=f"use \"$FLEET_PARAM_{name.upper()}\" in that script instead")


def _options_only(words: list[str]) -> bool:
    """Words between a shell and its -c that are the shell's options (`-e`, `+x`, `-o pipefail`): after
    an operand (`bash train.sh -c {v}`) that -c is the script's own argument, which no shell reads."""
    k = 0
    while k < len(words):
        if not words[k][:1] in ("-", "+") or words[k] in ("-", "--"):
            return False
        k += 2 if words[k] in ("-o", "+o", "-O", "+O") else 1
    return True


def _words(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:      # not a line shlex reads (an open quote it cannot place): no shell found
        return []


def render(template: str, value: Callable[[str], str]) -> str:
    out: list[str] = []
    levels = [_Level("line")]
    comment = False
    unclear = False                  # after `\'` in $'…': dash and bash disagree on the quotes from here
    heredocs: list[tuple[str, bool]] = []     # delimiters whose bodies start at the next line break
    i = 0
    while i < len(template):
        top = levels[-1]
        if template.startswith(("{{", "}}"), i):
            out.append(template[i])
            i += 2
            continue
        if not comment and top.quote is None and (i == 0 or template[i - 1] in _WORD_START) \
                and template[i] not in " \t\n":
            top.word = i
        placeholder = _PLACEHOLDER.match(template, i)
        if placeholder:
            name = placeholder.group(1)
            check_reread(name, value(name), _words(template[top.command:top.word]) if top.word >= top.command else [])
            if unclear or top.quote == "$'":
                raise UsageError(f"the command's {{{name}}} stands inside $'…' quotes, which sh and bash read "
                                 "differently, so no quoting of its value is safe in both",
                                 hint=f"use \"$FLEET_PARAM_{name.upper()}\" there instead")
            if template[i - 1:i] == "$" and template[i - 2:i - 1] != "\\" and out and out[-1].endswith("$"):
                # `${name}` is the value too: the $ left in front would make the shell expand it again
                # (`$1e-3` is $1, then e-3) or, before a quoted value, read bash's $'…' escapes.
                out[-1] = out[-1][:-1]
                if "".join(out[-2:]).endswith("$") and not "".join(out[-2:]).endswith("\\$"):
                    raise UsageError(f"the command's {{{name}}} follows `$$`, which the shell would read "
                                     "together with the value", hint=f"use \"$FLEET_PARAM_{name.upper()}\" there")
            text = _quoted_for(top.quote, value(name))
            for _ in range(sum(level.kind == "`" for level in levels)):
                text = re.sub(r"([\\$`])", r"\\\1", text)   # `…` drops one backslash before these first
            out.append(text.replace("\n", " ") if comment else text)     # a line break would end the comment
            i = placeholder.end()
            continue
        c = template[i]
        if comment:
            comment = c != "\n"
        elif c == "\\":
            if top.quote == "$'" and template.startswith("'", i + 1):
                unclear = True
            if top.quote != "'":              # an escaped character is taken as it is
                out.append(template[i:i + 2])
                i += 2
                continue
        elif c == "`" and top.kind == "`":    # old-style substitution ends at the next backtick, quoted or not
            levels.pop()
        elif top.quote in ("'", "$'"):
            top.quote = None if c == "'" else top.quote
        elif c == '"':
            top.quote = None if top.quote else '"'
        elif template.startswith("$(", i):
            levels.append(_Level("$(", i + 2))
            out.append("$(")
            i += 2
            continue
        elif c == "`":
            levels.append(_Level("`", i + 1))
        elif top.quote is None:
            if c == "'":
                top.quote = "$'" if i and template[i - 1] == "$" else "'"
            elif c == "(":
                top.parens += 1
                top.command = i + 1
            elif c == ")":
                if top.parens:
                    top.parens -= 1
                elif top.kind == "$(" and not top.cases:
                    levels.pop()
            elif _word(template, i, "case"):
                top.cases += 1
            elif _word(template, i, "esac"):
                top.cases = max(0, top.cases - 1)
            elif c == "#" and (i == 0 or template[i - 1] in _WORD_START):
                comment = True
            elif template.startswith("<<", i) and not template.startswith("<<<", i):
                heredocs.append(_delimiter(template, i + 2))
                out.append("<<")
                i += 2
                continue
            elif c == "\n" and heredocs:
                out.append(c)
                i = _skip_bodies(template, i + 1, heredocs, out)
                heredocs = []
                continue
            elif c in ";&|\n":
                top.command = i + 1
        if c == "\n" and heredocs and not comment and levels[-1].quote is None:
            out.append(c)                     # a line break that ended a comment
            i = _skip_bodies(template, i + 1, heredocs, out)
            heredocs = []
            continue
        out.append(c)
        i += 1
    return "".join(out)


def _word(template: str, i: int, word: str) -> bool:
    return template.startswith(word, i) and (i == 0 or template[i - 1] in _WORD_START) and \
        template[i + len(word):i + len(word) + 1] in ("", *_WORD_START)


def _delimiter(template: str, i: int) -> tuple[str, bool]:
    """The here-document's end word after `<<` (its quotes removed) and whether `<<-` strips tabs."""
    strip = template.startswith("-", i)
    i += strip
    while i < len(template) and template[i] in " \t":
        i += 1
    word = re.match(r"[^\s;&|<>()]*", template[i:]).group(0)
    return re.sub(r"[\\'\"]", "", word), strip


def _skip_bodies(template: str, i: int, heredocs: list[tuple[str, bool]], out: list[str]) -> int:
    """Copy the here-document bodies starting at i, refusing a placeholder in one; returns where the
    line after the last body starts."""
    for word, strip in heredocs:
        while i < len(template):
            end = template.find("\n", i)
            end = len(template) if end < 0 else end + 1
            line = template[i:end]
            found = _PLACEHOLDER.search(line.replace("{{", "").replace("}}", ""))
            if found:
                raise UsageError(f"the command's {{{found.group(1)}}} stands inside a here-document, where a "
                                 "value's lines could end it early and no quoting applies",
                                 hint=f"use $FLEET_PARAM_{found.group(1).upper()} there instead")
            out.append(line.replace("{{", "{").replace("}}", "}"))
            i = end
            if (line.rstrip("\n").lstrip("\t") if strip else line.rstrip("\n")) == word:
                break
    return i


def _quoted_for(quote: str | None, value: str) -> str:
    if quote == "'":      # close, the value quoted on its own, reopen
        return "'" + shlex.quote(value) + "'"
    if quote == '"':      # inside double quotes only these four keep a meaning
        return re.sub(r'([\\"$`])', r"\\\1", value)
    return shlex.quote(value)
