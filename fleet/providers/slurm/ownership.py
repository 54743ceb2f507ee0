"""Which Slurm jobs are fleet's own: the queue as the login user sees it, and the check that comes
before fleet signals, changes or bills a job.

Nothing about a job proves it fleet's but its owner. Its name and comment are any user's to choose
(`fleet-<lease>` shows in squeue while the job pends); a listing of jobs by id is every user's
jobs under those ids; and a recorded job id can name another job later (a controller
that lost its state counts from 1 again; ids wrap). So a job is a lease's only when it is the login
user's (whom Slurm's tools run as: this computer's user, or the SSH login's) and carries the lease's
name or its comment tag. A recorded job that fails the check is named in one line and left alone.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING, Sequence

from .errors import SlurmError, classify_failure, read_output
from .parsing import JOB_FORMAT, SACCT_FIELDS, TIMES_ENV, SQUEUE_FORMAT, AccountedJob, QueuedJob, parse_squeue_format, parse_squeue_job

if TYPE_CHECKING:
    from .commands import SlurmCommands

TAG = "fleet:lease="


def tag(lease_id: str) -> str:
    return f"{TAG}{lease_id}"


def job_name(lease_id: str) -> str:
    return f"fleet-{lease_id}"


def is_leases(job: QueuedJob | AccountedJob, lease_id: str) -> bool:
    """The job carries the lease's name or tag (the caller has its owner checked already)."""
    return job.name == job_name(lease_id) or job.comment == tag(lease_id)


def report(message: str) -> None:
    from ...warn_sink import warn
    warn(message)


def squeue_format_argv() -> list[str]:
    """The login's own jobs (a scan for fleet's tag), line by line: only its own (--me), as a
    comment is free text, and another user's with a newline in it would read here as a line, a job
    of its making. Asked of slurmctld by user (22.05's --json would list every user's jobs)."""
    return ["squeue", "--noheader", "--states=all", f"--format={SQUEUE_FORMAT}", "--me"]


def job_argv(job_id: str) -> list[str]:
    """One job by id, whoever's. squeue given a single id asks slurmctld for that job alone, where
    `squeue --json` (22.05) has it serialise every user's jobs on each call whatever the filters:
    what a lease's polls, describe and release must not cost a controller the whole team shares."""
    return ["squeue", "--noheader", "--states=all", f"--jobs={job_id}", f"--format={JOB_FORMAT}"]


def sacct_argv(job_ids: Sequence[str], user: str | None = None) -> list[str]:
    """Allocations only (-X); with -j sacct searches all time, not just today. --duplicates: a job
    that shrank has a record per size, and without it sacct may keep only the newest of them (which
    billed the GPUs given back as never held); same_job() drops reused ids' records again. `user`:
    only that user's records (sacct -j alone answers with every user's job under the id)."""
    return ["sacct", "--parsable2", "--noheader", "--allocations", "--duplicates", f"--jobs={','.join(job_ids)}",
            *([f"--user={user}"] if user else []), f"--format={','.join(SACCT_FIELDS)}"]


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def same_job(records: list[AccountedJob]) -> list[AccountedJob]:
    """Per job id, only the records of the newest job with that id (a cluster that reset its ids can
    hold older jobs under it): a job's resize records all carry its name, fleet's names are unique."""
    newest: dict[str, AccountedJob] = {}
    for r in records:
        seen = newest.get(r.job_id)
        if seen is None or (r.start or _EPOCH) >= (seen.start or _EPOCH):
            newest[r.job_id] = r
    return [r for r in records if r.name == newest[r.job_id].name]


def login_uid(slurm: "SlurmCommands") -> int:
    """The uid Slurm's tools run as, asked where they run; once per SlurmCommands. Ownership compares
    uids: a name can read differently (sssd's `alice@corp` against slurmctld's `alice`, or none)."""
    if slurm.uid is None:
        out = slurm._run(["id", "-u"]).stdout.strip()
        if not out.isdigit():
            raise SlurmError(f"could not tell which user Slurm's tools run as (`id -u` printed {out!r})")
        slurm.uid = int(out)
    return slurm.uid


def login_user(slurm: "SlurmCommands") -> str:
    """The user Slurm's tools run as, by name where it has one (`id -un` where they run: an SSH
    login may map to another name than `login`), else its uid (sacct --user takes either)."""
    if slurm.user is None:
        name = slurm._run(["id", "-un"], check=False).stdout.strip()
        slurm.user = name if name and not any(c.isspace() for c in name) else str(login_uid(slurm))
    return slurm.user


def list_jobs(slurm: "SlurmCommands", wanted: set[str] | None) -> list[QueuedJob]:
    """The login user's jobs among `wanted` (one_job per id: a lease has one or a few), or, when
    None, all of them (`squeue --me`, asked of slurmctld by user)."""
    if wanted is not None:
        return [j for j in jobs_by_id(slurm, wanted) if owned(slurm, j)]
    return _my_jobs(slurm)


def jobs_by_id(slurm: "SlurmCommands", job_ids: Sequence[str] | set[str]) -> list[QueuedJob]:
    """The jobs under these ids, whoever's (owned() tells), one squeue call each; an id the
    controller forgot is absent."""
    return [j for j in (slurm.job(i) for i in sorted(job_ids)) if j is not None]


def one_job(slurm: "SlurmCommands", job_id: str) -> QueuedJob | None:
    """The job under `job_id`, whoever's (`user_id` names its owner: owned() before trusting it);
    None once the controller has forgotten it."""
    result = slurm._run(job_argv(job_id), env=TIMES_ENV, check=False)
    if result.returncode != 0:
        if "Invalid job id" in result.stderr:
            return None
        raise classify_failure("squeue", result.returncode, result.stderr or result.stdout)
    return read_output("squeue", parse_squeue_job, result.stdout)


def owned(slurm: "SlurmCommands", job: QueuedJob) -> bool:
    """The job is the login user's: its listing says so, or (no owner named) it came from a
    listing of the login's own jobs only (the text output, read with --me). By uid where the listing
    gives one (names can read differently on each side)."""
    if job.user_id is not None:
        return job.user_id == login_uid(slurm)
    return not job.user or job.user == login_user(slurm)


def _my_jobs(slurm: "SlurmCommands") -> list[QueuedJob]:
    argv = squeue_format_argv()
    result = slurm._run(argv, check=False)
    if result.returncode != 0 and "--me" in (result.stderr or ""):
        # A Slurm too old for --me: the login's jobs by name. Never every user's: the text output
        # names no owner, so another user's job wearing the lease's name and tag would read as ours.
        result = slurm._run([f"--user={login_user(slurm)}" if a == "--me" else a for a in argv], check=False)
    if result.returncode != 0:
        raise classify_failure("squeue", result.returncode, result.stderr or result.stdout)
    return read_output("squeue", parse_squeue_format, result.stdout)


def lease_jobs(slurm: "SlurmCommands", lease_id: str, recorded: Sequence[str]) -> list[QueuedJob]:
    """The lease's jobs among the login user's: its recorded ids that still carry its name or tag,
    or, where none was recorded (a controller killed between sbatch and the record), its tag."""
    ids = set(recorded)
    jobs = slurm.queue(sorted(ids) or None)
    if not ids:
        return [j for j in jobs if j.comment == tag(lease_id)]
    return [j for j in jobs if j.job_id in ids and is_leases(j, lease_id)]


def release_targets(slurm: "SlurmCommands", lease_id: str, recorded: Sequence[str]) -> list[str]:
    """The job ids `release` may scancel: the lease's jobs (lease_jobs; a recorded one even when it
    ended, which scancel answers as nothing to do). A recorded id that names another job is reported
    and left alone: the lease's job is gone. One that is another user's job under the lease's own
    name is refused: only that user (or an operator) may end it, and fleet never tries."""
    ids = set(recorded)
    if not ids:
        return [j.job_id for j in slurm.queue() if j.comment == tag(lease_id) and not j.state.finished]
    targets: list[str] = []
    theirs: list[QueuedJob] = []
    for job in jobs_by_id(slurm, ids):
        if not owned(slurm, job):
            theirs.append(job)
        elif is_leases(job, lease_id):
            targets.append(job.job_id)
        else:
            report(f"Slurm job {job.job_id} is no longer lease {lease_id}'s (it is now job {job.name!r}): "
                   "left alone")
    for job in theirs:
        if is_leases(job, lease_id):
            raise SlurmError(f"Slurm job {job.job_id} of lease {lease_id} is user {job.user or '?'}'s, not "
                             f"{login_user(slurm)}'s (whom fleet runs Slurm's tools as): fleet leaves it alone",
                             slurm_reason="another user's job",
                             hint="release it as that user, or ask a Slurm operator to scancel it")
        report(f"Slurm job {job.job_id} is now user {job.user or '?'}'s job {job.name!r}, not lease "
               f"{lease_id}'s: left alone")
    return targets


def cancel_leases_jobs(slurm: "SlurmCommands", lease_id: str, recorded: Sequence[str]) -> None:
    """scancel the lease's jobs (release_targets). Where squeue fails (a busy controller, output
    fleet cannot read), slurmctld itself filters the cancel instead: the login user's jobs named for the
    lease, its recorded ids among them, and nothing else; a release must not stop at a listing."""
    try:
        targets = release_targets(slurm, lease_id, recorded)
    except SlurmError as exc:
        if exc.slurm_reason == "another user's job":
            raise
        slurm.cancel(list(recorded), user=login_user(slurm), name=job_name(lease_id))
    else:
        slurm.cancel(targets)


def owns(slurm: "SlurmCommands", lease_id: str, job_id: str) -> bool:
    """Whether the lease may change the running job `job_id` (shrink it, cancel it): one squeue
    call. One that is not the lease's (its id now names another job, or another user's) is reported."""
    if lease_jobs(slurm, lease_id, [job_id]):
        return True
    report(f"Slurm job {job_id} is not lease {lease_id}'s (its id names another job, or another user's): "
           "left alone")
    return False
