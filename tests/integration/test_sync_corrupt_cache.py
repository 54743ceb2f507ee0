"""A corrupt entry in a host's chunk cache is dropped and the sync tries once more on a fresh channel,
which sends it: the run goes on, with a warning naming the entry. A second corruption still fails."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field

import pytest

from fleet.errors import IntegrityError
from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots import sync as sync_module
from fleet.snapshots.sync import Target, sync_lease, sync_machine
from fleet.snapshots.sync_remote import chunk_cache, data_dir


def _tamper(m, h: str, at: int | None = None) -> str:
    """Damage the cache entry named h: replace it, or flip the byte at offset `at`."""
    entry = f"{chunk_cache(m)}/{h[:2]}/{h}"
    os.chmod(entry, 0o644)
    with open(entry, "r+b" if at is not None else "wb") as f:
        if at is None:
            f.write(b"tampered")
        else:
            f.seek(at)
            byte = f.read(1)
            f.seek(at)
            f.write(bytes([byte[0] ^ 0xFF]))
    return entry


def _code(root, files: dict[str, str]):
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_a_second_corrupt_entry_in_the_retry_fails_with_the_clear_message(fleet_home, local_lease, tmp_path,
                                                                          monkeypatch):
    store = open_store(None)
    snap = create_snapshot(_code(tmp_path / "c", {"a.py": "print('a')\n", "b.py": "print('b')\n"}), store)
    (m,) = local_lease(gpus=1).machines
    sync_machine(m, store, [Target(f"{m.workdir}/one", [snap.id])])
    for e in snap.manifest.files():
        _tamper(m, e.sha256)
    tries = []
    real = sync_module._stream
    monkeypatch.setattr(sync_module, "_stream", lambda *a, **k: tries.append(1) or real(*a, **k))
    # a.py's entry fails the first try (dropped); the retry sends a.py, then finds b.py's: no third try
    with pytest.raises(IntegrityError, match=r"b\.py does not match its recorded hash \(a corrupt cached copy "
                                             r"was dropped; sync again\)"):
        sync_machine(m, store, [Target(f"{m.workdir}/two", [snap.id])])
    assert len(tries) == 2 and not os.path.exists(f"{m.workdir}/two")
    again = sync_machine(m, store, [Target(f"{m.workdir}/two", [snap.id])])
    assert again.cache_dropped is None and again.chunks_sent == 1            # b.py; a.py is cached, good
    assert open(f"{m.workdir}/two/b.py").read() == "print('b')\n"


def test_a_target_the_first_try_finished_is_not_sent_again(fleet_home, local_lease, tmp_path):
    """The first try built the data target, then failed on the code's corrupt entry: the retry (on a
    fresh channel; the dialled one is used up) finds the data current and sends only the code."""
    from fleet.snapshots.sync_channel import dial
    store = open_store(None)
    rng = random.Random(3)
    data = tmp_path / "d"
    data.mkdir()
    for i in range(5):
        (data / f"f{i}.bin").write_bytes(rng.randbytes(100_000))
    dsnap = create_snapshot(data, store)
    csnap = create_snapshot(_code(tmp_path / "c", {"train.py": "print('v1')\n"}), store)
    (m,) = local_lease(gpus=1).machines
    sync_machine(m, store, [Target(f"{m.workdir}/warm", [csnap.id])])
    (code_file,) = csnap.manifest.files()
    _tamper(m, code_file.sha256)
    channels = dial([m])
    targets = lambda mm: [Target(data_dir(mm, "d"), [dsnap.id], read_only=True),   # noqa: E731
                          Target(f"{mm.workdir}/code", [csnap.id])]
    (stats,) = sync_lease([m], store, targets, channels=channels)
    assert channels == {}
    assert stats.cache_dropped == f"train.py (chunk {code_file.sha256[:12]})"
    assert sorted(stats.targets_written) == sorted([data_dir(m, "d"), f"{m.workdir}/code"])
    assert stats.targets_current == []
    assert stats.bytes_sent == dsnap.manifest.unique_chunk_bytes() + len("print('v1')\n")
    assert open(f"{m.workdir}/code/train.py").read() == "print('v1')\n"
    assert all((data / n).read_bytes() == open(f"{data_dir(m, 'd')}/{n}", "rb").read() for n in os.listdir(data))


@dataclass
class _Events:
    warnings: list[str] = field(default_factory=list)

    def phase(self, name: str, detail: str = "") -> None:
        pass

    def warn(self, message: str) -> None:
        self.warnings.append(message)


@dataclass
class _Ctx:
    lease: object
    events: _Events


def test_a_corrupt_chunk_found_through_the_index_is_resent_with_a_warning(fleet_home, local_lease, tmp_path):
    """A chunk of a cached multi-chunk file (found through index.txt) reads corrupt: the whole file's
    entry is dropped, the retry sends its chunks, and staging says so in one warning line."""
    from fleet.snapshots.sync_progress import stage_lease
    store = open_store(None)
    rng = random.Random(9)
    src = tmp_path / "d"
    src.mkdir()
    big = rng.randbytes(6 * 1024 * 1024)
    (src / "big.bin").write_bytes(big)
    v1 = create_snapshot(src, store)
    (e1,) = v1.manifest.files()
    assert len(e1.chunks) > 2
    lease = local_lease(gpus=1)
    (m,) = lease.machines
    sync_machine(m, store, [Target(data_dir(m, "one"), [v1.id], read_only=True)])
    entry = _tamper(m, e1.sha256, at=e1.chunks[0][1] + 10)                 # inside the second chunk
    (src / "big.bin").write_bytes(big + b"tail")                           # a new file: built from chunks
    v2 = create_snapshot(src, store)
    ctx = _Ctx(lease, _Events())
    (stats,) = stage_lease(ctx, store, lambda mm: [Target(data_dir(mm, "two"), [v2.id], read_only=True)], {}, None)
    assert open(f"{data_dir(m, 'two')}/big.bin", "rb").read() == big + b"tail"
    assert stats.bytes_sent >= len(big) - e1.chunks[0][1] and not os.path.exists(entry)
    assert ctx.events.warnings == [
        f"machine {m.id}: a corrupt entry in its host's chunk cache, big.bin (chunk {e1.chunks[1][0][:12]}), "
        "was dropped and sent again"]


def test_a_wrong_index_line_over_a_good_cached_file_is_dropped_and_later_syncs_work(fleet_home, local_lease,
                                                                                   tmp_path):
    """index.txt sends a chunk to the wrong bytes of a whole file that is itself good: the line is
    dropped (the file stays), the sync goes on after one retry with the warning, and the next sync,
    which reads the index again, no longer meets it."""
    from fleet.snapshots.sync_progress import stage_lease
    store = open_store(None)
    rng = random.Random(11)
    src = tmp_path / "d"
    src.mkdir()
    big = rng.randbytes(6 * 1024 * 1024)
    (src / "big.bin").write_bytes(big)
    v1 = create_snapshot(src, store)
    (e1,) = v1.manifest.files()
    lease = local_lease(gpus=1)
    (m,) = lease.machines
    sync_machine(m, store, [Target(data_dir(m, "one"), [v1.id], read_only=True)])
    index = f"{chunk_cache(m)}/index.txt"
    h1 = e1.chunks[1][0]
    lines = open(index).read().splitlines(keepends=True)
    with open(index, "w") as f:                    # chunk 1's line points one byte off
        f.writelines(f"{h} {fh} {int(off) + 1} {n}\n" if h == h1 else line
                     for line in lines for h, fh, off, n in [line.split()])
    whole = f"{chunk_cache(m)}/{e1.sha256[:2]}/{e1.sha256}"
    (src / "big.bin").write_bytes(big + b"tail")
    v2 = create_snapshot(src, store)
    ctx = _Ctx(lease, _Events())
    (stats,) = stage_lease(ctx, store, lambda mm: [Target(data_dir(mm, "two"), [v2.id], read_only=True)], {}, None)
    assert open(f"{data_dir(m, 'two')}/big.bin", "rb").read() == big + b"tail"
    assert ctx.events.warnings == [
        f"machine {m.id}: a corrupt entry in its host's chunk cache, big.bin (chunk {h1[:12]}), "
        "was dropped and sent again"]
    assert os.path.exists(whole)                                            # the good file is kept
    assert not [line for line in open(index) if line.split()[0] == h1 and int(line.split()[2]) != e1.chunks[0][1]]
    (src / "big.bin").write_bytes(big + b"other tail")
    v3 = create_snapshot(src, store)
    ctx = _Ctx(lease, _Events())
    (stats,) = stage_lease(ctx, store, lambda mm: [Target(data_dir(mm, "three"), [v3.id], read_only=True)], {}, None)
    assert open(f"{data_dir(m, 'three')}/big.bin", "rb").read() == big + b"other tail"
    assert ctx.events.warnings == [] and stats.cache_dropped is None
