"""A local machine's watchdog that does not start: the error says why in the line itself. It said
`see …/root/.fleet/watchdog.log`, a file inside the machine's directory, which releasing the failed
lease deletes a moment later: the one place that said why was gone before the user could look."""
from __future__ import annotations

import stat
from pathlib import Path

import pytest

from fleet.errors import InfrastructureError
from fleet.providers.local import sshd


def _fake_python(tmp_path: Path, body: str) -> str:
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\n{body}\nexit 1\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def test_the_watchdogs_last_words_are_in_the_error(tmp_path, monkeypatch):
    monkeypatch.setattr(sshd.isolation, "prepare_local_unit", lambda d: None)
    d = tmp_path / "machines" / "l-x-n0"
    python = _fake_python(tmp_path, "echo 'Traceback (most recent call last):' >&2; echo 'OSError: boom' >&2")
    with pytest.raises(InfrastructureError) as caught:
        sshd.start_watchdog(d, "l-x-n0", ttl_s=60, max_s=600, kill_pids=[], python=python)
    assert caught.value.one_line().startswith("watchdog for machine l-x-n0 did not start: OSError: boom")
    assert "see " not in caught.value.one_line()


def test_a_watchdog_that_could_not_write_its_log_on_a_full_disk_says_so(tmp_path, monkeypatch):
    monkeypatch.setattr(sshd.isolation, "prepare_local_unit", lambda d: None)
    monkeypatch.setattr(sshd.shutil, "disk_usage", lambda p: type("Usage", (), {"free": 8192})())
    d = tmp_path / "machines" / "l-x-n0"
    with pytest.raises(InfrastructureError) as caught:
        sshd.start_watchdog(d, "l-x-n0", ttl_s=60, max_s=600, kill_pids=[], python=_fake_python(tmp_path, ""))
    assert caught.value.one_line().startswith(
        f"watchdog for machine l-x-n0 did not start: it could not even write its log: 8 KiB free on the disk of "
        f"{tmp_path / 'machines'}: free space there")
