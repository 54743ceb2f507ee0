"""A trial that fills the disk its machine's trials write to (`$HOME`, the temp directory, the
workdir) left every later trial there to fail fast on a full disk (red-team finding). The reset
reads the free space and inodes there and retires the machine below a floor, saying why."""
from __future__ import annotations

import json
import os
import re
import subprocess

import pytest

from tests.conftest import processes_under, run_fleet

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small filesystem needs root")

# Trial 1 fills $HOME (on the small filesystem below) and leaves the file there, as a cache would.
SCRIPT = ('echo "ran={x}"; if [ {x} = 1 ]; then dd if=/dev/zero of="$HOME/fill" bs=1M 2>/dev/null; fi; true')


def test_a_trial_that_fills_home_retires_its_machine_and_the_rest_say_why(experiment, fleet_home):
    machines = fleet_home / "machines"       # the local machines' roots, their $HOME and workdir
    machines.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200m", "tmpfs", str(machines)], check=True, timeout=30)
    try:
        proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "sh", "-c", SCRIPT], cwd=experiment,
                         timeout=180)
        trials = json.loads(proc.stdout)["trials"]
        assert trials[0]["state"] == "succeeded", proc.stderr[-3000:]
        said = re.findall(rf"machine \S+: after {trials[0]['run_id']} \$HOME \(\S+\) has \d+ MiB free of 200 MiB: "
                          "no more trials on it$", proc.stderr, re.M)
        assert len(said) == 1, proc.stderr[-3000:]
        assert not re.search(r"\] ran=[23]", proc.stderr)     # none started on a full disk
        assert [t["state"] for t in trials[1:]] == ["not-started", "not-started"], trials
        for t in trials[1:]:      # what happened, not "the pool's machines were lost": they answered
            assert t["reason"].startswith("no slot was left to run it (1 of 1 retired: machines ") \
                and "are short of disk space (after " in t["reason"] and "$HOME" in t["reason"], t["reason"]
        assert processes_under(fleet_home) == []
    finally:
        subprocess.run(["umount", "-l", str(machines)], timeout=30)
