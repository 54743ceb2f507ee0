"""A manifest's file modes are 0o644 or 0o755, nothing else (manifest.normal_mode): a forged one in a
shared store (anyone who can write it can plant a manifest whose id matches its bytes) asking for
setuid, setgid or world-writable files must not get them, on a machine or in a local restore."""
from __future__ import annotations

import hashlib
import io
import os

import pytest

from fleet.errors import IntegrityError
from fleet.snapshots import materialise, open_store
from fleet.snapshots import remote_helper as helper
from fleet.snapshots.manifest import Entry, Manifest
from fleet.snapshots.remote_cache import Cache, Failure

END = b"0" * 64 + b"0" * 12 + b"\n"
DATA = b"#!/bin/sh\nid\n"
H = hashlib.sha256(DATA).hexdigest()
FORGED = [0o4755, 0o2755, 0o6777, 0o777, 0o666]


def _modes_under(root) -> list[int]:
    return [os.lstat(os.path.join(d, f)).st_mode for d, _, files in os.walk(root) for f in files]


@pytest.mark.parametrize("read_only", [False, True])
@pytest.mark.parametrize("mode", FORGED)
def test_the_machine_refuses_a_file_mode_no_snapshot_holds(tmp_path, mode, read_only):
    cache = Cache(str(tmp_path / "cache"), None)
    cache.put(H, DATA)
    manifest = {"entries": [{"path": "bin/run.sh", "type": "file", "mode": mode, "size": len(DATA),
                             "sha256": H, "chunks": [[H, len(DATA)]]}]}
    target = {"dest": str(tmp_path / "data" / "root"), "ids": ["a" * 64], "read_only": read_only}
    with pytest.raises(Failure, match=r"bin/run.sh: mode 0o%o is not a snapshot file's mode" % mode):
        helper.materialise(target, {"a" * 64: manifest}, cache, helper.Frames(io.BytesIO(END), set()))
    assert not (tmp_path / "data" / "root").exists()
    assert not any(m & 0o7022 for m in _modes_under(tmp_path / "data"))


@pytest.mark.parametrize("mode", FORGED)
def test_a_local_restore_refuses_it_in_one_line(tmp_path, monkeypatch, mode):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    store = open_store(str(tmp_path / "store"))
    store.put_chunk(H, DATA)
    manifest = Manifest([Entry("run.sh", "file", mode, len(DATA), H, ((H, len(DATA)),))])
    store.put_manifest(manifest.id, manifest.canonical_bytes())
    with pytest.raises(IntegrityError, match=r"'run.sh' has a mode \(0o%o\) no snapshot file has" % mode):
        materialise(store, manifest.id, tmp_path / "out")
    assert not (tmp_path / "out").exists()
