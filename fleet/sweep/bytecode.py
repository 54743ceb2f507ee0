"""Byte code on a warm pool's machines: compiled once before the first trial, never written by a trial.

Python loads a module's `__pycache__/*.pyc` instead of its source whenever the file's header matches
the source's mtime and size, so a .pyc a trial planted in the venv's site-packages or in the staged
code (whose copies each later trial runs) would run in every later trial on that machine. The
reset's check therefore reads `__pycache__` like any other entry (trial_env.py), and for that to
hold no legitimate import may write there: after setup (whose own writes stay the user's), the
pool compiles the venv and the code with the venv's own interpreter, so the byte code matches what
the trials import, and every trial runs with PYTHONDONTWRITEBYTECODE=1. A trial that writes byte
code all the same (it cleared that variable, or called py_compile) changed the machine, and is
named for it like any other change.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models import Lease, Machine
    from ..run.context import RunContext

# Set last in every trial's environment: a value from fleet.toml must not bring the writes back.
TRIAL_ENV = {"PYTHONDONTWRITEBYTECODE": "1"}

LIMIT_S = 600     # compiling an uncompiled environment (uv installs none) of torch's size takes a minute or two

# Run by the venv's interpreter with -S (no .pth file of the venv runs); the arguments: what to compile.
# compileall's own check first, serially (what is compiled already costs a stat and 16 bytes), then
# what is stale on every core when there is much of it: a process pool's start costs more than an
# already compiled venv's whole pass. A file that does not compile (Python 2 test data in a package)
# is skipped quietly, as Python skips it on import.
_COMPILE = r"""
import compileall, importlib.util, os, struct, sys

def stale(path):
    try:
        st = os.stat(path)
        with open(importlib.util.cache_from_source(path), "rb") as fh:
            head = fh.read(16)
    except (OSError, ValueError):
        return True
    return head != importlib.util.MAGIC_NUMBER + struct.pack("<III", 0, int(st.st_mtime) & 0xFFFFFFFF,
                                                                 st.st_size & 0xFFFFFFFF)

# An explicit stack, not os.walk (before Python 3.12 it recurses once per level, and code can hold a
# tree deeper than the stack); no link to a directory is entered, as os.walk enters none.
todo, dirs = [], list(sys.argv[1:])
while dirs:
    try:
        with os.scandir(dirs.pop()) as it:
            entries = list(it)
    except OSError:
        continue
    for e in entries:
        if e.is_dir(follow_symlinks=False):
            if e.name != "__pycache__":
                dirs.append(e.path)
        elif e.name.endswith(".py") and e.is_file() and stale(e.path):
            todo.append(e.path)
cores = os.cpu_count() or 1
if len(todo) < 200 or cores < 2:
    for p in todo:
        compileall.compile_file(p, quiet=2)
else:
    import functools, multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("fork")) as pool:
        list(pool.map(functools.partial(compileall.compile_file, quiet=2), todo, chunksize=16))
"""
# `timeout` ends the workers too (its process group); without it the caller's deadline still bounds the wait.
_LIMITED = 'L=$1; shift; command -v timeout >/dev/null 2>&1 && exec timeout -k 10 "$L" "$@"; exec "$@"'


def precompile(lease: Lease, machine: Machine) -> str | None:
    """Compile the venv (its site-packages) and the staged code on the machine; None when done, else
    why not (trials there still write nothing: only their imports are slower)."""
    from ..remote.ssh import connect
    from .trial_env import env_paths
    venv, code, _ = env_paths(lease, machine)
    python = f"{venv}/bin/python" if venv else machine.python
    argv = ["sh", "-c", _LIMITED, "precompile", str(LIMIT_S), python, "-I", "-S", "-c", _COMPILE,
            *([venv] if venv else []), code]
    try:
        with connect(machine, timeout=30) as s:
            result = s.run(argv, check=False, timeout=LIMIT_S + 30, deadline_s=LIMIT_S + 30,
                           max_output_bytes=64 * 1024)
    except Exception as exc:  # noqa: BLE001 — not compiled: slower trials, not wrong ones
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if result.exit_code == 0:
        return None
    if result.exit_code in (124, 137):
        return f"it took over {LIMIT_S}s"
    detail = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return f"exit {result.exit_code}" + (f": {detail[-1][:200]}" if detail else "")


def precompile_all(ctx: RunContext, lease: Lease) -> None:
    """Every machine's byte code, before the pool reads the state the resets compare with."""
    from ..parallel import parallel
    ctx.events.phase("environment", f"compiling byte code (the venv, the code) on {len(lease.machines)} machine(s)")
    for m, why in zip(lease.machines, parallel(lease.machines, lambda m: precompile(lease, m))):
        if why is not None:
            ctx.events.warn(f"machine {m.id}: could not compile the byte code before the first trial ({why}); "
                            "trials there compile what they import each time")
