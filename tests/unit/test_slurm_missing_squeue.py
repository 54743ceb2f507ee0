"""A squeue that is not installed or not executable (not on PATH, its mode lost, a wrapper that
exits 127 because what it wraps is gone) will not come back as a busy controller does: the lease's
watch and its wait for the job say so at once, in one line naming squeue, instead of after the
unreadable-squeue rule's 300 s (watch.py). Here with PATH holding only a directory of this test's."""
from __future__ import annotations

import threading
import time

import pytest

from fleet.providers.base import LeaseWatch
from fleet.providers.slurm.commands import LocalRunner
from fleet.providers.slurm.errors import ToolMissing
from fleet.providers.slurm.provider import SlurmProvider
from fleet.providers.slurm.settings import SlurmSettings

WRAPPER = '#!/bin/sh\necho "/opt/slurm/bin/squeue: No such file or directory" >&2\nexit 127\n'
CASES = ["not-installed", "not-executable", "wrapper-exits-127"]


@pytest.fixture
def squeue(request, tmp_path, monkeypatch, fleet_home) -> str:
    """PATH with no working squeue on it, as request.param says; the cluster's real one stays out."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if request.param != "not-installed":
        (bin_dir / "squeue").write_text(WRAPPER)
        (bin_dir / "squeue").chmod(0o644 if request.param == "not-executable" else 0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    return request.param


def _provider() -> SlurmProvider:
    return SlurmProvider(SlurmSettings(poll_s=0.05), runner=LocalRunner())


@pytest.mark.parametrize("squeue", CASES, indirect=True)
def test_a_running_leases_watch_reports_a_missing_squeue_at_once(squeue):
    provider = _provider()
    lost: list[str] = []
    heard = threading.Event()
    began = time.monotonic()
    provider._watch("l-1", "12", LeaseWatch(cancel=threading.Event(),
                                            on_lost=lambda m: (lost.append(m), heard.set())))
    try:
        assert heard.wait(5), "the watch waited for the unreadable-squeue rule's 300 s"
    finally:
        provider._watches.pop("l-1").set()
    assert time.monotonic() - began < 5
    assert len(lost) == 1 and "\n" not in lost[0], lost
    assert lost[0].startswith("Slurm job 12: squeue ") and "squeue answered nothing" not in lost[0], lost[0]
    assert lost[0].endswith("fleet can no longer tell whether the job still holds the machines")


@pytest.mark.parametrize("squeue", ["not-executable", "wrapper-exits-127"], indirect=True)
def test_a_pending_leases_wait_ends_at_once_naming_squeue(squeue):
    began = time.monotonic()
    with pytest.raises(ToolMissing) as raised:
        _provider()._wait_running("12", LeaseWatch(cancel=threading.Event(), max_wait_s=20))
    assert time.monotonic() - began < 5
    message = str(raised.value)
    assert message.startswith("squeue is not ") and "\n" not in message, message
    assert raised.value.exit_code == 3            # an environment problem, as a missing squeue always was
