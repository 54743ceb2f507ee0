"""Shared-filesystem staging's two halves without a cluster: the node step trusts a staging
directory only when it reads back the probe token the login node wrote (then $FLEET_DATA links into
it), and the staging stage picks one machine per shared directory."""
from __future__ import annotations

import os

from fleet.models import Machine
from fleet.providers.slurm import node
from fleet.stage import code_dir, one_per_staging_dir


def spec_for(shared_dir, token="t0k3n"):
    return {"shared": {"dir": str(shared_dir), "probe": ".probe", "token": token}}


def test_a_node_that_reads_the_token_links_its_data_into_the_shared_directory(tmp_path):
    shared, root = tmp_path / "shared", tmp_path / "root"
    shared.mkdir()
    root.mkdir()
    (shared / ".probe").write_text("t0k3n")
    assert node._shared_staging(spec_for(shared), str(root)) is True
    assert os.path.realpath(root / "data") == str(shared / "data")


def test_a_node_that_does_not_see_the_probe_or_reads_another_token_stages_alone(tmp_path):
    shared, root = tmp_path / "shared", tmp_path / "root"
    shared.mkdir()
    root.mkdir()
    assert node._shared_staging(spec_for(shared), str(root)) is False          # not there: not shared
    (shared / ".probe").write_text("someone-else")
    assert node._shared_staging(spec_for(shared), str(root)) is False          # another lease's probe
    assert node._shared_staging({}, str(root)) is False
    assert not (root / "data").exists()


def test_read_only_staged_data_is_removed(tmp_path):
    tree = tmp_path / "inputs" / "data" / "train"
    tree.mkdir(parents=True)
    (tree / "rows.txt").write_text("1")
    os.chmod(tree / "rows.txt", 0o444)
    os.chmod(tree, 0o555)
    node._remove_tree(str(tmp_path / "inputs"))
    assert not (tmp_path / "inputs").exists()


def machine(i: int, staging: str = "") -> Machine:
    return Machine(id=f"l-n{i}", lease_id="l", node_rank=i, host="10.0.0.1", port=22, user="u", key_path="k",
                   host_key="h", workdir=f"/node{i}/root", staging_dir=staging)


def test_machines_sharing_a_staging_directory_are_staged_once():
    ms = [machine(0, "/shared/l"), machine(1, "/shared/l"), machine(2), machine(3, "/other/l")]
    assert [m.id for m in one_per_staging_dir(ms)] == ["l-n0", "l-n2", "l-n3"]
    assert code_dir(ms[1]) == "/shared/l/work" and code_dir(ms[2]) == "/node2/root/work"


def test_a_staging_directory_another_user_planted_with_the_token_is_not_trusted(tmp_path):
    # On a node-local workdir (/tmp) another user who learnt the token could make the lease's staging
    # path first: the machine would then run the code and read the data they put there.
    import pytest
    shared, root = tmp_path / "shared", tmp_path / "root"
    shared.mkdir()
    root.mkdir()
    (shared / ".probe").write_text("t0k3n")
    os.chmod(shared, 0o777)                                     # anyone's to fill
    assert node._shared_staging(spec_for(shared), str(root)) is False
    os.chmod(shared, 0o700)
    (shared / ".probe").unlink()
    (tmp_path / "elsewhere").write_text("t0k3n")
    os.symlink(tmp_path / "elsewhere", shared / ".probe")      # a probe through a link
    assert node._shared_staging(spec_for(shared), str(root)) is False
    link = tmp_path / "link"
    os.symlink(shared, link)                                    # the directory itself a link
    assert node._shared_staging(spec_for(link), str(root)) is False
    assert not (root / "data").exists()
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    (theirs / ".probe").write_text("t0k3n")
    os.chown(theirs / ".probe", 65534, 65534)
    os.chown(theirs, 65534, 65534)                              # nobody's, private, the right token
    assert node._shared_staging(spec_for(theirs), str(root)) is False
    assert not (root / "data").exists()
