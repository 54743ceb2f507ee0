"""host_hints: which snapshots a host cache received, remembered per cache, bounded, never trusted."""
from __future__ import annotations

from fleet.snapshots import host_hints


def test_holds_all_only_what_was_remembered_for_that_cache(fleet_home):
    assert not host_hints.holds_all("h1", {"a"})
    host_hints.remember("h1", {"a", "b"})
    assert host_hints.holds_all("h1", {"a"}) and host_hints.holds_all("h1", {"a", "b"})
    assert not host_hints.holds_all("h1", {"a", "c"})
    assert not host_hints.holds_all("h2", {"a"})
    assert not host_hints.holds_all("h1", set())          # nothing asked: no reason to skip seeding


def test_bounded_per_cache_and_in_caches(fleet_home):
    for i in range(host_hints.MAX_IDS + 5):
        host_hints.remember("h", {f"id{i:03d}"})
    assert host_hints.holds_all("h", {f"id{host_hints.MAX_IDS + 4:03d}"})
    assert not host_hints.holds_all("h", {"id000"})        # the oldest forgotten
    for i in range(host_hints.MAX_CACHES + 3):
        host_hints.remember(f"c{i}", {"x"})
    assert not host_hints.holds_all("c0", {"x"}) and host_hints.holds_all(f"c{host_hints.MAX_CACHES + 2}", {"x"})


def test_a_damaged_or_unwritable_hints_file_is_no_hint(fleet_home):
    path = host_hints._path()
    for text in ("{broken", "[1, 2]", '{"h": "not a list"}'):
        path.write_text(text)
        assert not host_hints.holds_all("h", {"a"})
    path.unlink()
    path.mkdir()                        # cannot be replaced by a file: the sync goes on without a hint
    host_hints.remember("h", {"a"})
    assert not host_hints.holds_all("h", {"a"})
