"""Content-defined chunking and manifests: deterministic, bounded, insert-resistant."""
from __future__ import annotations

import hashlib
import io
import random

from fleet.snapshots.chunking import MAX_SIZE, MIN_SIZE, chunk_bytes, chunk_stream
from fleet.snapshots.manifest import Entry, Manifest


def _ids(chunks):
    return [hashlib.sha256(c).hexdigest() for c in chunks]


def _data(n, seed=1):
    return random.Random(seed).randbytes(n)


def test_chunks_reassemble_and_respect_bounds():
    data = _data(9 * 1024 * 1024)
    chunks = chunk_bytes(data)
    assert b"".join(chunks) == data
    assert all(MIN_SIZE <= len(c) <= MAX_SIZE for c in chunks[:-1])
    assert 3 <= len(chunks) <= 30


def test_small_data_is_one_chunk_and_empty_is_none():
    assert chunk_bytes(b"hello") == [b"hello"]
    assert chunk_bytes(b"") == []


def test_zeros_fall_back_to_max_size():
    chunks = chunk_bytes(bytes(10 * 1024 * 1024))
    assert [len(c) for c in chunks[:2]] == [MAX_SIZE, MAX_SIZE]


def test_stream_reads_give_same_chunks_as_whole_buffer():
    data = _data(12 * 1024 * 1024, seed=3)

    class Dribble(io.RawIOBase):   # short reads must not change the boundaries
        def __init__(self):
            self.pos = 0

        def read(self, n=-1):
            n = min(n if n > 0 else 1 << 30, 700_001)
            out = data[self.pos:self.pos + n]
            self.pos += len(out)
            return out

    assert _ids(chunk_stream(Dribble())) == _ids(chunk_bytes(data))


def test_insert_near_start_keeps_most_chunks():
    data = _data(16 * 1024 * 1024, seed=5)
    before = set(_ids(chunk_bytes(data)))
    after = set(_ids(chunk_bytes(data[:5000] + b"inserted bytes" + data[5000:])))
    assert len(before & after) >= len(before) - 2   # only the chunk(s) around the insert change


def test_manifest_id_is_canonical():
    a = Entry("b.txt", "file", 0o644, 3, "a" * 64, (("b" * 64, 3),))
    b = Entry("a", "dir", 0o755)
    m1, m2 = Manifest([a, b]), Manifest([b, a])
    assert m1.canonical_bytes() == m2.canonical_bytes()
    assert m1.id == m2.id == hashlib.sha256(m1.canonical_bytes()).hexdigest()
    assert b" " not in m1.canonical_bytes()
    assert Manifest.from_bytes(m1.canonical_bytes(), expected_id=m1.id).id == m1.id
    assert Manifest([a]).id != m1.id


def test_a_2_mib_rewrite_inside_a_large_file_changes_at_most_twice_its_bytes_of_chunks():
    """Format 3's chunk sizes: rewriting 2 MiB inside a 30 MiB file leaves every chunk away from the
    rewrite as it was, so a sync sends the changed bytes plus about a chunk (the wire target is 2x)."""
    import random as _random
    rng = _random.Random(19)
    data = bytearray(rng.randbytes(30 * 1024 * 1024))
    ratios = []
    for _ in range(9):
        before = {hashlib.sha256(c).hexdigest() for c in chunk_bytes(bytes(data))}
        at = rng.randrange(0, len(data) - 2 * 1024 * 1024)
        data[at:at + 2 * 1024 * 1024] = rng.randbytes(2 * 1024 * 1024)
        new = sum(len(c) for c in chunk_bytes(bytes(data)) if hashlib.sha256(c).hexdigest() not in before)
        ratios.append(new / (2 * 1024 * 1024))
    assert sorted(ratios)[4] <= 1.6 and max(ratios) < 2.0, ratios


def test_the_checkpoint_helper_cuts_like_the_store():
    """fleet/remote/checkpoint_helper.py runs on machines without fleet: its copy of the chunk sizes
    must be this module's, or checkpoints stop deduplicating against every other snapshot."""
    import fleet.remote.checkpoint_helper as helper
    from fleet.snapshots import chunking
    assert (helper.AVG, helper.MIN, helper.MAX) == (chunking.AVG_SIZE, chunking.MIN_SIZE, chunking.MAX_SIZE)
