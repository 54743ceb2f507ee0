"""A resumed attempt's checkpoint restore that meets a corrupt entry in the host's chunk cache sends it
again (the sync's one retry) and says so in the same warning staging gives."""
from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace

from fleet.run.checkpoints import Resume, begin, checkpoint_dir, prepare, upload
from fleet.snapshots import open_store
from fleet.snapshots.catalog import load
from fleet.snapshots.sync_remote import chunk_cache


def _ctx(run_id: str, resume: Resume, warnings: list[str]):
    events = SimpleNamespace(warn=warnings.append, phase=lambda *a, **k: None)
    return SimpleNamespace(run_id=run_id, attempt=resume.attempt, events=events, hurry=threading.Event(),
                           options=SimpleNamespace(resume=resume, trial_leaf=None),
                           config=SimpleNamespace(checkpoint_interval_s=0))


def test_a_restore_that_meets_a_corrupt_cached_entry_warns_and_restores_the_checkpoint(local_lease, fleet_home,
                                                                                     tmp_path):
    lease = local_lease(gpus=1)
    [m] = lease.machines
    store = open_store(str(tmp_path / "store"))
    prepare(lease, store, "r-ck", None)
    Path(checkpoint_dir(m, "r-ck"), "state.json").write_text('{"step": 41}')
    up = upload(m, store, "r-ck")
    resume = Resume(attempt=2, snapshots={0: up.snapshot_id}, of_run="r-ck")
    warnings: list[str] = []
    begin(_ctx("r-ck-a2", resume, warnings), lease, store)          # fills the host's cache
    assert warnings == []
    (e,) = load(store, up.snapshot_id).files()
    h = e.sha256
    entry = f"{chunk_cache(m)}/{h[:2]}/{h}"
    os.chmod(entry, 0o644)
    Path(entry).write_bytes(b"tampered")
    begin(_ctx("r-ck-a3", resume, warnings), lease, store)
    assert Path(checkpoint_dir(m, "r-ck-a3"), "state.json").read_text() == '{"step": 41}'
    assert warnings == [f"machine {m.id}: a corrupt entry in its host's chunk cache, state.json (chunk {h[:12]}), "
                        "was dropped and sent again"]
