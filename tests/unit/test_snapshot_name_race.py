"""Two `fleet snapshot create --name N` of different trees at the same moment both exited 0 and printed
their ids, while N named only the one written last: the name was checked, then written over. The name
is now created only if absent (a hard link, in a local store), so the second create is one usage error."""
from __future__ import annotations

import pytest

from fleet.errors import UsageError
from fleet.snapshots.create import create_snapshot
from fleet.snapshots.local_store import LocalStore
from fleet.snapshots.store import claim_ref


class _Raced(LocalStore):
    """A store where another create names `N` between this create's check and its naming."""

    other_id = "f" * 64

    def put_manifest(self, snapshot_id: str, data: bytes) -> None:
        super().put_manifest(snapshot_id, data)
        self.set_ref("N", self.other_id)


def test_a_name_taken_while_this_create_ran_is_not_overwritten(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("mine")
    store = _Raced(tmp_path / "store")
    with pytest.raises(UsageError, match=f"snapshot name 'N' already points to {'f' * 12}"):
        create_snapshot(tree, store, name="N")
    assert store.get_ref("N") == _Raced.other_id


def test_claim_ref(tmp_path):
    store = LocalStore(tmp_path / "store")
    assert claim_ref(store, "n", "a" * 64) == "a" * 64 and store.get_ref("n") == "a" * 64
    assert claim_ref(store, "n", "b" * 64) == "a" * 64 and store.get_ref("n") == "a" * 64
    assert claim_ref(store, "n", "a" * 64) == "a" * 64
    assert list((tmp_path / "store" / "tmp").iterdir()) == []


def test_the_same_content_under_the_same_name_twice_is_fine(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "f").write_text("same")
    store = LocalStore(tmp_path / "store")
    first = create_snapshot(tree, store, name="N").id
    assert create_snapshot(tree, store, name="N").id == first == store.get_ref("N")
