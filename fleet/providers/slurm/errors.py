"""Slurm's refusals as typed, one-line FleetErrors that name the Slurm reason.

`classify_failure` reads what a Slurm command printed on stderr (the messages are Slurm's own,
recorded from a real 22.05 controller in tests/unit/slurm_outputs/) and picks the error a user can
act on: a bad partition/account/QoS/constraint is their config (exit 2); a GRES request no node can
satisfy, a QoS limit or an unreachable controller or login node is infrastructure (exit 10).
"""
from __future__ import annotations

import re

from ...errors import CapacityError, EnvironmentProblem, InfrastructureError, MachineUnreachable, UsageError


class SlurmError(InfrastructureError):
    """A Slurm command failed; `slurm_reason` is Slurm's own words for why."""

    def __init__(self, message: str, *, slurm_reason: str = "", hint: str | None = None):
        self.slurm_reason = slurm_reason
        super().__init__(message, hint=hint)


def read_output(tool: str, parse, text: str):
    """`parse(text)`, or one SlurmError when the output is not what fleet can read: squeue lists every
    user's jobs, so another user's job name or comment is in what is parsed, and a malformed listing
    must fail as Slurm failing (a release then still tries its filtered scancel), never as a crash."""
    try:
        return parse(text)
    except (ValueError, TypeError, AttributeError, KeyError, IndexError, RecursionError) as exc:
        raise SlurmError(f"{tool} printed output fleet cannot read ({type(exc).__name__}: {str(exc)[:200]})",
                         slurm_reason="unreadable output") from None


class SlurmUsageError(UsageError):
    """The request names something the cluster does not have (a config problem)."""

    def __init__(self, message: str, *, slurm_reason: str = "", hint: str | None = None):
        self.slurm_reason = slurm_reason
        super().__init__(message, hint=hint)


class InvalidPartition(SlurmUsageError):
    pass


class InvalidAccount(SlurmUsageError):
    pass


class InvalidQos(SlurmUsageError):
    pass


class InvalidConstraint(SlurmUsageError):
    pass


class InvalidTimeLimit(SlurmUsageError):
    pass


class QosLimitExceeded(SlurmError):
    """sbatch refused the job under the account's/QoS's limits."""


class GresUnsatisfiable(CapacityError):
    """No node in the partition has the GPUs (or nodes) asked for."""

    def __init__(self, message: str, *, slurm_reason: str = "", hint: str | None = None):
        self.slurm_reason = slurm_reason
        super().__init__(message, hint=hint)


class ControllerUnreachable(SlurmError):
    """slurmctld did not answer the command."""


class AccountingUnavailable(SlurmError):
    """The cluster keeps no job accounting (no slurmdbd): sacct cannot report elapsed times."""


class ToolMissing(SlurmError, EnvironmentProblem):
    """A Slurm tool that is not installed or not executable where fleet runs it: a controller that
    does not answer may come back, this will not. Still a SlurmError, so a release whose squeue is
    missing falls back to its filtered scancel as for any squeue failure."""

    exit_code = EnvironmentProblem.exit_code


# What a shell (or `env`, which prefixes a command over ssh) exits with for a command it could not
# run; no Slurm tool exits with either.
_NOT_RUN = {126: "is not executable", 127: "is not installed"}


class LoginNodeUnreachable(MachineUnreachable):
    """SSH to the login node failed before any Slurm command ran."""


# (pattern in Slurm's stderr, error class, message, hint); first match wins.
_RULES: tuple[tuple[str, type, str, str | None], ...] = (
    (r"Invalid partition name specified|invalid partition specified", InvalidPartition,
     "Slurm refused the partition", "check [slurm] partition against `sinfo -s`"),
    (r"Invalid account or account/partition combination", InvalidAccount,
     "Slurm refused the account", "check [slurm] account against `sacctmgr show assoc user=$USER`"),
    (r"Invalid qos specification", InvalidQos,
     "Slurm refused the QoS", "check [slurm] qos against `sacctmgr show assoc user=$USER format=qos`"),
    (r"Invalid feature specification", InvalidConstraint,
     "Slurm refused the constraint", "check [slurm] constraint against `sinfo -o '%P %f'`"),
    (r"Requested time limit is invalid|time limit exceeds", InvalidTimeLimit,
     "Slurm refused the time limit", "lower max_duration below the partition's MaxTime (`sinfo -s`)"),
    (r"Job violates accounting/QOS policy|QOSMax\w+|AssocMax\w+|QOSGrp\w+|AssocGrp\w+", QosLimitExceeded,
     "Slurm refused the job under a QoS/account limit", "ask for fewer GPUs or nodes, or another qos"),
    (r"Requested node configuration is not available|Invalid generic resource \(gres\) specification"
     r"|Node count specification invalid", GresUnsatisfiable,
     "no node in the partition can satisfy the request", "check GPUs per node with `sinfo -o '%P %G %D'`"),
    (r"Unable to contact slurm controller|Socket timed out on send/recv|Zero Bytes were transmitted",
     ControllerUnreachable, "the Slurm controller did not answer", "check `scontrol ping` on the login node"),
    (r"accounting storage is disabled", AccountingUnavailable,
     "the cluster keeps no job accounting", "GPU-hours need slurmdbd (AccountingStorageType=accounting_storage/slurmdbd)"),
)


def slurm_reason(stderr: str) -> str:
    """Slurm's own words: the last `error:` line, without the tool prefix."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    last = (errors or lines or [""])[-1]
    last = re.sub(r"^\S+: error: ", "", last)
    return last.removeprefix("Batch job submission failed: ").strip()


def classify_failure(command: str, returncode: int, stderr: str) -> Exception:
    """The FleetError for a failed Slurm command (`command`: sbatch, squeue, …)."""
    reason = slurm_reason(stderr)
    if returncode in _NOT_RUN:
        return ToolMissing(f"{command} {_NOT_RUN[returncode]} where fleet runs Slurm's tools"
                           + (f": {reason}" if reason else f" (exit status {returncode})"), slurm_reason=reason)
    # A QoS limit names itself on the line before the generic "violates" line: keep the specific one.
    specific = re.search(r"\b((?:QOS|Assoc)(?:Max|Grp)\w+)", stderr)
    for pattern, cls, message, hint in _RULES:
        if re.search(pattern, stderr):
            named = f"{reason} ({specific.group(1)})" if specific and cls is QosLimitExceeded else reason
            return cls(f"{message}: {named}" if named else message, slurm_reason=named, hint=hint)
    detail = reason or f"exit status {returncode}"
    return SlurmError(f"{command} failed: {detail}", slurm_reason=reason)


class QueueWaitExpired(CapacityError):
    """The allocation was still pending when `wait` ran out; fleet cancelled it."""


class JobEnded(SlurmError):
    """Slurm ended the allocation under fleet (node failure, preemption, time limit, cancelled by someone)."""


# Pending reasons that never resolve by waiting: the job can never start as asked.
HOPELESS_PENDING = re.compile(r"(QOS|Assoc)Max\w*PerJob|PartitionNodeLimit|PartitionTimeLimit|BadConstraints"
                              r"|Invalid\w+")
