"""Trials of a sweep that run at once each get a rendezvous port of their own (issue 13: no port
collisions between concurrent multi-node runs). The pool's lease port was handed to every trial,
so two trials on one host (GPU shares of one machine, or local machines, which all live on this
computer) bound the same MASTER_PORT: the second died with EADDRINUSE, or a framework joined the
other trial's process group."""
from __future__ import annotations

import json

import pytest

from tests.conftest import run_fleet

# Binds MASTER_PORT, says so in a directory both trials see (local machines run on this computer),
# then waits for the other trial to have bound its own: both hold their port at the same time.
HOLD = ("import os, socket, time, pathlib; d = pathlib.Path({shared!r}); "
        "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['MASTER_PORT']))); s.listen(); "
        "(d / os.environ['FLEET_PARAM_A']).write_text(os.environ['MASTER_PORT']); end = time.time() + 60\n"
        "while len(list(d.iterdir())) < 2 and time.time() < end: time.sleep(0.1)\n"
        "assert len(list(d.iterdir())) == 2, 'the other trial never bound its port'")


@pytest.mark.parametrize("template, gpus_per_trial", [("local-4gpu", "1"), ("local-1gpu", "1")],
                         ids=["gpu-shares-of-one-machine", "two-machines-on-one-host"])
def test_trials_at_once_bind_their_own_master_port(experiment, fleet_home, tmp_path, template, gpus_per_trial):
    shared = tmp_path / "bound"
    shared.mkdir()
    (experiment / "fleet.toml").write_text(f'project = "t"\ncommand = "true"\ntemplate = "{template}"\n'
                                           'max_duration = "10m"\n')
    code = HOLD.format(shared=str(shared)).replace("{", "{{").replace("}", "}}")   # no sweep placeholders
    proc = run_fleet(["sweep", "--json", "--param", "a=1,2", "--parallel", "2", "--gpus-per-trial", gpus_per_trial,
                      "--", "python3", "-c", code], cwd=experiment, timeout=180)
    summary = json.loads(proc.stdout)
    assert [t["state"] for t in summary["trials"]] == ["succeeded", "succeeded"], proc.stderr[-3000:]
    ports = {p.name: p.read_text() for p in shared.iterdir()}
    assert len(set(ports.values())) == 2, ports


# Rank 0 binds MASTER_PORT plainly (no SO_REUSEADDR), takes one connection and closes its end
# first: the port stays in TIME_WAIT for a minute, refusing the next plain bind of it.
CLOSE_FIRST = ("import os, socket; port = int(os.environ['MASTER_PORT']); s = socket.socket(); "
               "s.bind(('127.0.0.1', port)); s.listen(); c = socket.create_connection(('127.0.0.1', port)); "
               "a, _ = s.accept(); a.close(); c.close(); s.close(); print('trial bound', port)")


def test_the_next_trial_on_a_slot_is_not_handed_a_port_still_in_time_wait(experiment, fleet_home):
    """Trials one after another on a warm pool's slot were all handed the slot's one port: a master
    that closed first left it in TIME_WAIT, and the next trial died with EADDRINUSE."""
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\n')
    code = CLOSE_FIRST.replace("{", "{{").replace("}", "}}")
    proc = run_fleet(["sweep", "--json", "--param", "a=1,2,3", "--parallel", "1", "--",
                      "python3", "-c", code], cwd=experiment, timeout=180)
    summary = json.loads(proc.stdout)
    assert [t["state"] for t in summary["trials"]] == ["succeeded"] * 3, proc.stderr[-3000:]
    assert proc.stderr.count("previous run's connection still closing") >= 2, proc.stderr[-3000:]
