"""A cancelled GitLab job: one SIGTERM, then SIGKILL after the executor's grace, and no second signal
to hurry fleet. A fetch of outputs slower than that grace ran on until the SIGKILL, before the
release: the machines ran, billed, to their deadline. Now, FLEET_STOP_LIMIT (default 5 s) after the
SIGTERM, fleet leaves the rest of the fetch (marked incomplete), releases and exits 130."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from fleet.ci import GITLAB_STOP_LIMIT_S
from tests.conftest import one_sigterm, wait_for_line

# `fleet up` whose outputs come home over a slow link (10 KiB per 20 ms at most: 32 MiB would take
# a minute), as gigabytes over a real one do.
_SLOW = ("import sys, time\n"
         "import fleet.stage as s\n"
         "class Slow:\n"
         "    def __init__(self, chan):\n"
         "        self.chan = chan\n"
         "    def recv(self, n):\n"
         "        time.sleep(0.02)\n"
         "        return self.chan.recv(min(n, 10 << 10))\n"
         "    def __getattr__(self, name):\n"
         "        return getattr(self.chan, name)\n"
         "init = s._ChannelStream.__init__\n"
         "s._ChannelStream.__init__ = lambda self, chan, stop=None: init(self, Slow(chan), stop)\n"
         "from fleet.cli.main import run\n"
         "sys.argv[0] = 'fleet'\n"
         "sys.exit(run())\n")
BIG = ("import os, time\nout = os.environ['FLEET_OUTPUT_DIR']\nos.makedirs(out, exist_ok=True)\n"
       "with open(os.path.join(out, 'ckpt.bin'), 'wb') as f:\n    f.write(os.urandom(32 << 20))\n"
       "print('started', flush=True)\ntime.sleep(300)\n")


def test_one_sigterm_under_gitlab_bounds_a_slow_fetch_and_releases_before_the_sigkill(experiment, fleet_home):
    (experiment / "big.py").write_text(BIG)
    (experiment / "fleet.toml").write_text('project = "t"\ntemplate = "local-1gpu"\ncommand = "python big.py"\n'
                                           'max_duration = "10m"\n')
    env = {k: v for k, v in os.environ.items() if k != "FLEET_STOP_LIMIT"}
    env.update(CI="true", GITLAB_CI="true", CI_PROJECT_PATH="acme/vision", CI_COMMIT_SHA="0" * 40)
    proc = subprocess.Popen([sys.executable, "-c", _SLOW, "up", "--gpus", "1"], cwd=experiment, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        wait_for_line(proc, "started", timeout=120)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    released_after, ended_after, out = one_sigterm(proc, fleet_home, released_within=20)   # GitLab's one signal
    assert released_after is not None and ended_after is not None, (released_after, out[-2000:])
    assert proc.returncode == 130, out
    # The fetch had its time, and no more: released and exited well inside a grace of 10 s.
    assert GITLAB_STOP_LIMIT_S <= released_after < GITLAB_STOP_LIMIT_S + 3, (released_after, out)
    assert ended_after < GITLAB_STOP_LIMIT_S + 3.5, (ended_after, out)
    assert "5s since SIGTERM (FLEET_STOP_LIMIT)" in out and "the rest was not fetched" in out, out
    [run_dir] = (experiment / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "cancelled" and summary["released"] is True
    assert summary["outputs_incomplete"] and "not fetched" in summary["outputs_incomplete"][0], summary
