"""Checkpoint upload and restore against real local machines (sshd): only chunks the store lacks
cross the network, the snapshot restores byte for byte, a chunk rewritten mid-upload is refused."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fleet.errors import FleetError
from fleet.run.checkpoints import Resume, checkpoint_dir, prepare, ref_name, upload
from fleet.snapshots import open_store
from fleet.snapshots.restore import materialise


def _ckpt(machine, run_id: str = "r-test") -> Path:
    return Path(checkpoint_dir(machine, run_id))


def test_second_upload_sends_only_the_changed_chunks_and_restores_exactly(local_lease, fleet_home, tmp_path):
    lease = local_lease(gpus=1)
    [m] = lease.machines
    store = open_store(str(tmp_path / "store"))
    prepare(lease, store, "r-test", None)
    data = bytearray(os.urandom(16 << 20))
    (_ckpt(m) / "model.bin").write_bytes(data)
    (_ckpt(m) / "sub").mkdir()
    (_ckpt(m) / "sub" / "step.txt").write_text("7\n")
    first = upload(m, store, "r-test")
    assert first.bytes_total == (16 << 20) + 2 and first.bytes_sent == first.bytes_total and first.files == 2
    assert store.get_ref(ref_name("r-test", 0)) == first.snapshot_id

    data[5 << 20:(5 << 20) + (1 << 20)] = os.urandom(1 << 20)   # 1 MiB rewritten in place
    (_ckpt(m) / "model.bin").write_bytes(data)
    second = upload(m, store, "r-test")
    assert second.snapshot_id != first.snapshot_id
    assert 0 < second.bytes_sent <= 2 * (1 << 20) + (4 << 20), second   # the chunks around the change, not 16 MiB
    assert store.get_ref(ref_name("r-test", 0)) == second.snapshot_id
    unchanged = upload(m, store, "r-test")
    assert unchanged.snapshot_id == second.snapshot_id and unchanged.bytes_sent == 0

    out = tmp_path / "restored"
    materialise(store, second.snapshot_id, out)
    assert (out / "model.bin").read_bytes() == bytes(data)
    assert (out / "sub" / "step.txt").read_text() == "7\n"


def test_a_resumed_machine_gets_the_checkpoint_restored(local_lease, fleet_home, tmp_path):
    first, second = local_lease(gpus=1), local_lease(gpus=1)
    store = open_store(str(tmp_path / "store"))
    prepare(first, store, "r-test", None)
    [a], [b] = first.machines, second.machines
    (_ckpt(a) / "state.json").write_text('{"step": 41}')
    up = upload(a, store, "r-test")
    prepare(second, store, "r-test-a2", Resume(attempt=2, snapshots={0: up.snapshot_id}))
    assert (_ckpt(b, "r-test-a2") / "state.json").read_text() == '{"step": 41}'
    # restored writable: the resumed experiment overwrites its checkpoint
    (_ckpt(b, "r-test-a2") / "state.json").write_text('{"step": 42}')


def test_an_empty_checkpoint_directory_makes_no_snapshot(local_lease, fleet_home, tmp_path):
    lease = local_lease(gpus=1)
    store = open_store(str(tmp_path / "store"))
    prepare(lease, store, "r-empty", None)
    up = upload(lease.machines[0], store, "r-empty")
    assert up.snapshot_id == "" and up.bytes_sent == 0
    assert store.get_ref(ref_name("r-empty", 0)) is None


def test_an_empty_checkpoint_directory_is_answered_without_starting_python(local_lease, fleet_home, tmp_path):
    # Most runs checkpoint nothing: the shell answers for an empty directory, so the machine's
    # Python (here one that cannot start) is never run for it; a directory with a file needs it.
    from dataclasses import replace
    lease = local_lease(gpus=1)
    store = open_store(str(tmp_path / "store"))
    prepare(lease, store, "r-empty", None)
    broken = replace(lease.machines[0], python="/nonexistent/python3")
    up = upload(broken, store, "r-empty")
    assert up.snapshot_id == "" and up.bytes_sent == 0 and up.files == 0
    (_ckpt(broken, "r-empty") / ".hidden").write_text("1")     # a dot file is a checkpoint too
    with pytest.raises(FleetError, match="checkpoint upload from"):   # the helper was needed, and cannot start
        upload(broken, store, "r-empty")
    assert upload(lease.machines[0], store, "r-empty").files == 1
