"""The local store against what a teammate sharing a store directory (a `file://` store on a team
path) or a crash can leave in it: gc removes files only inside the store, and a chunk file whose
size is not the chunk's (a power loss between the rename and the flush) is written again, not
trusted."""
from __future__ import annotations

import os
import time

import pytest

from fleet.snapshots import gc, open_store


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    return open_store(None)


def _old(path):
    old = time.time() - 7200
    os.utime(path, (old, old), follow_symlinks=False)


def test_gc_does_not_follow_a_planted_link_out_of_the_store(store, tmp_path):
    victim = tmp_path / "victim-home"
    victim.mkdir()
    dotfile, hexfile, plain = victim / ".bashrc", victim / ("d" * 64), victim / "notes.txt"
    for f in (dotfile, hexfile, plain):
        f.write_text("mine")
        _old(f)
    os.symlink(victim, store.root / "chunks" / "zz")          # a fan-out directory that leads out
    tmp = store.root / "tmp"
    tmp.rmdir()
    os.symlink(victim, tmp)                                   # the store's tmp/ too
    gc(store, grace_s=3600)
    assert dotfile.exists() and hexfile.exists() and plain.exists()


def test_a_truncated_chunk_under_its_final_name_is_written_again(store):
    data = os.urandom(300 * 1024)
    h = "c" * 64
    final = store.root / "chunks" / h[:2] / h
    final.parent.mkdir(parents=True, exist_ok=True)
    final.write_bytes(data[:4096])                            # what a power loss can leave after the rename
    _old(final)
    assert store.put_chunk(h, data) is True
    assert store.get_chunk(h) == data


def test_a_writer_with_our_pid_and_thread_id_keeps_its_temporary_file(store):
    # Two processes sharing a store from different pid namespaces (a container, the sandbox's
    # laptop) can have the same pid and thread id. The other one's dot file is a live write: taking
    # it for a crashed writer's leftover and unlinking it made that writer's rename fail, or rename
    # this one's half-written file under the chunk's final name.
    import threading
    data = os.urandom(200 * 1024)
    h = "b" * 64
    fan_out = store.root / "chunks" / h[:2]
    fan_out.mkdir(parents=True, exist_ok=True)
    theirs = fan_out / f".{h}.{os.getpid()}.{threading.get_ident()}"
    theirs.write_bytes(data[:8192])                           # still being written
    assert store.put_chunk(h, data) is True
    assert theirs.read_bytes() == data[:8192]
    assert store.get_chunk(h) == data
