"""A changed read-only target is patched where it stands: only what changed is written (unchanged files
keep their inodes, a large file changed inside is rebuilt from its old copy's chunks), its manifest
crosses as a delta of the one the machine holds, and the result is exactly the new snapshot, for
this machine and for the next lease on the host."""
from __future__ import annotations

import os
import random

from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.sync import Target, sync_machine
from fleet.snapshots.sync_remote import data_dir


def _listing(root) -> dict[str, object]:
    """path → bytes (files), link target (symlinks) or None (directories), mode bits aside."""
    out: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                out[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                out[rel] = None
            else:
                with open(path, "rb") as f:
                    out[rel] = f.read()
    return out


def _tree(root, rng):
    (root / "small").mkdir(parents=True)
    for i in range(300):
        (root / "small" / f"f{i:03d}.bin").write_bytes(rng.randbytes(2_000 + i))
    (root / "big.bin").write_bytes(rng.randbytes(6 * 1024 * 1024))       # many chunks
    (root / "shifted.bin").write_bytes(rng.randbytes(3 * 1024 * 1024))
    (root / "gone").mkdir()
    (root / "gone" / "x.txt").write_text("removed later\n")
    (root / "becomes_dir").write_text("a file now, a directory later\n")
    (root / "link").symlink_to("small/f001.bin")


def test_a_changed_tree_is_patched_in_place_from_a_manifest_delta(fleet_home, local_lease, tmp_path):
    rng = random.Random(19)
    src = tmp_path / "d"
    _tree(src, rng)
    store = open_store(None)
    v1 = create_snapshot(src, store)
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "d")
    first = sync_machine(m, store, [Target(dest, [v1.id], read_only=True)])
    assert _listing(dest) == _listing(src)
    inode = os.stat(f"{dest}/small/f000.bin").st_ino
    big_inode = os.stat(f"{dest}/big.bin").st_ino
    root_inode = os.stat(dest).st_ino

    # change: 2 small files, 256 KiB inside the big one, a file and a directory removed, a file that
    # becomes a directory, a symlink pointing elsewhere, a new file in a new directory
    for i in (3, 40):
        (src / "small" / f"f{i:03d}.bin").write_bytes(rng.randbytes(2_000))
    with open(src / "big.bin", "r+b") as f:
        f.seek(3 * 1024 * 1024)
        f.write(rng.randbytes(256 * 1024))
    shifted = (src / "shifted.bin").read_bytes()
    (src / "shifted.bin").write_bytes(b"inserted at the front\n" + shifted)    # every chunk moves
    (src / "small" / "f010.bin").unlink()
    (src / "gone" / "x.txt").unlink()
    (src / "gone").rmdir()
    (src / "becomes_dir").unlink()
    (src / "becomes_dir").mkdir()
    (src / "becomes_dir" / "inside.txt").write_text("now inside\n")
    (src / "link").unlink()
    (src / "link").symlink_to("small/f002.bin")
    (src / "new").mkdir()
    (src / "new" / "n.txt").write_text("new\n")
    v2 = create_snapshot(src, store)
    second = sync_machine(m, store, [Target(dest, [v2.id], read_only=True)])

    assert _listing(dest) == _listing(src)
    assert os.stat(dest).st_ino == root_inode                            # patched, not replaced
    assert os.stat(f"{dest}/small/f000.bin").st_ino == inode              # unchanged: the same file
    assert second.files_reused == 297                                    # 300 - 2 changed - 1 removed
    # the manifest crossed as a delta: a small fraction of the first (whole, compressed) manifest
    assert 0 < second.manifest_bytes < first.manifest_bytes / 4
    # about the changed bytes crossed, not the large files again (their unchanged chunks came from their
    # old copies: big.bin overwritten where it stands, shifted.bin rebuilt from its moved chunks)
    assert second.bytes_sent < 2 * 1024 * 1024
    assert os.stat(f"{dest}/big.bin").st_ino == big_inode
    for dirpath, dirs, files in os.walk(dest):                           # still read-only throughout
        for name in dirs + files:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                assert not os.stat(path).st_mode & 0o222, path
    assert not os.stat(dest).st_mode & 0o222
    assert not [n for n in os.listdir(os.path.dirname(dest)) if "partial" in n or "fleet-patch" in n]

    # nothing changed since: current in one round trip; a new lease on the host receives nothing
    again = sync_machine(m, store, [Target(dest, [v2.id], read_only=True)])
    assert again.targets_current == [dest] and again.wire_bytes < 1024
    (other,) = local_lease(gpus=1).machines
    fresh = sync_machine(other, store, [Target(data_dir(other, "d"), [v2.id], read_only=True)])
    assert fresh.bytes_sent == 0 and _listing(data_dir(other, "d")) == _listing(src)


def test_a_delta_that_does_not_reproduce_its_id_is_replaced_by_the_whole_manifest(fleet_home, local_lease, tmp_path,
                                                                                 monkeypatch):
    import json
    import zlib

    from fleet.snapshots import sync_manifests
    rng = random.Random(7)
    src = tmp_path / "d"
    _tree(src, rng)
    store = open_store(None)
    v1 = create_snapshot(src, store)
    (m,) = local_lease(gpus=1).machines
    dest = data_dir(m, "d")
    sync_machine(m, store, [Target(dest, [v1.id], read_only=True)])
    (src / "small" / "f005.bin").write_bytes(b"changed\n")
    v2 = create_snapshot(src, store)
    real = sync_manifests.Prepared.delta

    def wrong(self, sid, base):                     # a delta that leaves one change out
        body = json.loads(zlib.decompress(real(self, sid, base)))
        body["put"] = body["put"][1:]
        return zlib.compress(json.dumps(body).encode())
    monkeypatch.setattr(sync_manifests.Prepared, "delta", wrong)
    second = sync_machine(m, store, [Target(dest, [v2.id], read_only=True)])
    assert _listing(dest) == _listing(src) and second.bytes_sent == 8
    assert second.manifest_bytes > len(zlib.compress(store.get_manifest(v2.id), 6))     # delta, then whole
