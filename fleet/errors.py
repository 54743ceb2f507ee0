"""Errors a user can act on.

The library raises these; only the CLI turns them into a one-line message and an exit code.
Exit codes are part of the public interface (README "Exit codes"): experiments' own codes pass
through unchanged, so fleet's codes are few and documented.
"""
from __future__ import annotations


class ExitCode:
    OK = 0
    USAGE = 2          # bad flags, bad fleet.toml, bad stack config
    ENVIRONMENT = 3    # something on this computer is missing or unusable (sshd, FLEET_HOME, credentials)
    NOT_FOUND = 4      # a lease, run, snapshot or template that does not exist
    INTEGRITY = 5      # a snapshot, chunk or record failed verification
    BUDGET_REFUSED = 6  # refused before spending: the budget cannot pay for the lease
    INFRASTRUCTURE = 10  # machines could not be leased or reached
    BUDGET_STOPPED = 11  # the run was stopped because its budget ran out
    CANCELLED = 130    # Ctrl-C / SIGTERM / CI cancellation


MAX_MESSAGE = 2000   # characters of one error line: a 50,000-character argument is not echoed whole


def _bounded(line: str) -> str:
    if len(line) <= MAX_MESSAGE:
        return line
    return f"{line[:MAX_MESSAGE // 2]} … ({len(line) - MAX_MESSAGE} characters left out) … {line[-MAX_MESSAGE // 2:]}"


class FleetError(Exception):
    """Base class: `str(err)` is one line a user can act on."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = _bounded(message.strip().splitlines()[0]) if message.strip() else type(self).__name__
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(FleetError):
    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """A config file problem; names file, line and key where known."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None,
                 key: str | None = None, hint: str | None = None):
        where = ""
        if path:
            where = f"{path}:{line}: " if line else f"{path}: "
        if key:
            where += f"{key}: "
        self.path, self.line, self.key = path, line, key
        super().__init__(where + message, hint=hint)


class EnvironmentProblem(FleetError):
    exit_code = ExitCode.ENVIRONMENT


class StateUnavailable(EnvironmentProblem):
    """The state database cannot be used for now (another process holds it locked, the disk is full,
    the connection to the server was lost or it is restarting): the same statement may succeed a
    little later. A running experiment waits such an outage out (fleet/run/budget.py)."""


class NotFound(FleetError):
    exit_code = ExitCode.NOT_FOUND


class IntegrityError(FleetError):
    exit_code = ExitCode.INTEGRITY


class BudgetRefused(FleetError):
    exit_code = ExitCode.BUDGET_REFUSED


class InfrastructureError(FleetError):
    exit_code = ExitCode.INFRASTRUCTURE


class MachineUnreachable(InfrastructureError):
    pass


class CapacityError(InfrastructureError):
    """No capacity for the requested machines anywhere we were allowed to look."""


class Cancelled(FleetError):
    exit_code = ExitCode.CANCELLED


class BudgetStopped(FleetError):
    exit_code = ExitCode.BUDGET_STOPPED


def transport_failure(exc: BaseException) -> InfrastructureError | None:
    """An SSH transport's own exception (paramiko's SSHException: "Channel closed.", a socket
    reset, an EOF) that reached the run unwrapped: the link to a machine failed, not fleet, so the
    run ends as an infrastructure error (exit 10) with one line, not as an internal error."""
    import sys
    paramiko = sys.modules.get("paramiko")   # never imported here: only a loaded paramiko can have raised
    if paramiko is None:
        return None
    ssh = isinstance(exc, paramiko.SSHException)
    if not ssh and not (isinstance(exc, (EOFError, ConnectionError)) and _raised_in_paramiko(exc)):
        return None   # a store's or an endpoint's own reset is not a machine's link
    what = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return InfrastructureError(f"the SSH connection to a machine failed ({what})",
                               hint="the machine or its link went away; run it again")


def _raised_in_paramiko(exc: BaseException) -> bool:
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith("paramiko"):
            return True
        tb = tb.tb_next
    return False
