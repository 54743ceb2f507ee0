"""Getting the experiment's files onto machines and its outputs home (plain copy).

Pinned snapshots (fleet/snapshots) replace the copy where configured; fetching outputs stays here.
"""
from __future__ import annotations

import errno
import io
import shlex
import socket
import tarfile
from pathlib import Path
from typing import Callable

from .deep_trees import rmtree
from .models import Machine
from .remote.ssh import connect
from .safe_extract import CHUNK, Extracted, Stopped, extract_stream
from .snapshots.sync_channel import MAX_PACKET

MAX_TRAILING = 16 << 20
# The outputs channel's window: enough in flight for a fast link, and the most paramiko buffers
# when the disk here is slower than the link (the controller's memory stays bounded).
OUTPUTS_WINDOW = 8 << 20

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


def trial_code_dir(machine: Machine, leaf: str) -> str:
    """Where a sweep trial runs: a fresh copy of the code directory for each trial (per slot leaf),
    so what one trial writes beside its code (./out, a resumable checkpoint) is not the next one's
    starting point, and trials sharing a machine do not write into one directory."""
    return f"{machine.workdir}/trials/{leaf}/work"


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
        with session.transfer() as sftp, sftp.open(remote_tar, "wb") as fh:
            fh.set_pipelined(True)
            fh.write(archive)
        session.run(f"rm -rf {shlex.quote(dest)} && mkdir -p {shlex.quote(dest)} && "
                    f"tar -xzf {shlex.quote(remote_tar)} -C {shlex.quote(dest)} && rm -f {shlex.quote(remote_tar)}")


class _ChannelStream:
    """read(n) over a channel's output that always empties paramiko's receive buffer: a partial
    read there deletes the bytes read from the front of the buffer (a copy of all the rest), which
    capped a 64 MiB window at ~20 MiB/s; here the buffer is drained whole and served by offset."""

    DRAIN = 1 << 30

    def __init__(self, chan, stop=None):
        self.chan, self.buf, self.pos, self.stop = chan, b"", 0, stop

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self.buf) - self.pos < n:
            if self.stop is not None and self.stop.is_set():
                raise Stopped("the run was told to hurry (a second stop signal, or FLEET_STOP_LIMIT after a "
                              "SIGTERM): the rest was not fetched")
            data = self.chan.recv(self.DRAIN)
            if not data:
                break
            self.buf, self.pos = self.buf[self.pos:] + data, 0
        end = len(self.buf) if n < 0 else self.pos + n
        out, self.pos = self.buf[self.pos:end], min(end, len(self.buf))
        return out


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


def fetch_directory(machine: Machine, remote_dir: str, local_dir: Path, *, limit: int | None = None,
                    watch: Callable[[Extracted], None] | None = None, stop=None) -> Extracted:
    """Bring `remote_dir` home into `local_dir`, streamed: the tar never sits in memory (2 GiB of
    outputs used to need 2 GiB of controller RSS), and it is unpacked as if hostile (links kept
    inside `local_dir`, see fleet/safe_extract.py). A missing directory brings nothing.
    Never gzipped: outputs are mostly checkpoints, images and archives that do not shrink, and
    gzip on one core (~40 MB/s) is slower than the link, so it only capped the throughput. Sparse
    files travel as sparse where the machine's tar is GNU tar (a preallocated 3 GiB file is no
    3 GiB of zeros on the wire). A transfer cut short, a full disk here or `limit` bytes passed
    end it with `incomplete` set (what came before is kept, every file complete), never a raise.

    A connection that drops under the transfer (its sshd ended it, the link reset) is tried once
    more on a fresh connection: tar only reads. A machine's pooled connection carries its
    neighbours' channels too (a sweep's trials sharing it), so one drop would otherwise cost every
    transfer then in flight its outputs. The second try starts from an empty `local_dir` (so only
    when the first began from one): two streams unpacked over each other could combine links that
    each judged alone stay inside (p -> q/.. first, q -> . second), and could hold twice `limit`.
    `watch` is given each try's Extracted as it starts filling, for progress to read. `stop` (an
    Event), once set, ends the transfer at its next block, `incomplete` saying so: a cancelled CI
    job's second signal comes seconds before its SIGKILL, and the machines must be released first."""
    retry_allowed = not local_dir.exists() or not any(local_dir.iterdir())
    first: Extracted | Exception | None = None
    for attempt in (1, 2):
        try:
            opened = connect(machine)   # a machine that does not answer the first time raises
        except Exception:
            if first is None:
                raise
            if isinstance(first, Exception):   # gone meanwhile (a reclaim): the first try's own end
                raise first from None
            return first
        with opened as session:
            if attempt == 2 and local_dir.exists():
                rmtree(local_dir)   # the first try's partial outputs: the second brings them whole
            try:
                result = _fetch_once(session, remote_dir, local_dir, limit, watch, stop)
            except Exception as exc:
                if attempt == 2 or session.active or not retry_allowed:
                    raise
                first = exc
                continue
            if attempt == 2 or not result.incomplete or session.active or not retry_allowed or \
                    (stop is not None and stop.is_set()):
                return result
            first = result
    return result


def _fetch_once(session, remote_dir: str, local_dir: Path, limit: int | None, watch=None, stop=None) -> Extracted:
    """One try of fetch_directory on `session`."""
    create = "-cf"
    result = Extracted()
    if watch is not None:
        watch(result)
    quoted = shlex.quote(remote_dir)
    cmd = (f"if [ -d {quoted} ]; then s=; tar --version 2>/dev/null | grep -q 'GNU tar' && s=--sparse; "
           f"tar $s {shlex.quote(create)} - -C {quoted} .; fi")
    chan = session.open_channel(window_size=OUTPUTS_WINDOW, max_packet_size=MAX_PACKET)
    try:
        chan.settimeout(600)
        chan.exec_command(cmd)
        stdout, stderr = _ChannelStream(chan, stop), chan.makefile_stderr("rb")
        try:
            first = stdout.read(tarfile.BLOCKSIZE)
            if first:
                extract_stream(_Prefixed(first, stdout), local_dir, limit=limit, out=result)
        except OSError as exc:
            result.incomplete = (f"no space left to write into {local_dir} ({exc.strerror})"
                                 if exc.errno in (errno.ENOSPC, errno.EDQUOT) else
                                 "the machine sent nothing for 600 s" if isinstance(exc, socket.timeout) else
                                 f"{type(exc).__name__}: {exc}")
            return result
        except tarfile.ReadError as exc:   # the stream ended inside a member: cut short
            result.incomplete = f"the transfer ended early ({exc})"
            return result
        except (Stopped, tarfile.TarError) as exc:
            result.incomplete = str(exc) or type(exc).__name__
            return result
        # What follows the end-of-archive blocks is padding; a machine that keeps sending is cut off.
        trailing = 0
        while trailing < MAX_TRAILING and (block := stdout.read(CHUNK)):
            trailing += len(block)
        if trailing >= MAX_TRAILING:
            result.skipped.append(f"{remote_dir}: the machine sent more than the archive; cut off")
            return result
        status = chan.recv_exit_status()
        if status != 0:
            why = _last_complaint(stderr)
            said = f"tar on the machine exited {status}" + (f" ({why})" if why else "")
            if status == 1:   # GNU tar: a file changed while it was read; the archive is whole
                result.skipped.append(f"{remote_dir}: {said}")
            else:   # killed (a reclaim, the link cut: -1), failed, or a file it could not read (2)
                result.incomplete = said
    finally:
        chan.close()
    return result


_TAR_SUMMARY = "Exiting with failure status due to previous errors"


def _last_complaint(stderr, most: int = 1 << 20, longest: int = 300) -> str:
    """The last line tar wrote to stderr that says what went wrong (GNU tar ends with a summary
    line naming nothing): "tar: ./ckpt: Cannot open: Permission denied". At most `most` bytes are
    read and the line is cut at `longest` characters (the machine writes it)."""
    tail, seen = b"", 0
    while seen < most and (block := stderr.read(min(CHUNK, most - seen))):
        seen += len(block)
        tail = (tail + block)[-8192:]
    lines = [line.strip() for line in tail.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line and not line.endswith(_TAR_SUMMARY)] or [line for line in lines if line]
    if not lines:
        return ""
    last = lines[-1]
    return last if len(last) <= longest else last[:longest] + "…"
