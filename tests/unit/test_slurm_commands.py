"""The Slurm command layer on outputs recorded from a real Slurm 22.05 cluster (tests/fixtures/slurm.py).

Recorded in tests/unit/slurm_outputs/: `squeue -o SQUEUE_FORMAT` with job 12
RUNNING on n[1-2] (2 nodes × gpu:2) and job 13 PENDING (Resources); `sacct` of finished jobs
(4: TIMEOUT after 63 s on 1 GPU, 5: FAILED exit 3, 6: cancelled while requeued after NODE_FAIL);
and what sbatch/squeue/sacct printed on stderr for each refusal.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from fleet.errors import ExitCode, FleetError
from fleet.providers.slurm import errors as E
from fleet.providers.slurm.commands import (AllocationRequest, CommandResult, LocalRunner, SlurmCommands, SSHRunner,
                                            granted_job_id, salloc_argv, sbatch_argv, scancel_argv, srun_argv,
                                            time_limit_argv)
from fleet.providers.slurm.ownership import sacct_argv
from fleet.providers.slurm.tool_env import LISTING_FILTERS
from fleet.providers.slurm.parsing import (JobState, expand_hostlist, gpus_in_tres, gpus_per_node_in_gres,
                                           parse_duration, parse_sacct, parse_squeue_format,
                                           parse_squeue_job)

OUT = Path(__file__).parent / "slurm_outputs"


def recorded(name: str) -> str:
    return (OUT / name).read_text()


def by_id(jobs):
    return {j.job_id: j for j in jobs}


# --- squeue -------------------------------------------------------------------------------------

def test_squeue_format_lines():
    jobs = by_id(parse_squeue_format(recorded("squeue-format.txt")))
    assert jobs["12"].state is JobState.RUNNING and jobs["12"].nodes == ("n1", "n2") and jobs["12"].gpus == 4
    assert jobs["12"].time_limit_s == 300 and jobs["12"].elapsed_s == 3
    assert jobs["13"].state is JobState.PENDING and jobs["13"].reason == "Resources" and jobs["13"].elapsed_s is None
    assert jobs["4"].state is JobState.TIMEOUT and jobs["4"].reason == "TimeLimit" and jobs["4"].elapsed_s == 63
    assert jobs["1"].comment == "" and jobs["1"].time_limit_s is None          # (null), UNLIMITED
    assert jobs["5"].gpus == 0 and jobs["5"].reason == "NonZeroExitCode"


def test_squeue_format_keeps_a_pipe_in_the_comment():
    line = "7|RUNNING|None|1|n1|1:00|2:00|gres:gpu:1|gpu|acct|normal|fleet-x|fleet:lease=a|b"
    (job,) = parse_squeue_format(line)
    assert job.name == "fleet-x" and job.comment == "fleet:lease=a|b" and job.qos == "normal"


@pytest.mark.parametrize("state, start, started", [
    ("RUNNING", "2026-01-05T10:00:00", datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)),
    ("SUSPENDED", "2026-01-05T10:00:00", datetime(2026, 1, 5, 10, 0, tzinfo=timezone.utc)),
    ("PENDING", "2026-01-05T10:00:00", None),           # when Slurm expects to start it
    ("RUNNING", "N/A", None),
])
def test_one_jobs_line_reads_its_start(state, start, started):
    (job,) = [parse_squeue_job(f"7|{state}|None|1|n1|1:00|2:00|gres:gpu:1|gpu|acct|normal|1000|alice|{start}|"
                               "fleet-x|fleet:lease=a|b\n")]
    assert job.started == started and job.user_id == 1000 and job.comment == "fleet:lease=a|b"


# --- sacct --------------------------------------------------------------------------------------

def test_sacct_elapsed_gpus_and_states():
    jobs = by_id(parse_sacct(recorded("sacct.txt")))
    timeout = jobs["4"]
    assert timeout.state is JobState.TIMEOUT and timeout.elapsed_s == 63 and timeout.gpus == 1
    assert timeout.gpu_seconds == 63 and timeout.time_limit_s == 60
    assert timeout.start == datetime(2026, 12, 2, 6, 1, 19, tzinfo=timezone.utc)
    assert timeout.end == datetime(2026, 12, 2, 6, 2, 22, tzinfo=timezone.utc)
    assert jobs["12"].state is JobState.CANCELLED and jobs["12"].gpus == 4 and jobs["12"].nodes == ("n1", "n2")
    assert jobs["12"].gpu_seconds == 12
    assert jobs["5"].state is JobState.FAILED and jobs["5"].exit_code == 3 and jobs["5"].gpus == 0
    requeued = jobs["6"]                                 # never started again after NODE_FAIL
    assert requeued.nodes == () and requeued.start is None and requeued.reason == "BeginTime"
    assert jobs["13"].comment == "fleet:lease=L-pend" and jobs["13"].name == "fleet-pend"


def test_job_states():
    assert JobState.parse("CANCELLED by 0") is JobState.CANCELLED
    assert JobState.parse("SOMETHING_NEW") is JobState.UNKNOWN
    assert JobState.NODE_FAIL.finished and JobState.PREEMPTED.finished and not JobState.RUNNING.finished
    assert JobState.PENDING.queued and not JobState.RUNNING.queued


@pytest.mark.parametrize("text,seconds", [
    ("00:01:03", 63), ("1:03", 63), ("5:00", 300), ("1-02:03:04", 93784), ("2-00", 172800),
    ("10", 600), ("UNLIMITED", None), ("Partition_Limit", None), ("INVALID", None), ("", None)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text,names", [
    ("n[1-2]", ("n1", "n2")), ("n1", ("n1",)), ("gpu[01-03,07],cpu5", ("gpu01", "gpu02", "gpu03", "gpu07", "cpu5")),
    ("r[1-2]n[1-2]", ("r1n1", "r1n2", "r2n1", "r2n2")), ("n[8-9]-ib", ("n8-ib", "n9-ib")), ("", ()),
    ("None assigned", ()), ("(null)", ())])
def test_expand_hostlist(text, names):
    assert expand_hostlist(text) == names


def test_gpu_counts_from_tres_and_gres():
    assert gpus_in_tres("billing=2,cpu=2,gres/gpu=4,node=2") == 4
    assert gpus_in_tres("cpu=8,gres/gpu=8,gres/gpu:a100=8") == 8          # typed entries repeat the total
    assert gpus_in_tres("cpu=8,gres/gpu:a100=2,gres/gpu:v100=1") == 3
    assert gpus_in_tres("cpu=1,node=1") == 0
    assert [gpus_per_node_in_gres(g) for g in ("gres:gpu:2", "gres:gpu:a100:4", "gres/gpu=3", "N/A")] == [2, 4, 3, 0]


# --- refusals → typed errors ----------------------------------------------------------------------

@pytest.mark.parametrize("file,cls,exit_code,reason", [
    ("err-partition.txt", E.InvalidPartition, ExitCode.USAGE, "Invalid partition name specified"),
    ("err-account.txt", E.InvalidAccount, ExitCode.USAGE, "Invalid account or account/partition combination"),
    ("err-qos.txt", E.InvalidQos, ExitCode.USAGE, "Invalid qos specification"),
    ("err-constraint.txt", E.InvalidConstraint, ExitCode.USAGE, "Invalid feature specification"),
    ("err-qos-limit.txt", E.QosLimitExceeded, ExitCode.INFRASTRUCTURE, "QOSMaxGRESPerJob"),
    ("err-gres.txt", E.GresUnsatisfiable, ExitCode.INFRASTRUCTURE, "Requested node configuration is not available"),
    ("err-gres-type.txt", E.GresUnsatisfiable, ExitCode.INFRASTRUCTURE, "Invalid generic resource"),
    ("err-controller.txt", E.ControllerUnreachable, ExitCode.INFRASTRUCTURE, "Unable to contact slurm controller"),
    ("err-squeue-controller.txt", E.ControllerUnreachable, ExitCode.INFRASTRUCTURE, "Unable to contact slurm"),
    ("err-sacct-disabled.txt", E.AccountingUnavailable, ExitCode.INFRASTRUCTURE, "accounting storage is disabled"),
])
def test_recorded_refusals_become_typed_one_line_errors(file, cls, exit_code, reason):
    err = E.classify_failure("sbatch", 1, recorded(file))
    assert type(err) is cls and isinstance(err, FleetError)
    assert err.exit_code == exit_code
    assert reason in str(err) and reason in err.slurm_reason
    assert "\n" not in str(err) and "sbatch: error" not in str(err)


def test_unknown_failure_is_a_slurm_error_naming_the_tool():
    err = E.classify_failure("scontrol", 1, "Job has already finished for job 2\n")
    assert type(err) is E.SlurmError and str(err) == "scontrol failed: Job has already finished for job 2"
    assert str(E.classify_failure("squeue", 2, "")) == "squeue failed: exit status 2"


# --- argv ---------------------------------------------------------------------------------------

def test_sbatch_argv():
    req = AllocationRequest(name="fleet-L1", nodes=2, gpus_per_node=4, time_limit_s=3599, comment="fleet:lease=L1",
                            partition="gpu", account="ml", qos="high", constraint="a100", output="/w/%j.out")
    argv = sbatch_argv(req)
    assert argv[:3] == ["sbatch", "--parsable", "--no-requeue"]
    for flag in ("--job-name=fleet-L1", "--nodes=2", "--ntasks-per-node=1", "--gres=gpu:4", "--time=59",
                 "--comment=fleet:lease=L1", "--partition=gpu", "--account=ml", "--qos=high",
                 "--constraint=a100", "--output=/w/%j.out"):
        assert flag in argv
    lean = sbatch_argv(AllocationRequest(name="x", nodes=1, gpus_per_node=2, time_limit_s=30,
                                         gpus_flag="gpus-per-node"))
    assert "--gpus-per-node=2" in lean and "--time=1" in lean              # never below Slurm's 1 minute
    assert not [a for a in lean if a.startswith(("--partition", "--account", "--qos", "--comment"))]
    with pytest.raises(ValueError):
        sbatch_argv(AllocationRequest(name="x", nodes=0, gpus_per_node=1, time_limit_s=60))


def test_salloc_argv_asks_for_the_same_allocation_at_once_without_an_output_file():
    req = AllocationRequest(name="fleet-L1", nodes=2, gpus_per_node=1, time_limit_s=600, comment="fleet:lease=L1",
                            output="/dev/null", workdir="/w")
    argv = salloc_argv(req, immediate_s=1)
    assert argv[:3] == ["salloc", "--no-shell", "--immediate=1"]
    assert {"--nodes=2", "--gres=gpu:1", "--time=10", "--comment=fleet:lease=L1", "--chdir=/w"} <= set(argv)
    assert not [a for a in argv if a.startswith("--output")]            # salloc has no --output
    assert "--immediate=1" not in salloc_argv(req)


def test_other_argv():
    assert srun_argv("12", ["python", "train.py"], nodes=2, label=True) == [
        "srun", "--jobid=12", "--overlap", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--nodes=2", "--label",
        "python", "train.py"]
    assert sacct_argv(["4", "5"])[:6] == ["sacct", "--parsable2", "--noheader", "--allocations", "--duplicates",
                                          "--jobs=4,5"]
    assert scancel_argv(["4"]) == ["scancel", "--quiet", "4"]
    assert scancel_argv(["4"], "TERM") == ["scancel", "--quiet", "--full", "--signal=TERM", "4"]
    assert time_limit_argv("4", 7200) == ["scontrol", "update", "JobId=4", "TimeLimit=120"]
    assert granted_job_id("salloc: Granted job allocation 11\n") == "11" and granted_job_id("") is None


# --- the façade on a scripted runner --------------------------------------------------------------

class Scripted:
    """A runner answering from recorded outputs by tool name; records what it was asked."""

    def __init__(self, answers: dict[str, list[tuple[int, str, str]]]):
        self.answers = answers
        self.seen: list[tuple[list[str], str | None, dict | None]] = []

    def __call__(self, argv, *, stdin=None, env=None, timeout=60):
        self.seen.append((list(argv), stdin, env))
        rc, out, err = self.answers[argv[0]].pop(0)
        return CommandResult(tuple(argv), rc, out, err)


def test_submit_returns_the_job_id_and_raises_typed_refusals():
    runner = Scripted({"sbatch": [(0, "12;fleettest\n", ""), (1, "", recorded("err-partition.txt"))]})
    slurm = SlurmCommands(runner)
    req = AllocationRequest(name="fleet-L1", nodes=1, gpus_per_node=1, time_limit_s=600)
    assert slurm.submit(req, "#!/bin/sh\nsleep 1\n") == "12"
    assert runner.seen[0][1] == "#!/bin/sh\nsleep 1\n"                    # the script goes on stdin
    with pytest.raises(E.InvalidPartition, match="Invalid partition name specified"):
        slurm.submit(req, "#!/bin/sh\n")
    assert slurm.calls["sbatch"] == 2


def test_queue_by_id_asks_for_each_job_alone_and_a_scan_for_this_logins_jobs_only():
    mine = "12|RUNNING|None|2|n[1-2]|0:03|5:00|gres:gpu:2|gpu|fleet|normal|0|root|2026-01-05T10:00:00|fleet-run|fleet:lease=L-run\n"
    runner = Scripted({"squeue": [(0, mine, ""), (1, "", "slurm_load_jobs error: Invalid job id specified\n"),
                                  (0, recorded("squeue-format.txt"), "")],
                       "id": [(0, "0\n", "")]})
    slurm = SlurmCommands(runner)
    assert [j.job_id for j in slurm.queue(["424242", "12"])] == ["12"]     # the forgotten one is absent
    asked = [argv for argv, _, _ in runner.seen if argv[0] == "squeue"]
    assert [[a for a in argv if a.startswith("--jobs")] for argv in asked] == [["--jobs=12"], ["--jobs=424242"]]
    assert "13" in {j.job_id for j in slurm.queue()}
    assert "--me" in runner.seen[-1][0] and not any("--json" in argv for argv, _, _ in runner.seen)


def test_a_scan_for_fleets_tag_reads_only_this_logins_jobs():
    """Another user's comment "x<newline>77|RUNNING|...|fleet:lease=l-dead" would read as a job 77 of
    fleet's own (which a reap would scancel: this login's unrelated job 77). --me keeps them out."""
    forged = ("90|RUNNING|None|1|n1|1:00|2:00|gres:gpu:1|gpu|acct|normal|theirs|x\n"
              "77|RUNNING|None|1|n1|1:00|2:00|gres:gpu:1|gpu|acct|normal|fleet-l|fleet:lease=l-dead\n")
    runner = Scripted({"squeue": [(0, "", "")]})
    slurm = SlurmCommands(runner)
    assert slurm.tagged("fleet:lease=") == []
    assert "--me" in runner.seen[0][0] and not any(a.startswith("--jobs") for a in runner.seen[0][0])
    assert [j.job_id for j in parse_squeue_format(forged)] == ["90", "77"]   # what --me keeps from being read


def test_cancel_is_idempotent_but_other_failures_raise():
    runner = Scripted({"scancel": [(1, "", "scancel: error: Kill job error on job id 9: Invalid job id specified\n"),
                                   (1, "", recorded("err-controller.txt"))]})
    slurm = SlurmCommands(runner)
    slurm.cancel(["9"])
    with pytest.raises(E.ControllerUnreachable):
        slurm.cancel(["9"])
    slurm.cancel([])                                 # nothing to do: no call
    assert slurm.calls["scancel"] == 2


def test_accounting_runs_sacct_in_utc():
    runner = Scripted({"sacct": [(0, recorded("sacct.txt"), "")]})
    jobs = SlurmCommands(runner).accounting(["4"])
    assert runner.seen[0][2] == {"TZ": "UTC", "SLURM_TIME_FORMAT": "standard"} and any(j.job_id == "4" for j in jobs)


def test_ssh_runner_quotes_the_remote_command():
    runner = SSHRunner("login.example", port=2222, identity="/k", env={"SLURM_CONF": "/etc/slurm x/slurm.conf"})
    remote = runner.remote_command(["sbatch", "--comment=fleet:lease=a b"], {"TZ": "UTC"})
    unset = " ".join(f"-u {name}" for name in LISTING_FILTERS)
    assert remote == f"env {unset} 'SLURM_CONF=/etc/slurm x/slurm.conf' TZ=UTC sbatch '--comment=fleet:lease=a b'"
    assert runner.base[:2] == ["ssh", "-o"] and "BatchMode=yes" in runner.base and "StrictHostKeyChecking=yes" in runner.base
    with pytest.raises(ValueError):
        runner.remote_command(["squeue"], {"BAD;NAME": "x"})


def test_local_runner_without_slurm_is_an_environment_problem(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(FleetError) as info:
        LocalRunner()(["sbatch", "--version"])
    assert info.value.exit_code == ExitCode.ENVIRONMENT and "sbatch not found" in str(info.value)


def test_accounting_keeps_a_shrunk_jobs_records_and_drops_an_older_job_under_a_reused_id():
    from datetime import datetime, timezone

    from fleet.providers.slurm.ownership import same_job
    from fleet.providers.slurm.parsing import AccountedJob, JobState

    def rec(name, state, start_h, gpus):
        return AccountedJob(job_id="7", name=name, state=state, reason=None, exit_code=0, exit_signal=0,
                            elapsed_s=60, gpus=gpus, nodes=("n1",), time_limit_s=600,
                            start=datetime(2026, 1, 1, start_h, tzinfo=timezone.utc), end=None, comment="")
    old = rec("someone-elses-job", JobState.COMPLETED, 1, 8)      # before the cluster reset its ids
    before = rec("fleet-l-1", JobState.RESIZING, 5, 4)
    after = rec("fleet-l-1", JobState.CANCELLED, 6, 2)
    assert same_job([old, before, after]) == [before, after]
    assert same_job([after, old, before]) == [after, before]


def test_a_slurm_too_old_for_me_still_answers_a_scan_with_the_login_users_jobs_only():
    runner = Scripted({"squeue": [(1, "", "squeue: unrecognized option '--me'\n"),
                                  (0, recorded("squeue-format.txt"), "")],
                       "id": [(0, "alice\n", "")]})
    jobs = SlurmCommands(runner).queue()
    asked = [argv for argv, _stdin, _env in runner.seen if argv[0] == "squeue"]
    assert jobs and "--me" in asked[0] and "--me" not in asked[1] and "--user=alice" in asked[1]
