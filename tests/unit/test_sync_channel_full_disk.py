"""A sync helper that died of a full disk on the machine is said as that, with where to free space:
"sync helper ended without answering: OSError: [Errno 28] …" named neither disk nor remedy."""
from __future__ import annotations

from fleet.snapshots.sync_channel import _gone


def test_a_helper_dead_of_a_full_disk_names_the_machines_disk():
    err = _gone("Traceback (most recent call last):\n  ...\nOSError: [Errno 28] No space left on device")
    line = err.one_line()
    assert line.startswith("sync helper ended without answering: OSError: [Errno 28] No space left on device")
    assert "the machine's disk is full" in line and "FLEET_HOME" in line


def test_any_other_death_keeps_its_own_line():
    assert _gone("Killed").one_line() == "sync helper ended without answering: Killed"
    assert _gone("").one_line() == "sync helper ended without answering: no output"
