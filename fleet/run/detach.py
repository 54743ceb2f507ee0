"""`fleet up --detach`: start the run's supervisor (fleet/run/supervisor.py) in a session of its
own, follow its progress until the inputs are staged, and hand the run over to it.

Everything after the handoff is the supervisor's: heartbeats, budget, logs, outputs, release,
ledger, record. The launcher's own job ends at staging: errors before that (a refused budget, a
dirty tree, no machines) are shown by the launcher with their own exit code, exactly as an
attached `fleet up` shows them, and Ctrl-C before the handoff stops the run the same way.

Also here: asking a live supervisor to stop (`fleet down`), and reconciling supervisors that died
(any `fleet` command: `needs_reconcile` is a few stat calls, `reconcile` runs only when one died).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ..errors import FleetError, InfrastructureError
from ..ids import split_attempt
from .context import Events
from .supervisor import (EVENTS, IDENTITY, LOG, MODULE, SPEC, SupervisorSpec, new_supervisor_dir, state_url_of,
                         supervisor_dir, supervisors_root)

HANDOFF_PHASES = ("setup", "run")   # the first phase after staging
STOP_WAIT_S = 120.0


class ReportedError(FleetError):
    """An error the supervisor reported before the handoff, with its own exit code."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class Handoff:
    """How the launcher parted from the run: detached while it runs, or the run already ended."""

    run_id: str
    lease_id: str | None
    summary: Any = None               # RunSummary when the run ended before the handoff
    staged_at: float | None = None    # time.time() the supervisor reported the first phase after staging


def launch(spec: SupervisorSpec) -> subprocess.Popen:
    """Start the supervisor: its own session (no terminal, no SIGHUP from the shell), its output
    into supervisor.log next to its events. Its stdin carries one line, the [env] overrides (never
    written to spec.json: a value may be secret), then ends."""
    directory = new_supervisor_dir(spec.run_id)
    path = spec.write(directory)
    with open(directory / LOG, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", MODULE, str(path)], cwd=spec.cwd, stdin=subprocess.PIPE,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    try:
        proc.stdin.write(spec.env_line())
        proc.stdin.close()
    except BrokenPipeError:
        pass   # it died at once: follow_until_handoff reports its exit
    return proc


def event_records(path: Path, *, stop) -> Iterator[dict[str, Any]]:
    """The supervisor's event records as they are written; ends when `stop()` is true and the
    file holds nothing more."""
    offset = 0
    while True:
        data = b""
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
        complete = data.rfind(b"\n") + 1
        offset += complete
        for line in data[:complete].splitlines():
            try:
                yield json.loads(line)
            except ValueError:
                continue
        if not complete:
            if stop():
                return
            time.sleep(0.1)


def follow_until_handoff(proc: subprocess.Popen, run_id: str, events: Events) -> Handoff:
    """Render the supervisor's progress until the first phase after staging (then the run is its
    alone), or until it ended. Ctrl-C here is passed on to it (it is our child: provably ours) and
    the run ends as an attached one would: cancelled, machines released."""
    path = supervisor_dir(run_id) / EVENTS
    exited: list[int] = []

    def stop() -> bool:
        if proc.poll() is not None:
            exited.append(proc.returncode)
            return True
        return False

    previous = signal.getsignal(signal.SIGINT)

    cancelled: list[bool] = []

    def forward(signum, _frame) -> None:
        cancelled.append(True)   # stopped from here: follow it to its end, as an attached run
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)

    in_main = _main_thread()
    if in_main:
        signal.signal(signal.SIGINT, forward)
    try:
        for record in event_records(path, stop=stop):
            kind = record.get("kind")
            if kind == "phase":
                events.phase(record.get("name", ""), record.get("detail", ""))
                if record.get("name") in HANDOFF_PHASES and not cancelled:
                    return Handoff(run_id, _lease_of(run_id), staged_at=record.get("t"))
            elif kind == "warn":
                events.warn(record.get("message", ""))
            elif kind == "end":
                from .summary import RunSummary
                return Handoff(run_id, record["summary"].get("lease_id"), summary=RunSummary.from_json(record["summary"]))
            elif kind == "error":
                raise ReportedError(record.get("message", "the run failed"), int(record.get("exit_code", 1)))
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    raise InfrastructureError(
        f"the detached supervisor of run {run_id} exited (code {exited[-1] if exited else '?'}) before the "
        "run started", hint=f"see {supervisor_dir(run_id) / LOG}")


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _lease_of(run_id: str) -> str | None:
    try:
        from ..state import open_state
        return open_state().get_run(run_id).get("lease_id")
    except FleetError:
        return None


# -- a supervisor's identity: proved before it is signalled ---------------------------------------------

def _identity(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / IDENTITY).read_text())
    except (OSError, ValueError):
        return None


def is_supervisor(ident: dict[str, Any] | None, run_id: str) -> bool | None:
    """True: this run's supervisor provably runs (same boot, pid namespace, pid and start time, and
    its command line names the supervisor module and this run). False: provably gone. None: it
    runs on another computer, or was never recorded."""
    from ..lost_runs import controller_alive
    alive = controller_alive(ident)
    if not alive:
        return alive
    try:
        with open(f"/proc/{int(ident['pid'])}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    # `python -m fleet.run.supervisor <home>/supervisors/<run>/spec.json`: the directory names the
    # run exactly (a resumed attempt `<run>-aN` runs in its run's supervisor), not as a substring.
    try:
        spec = Path(os.fsdecode(argv[argv.index(MODULE.encode()) + 1]))
    except (ValueError, IndexError):
        return False
    return spec.name == SPEC and spec.parent.name == split_attempt(run_id)[0]


def stop_supervised_runs(state, lease_id: str, events: Events, *, wait_s: float = STOP_WAIT_S) -> list[str]:
    """`fleet down LEASE` on a detached run: ask its supervisor to stop (SIGTERM, as Ctrl-C asks an
    attached run) so the outputs still come home and the run is recorded as cancelled; then wait
    for it to finish. Only a supervisor proved to be this run's own is signalled."""
    stopped = []
    for run in state.list_runs(lease_id=lease_id, limit=100):
        meta = run.get("meta") or {}
        if run["status"] != "running" or not meta.get("detached"):
            continue
        if _stop_supervisor(state, run, lease_id, events, wait_s):   # node 0, login node: over SSH
            stopped.append(run["id"])
    return stopped


def _stop_local_supervisor(run: dict[str, Any], lease_id: str, events: Events, wait_s: float) -> bool:
    """SIGTERM the run's supervisor on this computer, once proved its own, and wait for it to end."""
    ident = (run.get("meta") or {}).get("controller")
    if not is_supervisor(ident, run["id"]):
        return False
    events.phase("release", f"asking the supervisor of run {run['id']} (pid {ident['pid']}) to stop")
    try:
        _send_term(ident, run["id"])
    except PermissionError:
        raise _not_ours(run["id"], int(ident["pid"]), lease_id) from None
    except ProcessLookupError:
        pass   # it ended between the check and the signal: what was asked
    end = time.monotonic() + wait_s
    while time.monotonic() < end and is_supervisor(ident, run["id"]):
        time.sleep(0.2)
    return True


def _send_term(ident: dict[str, Any], run_id: str) -> None:
    """SIGTERM the proved supervisor through a pidfd, proved again once the pidfd pins the process:
    a supervisor that ended after the first proof cannot have its pid reused under the signal."""
    pid = int(ident["pid"])
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return   # it ended: what was asked
    except OSError:
        os.kill(pid, signal.SIGTERM)   # no pidfds here (old kernel): proved a moment ago
        os.kill(pid, signal.SIGCONT)
        return
    try:
        if is_supervisor(ident, run_id):
            signal.pidfd_send_signal(fd, signal.SIGTERM)
            signal.pidfd_send_signal(fd, signal.SIGCONT)   # a stopped one handles SIGTERM only once continued
    finally:
        os.close(fd)


def follow_recovery(state, lease_id: str, events: Events, *, wait_s: float = STOP_WAIT_S) -> list[str]:
    """`fleet down` of a lease that has ended, on which a detached run started (the lease `fleet up
    -d` printed): recovery may have moved the run on. Returns the live leases its latest attempts
    run on now, for the caller to release (which stops their supervisors as usual). A run whose
    latest attempt has no live lease (between attempts, or its row not updated yet after its lease
    was released) has its supervisor asked to stop here, so it leases nothing more."""
    moved: list[str] = []
    for run in state.list_runs(lease_id=lease_id, limit=100):
        if not (run.get("meta") or {}).get("detached"):
            continue
        latest = latest_attempt(state, run["id"])
        if latest is None or (latest.get("owner"), latest.get("project")) != (run.get("owner"), run.get("project")):
            continue   # an attempt chain that leaves the run's user or project is not its recovery
        target = latest.get("lease_id")
        if latest["id"] != run["id"] and target != lease_id and _on_live_lease(state, latest):
            if state.get_lease(target).user == run.get("owner"):
                events.phase("release", f"{lease_id} has ended; run {run['id']} goes on as {latest['id']} on "
                                        f"{target}: releasing that")
                if target not in moved:
                    moved.append(target)
                continue
        if latest["status"] in ("running", "error", "lost"):
            try:
                _stop_supervisor(state, latest, lease_id, events, wait_s)
            except FleetError as exc:   # e.g. node 0 of a long-gone lease: the other runs go on being followed
                events.warn(f"could not ask the supervisor of run {latest['id']} to stop: {exc.one_line()}")
    return moved


def _on_live_lease(state, run: dict[str, Any]) -> bool:
    """The run is running on a lease still leasing or active."""
    return run["status"] == "running" and bool(run.get("lease_id")) \
        and state.lease_status(run["lease_id"])[0] in ("active", "leasing")


def _stop_supervisor(state, run: dict[str, Any], lease_id: str, events: Events, wait_s: float) -> bool:
    """Ask the run's supervisor to stop wherever it runs (login node, node 0, this computer)."""
    from .login_launch import stop_remote_supervisor
    remote = stop_remote_supervisor(state, run, events, wait_s=wait_s)
    if remote is not None:
        return bool(remote)
    return _stop_local_supervisor(run, lease_id, events, wait_s)


def stop_unleased_supervisors(state, events: Events, *, wait_s: float = STOP_WAIT_S) -> list[str]:
    """`fleet down --all`: this computer's live supervisors whose run holds no live lease now
    (recovery between two attempts, or not leased yet) are asked to stop, so none leases machines
    after `down --all` said everything was released. Returns their run ids."""
    root = supervisors_root()
    stopped: list[str] = []
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        ident = _identity(directory)
        if is_supervisor(ident, directory.name) is not True:
            continue
        try:
            latest = latest_attempt(state, directory.name)
            if latest is None:
                continue   # its run is recorded in another state (project, team database): not this down's
            if _on_live_lease(state, latest):
                continue   # `down` releases that lease, stopping it there
            run = {"id": directory.name, "meta": {"controller": ident}}
            if _stop_local_supervisor(run, latest.get("lease_id") or "-", events, wait_s):
                stopped.append(directory.name)
        except FleetError as exc:   # one supervisor's trouble must not keep the others running
            events.warn(f"could not stop the supervisor of run {directory.name}: {exc.one_line()}")
    return stopped


def _not_ours(run_id: str, pid: int, lease_id: str) -> InfrastructureError:
    """Another Unix user's supervisor runs this run (a shared state database): this user may not
    signal it, and releasing its machines under it would leave its run unrecorded."""
    try:
        owner = f"uid {os.stat(f'/proc/{pid}').st_uid}"
    except OSError:
        owner = "uid unknown"
    return InfrastructureError(
        f"run {run_id} is supervised by another user's process (pid {pid}, {owner}); "
        f"ask them to run `fleet down {lease_id}`",
        hint="or leave it: its machines end at the lease's own deadline")


# -- reconcile: supervisors that died without finishing their run -----------------------------------------

def reconcile(events: Events) -> list[str]:
    """For each supervisor that died with its run unfinished: release the lease, bill what the
    ledger lacks, and record the run as lost (`fleet down` does all three). Returns the run ids."""
    from ..lost_runs import controller_alive
    from ..state import open_state
    root = supervisors_root()
    if not root.is_dir():
        return []
    states: dict[str, Any] = {}
    ended = []
    try:
        for directory in sorted(root.iterdir()):
            ident = _identity(directory)
            if ident is None or controller_alive(ident) is not False:
                continue
            url = state_url_of(ident)
            state = states.get(url) or states.setdefault(url, open_state(url))
            run = latest_attempt(state, directory.name)
            if run is not None and run["status"] == "running" and run.get("lease_id"):
                from ..leases import down
                events.warn(f"the detached supervisor of run {run['id']} (pid {ident.get('pid')}) is gone; "
                            f"releasing lease {run['lease_id']} and recording the run")
                try:
                    down([run["lease_id"]], state=state, events=events)
                except FleetError as exc:     # its lease row gone or unreadable: the run is still recorded
                    events.warn(f"could not release lease {run['lease_id']}: {exc.one_line()}")
                if state.get_run(run["id"])["status"] == "running":   # its lease was released already
                    from ..lost_runs import end_lost_run, lease_or_none
                    lease = lease_or_none(state, run["lease_id"])
                    if lease is not None and lease.status in ("active", "leasing"):
                        continue      # not released: the next command tries again (its identity kept)
                    end_lost_run(state, run, lease, f"its detached supervisor (pid {ident.get('pid')}) is gone",
                                 events)     # the lease: the machines count `--resume` reads checkpoints of
                ended.append(run["id"])
            (directory / IDENTITY).unlink(missing_ok=True)
    finally:
        for state in states.values():
            state.close()
    return ended


def latest_attempt(state, run_id: str) -> dict[str, Any] | None:
    """The run, or the attempt that last resumed it (recovery names each next attempt); None when
    the run is not in this state. Each link must be a later attempt of the same run, so a damaged
    or forged chain ends (no cycle)."""
    from ..ids import MAX_ATTEMPT
    try:
        run = state.get_run(run_id)
    except FleetError:
        return None   # no such run in this state
    base, attempt = split_attempt(run["id"])
    for _ in range(MAX_ATTEMPT):
        following = (run.get("meta") or {}).get("next_attempt")
        if not isinstance(following, str):
            break
        later_base, later = split_attempt(following)
        if later_base != base or later <= attempt:
            break
        try:
            run, attempt = state.get_run(following), later
        except FleetError:
            break   # named, its row not made yet (between attempts): the last one made is the latest
    return run


__all__ = ["launch", "follow_until_handoff", "Handoff", "ReportedError", "stop_supervised_runs",
           "reconcile", "is_supervisor", "latest_attempt"]
