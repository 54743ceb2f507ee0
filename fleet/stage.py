"""Getting the experiment's files onto machines and its outputs home (plain copy).

Pinned snapshots (fleet/snapshots) replace the copy where configured; fetching outputs stays here.
"""
from __future__ import annotations

import io
import shlex
import tarfile
from pathlib import Path

from .models import Machine
from .remote.ssh import connect

EXCLUDE_DIRS = {".git", "runs", "__pycache__", ".venv", "venv", ".fleet", "outputs", ".pytest_cache",
                ".hypothesis", "node_modules"}


def pack_directory(base: Path, exclude: set[str] | None = None) -> bytes:
    exclude = EXCLUDE_DIRS | (exclude or set())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:
        for path in sorted(base.rglob("*")):
            rel = path.relative_to(base)
            if any(part in exclude for part in rel.parts):
                continue
            if path.is_file() or path.is_symlink():
                tar.add(path, arcname=str(rel), recursive=False)
    return buf.getvalue()


def code_dir(machine: Machine) -> str:
    return f"{machine.workdir}/work"


def push_archive(machine: Machine, archive: bytes) -> None:
    dest = code_dir(machine)
    remote_tar = f"{machine.state_dir}/code.tar.gz"
    with connect(machine) as session:
        sftp = session.sftp()
        try:
            with sftp.open(remote_tar, "wb") as fh:
                fh.set_pipelined(True)
                fh.write(archive)
        finally:
            sftp.close()
        session.run(f"rm -rf {shlex.quote(dest)} && mkdir -p {shlex.quote(dest)} && "
                    f"tar -xzf {shlex.quote(remote_tar)} -C {shlex.quote(dest)} && rm -f {shlex.quote(remote_tar)}")


def fetch_directory(machine: Machine, remote_dir: str, local_dir: Path) -> int:
    """Bring `remote_dir` home into `local_dir`; returns the number of files. Missing dir → 0."""
    with connect(machine) as session:
        cmd = f"if [ -d {shlex.quote(remote_dir)} ]; then tar -czf - -C {shlex.quote(remote_dir)} .; fi"
        _stdin, stdout, _stderr = session.client.exec_command(cmd, timeout=600)
        data = stdout.read()
        stdout.channel.recv_exit_status()
    if not data:
        return 0
    local_dir.mkdir(parents=True, exist_ok=True)
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = [m for m in tar.getmembers() if m.isfile() or m.isdir()]
        tar.extractall(local_dir, members=members, filter="data")
        count = sum(1 for m in members if m.isfile())
    return count
