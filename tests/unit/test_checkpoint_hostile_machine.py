"""A machine's checkpoint upload is not trusted (red-team findings): a frame length other than the
size its listing gave ("-01" read to the end of the stream; twelve nines ran the controller out of
memory) and a listing that is not one fail that node's upload in one line, and one node's failure
never drops the other nodes' uploads."""
from __future__ import annotations

import hashlib
import io
import json

import pytest

import fleet.remote.ssh as ssh
from fleet.errors import MachineUnreachable
from fleet.models import Machine
from fleet.run import checkpoints
from fleet.snapshots import open_store

DATA = b"A" * 1000
H = hashlib.sha256(DATA).hexdigest()
LISTING = json.dumps({"entries": [{"path": "c", "type": "file", "size": 1000, "sha256": H,
                                   "chunks": [[H, 1000]]}]}).encode() + b"\n"


class Endless(io.RawIOBase):
    """`head`, then zeros for ever: what a hostile machine can send."""

    def __init__(self, head: bytes):
        self.head, self.served = head, 0

    def readable(self):
        return True

    def readinto(self, buf):
        if self.head:
            k = min(len(buf), len(self.head))
            buf[:k], self.head = self.head[:k], self.head[k:]
            return k
        self.served += len(buf)
        buf[:] = b"\0" * len(buf)
        return len(buf)


def _machine(rank: int = 0) -> Machine:
    return Machine.from_dict({"id": f"m-{rank}", "lease_id": "l1", "provider": "local", "host": "127.0.0.1",
                              "port": 22, "user": "u", "key_path": "/nonexistent", "host_key": "",
                              "workdir": "/tmp/w", "state_dir": "/tmp/w/.fleet", "node_rank": rank,
                              "python": "python3", "agent_path": "/tmp/a.py"})


def _answering(monkeypatch, streams: dict[str, bytes]):
    """Machines whose upload channel sends `streams[machine id]`; returns what each sent beyond it."""
    sources = {}

    class Channel:
        def __init__(self, machine_id):
            self.machine_id = machine_id

        def settimeout(self, t):
            pass

        def exec_command(self, command):
            pass

        def makefile(self, mode):
            sources[self.machine_id] = Endless(streams[self.machine_id])
            return io.BufferedReader(sources[self.machine_id])

        def makefile_stdin(self, mode):
            return io.BytesIO()

        def makefile_stderr(self, mode):
            return io.BytesIO()

    class Session:
        def __init__(self, machine):
            self.machine = machine

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def open_channel(self, **kw):
            return Channel(self.machine.id)
    monkeypatch.setattr(ssh, "connect", lambda machine, **kw: Session(machine))
    return sources


@pytest.mark.parametrize("length", [b"999999999999", b"         -01", b"000000000999"])
def test_a_frame_length_not_the_listed_size_fails_the_upload_without_reading_it(monkeypatch, tmp_path, length):
    sources = _answering(monkeypatch, {"m-0": LISTING + H.encode() + length + b"\n"})
    with pytest.raises(MachineUnreachable, match="checkpoint upload from m-0 .*has length"):
        checkpoints._upload(_machine(), open_store(str(tmp_path / "store")), "r-1", 60)
    assert sources["m-0"].served < 1 << 20        # nothing read past the frame's head


@pytest.mark.parametrize("listing", [b"[1, 2]\n", b'{"entries": 5}\n', b'{"entries": [7]}\n'])
def test_a_listing_that_is_not_one_fails_the_upload_in_one_line(monkeypatch, tmp_path, listing):
    _answering(monkeypatch, {"m-0": listing})
    with pytest.raises(MachineUnreachable, match="checkpoint upload from m-0 .*(malformed|has a type)"):
        checkpoints._upload(_machine(), open_store(str(tmp_path / "store")), "r-1", 60)


def test_one_nodes_hostile_upload_leaves_the_others_recorded(monkeypatch, tmp_path):
    """Node 1's upload fails (a listing that is not one, which raised a raw TypeError in the
    checkpoint thread); node 0's still becomes the latest, and the failure is one warning."""
    from types import SimpleNamespace
    _answering(monkeypatch, {"m-0": LISTING + H.encode() + b"%012d\n" % len(DATA) + DATA + b"{}\n",
                             "m-1": b"[1, 2]\n"})
    warned = []
    lease = SimpleNamespace(machines=[_machine(0), _machine(1)])
    ckpt = checkpoints.Checkpointer(lease, open_store(str(tmp_path / "store")), "r-1", 0, warned.append)
    ckpt.sync()
    assert list(ckpt.latest) == [0] and len(warned) == 1 and "node 1 not uploaded" in warned[0]
