"""Markers in a shared file:// store (fleet/snapshots/store_guard.py) that someone else planted or a
clock set wrong: a marker stamped far in the future counts for no longer than a real one could, so
it never blocks every writer (or gc) for good, and the names shown in the one line a writer prints
never carry a terminal's control characters."""
from __future__ import annotations

import os
import time

import pytest

from fleet.errors import EnvironmentProblem
from fleet.snapshots import open_store
from fleet.snapshots.store_guard import MARKER_TTL_S, GcGuard, WriteGuard


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("FLEET_STORE_GC_WAIT", "0")
    return open_store(str(tmp_path / "store"))


def _plant(store, name: str, mtime: float) -> None:
    locks = os.path.join(str(store.root), "locks")
    os.makedirs(locks, exist_ok=True)
    path = os.path.join(locks, name)
    with open(path, "w") as fh:
        fh.write("fleet store marker\n")
    os.utime(path, (mtime, mtime))


def test_a_gc_marker_stamped_years_ahead_does_not_shut_writers_out(store):
    _plant(store, "gc-1-evil-1-ab", time.time() + 10 * 365 * 86400)
    with WriteGuard(store):
        pass


def test_a_write_marker_stamped_years_ahead_does_not_stop_gc_for_good_and_gc_clears_it(store):
    _plant(store, "write-1-evil-1-ab", time.time() + 10 * 365 * 86400)
    with GcGuard(store):
        pass
    assert os.listdir(os.path.join(str(store.root), "locks")) == []


def test_a_fresh_marker_still_counts(store):
    _plant(store, "gc-1-other-7-ab", time.time() + 5)     # a store clock a little ahead: still a gc
    with pytest.raises(EnvironmentProblem):
        WriteGuard(store).begin()
    assert MARKER_TTL_S > 5


def test_a_markers_name_reaches_the_terminal_without_control_characters(store):
    _plant(store, "gc-1-\x1b]0;owned\x07\x1b[2J-7-ab", time.time())
    with pytest.raises(EnvironmentProblem) as caught:
        WriteGuard(store).begin()
    assert "\x1b" not in str(caught.value) and "\x07" not in str(caught.value)


def test_a_stale_marker_gc_cannot_remove_is_left_and_gc_goes_on(store):
    # Something under a marker's name that is not a file (or another user's, in a sticky locks/):
    # long stale, it does not count; that gc cannot delete it must not stop every gc with a traceback.
    locks = os.path.join(str(store.root), "locks")
    os.makedirs(os.path.join(locks, "write-1-other-7-ab", "x"))
    old = time.time() - 3 * MARKER_TTL_S
    os.utime(os.path.join(locks, "write-1-other-7-ab"), (old, old))
    with GcGuard(store):
        pass
    assert os.path.isdir(os.path.join(locks, "write-1-other-7-ab", "x"))
