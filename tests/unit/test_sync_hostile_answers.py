"""A machine's sync helper is not trusted (red-team findings): the base it names for a manifest
delta is never opened as a path on the controller (it read /etc/passwd, hung on /dev/stdin, ran out
of memory on /dev/zero), and an answer of the wrong shape or without end fails that machine's sync
in one line instead of an internal error or unbounded memory."""
from __future__ import annotations

import pathlib

import pytest

from fleet.errors import MachineUnreachable, NotFound
from fleet.models import Machine
from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_machine
from fleet.snapshots.sync_channel import MAX_ANSWER, answer_of
from fleet.snapshots.sync_manifests import Prepared


class HostileChannel:
    """The sync channel, answering with a hostile machine's lines."""
    timeout = 600

    def __init__(self, answers):
        self.answers, self.sent = list(answers), 0

    def send(self, bufs):
        self.sent += sum(len(b) for b in bufs)

    def reply(self):
        return answer_of(self.answers.pop(0))

    def close(self):
        return 0


def _machine() -> Machine:
    return Machine.from_dict({"id": "m-evil", "lease_id": "l1", "provider": "local", "host": "127.0.0.1",
                              "port": 22, "user": "u", "key_path": "/nonexistent", "host_key": "",
                              "workdir": "/tmp/w", "state_dir": "/tmp/w/.fleet", "node_rank": 0,
                              "python": "python3", "agent_path": "/tmp/a.py"})


@pytest.fixture
def snapshot(tmp_path, fleet_home):
    store = open_store(str(tmp_path / "store"))
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.txt").write_text("x" * (1000 + i))
    return store, create_snapshot(src, store).id


@pytest.mark.parametrize("base", ["/etc/passwd", "../../../../etc/hostname", "/dev/zero", "a" * 63 + "/"])
def test_a_delta_base_named_by_the_machine_is_never_opened_as_a_path(snapshot, monkeypatch, base):
    store, sid = snapshot
    opened = []
    read_bytes = pathlib.Path.read_bytes
    monkeypatch.setattr(pathlib.Path, "read_bytes", lambda self: opened.append(str(self)) or read_bytes(self))
    answers = [b'{"current": [], "need": ["%s"], "have": {"%s": "%s"}}' % (sid.encode(), sid.encode(), base.encode()),
               b'{"missing": []}', b'{"ok": true, "materialised": []}']
    sync_machine(_machine(), store, [Target("/tmp/w/x", [sid])], prepared=Prepared(store, {sid}),
                 channel=HostileChannel(answers))
    assert all("/manifests/" in p and p.endswith(sid) for p in opened), opened
    with pytest.raises(NotFound, match="not a snapshot id"):
        store.get_manifest(base)


@pytest.mark.parametrize("line", [b"[]", b'{"current": 5}', b'{"current": [], "missing": [[1]]}',
                                  b'{"current": [], "need": [], "have": []}', b'{"ok": true, "materialised": 7}',
                                  b'{"ok": true, "received": -1}'])
def test_an_answer_of_the_wrong_shape_fails_the_machines_sync_in_one_line(snapshot, line):
    store, sid = snapshot
    with pytest.raises(MachineUnreachable, match="sync to machine m-evil .* failed: the machine's answer"):
        sync_machine(_machine(), store, [Target("/tmp/w/x", [sid])], prepared=Prepared(store, {sid}),
                     channel=HostileChannel([b'{"current": [], "missing": []}', line] if b"ok" in line else [line]))


def test_an_answer_without_end_is_refused_past_its_bound():
    with pytest.raises(ValueError, match="longer than"):
        answer_of(b"[" * (MAX_ANSWER + 1))


def test_the_openssh_channel_stops_reading_an_answer_without_end_at_its_bound(monkeypatch):
    """A helper that writes without a newline: the controller keeps at most the bound, then ends it."""
    import subprocess
    import sys
    import time

    from fleet.snapshots import sync_channel
    monkeypatch.setattr(sync_channel, "MAX_ANSWER", 4 * 1024 * 1024)
    popen = subprocess.Popen
    endless = "import sys, time\nwhile True:\n    sys.stdout.buffer.write(b'x' * 65536); sys.stdout.flush()\n"
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kw: popen([sys.executable, "-c", endless], **kw))
    ch = sync_channel.OpenSSHChannel(_machine(), "helper", timeout=30)
    try:
        t0 = time.monotonic()
        with pytest.raises(ValueError, match="longer than 4 MiB"):
            ch.reply()
        assert time.monotonic() - t0 < 20 and len(ch.pending) <= 4 * 1024 * 1024 + 65536
        assert ch.proc.wait(timeout=10) != 0
    finally:
        ch.close()                             # removes its known_hosts file from /tmp
