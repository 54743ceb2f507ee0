"""Per-lease Python environments, made on the machine (stdlib only; sent as `python -c`).

    prepare ENV CACHE CODE SETUP [SET]   make the lease's venv at ENV unless it exists; print JSON
                                   (SET: a package-set entry to start from when no entry matches)
    publish ENV CACHE KEY          keep a copy of ENV (after a successful setup) in the cache

Every lease's experiment runs in its own venv of the machine's base interpreter (never fleet's own
virtualenv), so `pip install` in setup cannot touch fleet. `--system-site-packages`: the experiment
still sees what the machine's python has installed system-wide (numpy, torch from the image), only
its own installs go into the lease's venv.

A setup's `pip install -r requirements.txt` costs minutes, so the cache (per host, outside any
lease) holds two kinds of entry: `base-<python>`, a fresh venv (borrowing the base's pip), and
`<key>`, a venv as a successful setup left it, where key hashes the interpreter, the setup command
and the code's requirement files. A lease's venv is a clone of the best entry: files hard-linked
(copied across filesystems), scripts that name the entry's path rewritten to name the lease's.
Setup still runs in the clone; with a cached entry pip finds everything already there.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

MARKER = ".fleet-pyenv.json"
REQUIREMENT_FILES = ("pyproject.toml", "setup.py", "setup.cfg", "environment.yml", "Pipfile.lock", "poetry.lock",
                     "uv.lock")


def base_python() -> str:
    """The interpreter underneath any virtualenv this one runs in (fleet's own on local machines)."""
    base = getattr(sys, "_base_executable", "") or sys.executable
    if sys.prefix != sys.base_prefix and os.path.realpath(base).startswith(os.path.realpath(sys.prefix) + os.sep):
        for name in (f"python{sys.version_info[0]}.{sys.version_info[1]}", "python3"):
            candidate = os.path.join(sys.base_prefix, "bin", name)
            if os.path.exists(candidate):
                return candidate
    return base


def python_key(python: str) -> str:
    return hashlib.sha256(f"{os.path.realpath(python)}\0{sys.version}".encode()).hexdigest()[:16]


def requirements_key(python: str, code: str, setup: str) -> str:
    digest = hashlib.sha256(f"v1\0{python_key(python)}\0{setup}\0".encode())
    names = sorted(n for n in _listdir(code) if n in REQUIREMENT_FILES or (n.startswith("requirements")
                                                                         and n.endswith(".txt")))
    nested = os.path.join(code, "requirements")
    names += sorted(f"requirements/{n}" for n in _listdir(nested) if n.endswith(".txt"))
    for name in names:
        path = os.path.join(code, name)
        if os.path.isfile(path):
            with open(path, "rb") as fh:
                digest.update(name.encode() + b"\0" + hashlib.sha256(fh.read()).digest())
    return digest.hexdigest()[:24]


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []


def _read_marker(env: str) -> dict | None:
    try:
        with open(os.path.join(env, MARKER)) as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _write_marker(env: str, info: dict) -> None:
    tmp = os.path.join(env, MARKER + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(info, fh)
    os.replace(tmp, os.path.join(env, MARKER))


def clone(src: str, dst: str, dst_origin: str) -> None:
    """Copy the venv at src to dst (which will be known as dst_origin): hard links where possible,
    text that names src's origin rewritten (bin/ scripts' shebangs, activate, pyvenv.cfg)."""
    origin = ((_read_marker(src) or {}).get("origin") or src).encode()
    for root, dirs, files in os.walk(src):
        rel = os.path.relpath(root, src)
        out = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(out, exist_ok=True)
        rewrite = rel in (".", "bin")
        for name in list(dirs):
            path = os.path.join(root, name)
            if os.path.islink(path):   # lib64 -> lib: recreate the link, do not descend twice
                os.symlink(os.readlink(path), os.path.join(out, name))
                dirs.remove(name)
        for name in files:
            if name == MARKER:
                continue
            path, target = os.path.join(root, name), os.path.join(out, name)
            if os.path.islink(path):
                link = os.readlink(path)
                if link.encode().startswith(origin + b"/"):
                    link = dst_origin + link[len(origin):]
                os.symlink(link, target)
                continue
            if rewrite:
                with open(path, "rb") as fh:
                    data = fh.read()
                if origin in data:
                    with open(target, "wb") as fh:
                        fh.write(data.replace(origin, dst_origin.encode()))
                    shutil.copymode(path, target)
                    continue
            try:
                os.link(path, target)
            except OSError:
                shutil.copy2(path, target)


PIP_SHIM = """#!/bin/sh
# The machine python's own pip, run by this venv's python: it installs into this venv.
exec "$(dirname "$0")/python" -m pip "$@"
"""


def _make_venv(python: str, base: str) -> None:
    """A venv of `python` seeing its site-packages. Where that python has pip, the venv borrows it
    (a pip run by the venv's python installs into the venv) instead of copying its own in with
    ensurepip, which costs seconds, and tens of them on a loaded machine."""
    def venv(*flags: str) -> subprocess.CompletedProcess:
        shutil.rmtree(base, ignore_errors=True)   # an earlier attempt died half-way
        return subprocess.run([python, "-m", "venv", "--system-site-packages", *flags, base],
                              capture_output=True, text=True)

    find_pip = "import importlib.util, sys; sys.exit(not importlib.util.find_spec('pip'))"
    has_pip = subprocess.run([python, "-c", find_pip], capture_output=True).returncode == 0
    made = venv("--without-pip") if has_pip else venv()
    if made.returncode != 0 and not has_pip:   # no ensurepip either (Debian without python3-venv)
        made = venv("--without-pip")
    if made.returncode != 0:
        raise SystemExit(f"cannot make a virtualenv with {python}: {made.stderr.strip()[-500:]}")
    if has_pip:
        version = f"{sys.version_info[0]}.{sys.version_info[1]}"
        for name in ("pip", "pip3", f"pip{version}"):
            path = os.path.join(base, "bin", name)
            with open(path, "w") as fh:
                fh.write(PIP_SHIM)
            os.chmod(path, 0o755)


def _make_base(cache: str, python: str) -> str:
    """A fresh venv of `python` in the cache, made once per host and interpreter (under a lock)."""
    base = os.path.join(cache, f"base-{python_key(python)}")
    with open(os.path.join(cache, f".lock-{os.path.basename(base)}"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _read_marker(base) is None:
            _make_venv(python, base)
            _write_marker(base, {"origin": base, "python": python, "made_at": time.time()})
    return base


def prepare(env: str, cache: str, code: str, setup: str, prefer: str = "") -> dict:
    python = base_python()
    info = _read_marker(env)
    if info is not None:
        return {**info, "source": "existing"}
    cache = os.path.expanduser(cache)
    os.makedirs(cache, mode=0o700, exist_ok=True)
    key = requirements_key(python, code, setup)
    entry = os.path.join(cache, key)
    if _read_marker(entry) is not None:
        source, src = "cached", entry
    elif prefer and "/" not in prefer and _read_marker(os.path.join(cache, prefer)) is not None:
        # A rerun's recorded package set, kept on this host by any earlier lease that had it
        # (set-<hash>): the exact install then finds every version already there.
        source, src = "cached", os.path.join(cache, prefer)
    else:
        source, src = "fresh", _make_base(cache, python)
    shutil.rmtree(env, ignore_errors=True)   # a clone interrupted before its marker was written
    clone(src, env, env)
    info = {"origin": env, "dir": env, "key": key, "cache": cache, "source": source, "from": src,
            "python": python, "made_at": time.time()}
    _write_marker(env, info)
    return info


def publish(env: str, cache: str, key: str) -> dict:
    cache = os.path.expanduser(cache)
    entry = os.path.join(cache, key)
    if _read_marker(entry) is not None:
        return {"published": False, "entry": entry}
    tmp = f"{entry}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        clone(env, tmp, entry)
        _write_marker(tmp, {"origin": entry, "key": key, "published_at": time.time(), "from": env})
        os.rename(tmp, entry)   # atomic; fails if another machine published the same key first
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        return {"published": False, "entry": entry}
    return {"published": True, "entry": entry}


def main(argv: list[str]) -> int:
    if argv[:1] == ["prepare"] and len(argv) in (5, 6):
        print(json.dumps(prepare(*argv[1:])))
    elif argv[:1] == ["publish"] and len(argv) == 4:
        print(json.dumps(publish(*argv[1:])))
    else:
        print(f"usage: prepare ENV CACHE CODE SETUP [SET] | publish ENV CACHE KEY (got {argv!r})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
