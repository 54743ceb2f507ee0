"""What a machine is, asked on the machine (stdlib only; sent as `python -c`, run by the lease's venv).

    probe CODE              print JSON: kernel, OS, GPUs (NVML, else nvidia-smi, else none), Python,
                            the venv's own packages with content hashes, the project's lock files
    pack OUT NAME...        repack those installed distributions into wheels in OUT (deterministic
                            bytes), so the package set can go into the store and be installed offline
    install-pinned DIR      a rerun: install again, forced and offline, each wheel of DIR (the recorded
                            set, DIR/constraints.txt) whose package is missing here or differs in
                            version or content; a warm venv that holds the set runs no pip at all
    setup-state CODE KIND:PATH...   the venv's packages, the setup marker it carries, and a hash of
                            each file or directory an install-only setup names (fleet/setup_cache.py)
    setup-mark JSON         write the setup marker into the venv (after a setup succeeded)

It reads no environment variable and prints no path: nothing secret or lease-specific can reach the
record through it. One short process: the whole probe costs tens of milliseconds.
"""
from __future__ import annotations

import sys

# Run as `python -c` from the login's home, where runs write: '' first on sys.path would import a planted
# json.py into the probe that pins the environment. Not -I: it leaves the user's site-packages unrecorded.
sys.path[:] = [p for p in sys.path if p not in ("", ".")]

import base64  # noqa: E402 — after the path is made safe
import csv
import ctypes
import hashlib
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sysconfig
import zipfile

LOCK_FILES = ("uv.lock", "poetry.lock", "Pipfile.lock", "pdm.lock", "environment.yml", "conda-lock.yml",
              "conda-spec.txt", "pyproject.toml")
# What an install adds that the wheel did not carry: never part of a package's identity.
BOOKKEEPING = ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json")
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def site_packages() -> str:
    return sysconfig.get_paths()["purelib"]


def _dist_infos(site: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(site) if n.endswith(".dist-info"))
    except OSError:
        return []


def _metadata(dist_info: str) -> tuple[str, str]:
    with open(os.path.join(dist_info, "METADATA"), encoding="utf-8", errors="replace") as fh:
        return _name_version(fh)


def _name_version(lines) -> tuple[str, str]:
    name = version = ""
    for line in lines:
        if not line.strip():
            break
        if line.startswith("Name:"):
            name = line[5:].strip()
        elif line.startswith("Version:"):
            version = line[8:].strip()
    return name, version


def _counts(path: str, dist_info: str) -> bool:
    """Whether a RECORD row is part of the package's identity."""
    if path.startswith(("../", "/")) or path.endswith(".pyc") or "__pycache__/" in path:
        return False   # scripts (their shebang names the venv) and byte code differ per install
    return not (path.startswith(dist_info + "/") and path.rsplit("/", 1)[-1] in BOOKKEEPING)


def _editable(site: str, dist_info: str) -> bool:
    try:
        with open(os.path.join(site, dist_info, "direct_url.json"), encoding="utf-8") as fh:
            return bool(json.load(fh).get("dir_info", {}).get("editable"))
    except (OSError, ValueError, AttributeError):
        return False


def _content_files(site: str, dist_info: str) -> list[tuple[str, str]]:
    """(path relative to site-packages, "sha256=…") of the files the wheel put there, as RECORD says.
    An editable install's path hooks (`__editable__…`, its .pth) name the source directory, which
    holds the lease's id on a team host or a local machine: left out, or no rerun would match."""
    out = []
    editable = _editable(site, dist_info)
    with open(os.path.join(site, dist_info, "RECORD"), newline="", encoding="utf-8") as fh:
        for row in csv.reader(fh):
            if not row or not _counts(row[0], dist_info):
                continue
            if editable and (row[0].endswith(".pth") or row[0].rsplit("/", 1)[-1].startswith("__editable__")):
                continue
            # The hash pip recorded while installing (it checked it against the wheel's): reading
            # one small file per package keeps the probe cheap even for torch's thousands of files.
            out.append((row[0], row[1] if len(row) > 1 and row[1] else _file_hash(os.path.join(site, row[0]))))
    return sorted(out)


def _digest(files: list[tuple[str, str]]) -> str:
    return hashlib.sha256("\n".join(f"{p},{h}" for p, h in files).encode()).hexdigest()


def _file_hash(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return "sha256=" + base64.urlsafe_b64encode(h.digest()).rstrip(b"=").decode()


def packages(site: str) -> list[dict]:
    out = []
    for info in _dist_infos(site):
        try:
            name, version = _metadata(os.path.join(site, info))
            files = _content_files(site, info)
        except OSError:
            continue
        out.append({"name": name, "version": version, "sha256": _digest(files), "dist_info": info})
    return out


def lock_files(code: str) -> list[dict]:
    try:
        names = sorted(os.listdir(code))
    except OSError:
        return []
    out = []
    for n in names:
        if n in LOCK_FILES or (n.startswith("requirements") and n.endswith(".txt")):
            path = os.path.join(code, n)
            if os.path.isfile(path):
                with open(path, "rb") as fh:
                    out.append({"name": n, "sha256": hashlib.sha256(fh.read()).hexdigest()})
    return out


def os_release() -> str:
    try:
        with open("/etc/os-release") as fh:
            fields = dict(line.rstrip("\n").split("=", 1) for line in fh if "=" in line)
        return fields.get("PRETTY_NAME", "").strip('"') or "unknown"
    except OSError:
        return platform.platform()


def gpus() -> dict:
    """Model, count, driver and CUDA version: NVML first (no process), nvidia-smi second, else none."""
    try:
        return _nvml()
    except (OSError, AttributeError, RuntimeError):
        pass
    smi = shutil.which("nvidia-smi")
    if smi:
        try:
            return _smi(smi)
        except (OSError, ValueError, subprocess.SubprocessError):
            pass
    return {"model": "none", "count": 0, "driver": "none", "cuda": "none"}


def _nvml() -> dict:
    lib = ctypes.CDLL("libnvidia-ml.so.1")

    def check(rc: int) -> None:
        if rc != 0:
            raise RuntimeError(f"NVML error {rc}")
    check(lib.nvmlInit_v2())
    try:
        buf = ctypes.create_string_buffer(96)
        check(lib.nvmlSystemGetDriverVersion(buf, 96))
        driver = buf.value.decode()
        cuda = ctypes.c_int(0)
        check(lib.nvmlSystemGetCudaDriverVersion_v2(ctypes.byref(cuda)))
        count = ctypes.c_uint(0)
        check(lib.nvmlDeviceGetCount_v2(ctypes.byref(count)))
        models = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            check(lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)))
            check(lib.nvmlDeviceGetName(handle, buf, 96))
            models.append(buf.value.decode())
    finally:
        lib.nvmlShutdown()
    return {"model": ", ".join(sorted(set(models))) or "none", "count": count.value, "driver": driver,
            "cuda": f"{cuda.value // 1000}.{cuda.value % 1000 // 10}"}


def _smi(smi: str) -> dict:
    q = subprocess.run([smi, "--query-gpu=name,driver_version", "--format=csv,noheader"],
                       capture_output=True, text=True, timeout=20, check=True)
    rows = [[c.strip() for c in line.split(",")] for line in q.stdout.splitlines() if line.strip()]
    head = subprocess.run([smi], capture_output=True, text=True, timeout=20).stdout
    cuda = re.search(r"CUDA Version:\s*([0-9.]+)", head)
    return {"model": ", ".join(sorted({r[0] for r in rows})) or "none", "count": len(rows),
            "driver": rows[0][1] if rows else "none", "cuda": cuda.group(1) if cuda else "none"}


def probe(code: str) -> dict:
    site = site_packages()
    return {"kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
            "os_release": os_release(), "gpu": gpus(),
            "python": f"{platform.python_implementation()} {platform.python_version()}",
            "packages": packages(site), "lock_files": lock_files(code)}


def _wheel_tags(dist_info: str) -> str:
    tags = []
    with open(os.path.join(dist_info, "WHEEL"), encoding="utf-8") as fh:
        tags = [line.split(":", 1)[1].strip() for line in fh if line.startswith("Tag:")]
    if not tags:
        return "py3-none-any"
    parts = [t.split("-") for t in tags]
    return "-".join(".".join(sorted({p[i] for p in parts})) for i in range(3))


def repack(site: str, dist_info: str, out: str) -> str:
    """The installed distribution as a wheel again: the files the wheel put in site-packages and its
    dist-info (without the install's bookkeeping), a fresh RECORD, fixed timestamps, sorted entries."""
    name, version = dist_info[:-len(".dist-info")].rsplit("-", 1)
    files = _content_files(site, dist_info)
    extra = sorted(n for n in os.listdir(os.path.join(site, dist_info))
                   if n not in BOOKKEEPING and os.path.isfile(os.path.join(site, dist_info, n)))
    members = sorted(set([p for p, _ in files] + [f"{dist_info}/{n}" for n in extra]))
    wheel = os.path.join(out, f"{name}-{version}-{_wheel_tags(os.path.join(site, dist_info))}.whl")
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for rel in members:
            path = os.path.join(site, rel)
            with open(path, "rb") as fh:
                data = fh.read()
            item = zipfile.ZipInfo(rel, ZIP_TIME)
            item.external_attr = (os.stat(path).st_mode & 0o777 | 0o100000) << 16
            item.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(item, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            writer.writerow([rel, f"sha256={digest}", len(data)])
        writer.writerow([f"{dist_info}/RECORD", "", ""])
        item = zipfile.ZipInfo(f"{dist_info}/RECORD", ZIP_TIME)
        item.external_attr = 0o100644 << 16
        zf.writestr(item, record.getvalue())
    return os.path.basename(wheel)


def pack(out: str, names: list[str]) -> dict:
    site = site_packages()
    os.makedirs(out, exist_ok=True)
    wanted = {n.lower() for n in names}
    wheels = [repack(site, p["dist_info"], out) for p in packages(site) if p["name"].lower() in wanted]
    return {"wheels": wheels}


def wheel_package(path: str, strict: bool = False) -> dict:
    """The name, version and sha256 a wheel's distribution has once installed (what `packages`
    reports for it), read from the wheel's RECORD. strict (checking a store's copy): the RECORD must
    list exactly the wheel's files with their true hashes, all of them going into site-packages."""
    with zipfile.ZipFile(path) as zf:
        members = [n for n in zf.namelist() if not n.endswith("/")]
        infos = {n.split("/", 1)[0] for n in members if "/" in n and n.split("/", 1)[0].endswith(".dist-info")}
        if len(infos) != 1:
            raise ValueError(f"{os.path.basename(path)} has {len(infos)} .dist-info directories, not one")
        (info,) = infos
        name, version = _name_version(zf.read(f"{info}/METADATA").decode("utf-8", "replace").splitlines())
        rows = {r[0]: (r[1] if len(r) > 1 else "") for r in
                csv.reader(io.StringIO(zf.read(f"{info}/RECORD").decode("utf-8", "replace"))) if r}
        if strict:
            own = f"{info}/RECORD"
            if set(rows) - {own} != set(members) - {own} or len(members) != len(set(members)):
                raise ValueError(f"{os.path.basename(path)}: its RECORD does not list exactly its files")
            for n in members:
                if n.startswith("/") or ".." in n.split("/") or n.split("/", 1)[0].endswith(".data"):
                    raise ValueError(f"{os.path.basename(path)}: {n[:80]!r} would not go into site-packages")
                digest = base64.urlsafe_b64encode(hashlib.sha256(zf.read(n)).digest()).rstrip(b"=").decode()
                if n != own and rows[n] != f"sha256={digest}":
                    raise ValueError(f"{os.path.basename(path)}: {n[:80]!r} does not match its RECORD hash")
    files = sorted((p, h) for p, h in rows.items() if _counts(p, info))
    return {"name": name, "version": version, "sha256": _digest(files)}


def install_pinned(wheels: str) -> dict:
    """The recorded set from WHEELS: what is missing or differs (version, or the same version built
    otherwise) is installed again, forced (pip keeps an installed version that it sees as satisfied)."""
    by_pin = {}
    for n in sorted(os.listdir(wheels)):
        if n.endswith(".whl"):
            w = wheel_package(os.path.join(wheels, n))
            by_pin[(w["name"].lower(), w["version"])] = (os.path.join(wheels, n), w["sha256"])
    have = {p["name"].lower(): (p["version"], p["sha256"]) for p in packages(site_packages())}
    todo = []
    with open(os.path.join(wheels, "constraints.txt"), encoding="utf-8") as fh:
        for name, _, version in (line.strip().partition("==") for line in fh if line.strip()):
            wheel = by_pin.get((name.lower(), version))
            if wheel is None:
                raise SystemExit(f"install-pinned: no wheel for {name}=={version} in {wheels}")
            if have.get(name.lower()) != (version, wheel[1]):
                todo.append((f"{name} {version}", wheel[0]))
    if todo:
        print(f"fleet: installing {len(todo)} of the recorded packages again (missing, or other files): "
              + ", ".join(w for w, _ in todo[:10]) + (" …" if len(todo) > 10 else ""), file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-index",
                        "--no-deps", "--force-reinstall", *[path for _, path in todo]], check=True)
    return {"installed": [w for w, _ in todo]}


SETUP_MARKER = ".fleet-setup.json"     # in the venv: which setup, from which files, left which package set
NESTED = re.compile(r"^\s*(-r|--requirement|-c|--constraint|-f|--find-links)[\s=]+(\S+)")


def _tree_hash(path: str) -> str | None:   # a file's content hash; a directory's: each file's name and content
    if os.path.isfile(path) or not os.path.isdir(path):
        return _file_hash(path) if os.path.isfile(path) else None
    h, todo = hashlib.sha256(), [path]
    while todo:   # os.walk's sorted order, not os.walk: before 3.12 it recurses once per level, too deep here
        try:
            got = sorted(os.scandir(todo.pop()), key=lambda e: e.name)
        except OSError:
            continue
        h.update(b"".join(b"%s\0%s\n" % (os.path.relpath(e.path, path).encode(), _file_hash(e.path).encode())
                          for e in got if not e.is_dir()))
        todo += [e.path for e in reversed(got) if e.is_dir() and not e.is_symlink()]   # as os.walk: no link entered
    return h.hexdigest()


def setup_files(code: str, named: list[str]) -> tuple[dict, str]:
    """{KIND:PATH: hash or None (missing)} for what the setup names and what its requirement files
    name in turn (-r, -c, --find-links lines); and why it cannot be cached ("" when it can): an
    editable or URL line in a requirements file installs something no file hash describes."""
    out: dict = {}
    todo = [(k, p, code) for k, _, p in (n.partition(":") for n in named)]
    while todo and len(out) < 200:
        kind, path, base = todo.pop(0)
        full = os.path.normpath(os.path.join(base, os.path.expanduser(path)))
        inside = full.startswith(os.path.normpath(code) + os.sep)
        key = f"{kind}:{os.path.relpath(full, code) if inside else full}"   # the code dir is per lease
        if key in out:
            continue
        out[key] = _tree_hash(full)
        if kind in ("r", "c") and os.path.isfile(full):
            with open(full, errors="replace") as fh:
                for line in fh:
                    line = line.split(" #", 1)[0].strip()
                    if line.startswith(("-e", "--editable")) or "://" in line or line.startswith((".", "/")):
                        return out, f"{os.path.basename(full)} installs {line.split()[0]!r}, which no file hash describes"
                    m = NESTED.match(line)
                    if m:
                        nested = {"-r": "r", "--requirement": "r", "-c": "c", "--constraint": "c"}.get(m.group(1), "f")
                        todo.append((nested, m.group(2), os.path.dirname(full)))
    return out, ""


def setup_state(code: str, named: list[str]) -> dict:
    files, uncacheable = setup_files(code, named)
    try:
        with open(os.path.join(sys.prefix, SETUP_MARKER)) as fh:
            marker = json.load(fh)
    except (OSError, ValueError):
        marker = None
    return {"packages": [{k: p[k] for k in ("name", "version", "sha256")} for p in packages(site_packages())],
            "files": files, "uncacheable": uncacheable, "marker": marker}


def setup_mark(data: str) -> dict:
    tmp = os.path.join(sys.prefix, SETUP_MARKER + ".tmp")
    with open(tmp, "w") as fh:
        fh.write(data)
    os.replace(tmp, os.path.join(sys.prefix, SETUP_MARKER))
    return {"marked": True}


def main(argv: list[str]) -> int:
    if argv[:1] == ["probe"] and len(argv) == 2:
        print(json.dumps(probe(argv[1])))
    elif argv[:1] == ["pack"] and len(argv) >= 2:
        print(json.dumps(pack(argv[1], argv[2:])))
    elif argv[:1] == ["install-pinned"] and len(argv) == 2:
        try:
            install_pinned(argv[1])
        except subprocess.CalledProcessError as exc:
            return exc.returncode or 1
    elif argv[:1] == ["setup-state"] and len(argv) >= 2:
        print(json.dumps(setup_state(argv[1], argv[2:])))
    elif argv[:1] == ["setup-mark"] and len(argv) == 2:
        print(json.dumps(setup_mark(argv[1])))
    else:
        print(f"usage: probe CODE | pack OUT NAME... (got {argv!r})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
