"""The host chunk cache knows its size without walking itself: the last walk's count plus what each
sync added since. Under the cap nothing is walked; over it, the walk evicts and resets the count."""
from __future__ import annotations

import hashlib
import os

from fleet.snapshots import remote_cache
from fleet.snapshots.remote_cache import Cache


def _fill(root, cap, blobs) -> int:
    cache = Cache(str(root), cap)
    for data in blobs:
        cache.put(hashlib.sha256(data).hexdigest(), data)
    return cache.finish()


def _estimate(root, cap):
    cache = Cache(str(root), cap)
    try:
        return cache.estimate()
    finally:
        os.close(cache.lock_fd)        # its shared lock: the next sync must be able to trim


def test_the_cache_is_walked_only_when_its_estimate_is_over_the_cap(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    assert _fill(root, 10_000, [b"a" * 3000]) == 0                 # first sync: walked once, counted
    assert (root / "size.txt").read_text() == "3000" and (root / "added.txt").read_text() == ""
    walks = []
    real = remote_cache.os.scandir
    monkeypatch.setattr(remote_cache.os, "scandir", lambda p: walks.append(p) or real(p))
    assert _fill(root, 10_000, [b"b" * 3000]) == 0                 # 6000 <= 10000: no walk at all
    assert walks == [] and _estimate(root, 10_000) == 6000
    freed = _fill(root, 10_000, [b"c" * 3000, b"d" * 3000])        # 12000 > 10000: walk, evict the oldest
    assert walks and freed == 3000
    assert (root / "size.txt").read_text() == "9000" and (root / "added.txt").read_text() == ""
    held = sum(os.path.getsize(os.path.join(d, f)) for d, _s, fs in os.walk(root) for f in fs
               if len(f) == 64)
    assert held == 9000


def test_a_cache_from_before_the_estimate_is_walked_once(tmp_path):
    root = tmp_path / "cache"
    _fill(root, None, [b"x" * 5000, b"y" * 5000])                  # no cap: never walked, no size.txt
    assert not (root / "size.txt").exists() and _estimate(root, 6000) is None
    assert _fill(root, 6000, [b"z" * 10]) >= 5000                  # walked: over the cap
    assert int((root / "size.txt").read_text()) <= 6000


def test_an_estimate_older_than_an_hour_is_checked_by_a_walk(tmp_path):
    """Entries an older fleet added (it appends nothing to added.txt) are found by the next walk."""
    root = tmp_path / "cache"
    _fill(root, 10_000, [b"a" * 3000])
    assert _estimate(root, 10_000) == 3000
    old = os.path.getmtime(root / "size.txt") - 2 * remote_cache.WALK_EVERY_S
    os.utime(root / "size.txt", (old, old))
    assert _estimate(root, 10_000) is None
    _fill(root, 10_000, [b"b" * 10])                               # walks, counts again
    assert _estimate(root, 10_000) == 3010


def _held(root) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _s, fs in os.walk(root) for f in fs
               if len(f) == 64 or f.endswith(".z"))


def test_manifests_count_toward_the_cap_and_go_least_recently_used_first(tmp_path):
    """A long-lived host keeps a manifest per snapshot it was sent: they are held under the cap with
    the chunks, the oldest dropped first, never one the trimming sync itself used."""
    import json
    import random
    import zlib
    rng = random.Random(7)
    root, cap = tmp_path / "cache", 20_000
    sids = []
    for i in range(40):
        cache = Cache(str(root), cap)
        raw = json.dumps({"entries": [], "n": i, "pad": rng.randbytes(1500).hex()}).encode()
        sids.append(hashlib.sha256(raw).hexdigest())
        cache.save_manifest(sids[-1], zlib.compress(raw))
        data = rng.randbytes(300)
        cache.put(hashlib.sha256(data).hexdigest(), data)
        cache.finish()
        assert _held(root) <= cap
    kept = [sid for sid in sids if (root / "manifests" / f"{sid}.z").exists()]
    assert 0 < len(kept) < len(sids) and kept == sids[-len(kept):]            # the newest, contiguously
    # A sync that reads the oldest kept manifest and then adds past the cap keeps that one.
    cache = Cache(str(root), cap)
    assert cache.load_manifest(kept[0])["n"] == len(sids) - len(kept)
    big = rng.randbytes(cap // 2)
    cache.put(hashlib.sha256(big).hexdigest(), big)
    assert cache.finish() > 0
    assert (root / "manifests" / f"{kept[0]}.z").exists() and not (root / "manifests" / f"{kept[1]}.z").exists()
    assert _held(root) <= cap
