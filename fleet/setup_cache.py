"""Setup caching: a setup that would install nothing is not run.

A lease's venv starts as a clone of the host's cache entry for its setup (fleet/python_env.py), so
on a warm host the packages are already there, and running the setup again only costs pip's
start-up to say "already satisfied". It is skipped when, on every machine of the lease:

- the setup is install-only: every command is `pip install` (pip3, python -m pip, uv pip) of
  requirement files, constraints, local wheel directories or pinned `name==version` packages (or
  names with `--no-index`, found only in hashed local directories). Anything else always runs;
- the venv carries the marker a successful run of exactly this setup text wrote, made from exactly
  the same contents of the files it names (and the files those name: -r, -c, --find-links lines);
- the venv's package set (fleet/environment's hash) is the one that setup left.

`[setup] always = true` in fleet.toml, or `fleet up --no-setup-cache`, runs it regardless.
"""
from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass

from .models import Lease, Machine

PIP_FLAGS = {"-U", "--upgrade", "-q", "--quiet", "-qq", "-v", "--no-index", "--no-deps", "--prefer-binary",
             "--no-cache-dir", "--disable-pip-version-check", "--no-input", "--require-hashes",
             "--force-reinstall", "--ignore-installed", "--no-build-isolation", "--system"}
PIP_VALUED = {"-i", "--index-url", "--extra-index-url", "--only-binary", "--no-binary", "--upgrade-strategy",
              "--progress-bar", "--python", "-p"}
FILE_OPTIONS = {"-r": "r", "--requirement": "r", "-c": "c", "--constraint": "c", "-f": "f", "--find-links": "f"}
PINNED_OPS = ("==", "===")
SHELL_SPECIAL = set("$`*?~<>|&(){}!\\")   # after quotes are removed: expansions, redirections, pipes


@dataclass(frozen=True)
class InstallOnly:
    setup: str
    files: tuple[str, ...]     # KIND:PATH (r requirements, c constraints, f find-links, w a wheel file)


def install_only(setup: str) -> InstallOnly | None:
    """The files an install-only setup names; None when any command is something else."""
    try:
        lex = shlex.shlex(setup.replace("\n", " ; "), posix=True, punctuation_chars=";&|<>()")
        lex.whitespace_split = True
        tokens = list(lex)
    except ValueError:
        return None
    commands: list[list[str]] = [[]]
    for tok in tokens:
        if tok in (";", "&&"):
            commands.append([])
        elif set(tok) & SHELL_SPECIAL:
            return None
        else:
            commands[-1].append(tok)
    files: list[str] = []
    for argv in (c for c in commands if c):
        args = _pip_install_args(argv)
        if args is None:
            return None
        named = _named_files(args)
        if named is None:
            return None
        files += named
    return InstallOnly(setup, tuple(files)) if any(c for c in commands) else None


def _pip_install_args(argv: list[str]) -> list[str] | None:
    head = argv[0].rsplit("/", 1)[-1]
    if head.startswith("pip") and argv[1:2] == ["install"]:
        return argv[2:]
    if head.startswith("python") and argv[1:4] == ["-m", "pip", "install"]:
        return argv[4:]
    if head == "uv" and argv[1:3] == ["pip", "install"]:
        return argv[3:]
    return None


def _named_files(args: list[str]) -> list[str] | None:
    files: list[str] = []
    names: list[str] = []
    offline = "--no-index" in args
    i = 0
    while i < len(args):
        arg = args[i]
        opt, eq, val = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if opt in FILE_OPTIONS:
            value = val if eq else (args[i + 1] if i + 1 < len(args) else None)
            if value is None or "://" in value:
                return None
            files.append(f"{FILE_OPTIONS[opt]}:{value}")
            i += 1 if eq else 2
        elif opt in PIP_VALUED:
            i += 1 if eq else 2
        elif arg in PIP_FLAGS:
            i += 1
        elif arg.startswith("-"):
            return None            # an option we cannot vouch for (-e, --pre, --target, ...)
        elif arg.endswith(".whl") and "://" not in arg:
            files.append(f"w:{arg}")
            i += 1
        elif "/" in arg or arg in (".", ".."):
            return None            # a local project: its code changes without any file we hash
        else:
            names.append(arg)
            i += 1
    if not offline and not all(any(op in n for op in PINNED_OPS) for n in names):
        return None                # an unpinned name from an index: what it installs changes by the day
    return files


def setup_digest(spec: InstallOnly, files: dict[str, str | None]) -> str:
    h = hashlib.sha256(f"fleet-setup v1\0{spec.setup}\0".encode())
    for name in sorted(files):
        h.update(f"{name}\0{files[name]}\n".encode())
    return h.hexdigest()


@dataclass(frozen=True)
class SetupState:
    digest: str               # this setup text and the files it names, as they are now
    packages_hash: str        # the venv's package set now
    marker: dict | None       # what the venv's last successful setup wrote
    uncacheable: str = ""

    @property
    def done_before(self) -> bool:
        return (not self.uncacheable and self.marker is not None and self.marker.get("setup") == self.digest
                and self.marker.get("packages") == self.packages_hash)


def _state(lease: Lease, machine: Machine, spec: InstallOnly) -> SetupState:
    from .environment.capture import run_probe
    from .environment.model import Package, package_set_hash
    from .stage import code_dir
    got = run_probe(lease, machine, "setup-state", code_dir(machine), *spec.files)
    packages = [Package(p["name"], p["version"], p["sha256"]) for p in got.get("packages") or ()]
    files = got.get("files") or {}
    missing = next((f for f, h in files.items() if h is None), None)
    why = got.get("uncacheable") or (f"{missing.partition(':')[2]} does not exist" if missing else "")
    return SetupState(setup_digest(spec, files), package_set_hash(packages), got.get("marker"), why)


def skip_reason(ctx, lease: Lease, setup: str) -> str | None:
    """The line that says why setup is skipped, or None: it runs."""
    if ctx.config.setup_always or not lease.machines:
        return None
    spec = install_only(setup)
    if spec is None:
        return None
    from .lease_prepare import prepare_lease
    from .parallel import parallel
    prepare_lease(ctx, lease)
    try:
        states = [s for _, s in parallel(lease.machines, lambda m: (m.id, _state(lease, m, spec)))]
    except Exception as exc:  # noqa: BLE001 — not knowing is a reason to run it, never to fail
        ctx.events.warn(f"setup cache: could not check the machines ({exc}); running setup")
        return None
    if not all(s.done_before for s in states):
        return None
    sets = sorted({s.packages_hash[:12] for s in states})
    return f"skipped, this venv was built by the same setup from the same files (set {', '.join(sets)})"


def mark_done(ctx, lease: Lease, setup: str) -> None:
    """After a successful setup: each venv says which setup, from which files, left which package set
    (before the venv is published to the host's cache, so the next lease's clone carries it)."""
    spec = install_only(setup)
    if spec is None or not lease.machines:
        return
    from .environment.capture import run_probe
    from .parallel import parallel

    def mark(m: Machine) -> tuple[str, None]:
        state = _state(lease, m, spec)
        if not state.uncacheable:
            run_probe(lease, m, "setup-mark", json.dumps({"setup": state.digest, "packages": state.packages_hash}))
        return m.id, None
    try:
        parallel(lease.machines, mark)
    except Exception as exc:  # noqa: BLE001 — the next lease runs setup again: slower, not wrong
        ctx.events.warn(f"setup cache: could not mark the venvs ({exc})")
