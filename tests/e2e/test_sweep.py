"""`fleet sweep` on real local sshd machines, as a user types it: a warm pool leased once, trials
as recorded runs, one budget, failures and Ctrl-C.

Prices are set in fleet.toml so money moves in seconds: local-1gpu at $36/h = $0.01/s per machine.
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from decimal import Decimal

from fleet.state import open_state
from tests.conftest import FLEET, processes_under, run_fleet, wait_until

# Writes metrics.json (acc grows with lr and batch, so the best trial is known) and proves the
# parameters arrived both substituted and as FLEET_PARAM_*.
TRAIN = ("import json,os; d=os.environ['FLEET_OUTPUT_DIR']; os.makedirs(d, exist_ok=True); "
         "assert os.environ['FLEET_PARAM_LR']=='{lr}' and os.environ['FLEET_PARAM_BATCH']=='{batch}'; "
         "print('data', open(os.environ['FLEET_DATA']+'/train/x.txt').read().strip()); "
         "json.dump({{'acc': float('{lr}')*1000+int('{batch}'), 'loss': 1.0}}, open(d+'/metrics.json','w'))")


def _config(d, extra: str = "") -> None:
    (d / "data").mkdir(exist_ok=True)
    (d / "data" / "x.txt").write_text("shared-data\n")
    (d / "fleet.toml").write_text('project = "t"\ncommand = "true"\ntemplate = "local-1gpu"\nmax_duration = "10m"\n'
                                  '[data]\ntrain = "data"\n' + extra)


def _summary(proc) -> dict:
    assert proc.stdout.strip(), proc.stderr[-3000:]
    return json.loads(proc.stdout)


def _leases() -> list:
    state = open_state()
    try:
        return state.list_leases(active_only=False)
    finally:
        state.close()


def test_a_2x2_grid_runs_4_trials_on_2_machines_leased_and_staged_once(experiment, fleet_home):
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "lr=1e-3,3e-4", "--param", "batch=32,64", "--parallel", "2", "--json",
                      "--", "python3", "-c", TRAIN], cwd=experiment, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(proc)
    assert [t["state"] for t in summary["trials"]] == ["succeeded"] * 4
    assert summary["leases"] == 1 and summary["machines"] == 2 and summary["counts"]["succeeded"] == 4
    assert len(_leases()) == 1                                    # one lease in the state, for the whole sweep
    stage_lines = [line for line in proc.stderr.splitlines() if "stage: pinned inputs on" in line]
    assert len(stage_lines) == 1 and "on 2 machine(s)" in stage_lines[0], stage_lines   # chunks sent once
    assert proc.stderr.count("[t00") >= 4 and "data shared-data" in proc.stderr
    used = {m for t in summary["trials"] for m in t["machines"]}
    assert len(used) == 2                                         # both machines ran trials
    sweep_dir = experiment / "runs" / summary["sweep_id"]
    for t in summary["trials"]:
        metrics = json.loads((sweep_dir / t["trial"] / "node-0" / "metrics.json").read_text())
        assert t["metrics"] == metrics and metrics["acc"] == float(t["params"]["lr"]) * 1000 + int(t["params"]["batch"])
        record = _summary(run_fleet(["runs", "show", t["run_id"], "--json"], cwd=experiment))
        assert record["data_snapshots"] and record["code_snapshot"]   # each trial a pinned, recorded run
    assert json.loads((sweep_dir / "sweep.json").read_text())["sweep_id"] == summary["sweep_id"]
    assert processes_under(fleet_home) == []                       # released

    compare = run_fleet(["runs", "compare", "--sweep", summary["sweep_id"], "--sort", "acc", "--format", "json"],
                        cwd=experiment)
    assert compare.returncode == 0, compare.stderr
    rows = json.loads(compare.stdout)["runs"]
    assert [r["params"] for r in rows][0] == {"lr": "1e-3", "batch": "64"}      # best first
    assert [r["metrics"]["acc"] for r in rows] == sorted((r["metrics"]["acc"] for r in rows), reverse=True)
    two = [t["run_id"] for t in summary["trials"][:2]]
    md = run_fleet(["runs", "compare", *two, "--format", "md"], cwd=experiment)
    head = md.stdout.splitlines()[0]
    assert md.returncode == 0 and head.startswith("| RUN | TRIAL | STATUS |")
    assert all(f"| {c} |" in head for c in ("lr", "batch", "acc", "loss", "COST", "GPU-HOURS", "COMMIT", "DATA"))
    assert "inputs that differ: params, command" in md.stdout      # same code and data, different params
    bad = run_fleet(["runs", "compare", "--sweep", summary["sweep_id"], "--sort", "nope"], cwd=experiment)
    assert bad.returncode == 2 and "no run has that metric" in bad.stderr


def test_the_ledger_bills_each_machine_second_once_under_a_monthly_budget(experiment, fleet_home):
    from fleet.money.ledger import Ledger
    _config(experiment, '[budgets]\nproject_monthly = 100\n[prices]\n"local-1gpu" = 36\n')
    proc = run_fleet(["sweep", "--param", "x=1,2", "--json", "--", "sleep", "1"], cwd=experiment, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(proc)
    state = open_state()
    try:
        read = Ledger(state.db).read(lease_id=summary["lease_id"])
    finally:
        state.close()
    assert not read.corrupt and {e.run_id for e in read.entries} == {summary["pool_run_id"]}   # no trial rows
    billed = sum(e.cost_micro for e in read.entries)
    assert Decimal(summary["would_cost_usd"]) * 1_000_000 == billed
    shares = sum(Decimal(t["cost_usd"]) for t in summary["trials"])
    assert 0 < shares * 1_000_000 <= billed                       # trials' shares fit inside the pool's bill


def test_a_failing_trial_does_not_stop_the_others(experiment, fleet_home):
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "sh", "-c", "test {x} != 2"],
                     cwd=experiment, timeout=180)
    assert proc.returncode == 1, proc.stderr[-3000:]
    trials = _summary(proc)["trials"]
    assert [(t["trial"], t["state"], t["exit_code"]) for t in trials] == \
        [("t001", "succeeded", 0), ("t002", "failed", 1), ("t003", "succeeded", 0)]
    assert processes_under(fleet_home) == []


def test_a_budget_that_pays_3_of_8_trials_runs_3_and_says_why_the_rest_did_not_start(experiment, fleet_home):
    # The admission rule (fleet/sweep/scheduler.py): a trial starts when what is left of the budget
    # (the whole lease metered, boot included) pays its worst case, price x trial timeout = $0.09
    # at $0.01/s for 9 s. Each trial runs until its timeout, so three cost at least $0.27 and a 4th
    # can never fit in $0.356 (at most $0.086 left), whatever the timing. The 3rd fits when boot plus
    # the two stops and resets before it took at most 8.6 s of machine time: almost all any budget
    # under 4 trials' worth can leave, and twice what boot plus three stops took with two cores kept
    # busy (4.2 s: $0.402 spent at the 4th's check with 12 s trials). A smaller budget would make "3"
    # depend on how fast the machine boots.
    _config(experiment, '[budgets]\ngrace = "1s"\n[prices]\n"local-1gpu" = 36\n')
    proc = run_fleet(["sweep", "--param", "x=1,2,3,4,5,6,7,8", "--budget", "0.356", "--trial-timeout", "9s",
                      "--json", "--", "sleep", "600"], cwd=experiment, timeout=240,
                     env={"FLEET_GRACE": "1"})
    assert proc.returncode == 11, proc.stderr[-3000:]
    summary = _summary(proc)
    states = [t["state"] for t in summary["trials"]]
    assert states == ["stopped"] * 3 + ["not-started"] * 5, (states, proc.stderr[-3000:])
    # Either the check before a 4th trial (what is left cannot pay its worst case) or the crossing
    # during the 3rd (its meter reached the budget) stopped the queue; both say so with figures.
    for t in summary["trials"][3:]:
        assert ("sweep budget has" in t["reason"] and "one trial may cost up to $0.09" in t["reason"]
                or "the sweep budget ran out: budget for run reached" in t["reason"]), t["reason"]
    assert Decimal(summary["would_cost_usd"]) <= Decimal("0.356")
    assert processes_under(fleet_home) == []


def test_ctrl_c_stops_the_sweep_releases_everything_and_lists_each_trial(experiment, fleet_home):
    _config(experiment)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    env["FLEET_GRACE"] = "1"
    proc = subprocess.Popen([FLEET, "sweep", "--param", "x=1,2,3,4", "--parallel", "2", "--json", "--",
                             "sh", "-c", "echo trial-{x}-up; sleep 600"], cwd=experiment, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []

    def both_running() -> bool:
        line = proc.stderr.readline()
        seen.append(line)
        return sum("-up" in s for s in seen) >= 2 or proc.poll() is not None

    try:
        assert wait_until(both_running, timeout=120, interval=0), "".join(seen)[-3000:]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err[-3000:]
    summary = json.loads(out)
    states = [t["state"] for t in summary["trials"]]
    assert states == ["stopped", "stopped", "not-started", "not-started"], states
    assert summary["status"] == "cancelled"
    assert all(t["reason"] for t in summary["trials"])
    assert processes_under(fleet_home) == []
    assert all(lease.status != "active" for lease in _leases())


def test_the_next_trial_on_a_machine_finds_nothing_of_the_last_one(experiment, fleet_home):
    # Trial 1 leaves a daemon (its own session: the process group stop does not reach it) and an
    # output file; trial 2 on the same machine succeeds only if both are gone.
    # (the pattern "4817[.]1" matches the daemon "sleep 4817.1", not the shell lines that name it)
    script = ("mkdir -p $FLEET_OUTPUT_DIR; touch $FLEET_OUTPUT_DIR/mine; echo cg=$(grep ^0:: /proc/self/cgroup); "
              "if [ {x} = 1 ]; then setsid sleep 4817.{x} >/dev/null 2>&1 < /dev/null & "
              "else ! pgrep -f 'sleep 4817[.]1' && test \"$(ls $(dirname $FLEET_OUTPUT_DIR))\" = "
              "\"$(basename $FLEET_OUTPUT_DIR)\"; fi")
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "x=1,2", "--json", "--", "sh", "-c", script], cwd=experiment, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _summary(proc)["trials"]
    assert [t["state"] for t in trials] == ["succeeded", "succeeded"]
    assert trials[0]["machines"] == trials[1]["machines"]          # the same warm machine
    # said, not silent: trial 1 ran past its own end
    assert f"{trials[0]['run_id']} left 1 process(es) running after its command ended; the reset ended them" \
        in proc.stderr, proc.stderr[-3000:]
    cgroups = [line.split("cg=0::")[1] for line in proc.stderr.splitlines() if "cg=0::" in line]
    if any("/fleet/" in c for c in cgroups):                        # cgroup isolation here: a leaf of its own
        assert all(c.endswith("/trial-0") for c in cgroups), cgroups
    assert processes_under(fleet_home) == []


def test_what_a_trial_writes_beside_its_code_is_not_the_next_trials_starting_point(experiment, fleet_home):
    """Trainers write ./out and resume from its last checkpoint: trial 2 with other parameters must
    not resume trial 1's. Each trial runs in a fresh copy of the staged code; the staged code itself
    (what the record pins) is not written to."""
    # ../data/train: a path relative to the code, as a run sees it (the data beside the code)
    (experiment / "train.sh").write_text("test ! -e out/checkpoint && test -e train.sh && mkdir -p out && "
                                         "grep -q shared-data ../data/train/x.txt && "
                                         "echo lr={x} > out/checkpoint && echo wd=$(pwd)\n")
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "sh", "train.sh"], cwd=experiment, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _summary(proc)["trials"]
    assert [t["state"] for t in trials] == ["succeeded"] * 3, [(t["trial"], t["state"]) for t in trials]
    assert len({t["machines"][0] for t in trials}) == 1                # one warm machine, three trials
    dirs = {line.split("wd=")[1] for line in proc.stderr.splitlines() if "wd=" in line}
    assert len(dirs) == 1 and "/trials/trial-0/work" in dirs.pop()
    assert processes_under(fleet_home) == []


def test_one_gpu_trials_share_a_4_gpu_machine_each_on_its_own_gpu(experiment, fleet_home):
    _config(experiment)
    text = (experiment / "fleet.toml").read_text().replace('template = "local-1gpu"', 'template = "local-4gpu"')
    (experiment / "fleet.toml").write_text(text)
    proc = run_fleet(["sweep", "--param", "x=1,2,3,4", "--parallel", "4", "--gpus-per-trial", "1", "--json", "--",
                      "sh", "-c", "echo cvd=$CUDA_VISIBLE_DEVICES cg=$(grep ^0:: /proc/self/cgroup); sleep 1"],
                     cwd=experiment, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(proc)
    assert summary["machines"] == 1 and [t["state"] for t in summary["trials"]] == ["succeeded"] * 4
    assert sorted(tuple(t["gpus"]) for t in summary["trials"]) == [(0,), (1,), (2,), (3,)]
    seen = {line.split("cvd=")[1].split()[0] for line in proc.stderr.splitlines() if line.startswith("[t00")}
    assert seen == {"0", "1", "2", "3"}, proc.stderr[-2000:]
    leaves = {line.rsplit("/", 1)[1] for line in proc.stderr.splitlines() if line.startswith("[t00") and "/fleet/" in line}
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line and "git repository" not in line]
    assert warnings == [], warnings                               # neighbours never cut each other's channels
    assert not leaves or leaves == {"trial-0", "trial-1", "trial-2", "trial-3"}, leaves
    assert processes_under(fleet_home) == []


def test_bad_param_is_one_line(experiment, fleet_home):
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "lr", "--", "echo", "{lr}"], cwd=experiment)
    assert proc.returncode == 2 and "expected NAME=VALUE" in proc.stderr
    proc = run_fleet(["sweep", "--param", "lr=1", "--", "echo", "{nope}"], cwd=experiment)
    assert proc.returncode == 2 and "{nope}" in proc.stderr
    proc = run_fleet(["sweep", "--param", "lr=1,2", "--seed", "3", "--", "echo", "{lr}"], cwd=experiment)
    assert proc.returncode == 2 and "--samples" in proc.stderr
    proc = run_fleet(["sweep", "--param", "lr=1", "--budget", "lots", "--", "echo", "{lr}"], cwd=experiment)
    assert proc.returncode == 2 and proc.stderr.startswith("fleet: error: --budget")
    assert processes_under(fleet_home) == [] and not (experiment / "runs").exists()   # nothing leased


# Rewrites metrics.json every 0.3 s (epoch 1, 2, …): "bad" keeps loss 5 for up to 600 epochs (3
# minutes) unless stopped; "good" keeps loss 0.5 and ends by itself after 8 epochs.
EPOCHS = ("import json,os,time; d=os.environ['FLEET_OUTPUT_DIR']; os.makedirs(d, exist_ok=True)\n"
          "bad = '{case}' == 'bad'\n"
          "for e in range(1, (600 if bad else 8) + 1):\n"
          "    json.dump({{'epoch': e, 'loss': 5 if bad else 0.5}}, open(d + '/m.tmp', 'w'))\n"
          "    os.replace(d + '/m.tmp', d + '/metrics.json'); time.sleep(0.3)\n")


def test_stop_if_ends_a_hopeless_trial_and_lets_a_good_one_finish(experiment, fleet_home):
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "case=bad,good", "--parallel", "2", "--stop-if", "loss > 1 after 2 epochs",
                      "--json", "--", "python3", "-c", EPOCHS], cwd=experiment, timeout=170,
                     env={"FLEET_GRACE": "1"})
    assert proc.returncode == 1, proc.stderr[-2000:]                 # a trial was stopped
    bad, good = _summary(proc)["trials"]
    assert bad["state"] == "stopped" and bad["reason"].startswith("early stop: loss 5 > 1 at epoch"), bad
    assert bad["metrics"]["epoch"] >= 2 and bad["duration_s"] < 120
    assert good["state"] == "succeeded" and good["metrics"] == {"epoch": 8, "loss": 0.5}, good
    assert processes_under(fleet_home) == []


def test_a_trial_timeout_past_the_pools_max_duration_is_not_started(experiment, fleet_home):
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "x=1,2", "--max-duration", "20s", "--trial-timeout", "1m", "--json",
                      "--", "echo", "{x}"], cwd=experiment)
    assert proc.returncode == 1, proc.stderr[-2000:]
    trials = _summary(proc)["trials"]
    assert [t["state"] for t in trials] == ["not-started", "not-started"]
    assert "raise --max-duration" in trials[0]["reason"]
    assert processes_under(fleet_home) == []


def test_a_failed_setup_runs_no_trial_and_says_so(experiment, fleet_home):
    _config(experiment)
    text = (experiment / "fleet.toml").read_text().replace('command = "true"\n', 'command = "true"\nsetup = "exit 3"\n')
    (experiment / "fleet.toml").write_text(text)
    proc = run_fleet(["sweep", "--param", "x=1,2", "--json", "--", "echo", "{x}"], cwd=experiment)
    assert proc.returncode == 3, proc.stderr[-2000:]
    summary = _summary(proc)
    assert summary["status"] == "setup-failed"
    assert [t["state"] for t in summary["trials"]] == ["not-started", "not-started"]
    assert all("setup-failed" in t["reason"] for t in summary["trials"])
    assert processes_under(fleet_home) == []


if __name__ == "__main__":
    sys.exit(0)


def test_the_next_trial_on_a_machine_finds_no_checkpoint_of_the_last_one(experiment, fleet_home):
    """Each trial's checkpoint is uploaded at its end and then removed from the machine: the next
    trial there finds only its own directory (red-team finding: trial 2 read trial 1's checkpoint,
    and every trial's stayed on the machine's disk for the whole sweep)."""
    script = ("echo weights-{x} > $FLEET_CHECKPOINT_DIR/ck.bin; "
              "echo seen={x}:$(ls $(dirname $FLEET_CHECKPOINT_DIR) | wc -l)")
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "sh", "-c", script], cwd=experiment, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = _summary(proc)["trials"]
    assert [t["state"] for t in trials] == ["succeeded"] * 3
    assert len({t["machines"][0] for t in trials}) == 1                # one warm machine, three trials
    seen = sorted(re.findall(r"seen=(\d:\d+)$", proc.stderr, re.M))
    assert seen == ["1:1", "2:1", "3:1"], seen
    for t in trials:                          # each trial's checkpoint is in the store (`fleet up --resume` finds it)
        assert (fleet_home / "store" / "refs" / f"ckpt-{t['run_id']}-n0").is_file(), t["run_id"]


def test_a_trial_that_changes_the_staged_data_gets_no_later_trial_on_that_machine(experiment, fleet_home):
    """Red-team finding: trial 1 appended to $FLEET_DATA/train/x.txt (read-only modes do not stop root,
    nor a chmod) and trial 2 read its edit while its record pinned the data snapshot as staged."""
    _config(experiment)
    script = 'if [ {x} = 1 ]; then chmod u+w $FLEET_DATA/train/x.txt; echo POISON >> $FLEET_DATA/train/x.txt; fi; ' \
             'echo "read={x}:$(cat $FLEET_DATA/train/x.txt | tr "\\n" /)"'
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "sh", "-c", script], cwd=experiment, timeout=180)
    trials = _summary(proc)["trials"]
    assert trials[0]["state"] == "succeeded", proc.stderr[-3000:]
    assert "changed the staged code or data there: no more trials on it" in proc.stderr, proc.stderr[-3000:]
    assert not re.search(r"read=[23]:.*POISON", proc.stderr), proc.stderr[-3000:]    # no later trial read it
    assert processes_under(fleet_home) == []


def test_a_trial_that_changes_the_staged_code_gets_no_later_trial_on_that_machine(experiment, fleet_home):
    """Red-team finding: trial 1 rewrote the staged train.sh and trial 2 ran it, its record pinning
    the code as staged. The reset reads the staged code's state (every entry's stat); after a
    change, no later trial runs on that machine and the sweep says why."""
    (experiment / "train.sh").write_text('echo "ran $1"\n'
                                         'if [ $1 = 1 ]; then echo "echo INJECTED" >> $FLEET_MACHINE_ROOT/work/train.sh; fi\n')
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "x=1,2,3", "--json", "--", "sh", "train.sh", "{x}"], cwd=experiment,
                     timeout=180)
    trials = _summary(proc)["trials"]
    assert trials[0]["state"] == "succeeded", proc.stderr[-3000:]
    assert "changed the staged code or data there: no more trials on it" in proc.stderr, proc.stderr[-3000:]
    assert "INJECTED" not in proc.stderr                              # no trial ran the changed script
    assert [t["state"] for t in trials[1:]] != ["succeeded", "succeeded"], trials
    assert processes_under(fleet_home) == []


def test_resuming_a_trial_needs_its_own_command_and_parameters(experiment, fleet_home):
    """Red-team finding: `fleet up --resume <trial>` ran fleet.toml's command with no FLEET_PARAM_*,
    from the trial's checkpoint, without a word: another experiment recorded as its continuation."""
    script = 'echo "x=$FLEET_PARAM_X" > $FLEET_CHECKPOINT_DIR/ck; echo "ran x=$FLEET_PARAM_X"'
    _config(experiment)
    proc = run_fleet(["sweep", "--param", "x=7", "--json", "--", "sh", "-c", script], cwd=experiment, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trial = _summary(proc)["trials"][0]["run_id"]
    refused = run_fleet(["up", "--resume", trial], cwd=experiment, timeout=120)
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert f"run {trial} continues sweep trial t001" in refused.stderr and "-e FLEET_PARAM_X=7 -- " in refused.stderr
    again = run_fleet(["up", "--resume", trial, "-e", "FLEET_PARAM_X=7", "--", "sh", "-c", script], cwd=experiment,
                      timeout=180)
    assert again.returncode == 0 and "ran x=7" in again.stdout + again.stderr, again.stderr[-3000:]
