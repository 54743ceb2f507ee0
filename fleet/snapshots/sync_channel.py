"""The byte pipe between the controller and the remote sync helper: OpenSSH client, or paramiko.

Both carry the same conversation: JSON lines both ways, chunk frames controller → machine. `send`
takes a list of buffers and writes them without joining them first (writev on the OpenSSH pipe).
"""
from __future__ import annotations

import contextlib
import json
import os

from ..errors import MachineUnreachable
from ..models import Machine

WINDOW = 64 * 1024 * 1024         # paramiko channel window: keep the pipe full on fast links
MAX_PACKET = 256 * 1024
PIPE_SIZE = 1 << 20               # controller → ssh pipe: fewer wake-ups per MiB than the 64 KiB default
F_SETPIPE_SZ = 1031

# The sync channel prefers AES-256-GCM (never requires it): as strong as OpenSSH's default
# chacha20-poly1305 and, with AES-NI, ~25 % more bytes per CPU second — which is what bounds
# fan-out to many machines on a few cores. The key exchange stays OpenSSH's default (hybrid
# post-quantum), which protects data synced today against decryption later.
# FLEET_SYNC_FAST_CRYPTO=1 also prefers classical X25519, saving ~75 ms of CPU per connection.
CIPHER_OPTIONS = ("-o", "Ciphers=^aes256-gcm@openssh.com,aes128-gcm@openssh.com")
FAST_KEX_OPTIONS = ("-o", "KexAlgorithms=^curve25519-sha256,curve25519-sha256@libssh.org")
# A machine that vanishes without a word (its network gone, the instance stopped) never closes the
# TCP connection; ssh's own probes end the client after ~60 s of silence from sshd instead.
ALIVE_OPTIONS = ("-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4")
# One answer line from the helper: its chunk list for a very large tree fits; a line without end
# from a hostile machine stops here instead of filling the controller's memory.
MAX_ANSWER = 256 * 1024 * 1024
_ID_LISTS = ("current", "need", "missing", "objects", "failed", "materialised")
_COUNTS = ("fetched", "received", "evicted_bytes", "objects_fetched", "reused")


def answer_of(line: bytes) -> dict:
    """One helper answer, in the shape the controller reads it, else ValueError (the sync then fails
    in one line naming the machine): the machine is not trusted, and a hostile helper's `[]` or
    `{"current": 5}` must not surface as an internal error."""
    if len(line) > MAX_ANSWER:
        raise ValueError(f"the machine's answer is longer than {MAX_ANSWER >> 20} MiB")
    obj = json.loads(line)
    if not isinstance(obj, dict):
        raise ValueError("the machine's answer is not a JSON object")
    for key in _ID_LISTS:
        if key in obj and not (isinstance(obj[key], list) and all(isinstance(x, str) for x in obj[key])):
            raise ValueError(f"the machine's answer has a malformed {key!r}")
    have = obj.get("have", {})
    if not (isinstance(have, dict) and all(isinstance(v, str) for v in have.values())):
        raise ValueError("the machine's answer has a malformed 'have'")
    for key in _COUNTS:
        if key in obj and not (type(obj[key]) is int and obj[key] >= 0):
            raise ValueError(f"the machine's answer has a malformed {key!r}")
    return obj


def use_openssh() -> bool:
    return os.environ.get("FLEET_SYNC_TRANSPORT", "auto") != "paramiko" and _on_path("ssh")


def _on_path(name: str) -> bool:
    """shutil.which(name) is not None, without importing shutil (a sync starts as early as it can)."""
    return any(os.access(os.path.join(d, name), os.X_OK) for d in os.get_exec_path() if d)


def _private_file(prefix: str) -> tuple[int, str]:
    """A new file only this user can read, in the temp directory (tempfile.mkstemp's guarantees,
    without importing tempfile and random: O_EXCL with an unguessable name, never through a link)."""
    try:
        path = os.path.join(os.environ.get("TMPDIR") or "/tmp", prefix + os.urandom(8).hex())
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        return os.open(path, flags, 0o600), path
    except OSError:
        import tempfile                   # an odd TMPDIR, or a name taken: tempfile's own search
        return tempfile.mkstemp(prefix=prefix)


def _gone(err: str) -> MachineUnreachable:
    last = err.splitlines()[-1] if err else "no output"
    # The machine's own disk, where the lease's directory and its chunk cache live (a local machine's
    # is under FLEET_HOME): said as such, not as a fault of the connection.
    full = "Errno 28" in last or "No space left on device" in last
    return MachineUnreachable(f"sync helper ended without answering: {last}",
                              hint="the machine's disk is full where the lease's directory and its chunk cache are "
                                   "(a local machine's: FLEET_HOME's disk): free space there" if full else None)


class ParamikoChannel:
    def __init__(self, session, command: str, timeout: float):
        self.timeout = timeout
        self.chan = session.open_channel(window_size=WINDOW, max_packet_size=MAX_PACKET)
        self.chan.settimeout(timeout)
        self.chan.exec_command(command)
        self.out = self.chan.makefile("rb", 1 << 16)
        self.sent = 0

    def send(self, bufs: list) -> None:
        for b in bufs:
            self.chan.sendall(b)
            self.sent += len(b)

    def reply(self) -> dict:
        line = self.out.readline(MAX_ANSWER + 1)
        if not line:
            raise _gone(self.chan.makefile_stderr("rb").read().decode(errors="replace").strip())
        return answer_of(line)

    def close(self) -> int:
        try:
            self.chan.shutdown_write()
            return self.chan.recv_exit_status()
        finally:
            self.chan.close()


class OpenSSHChannel:
    """The OpenSSH client: several times paramiko's throughput, since the cipher and packet loop run
    in C. Host key still pinned: a known_hosts file holding only the machine's recorded key,
    StrictHostKeyChecking=yes."""

    def __init__(self, machine: Machine, command: str, timeout: float):
        import subprocess
        self.timeout = timeout
        fd, self.known_hosts = _private_file("fleet-kh-")
        host_id = machine.host if machine.port == 22 else f"[{machine.host}]:{machine.port}"
        with os.fdopen(fd, "w") as f:
            f.write(f"{host_id} {machine.host_key}\n")
        fast = CIPHER_OPTIONS + (FAST_KEX_OPTIONS if os.environ.get("FLEET_SYNC_FAST_CRYPTO") == "1" else ())
        argv = ["ssh", "-p", str(machine.port), "-i", machine.key_path, "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={int(min(timeout, 30))}",
                "-o", "Compression=no", "-o", "GSSAPIAuthentication=no", "-o", "ControlPath=none", *ALIVE_OPTIONS, *fast,
                f"{machine.user}@{machine.host}", command]
        self.where = f"machine {machine.id} ({machine.address})"
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     bufsize=0)
        self.fd = self.proc.stdin.fileno()
        with contextlib.suppress(OSError, ImportError):
            import fcntl
            fcntl.fcntl(self.fd, F_SETPIPE_SZ, PIPE_SIZE)
        # Non-blocking both ways, every wait bounded by `timeout` (as paramiko's channel timeout
        # bounds it there): a helper that stops reading or answering (frozen, its host swapping to
        # death) while sshd still answers ssh's probes must not hold the caller forever.
        os.set_blocking(self.fd, False)
        self.out_fd = self.proc.stdout.fileno()
        os.set_blocking(self.out_fd, False)
        self.pending = bytearray()             # appended in place: a long answer is not copied per read
        self.sent = 0

    def _await(self, *, write: bool) -> None:
        """Until the pipe to ssh takes more (write) or the helper says something (read): `timeout` at
        most without a sign of life. While a write waits, what the helper says (its ticks while it
        builds from S3 or the cache, an early error) is kept for reply() and counts as life."""
        import select
        import time
        poller = select.poll()                 # not select(): any fd number
        poller.register(self.out_fd, select.POLLIN)
        if write:
            poller.register(self.fd, select.POLLOUT)
        end = time.monotonic() + self.timeout
        while True:
            events = dict(poller.poll(max(0.0, end - time.monotonic()) * 1000))
            if not events:
                self.proc.kill()
                raise MachineUnreachable(f"sync helper on {self.where} gave no sign of life for {self.timeout:g} s "
                                         f"({'not reading' if write else 'no answer'})")
            if not write or self.fd in events:
                return                         # readable, or writable (or broken: the write says so)
            try:
                got = os.read(self.out_fd, 1 << 16)
            except BlockingIOError:
                continue
            if not got:
                raise BrokenPipeError("the sync helper ended")   # reply() then reads why
            self.pending += got
            if len(self.pending) > MAX_ANSWER:
                self.proc.kill()
                raise ValueError(f"the machine's answer is longer than {MAX_ANSWER >> 20} MiB")
            end = time.monotonic() + self.timeout

    def send(self, bufs: list) -> None:
        """Gather-write every buffer (header, chunk, header, chunk, …) with as few syscalls as it takes."""
        views = [memoryview(b) for b in bufs if len(b)]
        self.sent += sum(len(v) for v in views)
        while views:
            try:
                n = os.writev(self.fd, views[:512])
            except BlockingIOError:
                self._await(write=True)
                continue
            while n and views:
                if n >= len(views[0]):
                    n -= len(views.pop(0))
                else:
                    views[0] = views[0][n:]
                    n = 0

    def reply(self) -> dict:
        scanned = 0                            # a long line is scanned once, not again on every read
        while self.pending.find(b"\n", scanned) < 0:
            scanned = len(self.pending)
            if scanned > MAX_ANSWER:
                self.proc.kill()
                raise ValueError(f"the machine's answer is longer than {MAX_ANSWER >> 20} MiB")
            try:
                got = os.read(self.out_fd, 1 << 16)
            except BlockingIOError:
                self._await(write=False)
                continue
            if not got:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
                raise _gone(self.proc.stderr.read().decode(errors="replace").strip())
            self.pending += got
        end = self.pending.index(b"\n")
        line = bytes(self.pending[:end])
        del self.pending[:end + 1]
        return answer_of(line)

    def close(self) -> int:
        try:
            if not self.proc.stdin.closed:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
            return self.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            return self.proc.wait()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.known_hosts)


def dial(machines: list[Machine], *, cache_dir: str | None = None, timeout: float = 600) -> dict[str, OpenSSHChannel]:
    """Start every machine's sync channel now, before the snapshots it will carry exist: the SSH key
    exchange, login and the helper's start (a few hundred ms each) then overlap the caller's own work,
    typically `create_snapshot`. Hand the result to `sync.sync_lease(channels=...)`, which closes what it
    does not use; a caller that ends up not syncing calls `close_channels`. OpenSSH only; a machine reached through a run's pooled connection is not dialled
    (its connection is already up). `cache_dir` must be the one later passed to sync_lease."""
    if not use_openssh():
        return {}
    from ..remote.pool import pool_for
    from .sync_remote import helper_command
    out: dict[str, OpenSSHChannel] = {}
    try:
        for m in machines:
            if pool_for(m.id) is None:
                out[m.id] = OpenSSHChannel(m, helper_command(m, cache_dir), timeout)
    except OSError:
        close_channels(out)
        return {}
    return out


def close_channels(channels: dict[str, OpenSSHChannel]) -> None:
    """Close dialled channels nobody used (the helper sees its input end before any request and exits)."""
    for ch in channels.values():
        ch.close()
    channels.clear()
