"""Getting the experiment's files onto machines and its outputs home (plain copy).

Pinned snapshots (fleet/snapshots) replace the copy where configured; fetching outputs stays here.
"""
from __future__ import annotations

import io
import ipaddress
import shlex
import tarfile
from pathlib import Path

from .models import Machine
from .remote.ssh import connect
from .safe_extract import CHUNK, Extracted, extract_stream

MAX_TRAILING = 16 << 20

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
    """Where the run's code is staged and run from (shared by machines with one staging_dir)."""
    return f"{machine.staging_dir or machine.workdir}/work"


def one_per_staging_dir(machines: list[Machine]) -> list[Machine]:
    """The machines to stage inputs onto: every machine with its own, and the first of those that
    share a staging_dir (a shared filesystem), which stages once what all of them read."""
    chosen, seen = [], set()
    for m in machines:
        if m.staging_dir:
            if m.staging_dir in seen:
                continue
            seen.add(m.staging_dir)
        chosen.append(m)
    return chosen


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


def _on_loopback(machine: Machine) -> bool:
    try:
        return ipaddress.ip_address(machine.host).is_loopback
    except ValueError:
        return machine.host == "localhost"


class _Prefixed:
    """A read()-able stream with its first bytes already read back in front (to tell "nothing
    sent" from a tar without buffering the tar)."""

    def __init__(self, first: bytes, rest):
        self.first, self.rest = first, rest

    def read(self, n: int = -1) -> bytes:
        if self.first:
            if n < 0:
                data, self.first = self.first + self.rest.read(), b""
                return data
            data, self.first = self.first[:n], self.first[n:]
            return data
        return self.rest.read(n)


def fetch_directory(machine: Machine, remote_dir: str, local_dir: Path) -> Extracted:
    """Bring `remote_dir` home into `local_dir`, streamed: the tar never sits in memory (2 GiB of
    outputs used to need 2 GiB of controller RSS), and it is unpacked as if hostile (links kept
    inside `local_dir`, see fleet/safe_extract.py). A missing directory brings nothing.
    Compressed only off loopback: on a local machine gzip just costs CPU."""
    create = "-cf" if _on_loopback(machine) else "-czf"
    with connect(machine) as session:
        cmd = (f"if [ -d {shlex.quote(remote_dir)} ]; then tar {shlex.quote(create)} - "
               f"-C {shlex.quote(remote_dir)} .; fi")
        chan = session.open_channel()
        try:
            chan.settimeout(600)
            chan.exec_command(cmd)
            stdout, stderr = chan.makefile("rb"), chan.makefile_stderr("rb")
            first = stdout.read(tarfile.BLOCKSIZE)
            result = extract_stream(_Prefixed(first, stdout), local_dir) if first else Extracted()
            # What follows the end-of-archive blocks is padding; a machine that keeps sending is cut off.
            trailing = 0
            while trailing < MAX_TRAILING and (block := stdout.read(CHUNK)):
                trailing += len(block)
            if trailing >= MAX_TRAILING:
                result.skipped.append(f"{remote_dir}: the machine sent more than the archive; cut off")
                return result
            status = chan.recv_exit_status()
            if status != 0:
                why = stderr.read(4096).decode(errors="replace").strip().splitlines()
                result.skipped.append(f"{remote_dir}: tar on the machine exited {status}"
                                      + (f" ({why[-1]})" if why else ""))
        finally:
            chan.close()
    return result
