"""Snapshots of trees and manifests a careless or hostile user hands fleet: nothing is written outside
the destination, and what cannot be taken is one clear line."""
from __future__ import annotations

import hashlib
import os

import pytest

from fleet.errors import IntegrityError
from fleet.snapshots import materialise, open_store
from fleet.snapshots.manifest import Entry, Manifest


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("FLEET_HOME", str(tmp_path / "home"))
    return open_store(None)


def _planted(store, entries: list[Entry]) -> str:
    """A manifest as anyone with write access to a shared store can put one there: valid JSON, its
    id its own sha256, every chunk present."""
    m = Manifest(entries)
    store.put_manifest(m.id, m.canonical_bytes())
    return m.id


def _file(path: str, store, data: bytes = b"pwned\n") -> Entry:
    h = hashlib.sha256(data).hexdigest()
    store.put_chunk(h, data)
    store.flush()
    return Entry(path, "file", size=len(data), sha256=h, chunks=((h, len(data)),))


@pytest.mark.parametrize("link_to", ["abs", "rel"])
def test_a_link_in_the_snapshot_never_carries_a_later_entry_outside(store, tmp_path, link_to):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = str(outside) if link_to == "abs" else "../../outside"
    sid = _planted(store, [Entry("x", "symlink", target=target), _file("x/evil", store)])
    with pytest.raises(IntegrityError, match="'x/evil' lies under 'x', a symlink in the snapshot"):
        materialise(store, sid, tmp_path / "dest" / "tree")
    assert os.listdir(outside) == []
    assert not (tmp_path / "dest" / "tree").exists()
    assert [p for p in os.listdir(tmp_path / "dest") if "partial" in p] == []   # the half tree went


def test_an_entry_under_a_file_or_listed_twice_is_refused_in_one_line(store, tmp_path):
    sid = _planted(store, [_file("a", store), _file("a/b", store, b"other")])
    with pytest.raises(IntegrityError, match="'a/b' lies under 'a', a file in the snapshot"):
        materialise(store, sid, tmp_path / "one")
    sid = _planted(store, [Entry("d", "dir"), Entry("d", "symlink", target="/etc")])
    with pytest.raises(IntegrityError, match="'d' is listed twice"):
        materialise(store, sid, tmp_path / "two")
