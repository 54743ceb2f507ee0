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


_SWAP = r'''
import os, sys
from fleet.snapshots import create as create_mod
from fleet.snapshots import create_snapshot, open_store
root, how = sys.argv[1], sys.argv[2]
scan = create_mod.scan_tree

def swapped(*args, **kwargs):
    yield from scan(*args, **kwargs)      # every entry lstat'ed as the user left it; then the swap
    os.unlink(os.path.join(root, "f"))
    if how == "fifo":
        os.mkfifo(os.path.join(root, "f"))
    else:
        os.symlink("/dev/zero", os.path.join(root, "f"))
create_mod.scan_tree = swapped
try:
    create_snapshot(root, open_store(None), use_cache=False)
except Exception as exc:
    print(type(exc).__name__, exc.one_line() if hasattr(exc, "one_line") else exc)
'''


@pytest.mark.parametrize("how", ["fifo", "link"])
def test_a_file_swapped_for_a_fifo_or_a_link_after_the_scan_is_refused_not_read(tmp_path, how):
    # Opened as it was then: a FIFO blocked the open for ever, a link to /dev/zero read without end.
    import subprocess
    import sys
    root = tmp_path / "data"
    root.mkdir()
    (root / "f").write_bytes(b"x" * 100)
    env = {**os.environ, "FLEET_HOME": str(tmp_path / "home")}
    try:
        done = subprocess.run([sys.executable, "-c", _SWAP, str(root), how], capture_output=True, text=True,
                              timeout=20, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"snapshot create of a file swapped for a {how} did not end")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("UsageError cannot read "), done.stdout
    assert "no longer the regular file" in done.stdout and "\n" not in done.stdout.strip(), done.stdout


def test_a_link_named_as_the_path_to_snapshot_is_still_followed(store, tmp_path):
    # Only links found inside the tree are kept as links; the one the user names is what they mean.
    from fleet.snapshots import create_snapshot
    (tmp_path / "real.bin").write_bytes(b"weights")
    (tmp_path / "model.bin").symlink_to(tmp_path / "real.bin")
    snap = create_snapshot(tmp_path / "model.bin", store)
    assert [(e.path, e.type, e.size) for e in snap.manifest.entries] == [("model.bin", "file", 7)]


@pytest.mark.parametrize("content", ["../refs/good", "", "/etc/passwd", "A" * 64])
def test_a_name_whose_ref_is_not_a_snapshot_id_is_one_line_naming_it(store, tmp_path, content):
    # It was taken as the id: "manifest of snapshot ../refs/good is corrupt" (exit 5, the wrong
    # culprit), and on a machine the id became a path in its cache.
    from fleet.errors import FleetError
    from fleet.snapshots import resolve
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_text("a")
    from fleet.snapshots import create_snapshot
    create_snapshot(tmp_path / "d", store, name="good")
    (store.root / "refs" / "evil").write_text(content + "\n")
    with pytest.raises(FleetError) as err:
        resolve(store, "evil")
    if content.strip():
        assert "snapshot name 'evil'" in err.value.one_line() and "not a snapshot id" in err.value.one_line()
    else:                                    # an empty ref names nothing, as before
        assert "no snapshot named or prefixed 'evil'" in err.value.one_line()


def test_fleet_up_says_what_a_data_snapshot_left_out(store, tmp_path):
    # `fleet snapshot create` warned about a FIFO or socket it skipped; a [data] entry pinned by
    # `fleet up` skipped it silently, and the run's data simply lacked it.
    import socket

    from fleet.snapshots.sources import pin_data
    data = tmp_path / "train"
    data.mkdir()
    (data / "a.csv").write_text("1\n")
    os.mkfifo(data / "queue")
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(data / "sock"))
        said: list[str] = []
        pins, _ = pin_data({"train": "train"}, tmp_path, store, warn=said.append)
    assert said == ["[data] train: skipped queue: not a regular file, directory or symlink",
                    "[data] train: skipped sock: not a regular file, directory or symlink"]
    assert pin_data({"train": "train"}, tmp_path, store)[0] == pins      # no warn given: as before


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_data_path_is_refused_not_the_whole_experiment(store, tmp_path, value):
    # Path("") is ".": `train = ""` snapshotted the experiment directory (its runs/ outputs too) as data.
    from fleet.errors import UsageError
    from fleet.snapshots.sources import pin_data
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "big.bin").write_bytes(b"x" * 1000)
    with pytest.raises(UsageError, match=r"\[data\] train is an empty string"):
        pin_data({"train": value}, tmp_path, store)
    assert store.list_manifests() == []


def test_fleet_up_names_data_links_whose_target_is_not_in_the_snapshot(store, tmp_path):
    """A reviewer found a link out of a data tree made a "pinned" run read live content: the
    snapshot keeps the link, and a rerun reads whatever the target holds then. Each is named, the
    first few, then a count; a link inside the tree is fine. The same again (a whole-tree hit) says so too."""
    from fleet.snapshots.sources import pin_data
    data = tmp_path / "train"
    (data / "sub").mkdir(parents=True)
    (data / "a.csv").write_text("1\n")
    (data / "sub" / "inside").symlink_to("../a.csv")
    (data / "sub" / "up").symlink_to("../../elsewhere.csv")
    for i in range(4):
        (data / f"abs{i}").symlink_to(tmp_path / "elsewhere.csv")
    for _ in range(2):
        said: list[str] = []
        pin_data({"train": "train"}, tmp_path, store, warn=said.append)
        assert said == [f"[data] train: abs{i} is a link to {tmp_path}/elsewhere.csv, outside the snapshot: its "
                        "target is not pinned (what it holds when read is what runs)" for i in range(3)] + [
                        "[data] train: (+2 more links to targets outside the snapshot)"]
    (data / "abs0").unlink()
    (data / "abs1").unlink()
    (data / "abs2").unlink()
    said = []
    pin_data({"train": "train"}, tmp_path, store, warn=said.append)
    assert [w.split(" is a link")[0] for w in said] == ["[data] train: abs3", "[data] train: sub/up"]
