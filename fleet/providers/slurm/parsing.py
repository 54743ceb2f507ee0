"""What Slurm's commands print, as typed values: job states, queue entries, accounting records.

Parsers take text exactly as `squeue -o SQUEUE_FORMAT` (or JOB_FORMAT) and `sacct --parsable2`
print it (recorded from a real Slurm 22.05 in tests/unit/slurm_outputs/) and never run anything.
fleet never reads `squeue --json`: in 22.05 it ignores every filter and returns every user's jobs.
Slurm's own quirks handled here: time strings come as `[D-]HH:MM:SS`, `MM:SS` or
UNLIMITED; node lists are compressed (`n[1-3,7]`); sacct prints "CANCELLED by 0" as a state.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import Enum


class JobState(str, Enum):
    PENDING = "PENDING"
    CONFIGURING = "CONFIGURING"
    RUNNING = "RUNNING"
    SUSPENDED = "SUSPENDED"
    COMPLETING = "COMPLETING"
    COMPLETED = "COMPLETED"
    CANCELLED = "CANCELLED"
    FAILED = "FAILED"
    TIMEOUT = "TIMEOUT"
    NODE_FAIL = "NODE_FAIL"
    PREEMPTED = "PREEMPTED"
    BOOT_FAIL = "BOOT_FAIL"
    DEADLINE = "DEADLINE"
    OUT_OF_MEMORY = "OUT_OF_MEMORY"
    REQUEUED = "REQUEUED"
    RESIZING = "RESIZING"
    REVOKED = "REVOKED"
    SPECIAL_EXIT = "SPECIAL_EXIT"
    STOPPED = "STOPPED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str | None) -> "JobState":
        word = (text or "").strip().split(" ", 1)[0].rstrip("+").upper()   # "CANCELLED by 0"
        try:
            return cls(word)
        except ValueError:
            return cls.UNKNOWN

    @property
    def finished(self) -> bool:
        """The allocation is gone (or going): nothing more will run under this job id."""
        return self in _FINISHED

    @property
    def queued(self) -> bool:
        return self in (JobState.PENDING, JobState.CONFIGURING, JobState.REQUEUED)


_FINISHED = frozenset({JobState.COMPLETED, JobState.CANCELLED, JobState.FAILED, JobState.TIMEOUT,
                       JobState.NODE_FAIL, JobState.PREEMPTED, JobState.BOOT_FAIL, JobState.DEADLINE,
                       JobState.OUT_OF_MEMORY, JobState.REVOKED, JobState.SPECIAL_EXIT})


@dataclass(frozen=True)
class QueuedJob:
    """One job as the controller sees it now (squeue)."""
    job_id: str
    name: str
    state: JobState
    reason: str | None          # why it pends or ended: "Resources", "Priority", "QOSMaxGRESPerJob", …
    nodes: tuple[str, ...]      # expanded; empty while pending
    node_count: int
    gpus: int                   # allocated once running, requested while pending (whole job)
    time_limit_s: int | None    # None: no limit
    elapsed_s: int | None       # None while pending
    comment: str
    partition: str = ""
    account: str = ""
    qos: str = ""
    user: str = ""              # its owner ("?" unnamed); "": a listing of the login's own (--me) names none
    user_id: int | None = None  # its owner's uid (JOB_FORMAT): what ownership compares, names may differ
    # When it started, UTC (JOB_FORMAT; None while pending and in the --me listing). Not now minus
    # elapsed_s: that is run time, which leaves out any time Slurm held the job suspended.
    started: datetime | None = None


@dataclass(frozen=True)
class AccountedJob:
    """One allocation as accounting recorded it (sacct -X)."""
    job_id: str
    name: str
    state: JobState
    reason: str | None
    exit_code: int
    exit_signal: int
    elapsed_s: int
    gpus: int                   # allocated GRES gpu, whole job
    nodes: tuple[str, ...]
    time_limit_s: int | None
    start: datetime | None      # UTC (sacct must run with TZ=UTC)
    end: datetime | None
    comment: str
    partition: str = ""
    account: str = ""
    qos: str = ""

    @property
    def gpu_seconds(self) -> int:
        return self.elapsed_s * self.gpus


_UNLIMITED = {"UNLIMITED", "INFINITE", "NOT_SET", "PARTITION_LIMIT", "NONE", ""}


def parse_duration(text: str | None) -> int | None:
    """Slurm time string → seconds: `[D-]HH:MM:SS`, `MM:SS`, `D-HH[:MM]`, or None for no limit."""
    text = (text or "").strip()
    if text.upper() in _UNLIMITED or text.upper() == "INVALID":
        return None
    days = 0
    if "-" in text:
        day_part, text = text.split("-", 1)
        days = int(day_part)
        parts = [int(float(p)) for p in text.split(":")] + [0] * (3 - len(text.split(":")))
        hours, minutes, seconds = parts[:3]
    else:
        parts = [int(float(p)) for p in text.split(":")]
        if len(parts) == 3:
            hours, minutes, seconds = parts
        elif len(parts) == 2:
            hours, (minutes, seconds) = 0, parts
        else:
            hours, minutes, seconds = 0, parts[0], 0      # a bare number is minutes
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def expand_hostlist(text: str | None) -> tuple[str, ...]:
    """`n[1-3,07],gpu5` → ('n1', 'n2', 'n3', 'n07', 'gpu5'); zero padding kept."""
    text = (text or "").strip()
    if not text or text in ("(null)", "None", "None assigned"):
        return ()
    out: list[str] = []
    for piece in _split_top(text):
        out.extend(_expand_one(piece))
    return tuple(out)


def _split_top(text: str) -> list[str]:
    pieces, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            pieces.append(text[start:i])
            start = i + 1
    pieces.append(text[start:])
    return [p for p in pieces if p]


def _expand_one(piece: str) -> list[str]:
    m = re.match(r"^([^\[]*)\[([^\]]+)\](.*)$", piece)
    if not m:
        return [piece]
    prefix, ranges, rest = m.groups()
    names = []
    for part in ranges.split(","):
        if "-" in part:
            lo, hi = part.split("-", 1)
            names += [f"{prefix}{n:0{len(lo)}d}" for n in range(int(lo), int(hi) + 1)]
        else:
            names.append(prefix + part)
    return [name + tail for name in names for tail in _expand_one(rest)] if rest else names


def gpus_in_tres(text: str | None) -> int:
    """GPUs in a TRES string (`cpu=2,gres/gpu=4,node=2` or `gres/gpu:a100=4`); typed entries are
    only counted where no untyped total is given (Slurm reports both for typed GRES)."""
    total, typed = None, 0
    for item in (text or "").split(","):
        key, _, value = item.partition("=")
        if key == "gres/gpu" and value.isdigit():
            total = int(value)
        elif key.startswith("gres/gpu:") and value.isdigit():
            typed += int(value)
    return total if total is not None else typed


def gpus_per_node_in_gres(text: str | None) -> int:
    """`gres:gpu:2`, `gpu:a100:2`, `gres/gpu=2` or `gres:gpu:a100:2` (squeue's tres-per-node) → 2."""
    for item in (text or "").split(","):
        item = item.removeprefix("gres:").removeprefix("gres/")
        if not item.startswith("gpu"):
            continue
        count = re.split(r"[:=]", item)[-1]
        return int(count) if count.isdigit() else 1
    return 0


def _reason(text: str | None) -> str | None:
    text = (text or "").strip()
    return None if text in ("", "None", "(null)") else text


# squeue -o: free-text fields (name, comment) last, so a '|' in them cannot shift the others.
SQUEUE_FIELDS = ("%i", "%T", "%r", "%D", "%N", "%M", "%l", "%b", "%P", "%a", "%q", "%j", "%k")
SQUEUE_FORMAT = "|".join(SQUEUE_FIELDS)


def parse_squeue_format(text: str) -> list[QueuedJob]:
    """Lines of `squeue -h -o SQUEUE_FORMAT --me` → the login's own jobs (the listing names no owner)."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", len(SQUEUE_FIELDS) - 2)
        parts += [""] * (len(SQUEUE_FIELDS) - 1 - len(parts))
        name, _, comment = parts[-1].partition("|")
        jobs.append(_text_job(parts[:-1], name, comment))
    return jobs


# One job by id: SQUEUE_FIELDS with its owner's uid and name and its start (printed in UTC under
# TIMES_ENV), still before the free text.
JOB_FIELDS = SQUEUE_FIELDS[:-2] + ("%U", "%u", "%S") + SQUEUE_FIELDS[-2:]
JOB_FORMAT = "|".join(JOB_FIELDS)
# Times as ISO 8601 in UTC, whatever the login node's zone or the user's SLURM_TIME_FORMAT.
TIMES_ENV = {"TZ": "UTC", "SLURM_TIME_FORMAT": "standard"}


def parse_squeue_job(text: str) -> QueuedJob | None:
    """`squeue -h --jobs=ID -o JOB_FORMAT` → that one job (None when nothing was printed). Read as
    one record, never line by line: a newline in its name or comment (free text, printed last) stays
    in them rather than reading as another job's line, and every field before them, the owner's uid
    among them, comes from the first line, which no free text reaches."""
    text = text.removesuffix("\n")
    if not text.strip():
        return None
    parts = text.split("|", len(JOB_FIELDS) - 2)
    if len(parts) < len(JOB_FIELDS) - 1 or any("\n" in p for p in parts[:-1]) or not parts[-4].isdigit():
        raise ValueError(f"not one job's line: {text[:120]!r}")
    name, _, comment = parts[-1].partition("|")
    job = _text_job(parts[:-4], name, comment)
    # While pending, %S is when Slurm expects to start it: not a start.
    return replace(job, user_id=int(parts[-4]), user=parts[-3] or "?",
                   started=None if job.state.queued else _start(parts[-2]))


def _start(text: str) -> datetime | None:
    try:
        return _time(text)
    except ValueError:          # N/A, or a site's odd format: callers fall back to run time
        return None


def _text_job(fields: list[str], name: str, comment: str) -> QueuedJob:
    job_id, state, reason, count, nodes, elapsed, limit, gres, part, account, qos = fields
    state_ = JobState.parse(state)
    node_count = int(count) if count.strip().isdigit() else 0
    return QueuedJob(
        job_id=job_id.strip(), name=name, state=state_, reason=_reason(reason),
        nodes=expand_hostlist(nodes), node_count=node_count,
        gpus=gpus_per_node_in_gres(gres) * max(node_count, 1), time_limit_s=parse_duration(limit),
        elapsed_s=None if state_.queued else parse_duration(elapsed),
        comment="" if comment == "(null)" else comment, partition=part, account=account, qos=qos)


# sacct: free text (name, comment) last again.
SACCT_FIELDS = ("JobID", "State", "Reason", "ExitCode", "ElapsedRaw", "AllocTRES", "NodeList", "Timelimit",
                "Start", "End", "Partition", "Account", "QOS", "JobName", "Comment")


def _time(text: str) -> datetime | None:
    text = text.strip()
    if text in ("", "Unknown", "None"):
        return None
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def parse_sacct(text: str) -> list[AccountedJob]:
    """`sacct --parsable2 --noheader -X -o ",".join(SACCT_FIELDS)` (run with TZ=UTC) → jobs."""
    jobs = []
    for line in text.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", len(SACCT_FIELDS) - 2)
        parts += [""] * (len(SACCT_FIELDS) - 1 - len(parts))
        (job_id, state, reason, exit_code, elapsed, tres, nodes, limit, start, end, part, account, qos,
         rest) = parts
        name, _, comment = rest.partition("|")
        code, _, sig = exit_code.partition(":")
        jobs.append(AccountedJob(
            job_id=job_id, name=name, state=JobState.parse(state), reason=_reason(reason),
            exit_code=int(code or 0), exit_signal=int(sig or 0),
            elapsed_s=int(elapsed) if elapsed.strip().isdigit() else 0, gpus=gpus_in_tres(tres),
            nodes=expand_hostlist(nodes), time_limit_s=parse_duration(limit),
            start=_time(start), end=_time(end), comment=comment, partition=part, account=account, qos=qos))
    return jobs


@dataclass(frozen=True)
class JobStep:
    """One step of a running job (`squeue --steps`): fleet's node steps are `fleet-node-<node>`."""
    step_id: str                # "123.0"
    name: str
    nodes: tuple[str, ...]


STEPS_FORMAT = "%i|%N|%j"       # the name (free text) last


def parse_steps(text: str) -> list[JobStep]:
    """Lines of `squeue --steps -h -o STEPS_FORMAT` → steps."""
    steps = []
    for line in text.splitlines():
        step_id, _, rest = line.strip().partition("|")
        nodes, _, name = rest.partition("|")
        if step_id:
            steps.append(JobStep(step_id, name, expand_hostlist(nodes)))
    return steps


def parse_scontrol_job(text: str) -> dict[str, str]:
    """`scontrol show job --oneliner J` → its Key=Value fields. Values with spaces (Command,
    WorkDir, Comment) come back cut at the first space; fleet reads JobState, NodeList, BatchFlag
    and BatchHost, which have none."""
    return dict(re.findall(r"(?:^|\s)([A-Za-z][\w/:]*)=(\S*)", text))
