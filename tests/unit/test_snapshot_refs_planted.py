"""refs/ of a store on a shared path is every writer's: a FIFO planted under a name hung `fleet
snapshot ls` (and `snapshot:NAME`, `snapshot rm`) for everyone, a directory there stopped `ls` with
"Is a directory", and a link was read through (its target's first bytes quoted in the error). The
listing leaves such an entry out; asking for it by name is one line naming it."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fleet.errors import IntegrityError
from fleet.snapshots import create_snapshot, open_store
from fleet.snapshots.catalog import list_snapshots, resolve

pytestmark = pytest.mark.timeout(60)      # the old code hung on the FIFO

@pytest.fixture
def store(tmp_path):
    data = tmp_path / "d"
    data.mkdir()
    (data / "a.txt").write_text("a\n")
    store = open_store(str(tmp_path / "store"))
    sid = create_snapshot(data, store).id
    store.set_ref("good", sid)
    refs = tmp_path / "store" / "refs"
    os.mkfifo(refs / "fifo")
    (refs / "adir").mkdir()
    secret = tmp_path / "secret"
    secret.write_text("aws_secret_access_key=abc\n")
    os.symlink(secret, refs / "lnk")
    return store, sid


def test_a_planted_fifo_directory_or_link_leaves_the_listing_whole(store, tmp_path):
    st, sid = store
    code = ("import sys; from fleet.snapshots import open_store; from fleet.snapshots.catalog import list_snapshots;"
            f"print(list_snapshots(open_store({str(tmp_path / 'store')!r}))[0]['names'])")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and run.stdout.strip() == "['good']", run.stderr[-800:]
    assert [r["names"] for r in list_snapshots(st)] == [["good"]]


@pytest.mark.parametrize("name", ["fifo", "adir", "lnk"])
def test_asking_for_a_planted_name_is_one_line(store, name):
    st, _sid = store
    with pytest.raises(IntegrityError, match=f"snapshot name '{name}' in the store .* is not a name file") as err:
        resolve(st, name)
    assert "aws_secret" not in str(err.value)


def test_an_unreadable_name_file_stops_rm_instead_of_vanishing(tmp_path, monkeypatch):
    """EACCES or EIO on a name file is not "a link or FIFO stands there": leaving that name out of the
    names still pointing at a snapshot let `snapshot rm` of the other name delete what it points at."""
    import errno

    from fleet import regular_files
    from fleet.snapshots.store import read_ref_file

    path = tmp_path / "refs" / "x"
    path.parent.mkdir()
    path.write_text("a" * 64 + "\n")

    def unreadable(_path, **_kw):
        raise PermissionError(errno.EACCES, "Permission denied", str(_path))
    monkeypatch.setattr("fleet.regular_files.open_regular", unreadable)
    with pytest.raises(PermissionError):
        read_ref_file(path)
    assert regular_files.NOT_REGULAR_ERRNOS   # links, FIFOs, directories: still named as such (tests above)
