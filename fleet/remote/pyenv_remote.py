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
and the code's requirement files. A lease's venv is a clone of the best entry, scripts that name
the entry's path rewritten to name the lease's. Setup still runs in the clone; with a cached entry
pip finds everything already there.

Nothing of one lease may reach another, so a clone shares no file with the cache: every file is
copied (a reflink where the filesystem has them), never hard-linked, or a lease writing into its
venv in place would write into the entry every later lease starts from. An entry is built beside
its name, sealed read-only and renamed into place, and records a manifest (every path, mode and
sha256); a clone checks each file it reads against it, and an entry that no longer matches
(changed by anything since, a process of the cache's own user included) is discarded, never used.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time

MARKER = ".fleet-pyenv.json"
CHUNK = 1 << 20
FICLONE = 0x40049409
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


class Tampered(Exception):
    """A cache entry's content is not what its manifest recorded when the entry was made."""


def _reflink(src, dst) -> bool:
    try:
        fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        return True
    except OSError:   # ext4, tmpfs, across filesystems: a real copy
        return False


def _copy(path: str, target: str, mode: int, rewrite: tuple[bytes, bytes] | None) -> tuple[str, str]:
    """Copy one file, never sharing its inode ('x': never writing through anything already at
    target); returns the sha256 of the bytes read and of the bytes written."""
    read = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)   # swapped for a link or a fifo: no
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is no longer a regular file")
    with open(fd, "rb") as fh, open(target, "xb") as out:
        if rewrite is not None:   # a small text file that may name the source venv's path
            data = fh.read()
            read.update(data)
            new = data.replace(*rewrite)
            out.write(new)
            written = hashlib.sha256(new).hexdigest() if new != data else read.hexdigest()
        elif _reflink(fh, out):   # copy-on-write (XFS, btrfs): no bytes written; check the clone's
            with open(target, "rb") as back:
                chunk = back.read(CHUNK)
                while chunk:
                    read.update(chunk)
                    chunk = back.read(CHUNK)
            written = read.hexdigest()
        else:
            chunk = fh.read(CHUNK)
            while chunk:
                read.update(chunk)
                out.write(chunk)
                chunk = fh.read(CHUNK)
            written = read.hexdigest()
    os.chmod(target, mode)
    return read.hexdigest(), written


def clone(src: str, dst: str, dst_origin: str, expect: dict | None = None) -> dict:
    """Copy the venv at src to dst (which will be known as dst_origin); text that names src's origin
    is rewritten (bin/ scripts' shebangs, activate, pyvenv.cfg). Real copies, never hard links: a
    lease writing into a file of its venv must not write into the cache entry it came from.

    With `expect` (the manifest recorded when src was made), every file read is checked against it,
    and anything missing, added or altered raises Tampered. Returns dst's manifest:
    {path: "f MODE SHA256" | "l TARGET" | "d"}."""
    origin = ((_read_marker(src) or {}).get("origin") or src).encode()
    made: dict[str, str] = {}
    seen: set[str] = set()

    def check(rel: str, found: str) -> None:
        seen.add(rel)
        if expect is not None and expect.get(rel) != found:
            raise Tampered(f"{rel} is not what the cache entry recorded")

    for root, dirs, files in os.walk(src):
        dirs.sort()
        rel = os.path.relpath(root, src)
        out = os.path.normpath(os.path.join(dst, rel))
        os.makedirs(out, exist_ok=True)
        for name in list(dirs) + sorted(files):
            path, target = os.path.join(root, name), os.path.join(out, name)
            key = os.path.normpath(os.path.join(rel, name))
            if key == MARKER:
                continue
            if os.path.islink(path):   # lib64 -> lib: recreated, not descended twice
                link = os.readlink(path)
                check(key, f"l {link}")
                if link.encode().startswith(origin + b"/"):
                    link = dst_origin + link[len(origin):]
                os.symlink(link, target)
                made[key] = f"l {link}"
                if name in dirs:
                    dirs.remove(name)
            elif name in dirs:
                check(key, "d")
                made[key] = "d"
            elif not stat.S_ISREG(os.lstat(path).st_mode):   # a fifo, a socket: nothing a venv needs
                check(key, "other")
            else:
                mode = os.stat(path).st_mode & 0o777
                if expect is not None:
                    recorded = expect.get(key, "").split(" ")
                    octal = recorded[1:2] and recorded[1] and not set(recorded[1]) - set("01234567")
                    if len(recorded) != 3 or recorded[0] != "f" or not octal:
                        raise Tampered(f"{key} is not what the cache entry recorded")
                    mode = int(recorded[1], 8) & 0o777
                rewrite = (origin, dst_origin.encode()) if rel in (".", "bin") else None
                read, written = _copy(path, target, mode, rewrite)
                check(key, f"f {mode:o} {read}")
                made[key] = f"f {mode:o} {written}"
    if expect is not None and set(expect) - seen:
        raise Tampered(f"{sorted(set(expect) - seen)[0]} is missing from the cache entry")
    return made


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


def _seal(tree: str) -> None:
    """Make a cache entry read-only below its top (which is sealed after its rename): a process of
    another user cannot change it, and even its own user's processes cannot write into it by accident."""
    for root, dirs, files in os.walk(tree, topdown=False):
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, os.stat(path).st_mode & 0o555)
        if root != tree:
            os.chmod(root, 0o555)


def _remove(tree: str) -> None:
    """rmtree that also takes what _seal made read-only."""
    for root, _dirs, _files in os.walk(tree):
        if not os.path.islink(root):
            os.chmod(root, 0o700)
    shutil.rmtree(tree, ignore_errors=True)


def _discard(entry: str) -> None:
    """Take a cache entry out of use at once (a rename), then delete it."""
    trash = f"{os.path.dirname(entry)}/.discarded-{os.path.basename(entry)}-{os.getpid()}-{time.time_ns()}"
    try:
        os.rename(entry, trash)
    except OSError:
        return   # gone already (another lease discarded it)
    _remove(trash)


def _commit(tmp: str, entry: str, info: dict) -> bool:
    """Seal the entry built in tmp and rename it into place in one step; False if one is there already."""
    _write_marker(tmp, info)
    _seal(tmp)
    try:
        os.rename(tmp, entry)   # atomic; fails if another lease put the same entry in place first
    except OSError:
        _remove(tmp)
        return False
    os.chmod(entry, 0o555)
    return True


def _make_base(cache: str, python: str) -> str:
    """A fresh venv of `python` in the cache, made once per host and interpreter (under a lock)."""
    base = os.path.join(cache, f"base-{python_key(python)}")
    with open(os.path.join(cache, f".lock-{os.path.basename(base)}"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not isinstance((_read_marker(base) or {}).get("manifest"), dict):
            _discard(base)   # half made, or made before entries carried a manifest
            tmp = f"{base}.tmp-{os.getpid()}"
            _remove(tmp)
            _make_venv(python, tmp)
            manifest = clone(tmp, f"{tmp}.sealed", f"{tmp}.sealed")
            _remove(tmp)
            _commit(f"{tmp}.sealed", base, {"origin": f"{tmp}.sealed", "python": python, "made_at": time.time(),
                                            "manifest": manifest})
    return base


def _clone_verified(src: str, env: str) -> bool:
    """Clone a cache entry into env if its content is what was recorded when it was made; an entry
    that is not (changed by anything since) is discarded, never used."""
    shutil.rmtree(env, ignore_errors=True)   # a clone interrupted before its marker was written
    manifest = (_read_marker(src) or {}).get("manifest")
    try:
        if not isinstance(manifest, dict) or not all(isinstance(v, str) for v in manifest.values()):
            raise Tampered("no manifest")
        clone(src, env, env, expect=manifest)
        return True
    except Tampered:
        shutil.rmtree(env, ignore_errors=True)
        _discard(src)
    except OSError:   # discarded by another lease while this one read it
        shutil.rmtree(env, ignore_errors=True)
    return False


def _own_private_dir(path: str) -> None:
    """The host's venv cache is trusted (its entries become every lease's environment): it must be
    this user's own directory, not a link, writable by no one else. In a shared workdir (a team's
    /scratch/fleet) another user could otherwise have made it first and planted an entry."""
    import stat
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise SystemExit("fleet: the venv cache %s is not this user's private directory (owner uid %d, mode %04o): "
                         "refusing to use it" % (path, st.st_uid, stat.S_IMODE(st.st_mode)))


def prepare(env: str, cache: str, code: str, setup: str, prefer: str = "") -> dict:
    python = base_python()
    info = _read_marker(env)
    if info is not None:
        return {**info, "source": "existing"}
    cache = os.path.expanduser(cache)
    os.makedirs(cache, mode=0o700, exist_ok=True)
    _own_private_dir(cache)
    key = requirements_key(python, code, setup)
    candidates = [os.path.join(cache, key)]
    if prefer and "/" not in prefer:
        # A rerun's recorded package set, kept on this host by any earlier lease that had it
        # (set-<hash>): the exact install then finds every version already there.
        candidates.append(os.path.join(cache, prefer))
    discarded = []
    for src in candidates:
        if _read_marker(src) is not None:
            if _clone_verified(src, env):
                source = "cached"
                break
            discarded.append(os.path.basename(src))
    else:
        source = "fresh"
        for _attempt in range(3):
            src = _make_base(cache, python)
            if _clone_verified(src, env):
                break
            discarded.append(os.path.basename(src))
        else:
            raise SystemExit(f"cannot make a virtualenv: the cache entry {src} keeps changing as it is read")
    info = {"origin": env, "dir": env, "key": key, "cache": cache, "source": source, "from": src,
            "python": python, "made_at": time.time(), "discarded": discarded}
    _write_marker(env, info)
    return info


def publish(env: str, cache: str, key: str) -> dict:
    """Keep a copy of env in the cache: built beside the entry, then sealed and renamed into place."""
    cache = os.path.expanduser(cache)
    entry = os.path.join(cache, key)
    if _read_marker(entry) is not None:
        return {"published": False, "entry": entry}
    tmp = f"{entry}.tmp-{os.getpid()}"
    _remove(tmp)
    try:
        manifest = clone(env, tmp, entry)
        published = _commit(tmp, entry, {"origin": entry, "key": key, "published_at": time.time(), "from": env,
                                         "manifest": manifest})
    except OSError:
        _remove(tmp)
        published = False
    return {"published": published, "entry": entry}


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
