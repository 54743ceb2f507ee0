"""`fleet up` as a user types it (subprocess), on the local provider."""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from tests.conftest import processes_under, run_fleet, start_fleet_up, wait_for_line, wait_until


def _status(cwd: Path) -> list[dict]:
    proc = run_fleet(["status", "--json"], cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["leases"]


def _summary(proc) -> dict:
    return json.loads(proc.stdout)


def test_up_runs_on_every_machine_streams_prefixed_logs_and_releases(experiment, fleet_home):
    (experiment / "fleet.toml").write_text(
        'project = "t"\ntemplate = "local-1gpu"\nsetup = "echo setting-up"\n'
        'command = "echo rank=$FLEET_NODE_RANK of $FLEET_NUM_NODES gpus=$CUDA_VISIBLE_DEVICES; '
        'mkdir -p $FLEET_OUTPUT_DIR && echo $FLEET_NODE_RANK > $FLEET_OUTPUT_DIR/rank.txt"\n')
    proc = run_fleet(["up", "--gpus", "3"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    for rank in range(3):
        assert f"[{rank}] rank={rank} of 3 gpus=0" in proc.stdout
        assert f"[setup:{rank}] setting-up" in proc.stdout
    run_dirs = list((experiment / "runs").iterdir())
    assert len(run_dirs) == 1
    assert sorted((run_dirs[0] / f"node-{r}" / "rank.txt").read_text().strip() for r in range(3)) == ["0", "1", "2"]
    logs = run_fleet(["logs", run_dirs[0].name], cwd=experiment)
    assert logs.returncode == 0, logs.stderr
    lines = logs.stdout.splitlines()
    assert lines[:3] == [f"[setup:{r}] setting-up" for r in range(3)]   # setup logs first, then ranks
    assert lines[3].startswith("[0] rank=0")
    assert _status(experiment) == []
    assert processes_under(fleet_home) == []


def test_exit_code_of_the_first_failing_rank_is_passed_through(experiment, fleet_home):
    proc = run_fleet(["up", "--gpus", "3", "--json", "--", "sh", "-c",
                      'test "$FLEET_NODE_RANK" = 1 && exit 7; test "$FLEET_NODE_RANK" = 2 && exit 9; exit 0'],
                     cwd=experiment)
    assert proc.returncode == 7, proc.stderr
    summary = _summary(proc)
    assert summary["status"] == "failed" and summary["failing_rank"] == "1" and summary["released"]
    assert _status(experiment) == []


def test_command_not_found_surfaces_127_and_releases(experiment, fleet_home):
    proc = run_fleet(["up", "--", "no-such-command-xyz"], cwd=experiment)
    assert proc.returncode == 127
    assert "not found" in proc.stdout + proc.stderr
    assert _status(experiment) == []
    assert processes_under(fleet_home) == []


def test_per_gpu_runs_one_process_per_slot_with_global_ranks(experiment, fleet_home):
    proc = run_fleet(["up", "--gpus", "8", "--template", "local-4gpu", "--json", "--", "sh", "-c",
                      "echo R=$FLEET_RANK/$FLEET_WORLD_SIZE L=$FLEET_LOCAL_RANK C=$CUDA_VISIBLE_DEVICES"],
                     cwd=experiment, env={"FLEET_TEST_PER_GPU": "1"})
    # per_gpu comes from the config file; rewrite and rerun with it on
    (experiment / "fleet.toml").write_text('project = "t"\ntemplate = "local-4gpu"\nper_gpu = true\n'
                                           'command = "echo R=$FLEET_RANK/$FLEET_WORLD_SIZE C=$CUDA_VISIBLE_DEVICES"\n')
    proc = run_fleet(["up", "--gpus", "8"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    lines = {line for line in proc.stdout.splitlines() if "R=" in line}
    for rank in range(8):
        assert f"[{rank}] R={rank}/8 C={rank % 4}" in lines


def test_bad_input_is_one_line_exit_2_and_nothing_leased(experiment, fleet_home):
    for args, needle in ((["up", "--gpus", "0"], "gpus"), (["up", "--gpus", "-3"], "gpus"),
                         (["up", "--gpus", "3", "--template", "local-4gpu"], "multiple of 4"),
                         (["up", "--template", "local-99gpu"], "local-99gpu"),
                         (["up", "--provider", "moon"], "provider")):
        proc = run_fleet(args, cwd=experiment)
        assert proc.returncode == 2, (args, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, (args, proc.stderr)
    (experiment / "fleet.toml").write_text('project = "t"\ncommand = "true"\ngpus = "many"\n')
    proc = run_fleet(["up"], cwd=experiment)
    assert proc.returncode == 2 and "fleet.toml:3" in proc.stderr
    assert _status(experiment) == []


def test_unusable_fleet_home_and_missing_sshd_are_clear(experiment, fleet_home, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run_fleet(["up"], cwd=experiment, env={"FLEET_HOME": str(blocker / "home")})
    assert proc.returncode == 3 and "FLEET_HOME" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_fleet(["up"], cwd=experiment, env={"FLEET_SSHD": str(tmp_path / "no-sshd")})
    assert proc.returncode == 3 and "apt-get install openssh-server" in proc.stderr
    assert _status(experiment) == []


def test_ctrl_c_mid_run_stops_the_experiment_and_releases_everything(experiment, fleet_home):
    proc = start_fleet_up(experiment, ["--gpus", "2", "--", "sh", "-c", "echo started; sleep 120"])
    try:
        wait_for_line(proc, "started")
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out
        assert time.monotonic() - t0 < 30
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _status(experiment) == []
    assert processes_under(fleet_home) == []


def test_sigkill_of_the_controller_leaves_nothing_after_ttl(experiment, fleet_home):
    ttl = 3
    proc = start_fleet_up(experiment, ["--gpus", "2", "--", "sh", "-c", "echo started; sleep 300"],
                     env={"FLEET_HEARTBEAT_TTL": str(ttl)})
    wait_for_line(proc, "started")
    assert processes_under(fleet_home)
    proc.kill()
    proc.wait()
    t0 = time.monotonic()
    assert wait_until(lambda: not processes_under(fleet_home), ttl + 10), processes_under(fleet_home)
    gone_after = time.monotonic() - t0
    assert gone_after <= ttl + 10
    leases = _status(experiment)
    assert len(leases) == 1 and leases[0]["health"] == "gone"
    down = run_fleet(["down", "--all"], cwd=experiment)
    assert down.returncode == 0
    assert _status(experiment) == []
    assert run_fleet(["down", "--all"], cwd=experiment).returncode == 0   # idempotent


def test_two_concurrent_ups_from_two_shells(experiment, fleet_home):
    procs = [start_fleet_up(experiment, ["--gpus", "2", "--json", "--", "sh", "-c", "sleep 1; echo done"])
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    lines = [json.loads(o[o.index("{"):]) for o in outs]
    assert lines[0]["lease_id"] != lines[1]["lease_id"]
    assert _status(experiment) == []


def test_keep_then_run_ssh_logs_extend_and_down(experiment, fleet_home):
    proc = run_fleet(["up", "--gpus", "2", "--keep", "5m", "--json", "--", "echo", "first"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    lease_id = _summary(proc)["lease_id"]
    [lease] = _status(experiment)
    assert lease["id"] == lease_id and lease["health"] == "up"
    again = run_fleet(["run", lease_id, "--json", "--", "sh", "-c", "echo again-$FLEET_NODE_RANK"], cwd=experiment)
    assert again.returncode == 0, again.stderr
    run_id = _summary(again)["run_id"]
    logs = run_fleet(["logs", run_id], cwd=experiment)
    assert "[0] again-0" in logs.stdout and "[1] again-1" in logs.stdout
    ssh = run_fleet(["ssh", lease_id, "1", "--", "sh", "-c", "echo via-ssh $FLEET_MACHINE_ID"], cwd=experiment)
    assert ssh.returncode == 0 and f"via-ssh {lease_id}-n1" in ssh.stdout, ssh.stderr
    ext = run_fleet(["extend", lease_id, "10m"], cwd=experiment)
    assert ext.returncode == 0 and "ends at" in ext.stdout
    down = run_fleet(["down", lease_id], cwd=experiment)
    assert down.returncode == 0
    assert _status(experiment) == []
    assert processes_under(fleet_home) == []


def test_one_word_is_a_shell_command_line_several_are_argv_for_up_run_and_ssh(experiment, fleet_home):
    """Issue 17: `fleet up -- 'echo A; echo B'` exited 127 (the one word was quoted as a program name)."""
    proc = run_fleet(["up", "--keep", "5m", "--json", "--", "echo A; echo B"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    assert "[0] A\n" in proc.stderr and "[0] B\n" in proc.stderr
    lease_id = _summary(proc)["lease_id"]
    try:
        words = run_fleet(["run", lease_id, "--json", "--", "echo", "x; echo y"], cwd=experiment)
        assert words.returncode == 0 and "[0] x; echo y\n" in words.stderr, words.stderr   # argv: quoted
        line = run_fleet(["run", lease_id, "--json", "--", "echo run-A; echo run-B"], cwd=experiment)
        assert line.returncode == 0 and "[0] run-B\n" in line.stderr, line.stderr
        ssh = run_fleet(["ssh", lease_id, "0", "--", "echo ssh-A; echo ssh-B"], cwd=experiment)
        assert ssh.returncode == 0 and ssh.stdout.split() == ["ssh-A", "ssh-B"], ssh.stderr
        ssh = run_fleet(["ssh", lease_id, "0", "--", "echo", "a; echo b"], cwd=experiment)
        assert ssh.returncode == 0 and ssh.stdout == "a; echo b\n", ssh.stderr
    finally:
        assert run_fleet(["down", lease_id], cwd=experiment).returncode == 0
    assert _status(experiment) == []


def test_status_lists_the_leases_of_the_user_named_in_fleet_toml(experiment, fleet_home):
    (experiment / "fleet.toml").write_text('project = "t"\nuser = "alice"\ncommand = "true"\n'
                                           'template = "local-1gpu"\n')
    proc = run_fleet(["up", "--keep", "5m", "--json"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    [lease] = _status(experiment)
    assert lease["user"] == "alice"
    # The table (made from the state's rows, not the views) reads the machine live as --json does.
    table = run_fleet(["status"], cwd=experiment)
    assert table.returncode == 0, table.stderr
    [row] = [line.split() for line in table.stdout.splitlines() if line.startswith(lease["id"])]
    assert row[1] == "local" and "alice" in row and "up" in row and "1/1" in row, table.stdout
    elsewhere = experiment.parent / "elsewhere"
    elsewhere.mkdir()
    assert _status(elsewhere) == []            # another user (FLEET_USER=tester) sees none of alice's
    assert [v["id"] for v in json.loads(run_fleet(["status", "--json", "--all-users"], cwd=elsewhere).stdout)[
        "leases"]] == [lease["id"]]
    assert run_fleet(["down", "--all"], cwd=experiment).returncode == 0


def test_debug_after_double_dash_belongs_to_the_experiment(experiment, fleet_home):
    proc = run_fleet(["up", "--json", "--", "echo", "args:", "--debug"], cwd=experiment)
    assert proc.returncode == 0, proc.stderr
    assert "[0] args: --debug" in proc.stderr


def test_secrets_never_appear_on_any_command_line(experiment, fleet_home):
    """Run environment travels on the SSH channel's stdin: on a shared host `ps` must not show it."""
    probe = ("import os, glob\n"
             "v = os.environ['CANARY'].encode()\n"
             "n = 0\n"
             "for f in glob.glob('/proc/[0-9]*/cmdline'):\n"
             "    try:\n"
             "        n += v in open(f, 'rb').read()\n"
             "    except OSError:\n"
             "        pass\n"
             "print('cmdlines-with-secret', n)\n")
    (experiment / "probe.py").write_text(probe)
    (experiment / "fleet.toml").write_text('project = "t"\ntemplate = "local-1gpu"\nsecrets = ["CANARY"]\n'
                                           'command = "python probe.py"\n')
    proc = run_fleet(["up", "--gpus", "2"], cwd=experiment, env={"CANARY": "s3cr3t-canary-value"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("cmdlines-with-secret 0") == 2, proc.stdout


def test_ctrl_c_with_keep_still_releases(experiment, fleet_home):
    """--keep keeps machines after a run that ended on its own; a cancelled run releases them."""
    proc = start_fleet_up(experiment, ["--keep", "10m", "--", "sh", "-c", "echo started; sleep 120"])
    try:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, out
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _status(experiment) == []
    assert processes_under(fleet_home) == []
