"""The outputs that came home are snapshotted whole: a red-team run's `hf-model/.git/config`,
`env/.venv/pyvenv.cfg` and `.fleet/notes` arrived in runs/<id>/node-0 but were left out of the
output snapshot (the code snapshot's excludes applied), so a managed run, whose outputs live only in
the store, lost them and a rerun's comparison ignored them."""
from __future__ import annotations

from fleet.config.model import Config
from fleet.run.inputs import Inputs
from fleet.snapshots import file_hashes, open_store


def test_every_file_that_came_home_is_in_the_output_snapshot(fleet_home, tmp_path):
    run_dir = tmp_path / "runs" / "r-1"
    names = ["hf-model/model.safetensors", "hf-model/.git/config", "env/.venv/pyvenv.cfg", ".fleet/notes",
             ".fleet-snapshot", "__pycache__/x.pyc", ".DS_Store"]
    for name in names:
        p = run_dir / "node-0" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(name)
    inputs = Inputs(Config(path=None, base_dir=tmp_path, project="p", name="p", command="true"))
    inputs.store = open_store(None)
    sid = inputs.snapshot_outputs(run_dir)
    assert sorted(file_hashes(inputs.store, sid)) == sorted(f"node-0/{n}" for n in names)


def test_temporary_files_of_a_killed_extraction_are_not_outputs(fleet_home, tmp_path):
    """A controller killed mid-extraction leaves `.fleet-part-*` files; they are no output."""
    node = tmp_path / "runs" / "r-1" / "node-0"
    (node / "ckpt").mkdir(parents=True)
    (node / "ckpt" / ".fleet-part-0123456789abcdef").write_bytes(b"half a checkpoint")
    (node / "ckpt" / ".fleet-partial-notes").write_text("a job's own file")
    (node / "metrics.json").write_text("{}")
    inputs = Inputs(Config(path=None, base_dir=tmp_path, project="p", name="p", command="true"))
    inputs.store = open_store(None)
    sid = inputs.snapshot_outputs(node.parent)
    assert sorted(file_hashes(inputs.store, sid)) == ["node-0/ckpt/.fleet-partial-notes", "node-0/metrics.json"]
