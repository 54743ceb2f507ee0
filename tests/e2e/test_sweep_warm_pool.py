"""What a warm pool pays once, on real local sshd machines: the data crosses once per host (both
machines share the host's chunk cache, so the second receives no chunk), and a trial's record
carries its machines' environment without probing them again, unless a trial changed what the
venv (here: a package installed into the pool's venv), when no later trial runs on that machine:
their records would otherwise show the pool's environment."""
from __future__ import annotations

import json
import os

from tests.conftest import processes_under, run_fleet

DATA_BYTES = 256 * 1024

# Trial 2 "installs" a package into the lease's venv the way pip leaves one: a dist-info with
# METADATA and a RECORD (its module listed without a hash, so the probe hashes the file itself).
INSTALL = ("import os, sysconfig; x = os.environ['FLEET_PARAM_X']; site = sysconfig.get_paths()['purelib']; "
           "info = os.path.join(site, 'fleet_probe_fake-1.0.dist-info'); "
           "x == '2' and os.makedirs(info); "
           "x == '2' and open(os.path.join(info, 'METADATA'), 'w').write('Name: fleet-probe-fake\\nVersion: 1.0\\n\\n'); "
           "x == '2' and open(os.path.join(site, 'fleet_probe_fake.py'), 'w').write('X = 1\\n'); "
           "x == '2' and open(os.path.join(info, 'RECORD'), 'w').write('fleet_probe_fake.py,,\\n')")


def _record(experiment, run_id: str) -> dict:
    proc = run_fleet(["runs", "show", run_id, "--json"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def _packages(record: dict) -> list[str]:
    return [p["name"] for m in record["environment"]["machines"] for p in m["packages"]]


def test_two_machines_on_one_host_receive_the_data_once(experiment, fleet_home):
    (experiment / "data").mkdir()
    (experiment / "data" / "blob.bin").write_bytes(os.urandom(DATA_BYTES))   # incompressible, one copy's worth
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\n'
                                           'max_duration = "10m"\n[data]\ntrain = "data"\n')
    proc = run_fleet(["sweep", "--param", "x=1,2", "--parallel", "2", "--json", "--",
                      "sh", "-c", f"test $(wc -c < $FLEET_DATA/train/blob.bin) = {DATA_BYTES}"],
                     cwd=experiment, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    assert summary["machines"] == 2 and len({t["machines"][0] for t in summary["trials"]}) == 2
    # Both machines hold the data (each trial read it on its own machine), yet it crossed once:
    # the first machine seeded the host's chunk cache, the second was built from it.
    assert DATA_BYTES <= summary["staged_bytes"] < DATA_BYTES + 64 * 1024, summary["staged_bytes"]
    assert processes_under(fleet_home) == []


def test_trials_reuse_the_pools_environment_until_one_changes_the_venv(experiment, fleet_home):
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--parallel", "1", "--json", "--",
                      "python", "-c", INSTALL], cwd=experiment, timeout=180)
    summary = json.loads(proc.stdout)
    trials = summary["trials"]
    assert [t["state"] for t in trials] == ["succeeded", "succeeded", "not-started"], proc.stderr[-3000:]
    assert trials[0]["machines"] == trials[1]["machines"]                     # one warm machine, in turn
    pool = _record(experiment, summary["pool_run_id"])["environment"]
    first, second = (_record(experiment, t["run_id"])["environment"] for t in trials[:2])
    # Trials 1 and 2 ran in the venv exactly as the pool probed it: their records say so (reused:
    # no probe of their own), the one machine counted as theirs.
    for env in (first, second):
        assert env["capture_s"] == 0.0, proc.stderr[-3000:]      # a reset it could not confirm says so there
        assert [dict(m, machines=None) for m in env["machines"]] == [dict(m, machines=None) for m in pool["machines"]]
        assert "fleet-probe-fake" not in [p["name"] for m in env["machines"] for p in m["packages"]]
    # Trial 2 installed a package: no trial runs after it there, and the sweep says why.
    assert f"{trials[1]['run_id']} changed files in the venv's site-packages there: no more trials on it" \
        in proc.stderr, proc.stderr[-3000:]
    assert processes_under(fleet_home) == []
