"""`agent group` after a stop waits for each rank's whole process group, and the training that
outlived its shell prints its last lines (`checkpoint saved`) just before it exits. The relay
decided the group was empty and closed the rank's pipes without reading what was still in them:
whatever the training printed between the relay's last read and that check was lost."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.unit.test_agent_group import _records

# The relay of fleet/remote/agent/group.py, its group check timed as on a busy machine: the training
# prints its last line and exits after the relay's read and before the check sees its group empty.
HELPER = textwrap.dedent("""
    import os, signal, sys, threading, time
    from fleet.remote.agent import group
    here, pidfile = sys.argv[1], sys.argv[2]
    go, ready = os.path.join(here, "go"), os.path.join(here, "ready")
    real = group.group_outlives_stop

    def racing(path, pgid):
        if os.path.lexists(path + group.STOP_MARK) and not os.path.exists(go):
            open(go, "w").close()
            while real(path, pgid):
                time.sleep(0.01)
            return False
        return real(path, pgid)
    group.group_outlives_stop = racing

    def stop():   # what `agent signal` does, once the training is up
        while not os.path.exists(ready):
            time.sleep(0.01)
        group.mark_stop(pidfile)
        os.killpg(int(open(pidfile).read().split()[0]), signal.SIGTERM)
    threading.Thread(target=stop, daemon=True).start()
    training = ("import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                "open('ready', 'w').close()\\n"
                "while not os.path.exists('go'): time.sleep(0.01)\\n"
                "print('checkpoint saved')")
    sys.exit(group.run([{"argv": ["sh", "-c", f"{sys.executable} -c \\"{training}\\"; echo after"],
                         "pidfile": pidfile, "env": {}}],
                       lambda path, pid: open(path, "w").write(str(pid))))
""")


def test_the_last_line_a_stopped_rank_prints_as_its_group_ends_is_relayed(tmp_path):
    pidfile = str(tmp_path / "r0.pid")
    p = subprocess.run([sys.executable, "-c", HELPER, str(tmp_path), pidfile], cwd=tmp_path, capture_output=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    rows = _records(p.stdout)
    assert (0, "o", b"checkpoint saved") in rows, rows
    assert rows[-1] == (0, "x", b"143"), rows          # the shell's end (SIGTERM), after all its output
    assert b"after" not in p.stdout                      # the shell died at the stop, as in the real case
