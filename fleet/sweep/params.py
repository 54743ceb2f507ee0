"""Sweep parameters and trials: `--param lr=1e-3,3e-4` or `[sweep.params]`, expanded as a grid or
sampled at random with a seed, and how a trial's values reach its command.

A trial gets its values twice: substituted into the command (`{lr}`) and as environment variables
`FLEET_PARAM_<NAME>` (upper case). Values stay the strings the user wrote, so `1e-3` reaches the
command as `1e-3`, not as Python's rendering of a float.
"""
from __future__ import annotations

import itertools
import random
import re
import shlex
from dataclasses import dataclass

from ..errors import UsageError

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_TRIALS = 10_000


@dataclass(frozen=True)
class Param:
    name: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Trial:
    """One point of the sweep: its index (1-based, stable), name and parameter values."""

    index: int
    params: tuple[tuple[str, str], ...]

    @property
    def name(self) -> str:
        return f"t{self.index:03d}"

    @property
    def values(self) -> dict[str, str]:
        return dict(self.params)

    def env(self) -> dict[str, str]:
        return {f"FLEET_PARAM_{name.upper()}": value for name, value in self.params}

    def command(self, template: str) -> str:
        """A shell command line with `{name}` replaced by the value, quoted for where the placeholder
        stands in the template's shell syntax (sweep/template.py), so the program gets the value as
        written and the shell never runs any of it; `{{` and `}}` stand for literal braces."""
        from .template import render
        return render(template, self._value)

    def command_argv(self, argv: tuple[str, ...]) -> str:
        """A command given as words (`fleet sweep -- python train.py --lr={lr}`): each word
        substituted as it is, then the words quoted for the shell, so a value is always one word's part."""
        from .template import check_reread
        for k, word in enumerate(argv):
            for name in re.findall(r"\{([A-Za-z_][A-Za-z0-9_]*)\}", word.replace("{{", "").replace("}}", "")):
                check_reread(name, self._value(name), list(argv[:k]))
        return shlex.join(self._substitute(word, lambda v: v) for word in argv)

    def _value(self, name: str) -> str:
        if name not in self.values:
            raise UsageError(f"the command uses {{{name}}}, which is not a sweep parameter",
                             hint=f"parameters: {', '.join(self.values) or 'none'}")
        return self.values[name]

    def _substitute(self, template: str, quote) -> str:
        # One pass over the template: a value is never scanned again (a "}}" or control character
        # in it stays as it is).
        def sub(match: re.Match) -> str:
            if match.group(1) is None:
                return match.group(0)[0]     # {{ or }}
            return quote(self._value(match.group(1)))
        return re.sub(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, template)


def parse_param(text: str) -> Param:
    """`name=v1,v2,…` (a value may not contain a comma)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not NAME_RE.match(name):
        raise UsageError(f"--param {text!r}: expected NAME=VALUE[,VALUE…], e.g. lr=1e-3,3e-4")
    values = tuple(v.strip() for v in rest.split(","))
    if not values or any(v == "" for v in values):
        raise UsageError(f"--param {text!r}: a value is empty")
    if len(set(values)) != len(values):
        raise UsageError(f"--param {text!r}: a value is repeated")
    return Param(name, values)


def params_from_table(table: dict) -> list[Param]:
    """`[sweep.params]` as fleet.toml gives it: name = [values…] (numbers or strings)."""
    out = []
    for name, raw in table.items():
        if not NAME_RE.match(str(name)):
            raise UsageError(f"[sweep.params] {name!r} is not a parameter name (letters, digits, _)")
        items = raw if isinstance(raw, list) else [raw]
        if not items or any(isinstance(v, (dict, list, bool)) or v is None for v in items):
            raise UsageError(f"[sweep.params] {name}: expected a list of numbers or strings")
        out.append(Param(str(name), tuple(str(v) for v in items)))
    return out


def merged(from_config: list[Param], from_flags: list[Param]) -> list[Param]:
    """Flags replace a config parameter of the same name; order: config first, then new flags."""
    flags = {p.name: p for p in from_flags}
    if len(flags) != len(from_flags):
        raise UsageError("the same --param is given twice")
    out = [flags.pop(p.name, p) for p in from_config]
    return out + [p for p in from_flags if p.name in flags]


def plan_trials(params: list[Param], *, samples: int | None = None, seed: int | None = None) -> list[Trial]:
    """Every combination (grid), or `samples` combinations drawn at random (without repeats while
    the grid has enough, seeded: the same seed gives the same trials)."""
    if not params:
        raise UsageError("a sweep needs at least one parameter", hint="--param NAME=V1,V2 or [sweep.params]")
    names = [p.name for p in params]
    for p in params:
        if any("\x00" in v for v in p.values):
            raise UsageError(f"parameter {p.name}: a value contains a NUL character (\\u0000), which no command "
                             "line or environment variable can carry")
    envs = [f"FLEET_PARAM_{n.upper()}" for n in names]
    if len(set(envs)) != len(envs):
        clash = next(e for e in envs if envs.count(e) > 1)
        raise UsageError(f"parameters {', '.join(n for n, e in zip(names, envs) if e == clash)} would all be "
                         f"{clash} in the trial's environment", hint="give them names that differ in more than case")
    size = 1
    for p in params:
        size *= len(p.values)
    if samples is None:
        if size > MAX_TRIALS:
            raise UsageError(f"the grid has {size} trials (more than {MAX_TRIALS})", hint="use --samples N")
        combos = list(itertools.product(*(p.values for p in params)))
    else:
        if samples < 1 or samples > MAX_TRIALS:
            raise UsageError(f"--samples must be between 1 and {MAX_TRIALS}")
        rng = random.Random(seed)
        if samples <= size:
            combos = [_nth(params, i) for i in _distinct(rng, size, samples)]
        else:   # more samples than points: with repeats, drawn independently
            combos = [tuple(rng.choice(p.values) for p in params) for _ in range(samples)]
    return [Trial(i + 1, tuple(zip(names, combo))) for i, combo in enumerate(combos)]


def _distinct(rng: random.Random, size: int, k: int) -> list[int]:
    """`k` distinct points of `size`, drawn with `rng`. A space past sys.maxsize (20 parameters of 10
    values: random search's very use) is no range random.sample can take (OverflowError), so there
    they are drawn one by one, a repeat drawn again: with k <= MAX_TRIALS, a repeat is rare."""
    import sys
    if size <= sys.maxsize:
        return rng.sample(range(size), k)
    picks: dict[int, None] = {}
    while len(picks) < k:
        picks[rng.randrange(size)] = None
    return list(picks)


def _nth(params: list[Param], n: int) -> tuple[str, ...]:
    out = []
    for p in reversed(params):
        n, r = divmod(n, len(p.values))
        out.append(p.values[r])
    return tuple(reversed(out))
