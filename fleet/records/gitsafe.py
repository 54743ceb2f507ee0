"""git, run in a repository whose own configuration may be its author's, not the user's.

A repository handed over with its `.git` (a tarball, a shared disk, a zip of a checkout) brings its
`.git/config` and `.git/hooks`, and git runs the commands they name on this computer: `core.fsmonitor`
on every `git status`, the `post-index-change` hook when an index is written (the smudge's
`read-tree`), a `filter.<x>.clean/smudge/process` on `status` and `checkout-index`, and a partial
clone's lazy fetch runs `remote.<x>.uploadpack` or `core.sshCommand` on a `cat-file` of an object
it lacks. git's `safe.directory` does not help: the files are the user's own once unpacked. So
every git command fleet runs to pin the code overrides these on its command line (which outranks
any config file), and a filter driver is run only as the user's global or system config defines it.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

from ..errors import EnvironmentProblem

# `-c` settings that outrank the repository's config; they reach the git processes git starts
# itself (GIT_CONFIG_PARAMETERS), submodules' included.
_OVERRIDES = ("core.fsmonitor=false", f"core.hooksPath={os.devnull}", "status.submoduleSummary=false",
              "protocol.allow=never", *(f"protocol.{p}.allow=never" for p in ("file", "git", "ssh", "http",
                                                                                  "https", "ext", "fd")))
ENV = {"GIT_OPTIONAL_LOCKS": "0", "LC_ALL": "C", "GIT_NO_LAZY_FETCH": "1", "GIT_TERMINAL_PROMPT": "0"}
_REPO_SCOPES = ("local", "worktree")
_DRIVER_KEYS = ("clean", "smudge", "process", "required")


def _filter_config(root: Path) -> tuple[set[tuple[str, str]], dict[tuple[str, str], str]]:
    """The (name, key) of the filter driver settings the repository's own config (or a file it
    includes) sets, and those the user's own config (global, system, command line) gives, by (name, key)."""
    res = subprocess.run(["git", "config", "--show-scope", "-z", "--get-regexp", r"^filter\."], cwd=root,
                         capture_output=True, env={**os.environ, **ENV})
    names, users = set(), {}
    fields = res.stdout.split(b"\0")
    for scope, entry in zip(fields[0::2], fields[1::2]):    # scope NUL key LF value NUL
        key, _, value = entry.decode(errors="surrogateescape").partition("\n")
        if key.count(".") < 2:
            continue
        name, setting = key[len("filter."):key.rindex(".")], key[key.rindex(".") + 1:]
        if scope.decode(errors="replace") in _REPO_SCOPES:
            names.add((name, setting))
        elif setting in _DRIVER_KEYS:
            users[(name, setting)] = value
    return names, users


def repo_filters(root: Path) -> set[str]:
    """Names of the filter drivers the repository's own config sets and the user's does not define
    (no smudge or process of theirs): git applies none of them."""
    names, users = _filter_config(root)
    return {n for n, _k in names if not any((n, k) in users for k in ("smudge", "process"))}


def argv(root: Path, args: list[str]) -> list[str]:
    """The git command line for `args` in `root` with the repository's command-running settings
    overridden; a filter driver its own config sets is run as the user's config defines it (`git lfs
    install --local` writes the same driver into the repository), or not at all. Only the settings
    the repository makes are overridden: an empty `process` would also stop the user's own `smudge`."""
    names, users = _filter_config(root)
    drivers = [f"filter.{n}.{k}={users.get((n, k), 'false' if k == 'required' else '')}"
               for n, k in sorted(names) if k in _DRIVER_KEYS]
    return ["git", *(a for o in (*_OVERRIDES, *drivers) for a in ("-c", o)), *args]


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, **ENV, **extra}


def run(root: Path, args: list[str], *, binary: bool = False, **kw) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv(root, args), cwd=root, capture_output=True, text=not binary, check=False,
                              env=env(), **kw)
    except FileNotFoundError:
        raise EnvironmentProblem("git is not installed", hint="install git, or run outside a repository") from None
