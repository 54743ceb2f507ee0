"""Sync snapshots onto machines: only chunks a machine lacks cross the wire, verified on arrival.

Per machine, one SSH channel runs the stdlib helper (`remote_helper.py`, sent inline), which keeps a
chunk cache at <workdir>/.fleet/chunks. Round trip 1 asks which chunks are missing and which targets
are already materialised from the same snapshot; round trip 2 streams only the missing chunks, then
the manifests, and the helper builds each target beside its destination and renames it into place
after checking every file's sha256. Re-syncing what a machine holds sends only the question.
All machines of a lease are fed in parallel from a bounded pool.
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable

from ..errors import FleetError, IntegrityError, MachineUnreachable
from ..models import Machine
from .catalog import load
from .manifest import Manifest
from .restore import read_chunk
from .store import Store

WINDOW = 64 * 1024 * 1024         # SSH channel window: keep the pipe full on fast links
MAX_PACKET = 256 * 1024
SEND_BATCH = 4 * 1024 * 1024
END_FRAME = b"0" * 64 + b"000000000000\n"


@dataclass
class Target:
    dest: str                     # absolute path on the machine
    ids: list[str]                # a snapshot, then overlays applied in order (dirty code)
    read_only: bool = False


@dataclass
class SyncStats:
    machine_id: str
    bytes_sent: int = 0           # chunk payload sent
    chunks_sent: int = 0
    wire_bytes: int = 0           # everything written to the channel (frames, manifests, request)
    targets_current: list[str] = field(default_factory=list)
    targets_written: list[str] = field(default_factory=list)
    seconds: float = 0.0


def helper_source() -> str:
    return resources.files("fleet.snapshots").joinpath("remote_helper.py").read_text()


def chunk_cache(machine: Machine) -> str:
    return f"{machine.state_dir}/chunks"


def data_dir(machine: Machine, name: str) -> str:
    return f"{machine.workdir}/data/{name}"


def _request(targets: list[Target], manifests: dict[str, Manifest], cache: str) -> dict:
    want: dict[str, None] = {}
    reqs = []
    for t in targets:
        sizes: dict[str, int] = {}
        for sid in t.ids:
            for e in manifests[sid].files():
                sizes[e.path] = e.size
                for h, _ in e.chunks:
                    want[h] = None
        for sid in t.ids:
            for p in manifests[sid].deleted:
                sizes.pop(p, None)
        reqs.append({"dest": t.dest, "ids": t.ids, "sizes": sizes})
    return {"cache": cache, "want": list(want), "targets": reqs}


class _Channel:
    def __init__(self, session, command: str, timeout: float):
        transport = session.client.get_transport()
        self.chan = transport.open_session(window_size=WINDOW, max_packet_size=MAX_PACKET, timeout=30)
        self.chan.settimeout(timeout)
        self.chan.exec_command(command)
        self.out = self.chan.makefile("rb", 1 << 16)
        self.sent = 0

    def send(self, data: bytes) -> None:
        self.chan.sendall(data)
        self.sent += len(data)

    def reply(self) -> dict:
        line = self.out.readline()
        if not line:
            err = self.chan.makefile_stderr("rb").read().decode(errors="replace").strip()
            raise MachineUnreachable(f"sync helper ended without answering: {err.splitlines()[-1] if err else 'no output'}")
        return json.loads(line)

    def close(self) -> int:
        try:
            self.chan.shutdown_write()
            return self.chan.recv_exit_status()
        finally:
            self.chan.close()


class _OpenSSHChannel:
    """The same conversation over the OpenSSH client: several times paramiko's throughput, since the
    cipher and packet loop run in C. Host key still pinned: a known_hosts file holding only the
    machine's recorded key, StrictHostKeyChecking=yes."""

    def __init__(self, machine: Machine, command: str, timeout: float):
        import subprocess
        import tempfile
        fd, self.known_hosts = tempfile.mkstemp(prefix="fleet-kh-")
        host_id = machine.host if machine.port == 22 else f"[{machine.host}]:{machine.port}"
        with os.fdopen(fd, "w") as f:
            f.write(f"{host_id} {machine.host_key}\n")
        argv = ["ssh", "-p", str(machine.port), "-i", machine.key_path, "-o", f"UserKnownHostsFile={self.known_hosts}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR", "-o", f"ConnectTimeout={int(min(timeout, 30))}",
                f"{machine.user}@{machine.host}", command]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.sent = 0

    def send(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.sent += len(data)

    def reply(self) -> dict:
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.proc.stdin.close()
            err = self.proc.stderr.read().decode(errors="replace").strip()
            raise MachineUnreachable(f"sync helper ended without answering: {err.splitlines()[-1] if err else 'no output'}")
        return json.loads(line)

    def close(self) -> int:
        try:
            if not self.proc.stdin.closed:
                self.proc.stdin.close()
            return self.proc.wait(timeout=60)
        except Exception:  # noqa: BLE001
            self.proc.kill()
            return self.proc.wait()
        finally:
            with contextlib.suppress(OSError):
                os.unlink(self.known_hosts)


def _use_openssh() -> bool:
    return os.environ.get("FLEET_SYNC_TRANSPORT", "auto") != "paramiko" and shutil.which("ssh") is not None


def sync_machine(machine: Machine, store: Store, targets: list[Target], manifests: dict[str, Manifest], *,
                 session=None, timeout: float = 600,
                 progress: Callable[[int], None] | None = None) -> SyncStats:
    """Bring `targets` onto one machine; raises IntegrityError naming the chunk/path on any mismatch."""
    from ..remote.ssh import connect
    stats = SyncStats(machine.id)
    t0 = time.monotonic()
    openssh = session is None and _use_openssh()
    own = session is None and not openssh
    if own:
        session = connect(machine, timeout=30)
    try:
        command = shlex.join([machine.python, "-c", helper_source()])
        ch = _OpenSSHChannel(machine, command, timeout) if openssh else _Channel(session, command, timeout)
        try:
            ch.send(json.dumps(_request(targets, manifests, chunk_cache(machine))).encode() + b"\n")
            answer = ch.reply()
            current = set(answer["current"])
            todo = [t for t in targets if t.dest not in current]
            needed: dict[str, str] = {}
            for t in todo:
                for sid in t.ids:
                    for e in manifests[sid].files():
                        for h, _ in e.chunks:
                            needed.setdefault(h, e.path)
            owner_sid = {h: sid for t in todo for sid in t.ids for h in manifests[sid].chunk_ids()}
            batch = bytearray()
            for h in answer["missing"]:
                if h not in needed:
                    continue
                data = read_chunk(store, h, needed[h], owner_sid[h])
                batch += h.encode() + b"%012d\n" % len(data)
                batch += data
                stats.bytes_sent += len(data)
                stats.chunks_sent += 1
                if len(batch) >= SEND_BATCH:
                    ch.send(bytes(batch))
                    batch.clear()
                if progress:
                    progress(len(data))
            ch.send(bytes(batch) + END_FRAME)
            job = {"manifests": {sid: json.loads(manifests[sid].canonical_bytes()) for t in todo for sid in t.ids},
                   "targets": [{"dest": t.dest, "ids": t.ids, "read_only": t.read_only} for t in todo]}
            ch.send(json.dumps(job).encode() + b"\n")
            result = ch.reply()
            stats.wire_bytes = ch.sent
        finally:
            ch.close()
        if not result.get("ok"):
            raise IntegrityError(f"sync to machine {machine.id} failed: {result.get('error')}")
        stats.targets_current = sorted(current)
        stats.targets_written = result.get("materialised", [])
    except FleetError:
        raise
    except (OSError, EOFError, ValueError) as exc:
        raise MachineUnreachable(f"sync to machine {machine.id} ({machine.address}) failed: {exc}") from None
    finally:
        if own:
            session.close()
    stats.seconds = time.monotonic() - t0
    return stats


def sync_lease(machines: list[Machine], store: Store, targets_for: Callable[[Machine], list[Target]], *,
               max_workers: int = 8, progress: Callable[[int], None] | None = None) -> list[SyncStats]:
    """Feed every machine in parallel (bounded pool); raise the first failure after all have finished."""
    ids = {sid for m in machines for t in targets_for(m) for sid in t.ids}
    manifests = {sid: load(store, sid) for sid in ids}
    if not machines:
        return []
    with ThreadPoolExecutor(max_workers=min(max_workers, len(machines))) as pool:
        futures = [pool.submit(sync_machine, m, store, targets_for(m), manifests, progress=progress)
                   for m in machines]
        results, errors = [], []
        for f in futures:
            try:
                results.append(f.result())
            except Exception as exc:  # noqa: BLE001 — reported after every machine finished
                errors.append(exc)
    if errors:
        raise errors[0]
    return results
