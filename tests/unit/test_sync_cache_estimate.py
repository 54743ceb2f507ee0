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
