"""One SSH connection per machine for a whole `fleet up`, counted by the machines' own sshd.

Each local machine's sshd runs through a wrapper (FLEET_SSHD) that adds `-o LogLevel=VERBOSE -E
<file outside the machine directory>`, so its log survives release. sshd logs every TCP
connection ("Connection from ..."), every authentication ("Accepted publickey ...") and every
channel's command ("Starting session: ..."): the run must make exactly one connection per machine
and run all its phases (ready, venv, stage, setup, per-GPU processes, heartbeat, telemetry,
collect) as sessions on it.
"""
from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import run_fleet

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _wrapper(tmp_path: Path) -> tuple[Path, Path]:
    logs = tmp_path / "sshd-logs"
    logs.mkdir()
    wrapper = tmp_path / "sshd-verbose"
    wrapper.write_text(f'#!/bin/sh\nexec {SSHD} "$@" -o LogLevel=VERBOSE -E "{logs}/sshd-$$.log"\n')
    wrapper.chmod(0o755)
    return wrapper, logs


def _count(logs: Path, pattern: str) -> dict[str, int]:
    counts = {}
    for f in logs.glob("sshd-*.log"):
        counts[f.name] = len(re.findall(pattern, f.read_text(errors="replace")))
    return counts


@pytest.mark.skipif(not os.access(SSHD, os.X_OK), reason="needs OpenSSH's sshd")
def test_up_opens_one_connection_per_machine_for_every_phase(experiment, fleet_home, tmp_path):
    wrapper, logs = _wrapper(tmp_path)
    (experiment / "fleet.toml").write_text(
        'project = "t"\ntemplate = "local-4gpu"\nper_gpu = true\nmax_duration = "10m"\n'
        'setup = "echo set up on $FLEET_NODE_RANK"\n'
        'command = "mkdir -p $FLEET_OUTPUT_DIR && echo out > $FLEET_OUTPUT_DIR/r.txt && sleep 6 && echo rank $FLEET_RANK"\n')
    proc = run_fleet(["up", "--gpus", "8", "--json"], cwd=experiment, timeout=240,
                     env={"FLEET_SSHD": str(wrapper), "FLEET_HEARTBEAT_TTL": "3"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["machines"] == 2 and summary["outputs_fetched"] == 8, summary

    tcp = _count(logs, r"Connection from 127\.0\.0\.1 port \d+ on")
    auth = _count(logs, r"Accepted publickey for ")
    sessions = _count(logs, r"Starting session: ")
    assert len(tcp) == 2, f"expected 2 machines' sshd logs, got {sorted(tcp)}"
    assert list(tcp.values()) == [1, 1], f"TCP connections per machine: {tcp}"
    assert list(auth.values()) == [1, 1], f"SSH logins per machine: {auth}"
    # 4 per-GPU processes + setup + venv + heartbeat beats + telemetry + collect on that one login.
    assert all(n >= 8 for n in sessions.values()), f"sessions per machine: {sessions}"
