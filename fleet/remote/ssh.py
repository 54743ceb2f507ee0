"""SSH sessions to leased machines, with the machine's host key pinned.

Host keys are never learnt on first use: every Machine carries the public host key its provider
made or learnt out of band, and paramiko's RejectPolicy refuses anything else.
"""
from __future__ import annotations

import contextlib
import shlex
import threading
import time
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import logging

from .lazy_invoke import defer_invoke

defer_invoke()   # before paramiko: its `import invoke` costs ~40 ms otherwise (see lazy_invoke.py)
import paramiko  # noqa: E402

from ..errors import InfrastructureError, MachineUnreachable
from ..models import Machine

# paramiko logs failures of its transport thread (e.g. a banner read reset by a machine its
# watchdog just ended) at ERROR with a traceback; with no handler configured, Python's last-resort
# handler printed that traceback on the user's terminal. Failures reach users as the one-line
# errors this module raises instead.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str


class OutputLimitExceeded(InfrastructureError):
    """The command printed more than the caller's `max_output_bytes`; it was stopped being read."""


class CommandTimedOut(InfrastructureError):
    """The command was still running (or still printing) after the caller's `deadline_s`."""


def shell_command(argv_or_cmd: str | Sequence[str], *, env: Mapping[str, str] | None = None,
                  cwd: str | None = None) -> str:
    """One POSIX sh command line; every user-supplied piece is quoted, never interpolated raw."""
    cmd = argv_or_cmd if isinstance(argv_or_cmd, str) else shlex.join(argv_or_cmd)
    parts = []
    if cwd:
        parts.append(f"cd {shlex.quote(cwd)}")
    for key, value in (env or {}).items():
        if not key.replace("_", "").isalnum() or key[0].isdigit():
            raise ValueError(f"invalid environment variable name {key!r}")
        parts.append(f"export {key}={shlex.quote(str(value))}")
    parts.append(cmd)
    return " && ".join(parts[:-1] + [parts[-1]]) if len(parts) > 1 else parts[0]


class OutputEnd:
    """When a command's channel is done: it exited and all its output has been read.

    The exit status alone is not enough: sshd may send it before the last of the output, which
    then arrives before the channel's EOF (seen with several channels on one connection: an
    `echo` lost its line). EOF alone is not enough either: a daemon the command left behind keeps
    the output open, so after the exit status EOF is waited for GRACE_S at most."""

    GRACE_S = 0.5

    def __init__(self) -> None:
        self.exited_at: float | None = None

    def __call__(self, chan: paramiko.Channel) -> bool:
        if chan.recv_ready() or chan.recv_stderr_ready() or not chan.exit_status_ready():
            return False
        if chan.eof_received or chan.closed:
            return True
        now = time.monotonic()
        if self.exited_at is None:
            self.exited_at = now
        time.sleep(0.005)   # status_event is set now, so the caller's wait no longer waits
        return now - self.exited_at >= self.GRACE_S


def _brief(line: str) -> str:
    """A command line as an error names it: its first 80 characters of one line (a `python -c`
    script spans many)."""
    first = line.splitlines()[0] if line else ""
    return first[:80] + ("…" if len(first) > 80 or first != line else "")


def _size(n: int) -> str:
    return f"{n / (1 << 20):g} MiB" if n >= 1 << 20 else f"{n} bytes"


def _load_key(path: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(path)
        except (paramiko.SSHException, ValueError):
            continue
    raise InfrastructureError(f"cannot read private key {path}")


def _pinned_client(machine: Machine) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    try:
        keytype, keydata = str(machine.host_key).split()[:2]
        key = paramiko.PKey.from_type_string(keytype, _b64(keydata))
    except Exception as exc:  # noqa: BLE001 — a damaged row (paramiko.UnknownKeyType is no SSHException): no key to pin, no connection
        raise InfrastructureError(f"machine {machine.id} has no usable host key recorded ({exc}); refusing to "
                                  "connect to what cannot be told from an impostor") from None
    host_id = machine.host if machine.port == 22 else f"[{machine.host}]:{machine.port}"
    client.get_host_keys().add(host_id, keytype, key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


# AES-GCM first (paramiko lists it last): one AEAD pass per packet instead of AES-CTR plus a
# separate HMAC, which is what bounds a run's one connection per machine carrying outputs home.
# Never required: a server without it negotiates the next one as before.
_GCM = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")


def _transport(sock, **kwargs) -> paramiko.Transport:
    transport = paramiko.Transport(sock, **kwargs)
    options = transport.get_security_options()
    options.ciphers = tuple(c for c in _GCM if c in options.ciphers) + tuple(c for c in options.ciphers
                                                                             if c not in _GCM)
    return transport


def _b64(data: str) -> bytes:
    import base64
    return base64.b64decode(data)


class Session:
    def __init__(self, machine: Machine, client: paramiko.SSHClient):
        self.machine = machine
        self.client = client

    def run(self, command: str | Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: str | None = None, check: bool = True, timeout: float | None = 120,
            stdin: bytes | None = None, max_output_bytes: int | None = None,
            deadline_s: float | None = None) -> Result:
        """Run one command and read all it prints. `timeout` bounds each blocking wait on the
        channel; a command whose output the experiment can influence (anything run by the lease's
        venv, files the experiment writes) also needs `deadline_s`, the whole command's time, and
        `max_output_bytes`, stdout and stderr together: a program that prints forever would
        otherwise hold the caller, and its memory, without end. Past either the channel is closed
        and OutputLimitExceeded or CommandTimedOut says so in one line."""
        line = shell_command(command, env=env, cwd=cwd)
        ends = None if deadline_s is None else time.monotonic() + deadline_s
        try:
            chan = self.open_channel()
            chan.settimeout(timeout)
            chan.exec_command(line)
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
            out, err = bytearray(), bytearray()
            output_ended = OutputEnd()
            while True:
                if max_output_bytes is not None and len(out) + len(err) > max_output_bytes:
                    chan.close()
                    raise OutputLimitExceeded(f"on machine {self.machine.id}: `{_brief(line)}` printed more than "
                                              f"{_size(max_output_bytes)}; stopped reading it")
                if ends is not None and time.monotonic() > ends:
                    chan.close()
                    raise CommandTimedOut(f"on machine {self.machine.id}: `{_brief(line)}` did not finish in "
                                          f"{deadline_s:g}s; stopped waiting for it")
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif output_ended(chan):
                    break
                else:
                    chan.status_event.wait(0.05)
            code = chan.recv_exit_status()
            chan.close()
            if code == -1 and not chan.get_transport().is_active():
                raise paramiko.SSHException("the connection was lost before the command ended")
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise MachineUnreachable(f"machine {self.machine.id} ({self.machine.address}): {exc}") from None
        result = Result(code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and code != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
            raise InfrastructureError(
                f"on machine {self.machine.id}: `{_brief(line)}` exited {code}: {detail[0][:200]}")
        return result

    def open_channel(self, timeout: float = 30, **kwargs) -> paramiko.Channel:
        """A new session channel on this connection (exec, sftp, a sync helper: one each)."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise paramiko.SSHException("the connection is closed")
        return transport.open_session(timeout=timeout, **kwargs)

    @contextlib.contextmanager
    def transfer(self, timeout: float = 120) -> Iterator[paramiko.SFTPClient]:
        """An SFTP client for a block, closed after; the connection dropping or going silent during
        it is MachineUnreachable (what the caller's users are told), not paramiko's own error."""
        sftp = None
        try:
            sftp = self.sftp(timeout)
            yield sftp
        except (paramiko.SSHException, EOFError, TimeoutError, ConnectionError) as exc:
            raise MachineUnreachable(f"machine {self.machine.id} ({self.machine.address}): file transfer "
                                     f"failed: {exc or type(exc).__name__}") from None
        finally:
            if sftp is not None:
                sftp.close()

    def sftp(self, timeout: float = 120) -> paramiko.SFTPClient:
        """An SFTP client whose every wait for an answer is bounded by `timeout`."""
        chan = self.open_channel()
        chan.settimeout(timeout)
        chan.invoke_subsystem("sftp")
        return paramiko.SFTPClient(chan)

    @property
    def active(self) -> bool:
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


MAX_POOLED_CONNECTIONS = 4   # per machine: 1, plus overflow where sshd caps channels per connection
# A live machine opens a channel in milliseconds; one that gives no answer for this long is cut off
# (as long as a new connection is given to answer: the caller's wait is the same either way).
POOLED_CHANNEL_TIMEOUT_S = 10.0


class PooledSession(Session):
    """A handle on a run's pooled connection (fleet/remote/pool.py): each use opens a channel on
    it; close() gives the handle back and leaves the connection open."""

    def __init__(self, pool, machine: Machine, client: paramiko.SSHClient):
        super().__init__(machine, client)
        self.pool = pool

    def open_channel(self, **kwargs) -> paramiko.Channel:
        tried: list[paramiko.SSHClient] = []
        conn: Session = self
        for _ in range(MAX_POOLED_CONNECTIONS):
            asked, cut = time.monotonic(), threading.Event()
            # No answer for POOLED_CHANNEL_TIMEOUT_S: closed (every channel on it cut, a sweep's
            # neighbouring trials' too) only if its peer no longer accepts a TCP connection either
            # (a cut network drops packets silently). One that does is slow (a loaded host): the
            # same open is given as long again, so no abandoned open holds a session slot.
            probe = threading.Timer(POOLED_CHANNEL_TIMEOUT_S, _close_if_cut, args=(conn.client, cut))
            probe.daemon = True
            probe.start()
            try:
                return Session.open_channel(conn, timeout=2 * POOLED_CHANNEL_TIMEOUT_S, **kwargs)
            except (paramiko.SSHException, OSError, EOFError):
                waited = time.monotonic() - asked
                if cut.is_set() or (conn.active and waited >= 2 * POOLED_CHANNEL_TIMEOUT_S):
                    conn.client.close()
                    raise MachineUnreachable(f"machine {self.machine.id} ({self.machine.address}) stopped "
                                             f"answering: no reply on its connection in {waited:.0f}s") from None
                if not conn.active:
                    # The connection died since this handle was taken: the pool's live one (or a new one).
                    conn = self.pool.primary(self.machine)
                    self.client = conn.client
                    continue
                # It lives but refused the channel: sshd's MaxSessions. (Two refusals at once on
                # one connection: paramiko gives one of them a reasonless SSHException.)
                tried.append(conn.client)
                conn = self.pool.overflow(self.machine, tried)
            finally:
                probe.cancel()
        raise MachineUnreachable(f"machine {self.machine.id} ({self.machine.address}): no connection "
                                 f"accepts another channel ({MAX_POOLED_CONNECTIONS} tried)")

    def close(self) -> None:
        pass


def _close_if_cut(client: paramiko.SSHClient, cut: threading.Event, timeout: float = 2.0) -> None:
    """Close the connection when its peer (the very address it uses: no name to resolve) no longer
    accepts a new TCP connection."""
    import socket
    transport = client.get_transport()
    try:
        peer = transport.getpeername()[:2] if transport is not None else None
    except OSError:
        peer = None
    if peer is not None:
        try:
            socket.create_connection(peer, timeout=timeout).close()
            return
        except OSError:
            pass
    cut.set()
    client.close()


def connect(machine: Machine, timeout: float = 10) -> Session:
    """A session on `machine`. While a run holds a SessionPool for it (fleet/remote/pool.py) this is
    a handle on the run's one connection to that machine (closing it leaves the connection open);
    otherwise a new connection of the caller's own."""
    from .pool import pool_for
    pool = pool_for(machine.id)
    if pool is not None:
        return pool.session(machine, timeout)
    return open_connection(machine, timeout)


def open_connection(machine: Machine, timeout: float = 10) -> Session:
    """A new SSH connection to `machine`, its host key checked against the pinned one."""
    client = _pinned_client(machine)
    try:
        client.connect(machine.host, port=machine.port, username=machine.user,
                       pkey=_load_key(machine.key_path), timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout, allow_agent=False, look_for_keys=False,
                       transport_factory=_transport)
    except paramiko.BadHostKeyException:
        client.close()
        raise InfrastructureError(
            f"machine {machine.id} ({machine.address}) presented a host key that does not match the pinned one"
            " — refusing to connect") from None
    except (paramiko.SSHException, OSError, EOFError) as exc:
        client.close()
        raise MachineUnreachable(f"machine {machine.id} ({machine.address}) does not answer SSH: {exc}") from None
    transport = client.get_transport()
    if transport is not None:
        transport.set_keepalive(KEEPALIVE_S)
        _drop_when_unanswered(transport)
    return Session(machine, client)


# paramiko's keepalive only sends: nothing notices when no answer comes. With data always in flight
# (a keepalive every KEEPALIVE_S), the kernel's TCP_USER_TIMEOUT ends a connection whose peer has
# acknowledged nothing for DEAD_AFTER_S (a network cut, a host frozen or gone), so every wait on it
# (a command, an SFTP transfer, a channel's exit status) ends within about a minute instead of after
# TCP's own ~15 minutes of retries.
KEEPALIVE_S = 15
DEAD_AFTER_S = 60


def _drop_when_unanswered(transport: paramiko.Transport) -> None:
    import socket
    sock = getattr(transport, "sock", None)
    option = getattr(socket, "TCP_USER_TIMEOUT", None)
    if option is None or not isinstance(sock, socket.socket):
        return                                 # not Linux, or not a plain TCP socket (a proxy command)
    try:
        sock.setsockopt(socket.IPPROTO_TCP, option, int(DEAD_AFTER_S * 1000))
    except OSError:
        pass


def wait_ready(machine: Machine, timeout: float = 60) -> Session:
    """Poll until the machine answers SSH with its pinned key, or raise MachineUnreachable naming it."""
    deadline = time.monotonic() + timeout
    delay, last = 0.05, ""
    while True:
        try:
            # No bare TCP probe first: that was one more connection per machine for sshd to accept
            # and log; a refused connect fails just as fast.
            return connect(machine, timeout=min(10, max(1, deadline - time.monotonic())))
        except (OSError, MachineUnreachable) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise MachineUnreachable(
                f"machine {machine.id} ({machine.address}) did not answer SSH within {int(timeout)}s: {last}")
        time.sleep(delay)
        delay = min(delay * 1.6, 1.0)
