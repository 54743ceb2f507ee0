"""SSH sessions to leased machines, with the machine's host key pinned.

Host keys are never learnt on first use: every Machine carries the public host key its provider
made or learnt out of band, and paramiko's RejectPolicy refuses anything else.
"""
from __future__ import annotations

import shlex
import socket
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import logging

import paramiko

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


def _load_key(path: str) -> paramiko.PKey:
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key_file(path)
        except (paramiko.SSHException, ValueError):
            continue
    raise InfrastructureError(f"cannot read private key {path}")


def _pinned_client(machine: Machine) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    keytype, keydata = machine.host_key.split()[:2]
    host_id = machine.host if machine.port == 22 else f"[{machine.host}]:{machine.port}"
    client.get_host_keys().add(host_id, keytype, paramiko.PKey.from_type_string(keytype, _b64(keydata)))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def _b64(data: str) -> bytes:
    import base64
    return base64.b64decode(data)


class Session:
    def __init__(self, machine: Machine, client: paramiko.SSHClient):
        self.machine = machine
        self.client = client

    def run(self, command: str | Sequence[str], *, env: Mapping[str, str] | None = None,
            cwd: str | None = None, check: bool = True, timeout: float | None = 120,
            stdin: bytes | None = None) -> Result:
        line = shell_command(command, env=env, cwd=cwd)
        try:
            chan = self.client.get_transport().open_session(timeout=30)
            chan.settimeout(timeout)
            chan.exec_command(line)
            if stdin is not None:
                chan.sendall(stdin)
                chan.shutdown_write()
            out, err = bytearray(), bytearray()
            while True:
                if chan.recv_ready():
                    out += chan.recv(65536)
                elif chan.recv_stderr_ready():
                    err += chan.recv_stderr(65536)
                elif chan.exit_status_ready() and not chan.recv_ready() and not chan.recv_stderr_ready():
                    break
                else:
                    chan.status_event.wait(0.05)
            code = chan.recv_exit_status()
            chan.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise MachineUnreachable(f"machine {self.machine.id} ({self.machine.address}): {exc}") from None
        result = Result(code, out.decode(errors="replace"), err.decode(errors="replace"))
        if check and code != 0:
            detail = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
            raise InfrastructureError(
                f"on machine {self.machine.id}: `{line[:80]}` exited {code}: {detail[0][:200]}")
        return result

    def sftp(self) -> paramiko.SFTPClient:
        return self.client.open_sftp()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def connect(machine: Machine, timeout: float = 10) -> Session:
    client = _pinned_client(machine)
    try:
        client.connect(machine.host, port=machine.port, username=machine.user,
                       pkey=_load_key(machine.key_path), timeout=timeout, banner_timeout=timeout,
                       auth_timeout=timeout, allow_agent=False, look_for_keys=False)
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
        transport.set_keepalive(15)
    return Session(machine, client)


def wait_ready(machine: Machine, timeout: float = 60) -> Session:
    """Poll until the machine answers SSH with its pinned key, or raise MachineUnreachable naming it."""
    deadline = time.monotonic() + timeout
    delay, last = 0.05, ""
    while True:
        try:
            with socket.create_connection((machine.host, machine.port), timeout=2):
                pass
            return connect(machine, timeout=min(10, max(1, deadline - time.monotonic())))
        except (OSError, MachineUnreachable) as exc:
            last = str(exc)
        if time.monotonic() >= deadline:
            raise MachineUnreachable(
                f"machine {machine.id} ({machine.address}) did not answer SSH within {int(timeout)}s: {last}")
        time.sleep(delay)
        delay = min(delay * 1.6, 1.0)
