"""Runs whose controller died: found by whoever releases their lease, ended as `lost`, recorded.

A `fleet up` killed with SIGKILL (or a laptop that lost power) never reaches its finally-block:
its run row says `running` forever, `fleet logs -f` follows it forever and no run record exists.
Every run row names the process that supervises it (`controller_identity`, stored by create_run);
`fleet down` and the sweep of `fleet down --all` end the runs whose controller is provably gone,
or that no controller could still be supervising, with a run record saying why and what was billed.
"""
from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .models import Lease, to_jsonable, utcnow

if TYPE_CHECKING:
    from .run.context import Events

LOST = "lost"


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name (field 3, the state, first); [] when there is none."""
    stat = _read(f"/proc/{pid}/stat")
    return stat.rsplit(")", 1)[-1].split() if stat else []   # the name may hold spaces and parentheses


def _start_ticks(pid: int) -> str:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot): with the pid, a process's
    identity that pid reuse cannot fake. Empty when there is no such process, or only its zombie."""
    fields = stat_fields(pid)
    if fields and fields[0] in ("Z", "X"):   # dead, not yet reaped (a parent gone, an init that never reaps)
        return ""
    return fields[19] if len(fields) > 19 else ""


def _pid_namespace() -> str:
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def controller_identity() -> dict[str, Any]:
    """Who supervises a run: enough for another fleet process on the same computer to prove whether
    it still lives (same boot and pid namespace, same pid with the same start time)."""
    pid = os.getpid()
    return {"host": socket.gethostname(), "boot_id": _read("/proc/sys/kernel/random/boot_id"),
            "pid_ns": _pid_namespace(), "pid": pid, "start": _start_ticks(pid)}


def controller_alive(ident: dict[str, Any] | None) -> bool | None:
    """True: provably running. False: provably gone. None: cannot tell (another computer, or a run
    recorded without an identity)."""
    if not isinstance(ident, dict) or not ident.get("boot_id"):
        return None   # none recorded, or a damaged record: it proves nothing either way
    pid = ident.get("pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return None
    here = controller_identity()
    if (ident.get("host"), ident.get("boot_id"), ident.get("pid_ns")) != (here["host"], here["boot_id"],
                                                                         here["pid_ns"]):
        return None
    start = _start_ticks(pid)
    return bool(start) and start == str(ident.get("start"))


def _billed(state, run: dict[str, Any], lease_id: str | None) -> tuple[int, bool]:
    """Micro-dollars the ledger holds for this run (or its lease, for rows without a run id), and
    whether they are shadow prices (a local machine's "would cost")."""
    where, params = "run_id = ?", [run["id"]]
    if lease_id:
        where, params = "(run_id = ? OR (run_id IS NULL AND lease_id = ?))", [run["id"], lease_id]
    rows = state.db.execute(f"SELECT COALESCE(SUM(cost_micro), 0) AS total, MIN(shadow) AS shadow "
                            f"FROM ledger WHERE {where}", params)
    row = rows[0] if rows else {}
    return int(row.get("total") or 0), bool(row.get("shadow"))


def end_lost_run(state, run: dict[str, Any], lease: Lease | None, why: str, events: Events) -> bool:
    """Mark one run `lost` and write its run record (reason, what was billed). False when another
    process ended the run first (its own controller, or a concurrent `fleet down`)."""
    from decimal import Decimal
    from .money.budget import MICRO, format_usd
    billed, shadow = _billed(state, run, lease.id if lease else run.get("lease_id"))
    cost = str(Decimal(billed) / MICRO)
    why += (f"; would have cost {format_usd(billed)} at list price (a shadow price, not billed; from the ledger)"
            if shadow else f"; billed {format_usd(billed)} (from the ledger)")
    ended = utcnow()
    summary = {"run_id": run["id"], "lease_id": run.get("lease_id"), "status": LOST, "exit_code": None,
               "message": why, "ended_at": to_jsonable(ended), "started_at": run.get("started_at"),
               ("would_cost_usd" if shadow else "cost_usd"): cost}
    if lease is not None:   # `fleet up --resume RUN` looks for every node's checkpoint, not rank 0's only
        summary["machines"] = len(lease.machines)
    import json
    with state.db.transaction():   # check and set at once: the run's own controller may end it too
        rows = state.db.execute("SELECT status, meta FROM runs WHERE id = ?", (run["id"],))
        if not rows or rows[0]["status"] != "running":
            return False
        recorded = _recorded_end(state, run["id"])
        from .state.documents import object_to_extend
        meta = object_to_extend(rows[0]["meta"], f"run {run['id']}'s meta")
        if recorded is not None:   # it ended and wrote its record; only its row's update was lost (a full disk)
            status, code, at = recorded
            at = at or to_jsonable(ended)
            mark = f"ended {status} (its record); its row was marked by a later `fleet down`"
            meta["summary"] = {**summary, "status": status, "exit_code": code, "ended_at": at, "message": mark}
            for drop in ("cost_usd", "would_cost_usd"):   # the record has the run's own figure
                meta["summary"].pop(drop, None)
            state.db.execute("UPDATE runs SET status = ?, exit_code = ?, ended_at = ?, meta = ? WHERE id = ?",
                             (status, code, at, json.dumps(to_jsonable(meta)), run["id"]))
        else:
            meta["summary"] = summary
            state.db.execute("UPDATE runs SET status = ?, exit_code = NULL, ended_at = ?, meta = ? WHERE id = ?",
                             (LOST, to_jsonable(ended), json.dumps(to_jsonable(meta)), run["id"]))
    if recorded is not None:
        events.warn(f"run {run['id']} had ended ({recorded[0]}) and its record says so, but its row still said "
                    "running (its controller could not update it): marked from its record")
        return True
    try:
        _append_record(state, run, lease, why, ended, cost, shadow)
    except Exception as exc:  # noqa: BLE001 — the run is ended either way; say what is missing
        events.warn(f"run {run['id']} is lost, but its run record could not be written: {exc}")
    events.warn(f"run {run['id']} lost: {why}")
    return True


def _recorded_end(state, run_id: str) -> tuple[str, int | None, str | None] | None:
    """(status, exit code, ended at) from the run's own record, if it wrote one; None otherwise."""
    import json
    rows = state.db.execute("SELECT body FROM run_records WHERE run_id = ?", (run_id,))
    try:
        body = json.loads(rows[0]["body"]) if rows else None
        status, code = body.get("status"), body.get("exit_status")
    except (ValueError, TypeError, AttributeError):
        return None   # unreadable: `fleet audit --verify` names it; the run is ended as lost
    if not isinstance(status, str) or not status or status == "running" or not (code is None or isinstance(code, int)):
        return None
    return status, code, body.get("ended_at") if isinstance(body.get("ended_at"), str) else None


def _append_record(state, run: dict[str, Any], lease: Lease | None, why: str, ended: datetime, cost: str,
                   shadow: bool) -> None:
    from .records.chain import RunRecord, append_record
    meta = run.get("meta") or {}
    pins = meta.get("pins") or {}
    machine_types = sorted({m.instance_type or lease.template for m in lease.machines}) if lease else []
    record = RunRecord(
        run_id=run["id"], command=run.get("command") or "", project=run.get("project") or "default",
        user=run.get("owner") or "unknown", provider=meta.get("provider") or (lease.provider if lease else ""),
        template=meta.get("template") or (lease.template if lease else ""), machine_types=machine_types,
        code_commit=pins.get("code_commit"), code_snapshot=pins.get("code_snapshot"),
        code_dirty_snapshot=pins.get("code_dirty_snapshot"), code_subdir=pins.get("code_subdir") or "",
        data_snapshots=dict(pins.get("data_snapshots") or {}), store=pins.get("store") or "",
        gpus=meta.get("gpus"), machines=len(lease.machines) if lease else None,
        started_at=run.get("started_at"), ended_at=to_jsonable(ended), exit_status=None, status=LOST,
        cost_usd=cost, cost_shadow=shadow, lease_id=run.get("lease_id"), reason=why)
    append_record(record, state.db)


def _controller(run: dict[str, Any]) -> dict[str, Any] | None:
    """The controller identity a run recorded, or None where its meta holds something else (a
    teammate's client, a hand edit): one such run must not stop the others from being ended."""
    meta = run.get("meta")
    ident = meta.get("controller") if isinstance(meta, dict) else None
    return ident if isinstance(ident, dict) else None


def end_runs_of_lease(state, lease: Lease, *, released_by: str, events: Events) -> list[str]:
    """After `lease` was released: end its runs still marked running whose controller is gone.
    A controller that still lives (this computer) ends its run itself, as an infrastructure error;
    one on another computer is trusted while the heartbeat it keeps (the lease's deadline) is fresh."""
    _status, released_at = state.lease_status(lease.id)
    when = to_jsonable(released_at or utcnow())
    ended = []
    for run in state.list_runs(lease_id=lease.id, limit=1000):
        if run["status"] != "running":
            continue
        ident = _controller(run)
        alive, silent = alive_or_silent(state, run, ident)
        if alive or (alive is None and lease.deadline > utcnow()):
            if alive is None:
                events.warn(f"run {run['id']} may still be supervised by its controller on "
                            f"{(ident or {}).get('host', 'another computer')}; it ends the run itself, or "
                            f"`fleet down --all` after {to_jsonable(lease.deadline)} ends it as lost")
            continue
        who = silent or (f"its controller (pid {ident.get('pid')} on {ident.get('host')}) is gone" if ident
                         else "its controller is gone")
        why = f"{who}; lease {lease.id} released by {released_by} at {when}"
        if end_lost_run(state, run, lease, why, events):
            ended.append(run["id"])
    return ended


def sweep_lost_runs(state, *, events: Events) -> list[str]:
    """Runs still marked running on a lease that is no longer active (or exists no more), whose
    controller is provably gone, or whose lease ended longer than its heartbeat ago (a controller
    elsewhere would have ended its run by then)."""
    from .state.documents import CorruptRecord, stored_object
    ended = []
    for run in state.db.execute("SELECT * FROM runs WHERE status = 'running' ORDER BY started_at"):
        try:
            run["meta"] = stored_object(run["meta"], f"run {run['id']}'s meta")
            lease = lease_or_none(state, run.get("lease_id"))
        except CorruptRecord as exc:      # a teammate's damaged row: the others are swept all the same
            events.warn(f"run {run['id']} left as it is: {exc.one_line()}")
            continue
        if lease is not None and lease.status in ("active", "leasing"):
            continue   # `fleet down` of that lease handles it
        ident = _controller(run)
        alive, silent = alive_or_silent(state, run, ident)
        if alive:
            continue
        status, released_at = state.lease_status(lease.id) if lease else (None, None)
        if alive is None and lease is not None:
            ttl = timedelta(seconds=lease.heartbeat_ttl_s)
            if (released_at or utcnow()) + ttl > utcnow() and lease.deadline > utcnow():
                continue
        who = silent or (f"its controller (pid {ident.get('pid')} on {ident.get('host')}) is gone" if ident
                         else "its controller is gone")
        where = (f"lease {lease.id} was {status}" + (f" at {to_jsonable(released_at)}" if released_at else "")
                 if lease else "its lease no longer exists")
        if end_lost_run(state, run, lease, f"{who}; {where} (found by `fleet down --all`)", events):
            ended.append(run["id"])
    return ended


def alive_or_silent(state, run: dict[str, Any], ident: dict[str, Any] | None) -> tuple[bool | None, str | None]:
    """controller_alive, and for a detached run supervised elsewhere (another computer, node 0) its
    beat in the state (fleet/run/supervisor_beat.py): silent for several periods counts as gone,
    with that as the reason."""
    alive = controller_alive(ident)
    if alive is not None or not (run.get("meta") or {}).get("detached"):
        return alive, None
    from .run.supervisor_beat import base_run_id, beat_ages, stale_reason
    silent = stale_reason(beat_ages(state, [run["id"]]).get(base_run_id(run["id"])))
    return (False, silent) if silent else (None, None)


def lease_or_none(state, lease_id: str | None) -> Lease | None:
    if not lease_id:
        return None
    rows = state.db.execute("SELECT id FROM leases WHERE id = ?", (lease_id,))
    return state.get_lease(lease_id) if rows else None


__all__ = ["LOST", "controller_identity", "controller_alive", "end_runs_of_lease", "sweep_lost_runs",
           "end_lost_run", "lease_or_none"]
