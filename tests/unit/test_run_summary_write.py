"""summary.json is whole or not written (fleet/run/summary.py): a full disk while writing it left the
file empty (0 bytes) over the summary a script or the GitHub action was about to read."""
from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from fleet.run.summary import RunSummary


def _summary(tmp_path: Path, status: str) -> RunSummary:
    return RunSummary(run_id="r-1", lease_id="l-1", status=status, exit_code=0, provider="local",
                      template="local-1gpu", gpus=1, machines=1, simulated_gpus=True, run_dir=str(tmp_path))


def test_a_full_disk_leaves_the_summary_that_was_there(tmp_path, monkeypatch):
    _summary(tmp_path, "running").write()
    real = Path.write_text

    def half_then_full(self, text, *args, **kwargs):
        real(self, text[: len(text) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError):
        _summary(tmp_path, "succeeded").write()
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "running"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]   # no temporary file left


def test_the_summary_is_replaced_whole(tmp_path):
    _summary(tmp_path, "running").write()
    _summary(tmp_path, "succeeded").write()
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "succeeded"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
