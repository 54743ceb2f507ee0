"""fleet as a library on the local provider: whatever the caller's code raises, and however its
program ends, the run's machines are released and the run recorded (fleet/run/cleanup.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fleet
from tests.unit.test_run_cleanup import the_only_run

REPO = Path(__file__).resolve().parents[2]


class Boom(Exception):
    pass


class Events:
    def __init__(self, raise_in: str):
        self.raise_in, self.lines = raise_in, []

    def phase(self, name, detail=""):
        if self.raise_in == f"phase:{name}":
            raise Boom(f"widget broke in {name}")

    def log(self, label, stream, line):
        self.lines.append(line)
        if self.raise_in == "log":
            raise Boom("widget broke on a line")

    def warn(self, message):
        pass


def config_for(experiment: Path, command: str):
    return fleet.load_config(experiment / "fleet.toml", overrides={"command": command, "gpus": 1})


def test_a_sink_raising_in_collect_still_releases_the_lease_then_raises(experiment, fleet_home):
    """Red-team finding: phase("collect") raising left the lease up (its heartbeat moving the
    deadline on), the run `running`, no summary.json."""
    with pytest.raises(Boom, match="widget broke in collect"):
        fleet.up(config_for(experiment, "echo hi"), events=Events("phase:collect"))
    run = the_only_run()
    assert fleet.status() == []   # nothing left up
    assert run["status"] == "succeeded"
    summary = json.loads((Path(run["output_dir"]) / "summary.json").read_text())
    assert (summary["status"], summary["released"]) == ("succeeded", True)


def test_a_sink_whose_log_raises_leaves_the_experiment_running_and_raises_after(experiment, fleet_home):
    """Red-team finding: it was recorded as lost machines (exit 10, "connection lost: …")."""
    events = Events("log")
    with pytest.raises(Boom, match="widget broke on a line"):
        fleet.up(config_for(experiment, "echo one; sleep 0.2; echo two"), events=events)
    run = the_only_run()
    summary = json.loads((Path(run["output_dir"]) / "summary.json").read_text())
    assert (run["status"], summary["exit_code"], summary.get("machines_lost")) == ("succeeded", 0, None)
    assert events.lines == ["one"]
    assert (Path(run["output_dir"]) / "logs" / "rank-0.log").read_text() == "one\ntwo\n"
    assert fleet.status() == []


def test_a_run_in_a_worker_thread_still_collects_and_releases_after_the_main_thread_ended(experiment, fleet_home):
    """Red-team finding: `cannot schedule new futures after interpreter shutdown` from collect,
    and the lease never released."""
    script = textwrap.dedent(f"""
        import threading, time, fleet
        config = fleet.load_config({str(experiment / "fleet.toml")!r},
                                   overrides={{"command": "sleep 3; mkdir -p $FLEET_OUTPUT_DIR; echo x > $FLEET_OUTPUT_DIR/o",
                                               "gpus": 1}})
        threading.Thread(target=lambda: print("status", fleet.up(config).status, flush=True)).start()
        time.sleep(1)   # the run is under way when the main thread ends
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], cwd=experiment, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "status succeeded" in done.stdout, done.stdout + done.stderr
    run = the_only_run()
    assert run["status"] == "succeeded" and fleet.status() == []
    assert (Path(run["output_dir"]) / "node-0" / "o").read_text() == "x\n"


def test_a_run_in_a_daemon_thread_is_stopped_and_released_when_the_program_exits(experiment, fleet_home):
    """Red-team finding: Python does not wait for a daemon thread, so the run was frozen mid-way at
    exit: its lease left up (until its deadline) and the run `running`."""
    script = textwrap.dedent(f"""
        import threading, fleet
        config = fleet.load_config({str(experiment / "fleet.toml")!r},
                                   overrides={{"command": "echo started; sleep 60", "gpus": 1}})
        started = threading.Event()
        class Events:
            def phase(self, name, detail=""): pass
            def log(self, label, stream, line): started.set()
            def warn(self, message): pass
        threading.Thread(target=lambda: fleet.up(config, events=Events()), daemon=True).start()
        assert started.wait(60)   # the command is running when the program ends
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], cwd=experiment, env=env, capture_output=True, text=True,
                          timeout=50)
    assert done.returncode == 0, done.stdout + done.stderr
    assert fleet.status() == []
    run = the_only_run()
    assert run["status"] == "cancelled"
    summary = json.loads((Path(run["output_dir"]) / "summary.json").read_text())
    assert (summary["status"], summary["released"]) == ("cancelled", True)
