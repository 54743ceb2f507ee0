"""fetch_directory (fleet/stage.py) over a fake SSH channel: every way the outputs of a machine can
fail to come home whole ends in `incomplete`, saying why, with the complete files kept; a transfer
cut short used to be a silent success (the error dropped, a truncated checkpoint kept)."""
from __future__ import annotations

import contextlib
import errno
import io
import os
import tarfile

import pytest

from fleet import stage


class _Channel:
    def __init__(self, data: bytes, status: int, err: bytes = b"", drops: bool = False):
        """`drops`: the connection it rides is lost under it (the session goes inactive)."""
        self.data, self.status, self.err, self.command = io.BytesIO(data), status, err, None
        self.drops = drops

    def settimeout(self, seconds):
        pass

    def exec_command(self, command):
        self.command = command

    def recv(self, n):
        return self.data.read(min(n, 1 << 16))

    def makefile_stderr(self, mode):
        return io.BytesIO(self.err)

    def recv_exit_status(self):
        return self.status

    def close(self):
        pass


@pytest.fixture
def machine(monkeypatch):
    """Answers each fetch with the next channel a test queued."""
    channels: list[_Channel] = []

    class Session:
        active = True                          # each connect() is a connection of its own

        def open_channel(self, **kwargs):
            chan = channels.pop(0)
            self.active = not chan.drops
            return chan

    monkeypatch.setattr(stage, "connect", lambda m: contextlib.nullcontext(Session()))
    return channels


def _tar(*files: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _listing(d) -> list[str]:
    return sorted(p.name for p in d.rglob("*"))


def test_a_transfer_cut_mid_file_is_incomplete_and_keeps_only_whole_files(machine, tmp_path):
    data = _tar(("metrics.json", b"{}"), ("model.ckpt", os.urandom(3 << 20)))
    machine.append(_Channel(data[:2 << 20], -1))   # the link went: no exit status
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert got.incomplete == "the transfer ended early (unexpected end of data)"
    assert got.files == 1 and _listing(tmp_path / "node-0") == ["metrics.json"]


def test_outputs_whose_connection_dropped_come_home_on_a_fresh_one(machine, tmp_path):
    """Seen under load: a sweep's pooled connection dropped while four trials used it, and one
    trial's outputs ended "tar on the machine exited -1" (its run an error) although nothing was
    wrong with them. The tar only reads: once more on a fresh connection brings them home."""
    data = _tar(("metrics.json", b"{}"), ("model.ckpt", b"w" * 5000))
    machine.append(_Channel(data[:1024], -1, drops=True))    # the connection went mid-transfer
    machine.append(_Channel(data, 0))
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert got.incomplete is None and got.files == 2 and machine == []
    assert (tmp_path / "node-0" / "model.ckpt").read_bytes() == b"w" * 5000


def test_a_connection_that_drops_twice_is_incomplete(machine, tmp_path):
    machine.append(_Channel(b"", -1, drops=True))
    machine.append(_Channel(b"", -1, drops=True))
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert got.incomplete == "tar on the machine exited -1"


def test_a_machine_gone_after_the_drop_keeps_what_the_first_try_brought(machine, tmp_path, monkeypatch):
    """A spot reclaim: the connection drops and the machine no longer answers. The outputs that
    came whole are kept and the rest is named incomplete; the failed reconnect is not the result."""
    data = _tar(("metrics.json", b"{}"), ("model.ckpt", os.urandom(3 << 20)))
    machine.append(_Channel(data[:2 << 20], -1, drops=True))
    first_connect = stage.connect

    def gone_after_the_first(m):
        monkeypatch.setattr(stage, "connect", _refused)
        return first_connect(m)

    monkeypatch.setattr(stage, "connect", gone_after_the_first)
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert got.incomplete == "the transfer ended early (unexpected end of data)"
    assert _listing(tmp_path / "node-0") == ["metrics.json"]


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    return info


def test_a_retry_cannot_combine_its_links_with_the_first_trys_to_lead_outside(machine, tmp_path):
    """Each stream's links are judged inside the outputs alone; unpacked over each other, a hostile
    machine's two streams led outside (p -> q1/q2/q3/../../.. first; q1, q2, q3 -> . second): the
    second try starts from an empty directory."""
    def stream(*links: tarfile.TarInfo) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for info in links:
                tar.addfile(info)
            tar.addfile(tarfile.TarInfo("big"), io.BytesIO(b""))
        return buf.getvalue()
    first = stream(_link("p", "q1/q2/q3/../../.."))
    machine.append(_Channel(first[:-1024], -1, drops=True))   # p, then the connection goes
    machine.append(_Channel(stream(_link("q1", "."), _link("q2", "."), _link("q3", ".")), 0))
    dest = tmp_path / "node-0"
    stage.fetch_directory(None, "/w/outputs/r1", dest)
    for link in dest.iterdir():
        assert os.path.realpath(link).startswith(str(dest)), (link, os.path.realpath(link))


def test_outputs_into_a_directory_that_already_held_some_are_not_retried(machine, tmp_path):
    dest = tmp_path / "node-0"
    dest.mkdir()
    (dest / "from-attempt-1.txt").write_text("kept")
    machine.append(_Channel(b"", -1, drops=True))
    got = stage.fetch_directory(None, "/w/outputs/r1", dest)
    assert got.incomplete == "tar on the machine exited -1" and len(machine) == 0
    assert (dest / "from-attempt-1.txt").read_text() == "kept"


def _refused(m):
    raise ConnectionRefusedError("machine gone")


def test_tar_killed_between_two_files_is_incomplete(machine, tmp_path):
    data = _tar(("a", b"1"))
    machine.append(_Channel(data[:1024], 143, b"Terminated\n"))   # a whole member, then nothing
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert got.incomplete == "tar on the machine exited 143 (Terminated)" and got.files == 1


def test_a_file_that_changed_while_read_is_named_but_the_outputs_are_whole(machine, tmp_path):
    machine.append(_Channel(_tar(("a", b"1")), 1, b"tar: ./a: file changed as we read it\n"))
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert got.incomplete is None
    assert got.skipped == ["/w/outputs/r1: tar on the machine exited 1 (tar: ./a: file changed as we read it)"]


def test_a_full_disk_is_one_line_naming_where(machine, tmp_path, monkeypatch):
    real_write = os.write

    def full(fd, data):
        if len(data) > 100:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", full)
    machine.append(_Channel(_tar(("small", b"1"), ("big", b"x" * 5000)), 0))
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert got.incomplete == f"no space left to write into {tmp_path / 'node-0'} (No space left on device)"
    assert _listing(tmp_path / "node-0") == ["small"]   # the half-written file is gone, its space freed


def test_the_limit_stops_at_the_file_that_crosses_it(machine, tmp_path):
    machine.append(_Channel(_tar(("a", b"1" * 600), ("b", b"2" * 600)), 0))
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0", limit=1000)
    assert got.incomplete.startswith("b: the outputs pass their limit of 1000 B here") and got.files == 1


def test_the_machine_sends_sparse_files_as_sparse_with_gnu_tar(machine, tmp_path):
    channel = _Channel(b"", 0)
    machine.append(channel)
    stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert "grep -q 'GNU tar' && s=--sparse; tar $s -cf - -C /w/outputs/r1 ." in channel.command


def test_a_file_tar_could_not_read_is_named(machine, tmp_path):
    """One unreadable file (mode 000) makes GNU tar exit 2: the run is incomplete, and the reason
    names the file, not tar's closing summary line."""
    err = (b"tar: ./ckpt/secret: Cannot open: Permission denied\n" * 2000
           + b"tar: ./ckpt/last: Cannot open: Permission denied\n"
           + b"tar: Exiting with failure status due to previous errors\n")
    machine.append(_Channel(_tar(("a", b"1")), 2, err))
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert got.incomplete == "tar on the machine exited 2 (tar: ./ckpt/last: Cannot open: Permission denied)"
    assert got.files == 1


def test_what_tar_says_is_bounded(machine, tmp_path):
    machine.append(_Channel(_tar(("a", b"1")), 2, b"tar: " + b"x" * 5000 + b"\n"))
    got = stage.fetch_directory(None, "/w/outputs/r1", tmp_path / "node-0")
    assert got.incomplete == "tar on the machine exited 2 (tar: " + "x" * 295 + "…)"



def test_a_retry_after_a_tree_deeper_than_the_stack_came_in_part_brings_the_outputs(machine, tmp_path):
    """The first try's partial outputs are deleted before the second: with shutil.rmtree, which
    recurses once per level, a run's tree 1,500 levels deep failed the fetch on RecursionError."""
    from tests.fixtures.deep_tree import deep_tree, remove
    dest = tmp_path / "node-0"

    class DeepThenDrops(_Channel):   # what unpacking the tree's first part leaves (made directly: faster)
        def recv(self, n):
            deep_tree(dest / "deep")
            return b""
    machine.append(DeepThenDrops(b"", -1, drops=True))
    machine.append(_Channel(_tar(("metrics.json", b"{}")), 0))
    try:
        got = stage.fetch_directory(None, "/w/outputs/r1", dest)
        assert got.incomplete is None and got.files == 1 and machine == []
        assert _listing(dest) == ["metrics.json"]
    finally:
        remove(dest)
