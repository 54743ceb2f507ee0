"""`agent exec` and `agent group` are the subreapers of what their commands leave (so a stopped
rank's group, its leader dead, is seen to empty): every process a command orphans is then their
child. A training that starts a helper in the background now and then (`os.system("upload.sh &")`)
left one zombie under the agent per helper for the whole run, where init had reaped them: without
end they fill the user's process limit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from fleet.remote.agent import AGENT_PATH

# Ten helpers, each orphaned by the shell that started it, then the training runs on.
ORPHANING = 'for i in 1 2 3 4 5 6 7 8 9 10; do sh -c "true &"; done; echo up; sleep 30'


def _zombies_under(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            state, ppid = stat.rsplit(")", 1)[1].split()[:2]
            if state == "Z" and int(ppid) == pid:
                found.append(int(entry))
    return found


@pytest.mark.parametrize("how", ["exec", "group"])
def test_what_a_command_orphans_is_reaped_while_it_runs(tmp_path, how):
    pidfile = str(tmp_path / "run-x.pid")
    if how == "exec":
        argv = [sys.executable, str(AGENT_PATH), "exec", "--pidfile", pidfile, "--", "sh", "-c", ORPHANING]
    else:
        argv = [sys.executable, str(AGENT_PATH), "group"]
    agent = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=tmp_path)
    try:
        if how == "group":
            agent.stdin.write((json.dumps({"procs": [{"argv": ["sh", "-c", ORPHANING], "pidfile": pidfile,
                                                      "env": {}}]}) + "\n").encode())
        agent.stdin.close()
        assert b"up" in agent.stdout.readline()
        # While the command runs (it sleeps 30 s): under load the agent may still be starting up when
        # the helpers end, so the reaping is given most of that, not a quiet machine's moment.
        deadline = time.monotonic() + 20
        while _zombies_under(agent.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _zombies_under(agent.pid) == []
        assert agent.poll() is None                 # the command still runs: its leader was not reaped
    finally:
        subprocess.run([sys.executable, str(AGENT_PATH), "signal", "--pidfile", pidfile, "--signal", "KILL"],
                       timeout=30)
        agent.wait(30)
        agent.stdout.close()
    assert agent.returncode == (137 if how == "exec" else 0)
