"""The agent's quick reader of its hot calls (exec, extend, signal) says exactly what argparse says for
every form the controller sends, and hands anything else to argparse; the single-file agent (compacted,
modules embedded) still runs them."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fleet.remote.agent import agent_args, containment

SENT = [   # the shapes fleet/remote/exec.py, fleet/heartbeat.py and signal_processes send
    ["exec", "--pidfile", "/m/.fleet/run-r-1-0.pid", "--env-stdin", "--", "sh", "-c", "python train.py --lr 3"],
    ["exec", "--pidfile", "/m/.fleet/setup.pid", "--env-stdin", "--leaf", "trial-12", "--", "sh", "-c", "x"],
    ["exec", "--pidfile", "/p", "--", "sh", "-c", "-- --pidfile x"],
    ["exec", "--", "true"],
    ["extend", "--state-dir", "/m/.fleet", "--ttl", "300.000"],
    ["extend", "--ttl", "1e3", "--state-dir", "/s"],
    ["signal", "--pidfile", "/m/.fleet/run.pid", "--signal", "KILL"],
    ["signal", "--pidfile", "/m/.fleet/run.pid"],
    ["signal", "--signal", "TERM", "--pidfile", "/m/.fleet/run-0.pid", "--pidfile", "/m/.fleet/run-1.pid"],
]


def _argparse(argv):
    return vars(agent_args.parser((containment.CGROUP, containment.PIDS)).parse_args(argv))


@pytest.mark.parametrize("argv", SENT, ids=lambda a: " ".join(a)[:40])
def test_quick_reading_equals_argparse(argv):
    quick = agent_args.quick_args(argv)
    assert quick is not None, argv
    assert vars(quick) == _argparse(argv)


@pytest.mark.parametrize("argv", [
    ["exec", "--pidfile=/p", "--", "true"],            # = form: argparse's
    ["exec", "--pidfile", "/p", "--pidfile", "/q", "--", "true"],
    ["exec", "--leaf", "agent", "--", "true"],          # not a leaf a command may run in: argparse refuses
    ["exec", "--pidfile", "/p", "true"],                 # no "--"
    ["exec", "--bogus", "--", "true"],
    ["extend", "--state-dir", "/s"],                     # --ttl missing
    ["extend", "--state-dir", "/s", "--ttl", "soon"],
    ["signal", "--pidfile", "/p", "--signal", "STOP"],
    ["signal", "--signal", "TERM"],
    ["watchdog", "--state-dir", "/s"],
    [],
])
def test_anything_else_is_left_to_argparse(argv):
    assert agent_args.quick_args(argv) is None


def test_the_compact_single_file_agent_runs_a_process_with_its_environment(tmp_path):
    from fleet.remote.agent import agent_source
    source = agent_source()
    assert '"""' not in source.split("\n", 3)[0]         # compacted: the module docstring is gone
    (tmp_path / "agent.py").write_text(source)
    pidfile = tmp_path / "p.pid"
    out = subprocess.run([sys.executable, "-S", str(tmp_path / "agent.py"), "exec", "--pidfile", str(pidfile),
                          "--env-stdin", "--", "sh", "-c", 'echo "$SECRET_VALUE"; exit 7'],
                         input=json.dumps({"SECRET_VALUE": "s3cr3t"}) + "\n", capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 7 and out.stdout.strip() == "s3cr3t", out
    words = pidfile.read_text().split()                  # "PGID STARTTIME", which `agent signal` checks
    assert len(words) == 2 and all(w.isdigit() for w in words)
    bad = subprocess.run([sys.executable, "-S", str(tmp_path / "agent.py"), "exec", "--leaf", "agent", "--", "true"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "not a leaf name: 'agent'" in bad.stderr
