"""A stop gives the experiment its grace even when the command is more than one process: `python
train.py; echo done` runs under `sh -c`, and the SIGTERM to its process group ends that shell at once
while the training under it saves its checkpoint. The run took the shell's end for the command's:
it collected and released under the save (2 s, not the save's 3), so the checkpoint never came home.
Now a stopped command ends when its whole process group has, within the grace; one rank per machine
(`agent exec`) and per GPU (`agent group`) alike."""
from __future__ import annotations

import json
import signal

import pytest

from tests.conftest import communicate_or_kill, processes_under, start_fleet_up, wait_for_line

SAVES_ON_SIGTERM = """import os, signal, sys, time
def save(*_):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)     # fleet repeats its SIGTERM while it waits
    time.sleep(3)                                      # a checkpoint that takes its time
    out = os.environ["FLEET_OUTPUT_DIR"]
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "ckpt-%s.txt" % os.environ["FLEET_RANK"]), "w") as f:
        f.write("saved")
    sys.exit(0)
signal.signal(signal.SIGTERM, save)
print("training rank", os.environ["FLEET_RANK"], flush=True)
time.sleep(300)
"""


@pytest.mark.parametrize("template,gpus,per_gpu", [("local-1gpu", 1, False), ("local-4gpu", 4, True)],
                         ids=["agent-exec", "agent-group"])
def test_a_checkpoint_saved_under_a_shell_that_died_at_the_stop_comes_home(experiment, fleet_home, template, gpus,
                                                                            per_gpu):
    (experiment / "save.py").write_text(SAVES_ON_SIGTERM)
    (experiment / "fleet.toml").write_text(f'project = "t"\ntemplate = "{template}"\nmax_duration = "10m"\n'
                                           f'per_gpu = {str(per_gpu).lower()}\n'
                                           "command = 'python save.py; echo after'\n")
    proc = start_fleet_up(experiment, ["--gpus", str(gpus), "--json", "--allow-dirty"])
    try:
        seen = ""
        for rank in range(gpus):
            seen += wait_for_line(proc, "training rank", timeout=120)
        proc.send_signal(signal.SIGINT)                       # Ctrl-C
        out, _ = communicate_or_kill(proc, 90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    summary = json.loads(out[out.index("{"):])
    assert summary["status"] == "cancelled" and summary["released"] is True, out[-3000:]
    saved = sorted(p.name for p in (experiment / summary["run_dir"]).rglob("ckpt-*.txt"))
    assert saved == [f"ckpt-{r}.txt" for r in range(gpus)], out[-3000:]
    assert processes_under(fleet_home) == []
