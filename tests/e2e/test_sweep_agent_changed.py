"""A trial that edits fleet's own agent on its machine (.fleet/agent.py, writable by the login every
trial runs as) gets no later trial on that machine: the reset after it imported the edited agent,
whose code could call the machine clean, and each later trial started through it."""
from __future__ import annotations

import json
import re

from tests.conftest import processes_under, run_fleet

TRIAL = r'''
import os, sys
x = sys.argv[1]
print("ran=%s" % x)
if x == "1":
    with open(os.path.join(os.environ["FLEET_MACHINE_ROOT"], ".fleet", "agent.py"), "a") as fh:
        fh.write("\nprint('PLANTED in the agent', file=__import__('sys').stderr)\n")
'''


def test_a_trial_that_edits_the_agent_gets_no_later_trial_on_that_machine(experiment, fleet_home):
    (experiment / "trial.py").write_text(TRIAL)
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "python", "trial.py", "{x}"],
                     cwd=experiment, timeout=180)
    trials = json.loads(proc.stdout)["trials"]
    assert trials[0]["state"] == "succeeded", proc.stderr[-3000:]
    assert re.search(rf"machine \S+: {trials[0]['run_id']} changed fleet's own programs there: no more trials on it",
                     proc.stderr), proc.stderr[-3000:]
    assert not re.search(r"ran=[23]", proc.stderr), proc.stderr[-3000:]
    assert [t["state"] for t in trials[1:]] == ["not-started", "not-started"], trials
    assert all("retired: machines " in t["reason"] for t in trials[1:]), trials
    assert processes_under(fleet_home) == []
