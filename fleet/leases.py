"""Leases after `fleet up`: status, down, extend, ssh (logs: fleet/run_logs.py). (`fleet run LEASE` is fleet/run/pipeline.py.)"""
from __future__ import annotations

import os
import shlex
from datetime import timedelta

from .errors import FleetError, InfrastructureError, NotFound, UsageError
from .plan import whose_leases

TYPE_CHECKING = False   # see fleet/__init__.py: typing is not imported on `fleet status`'s path
if TYPE_CHECKING:
    from typing import Any

    from .models import Lease
    from .run.context import Events
    from .run.keep import Extension


def _provider(name: str):
    from .providers.registry import get
    return get(name)


def lease_view(lease: Lease, states: list | None) -> dict[str, Any]:
    """`lease` as `fleet status` shows it, with its machines' `states` (MachineState; None: unknown)."""
    from .lease_status import view
    from .models import to_jsonable, utcnow
    record = {"id": lease.id, "provider": lease.provider, "template": lease.template, "project": lease.project,
              "owner": lease.user, "status": lease.status, "runs": [],
              **{k: to_jsonable(getattr(lease, k)) for k in ("created_at", "deadline", "max_deadline", "keep_until")},
              "machines": [{**to_jsonable(m), "observed": None} for m in lease.machines]}
    now = utcnow()
    seen = None if states is None else {s.machine_id: (s.state, s.detail, now.isoformat()) for s in states}
    return view(record, seen, now)


def status(state=None, *, user: str | None = None, all_users: bool = False, check: bool = True,
           refresh: bool = False) -> list[dict[str, Any]]:
    """Active leases of `user` (default: the caller; all_users: everyone's) with their machines as the
    providers see them (a watchdog-ended machine shows 'gone'); AWS machines as EC2 said within the
    last minute unless `refresh` (fleet/lease_status.py)."""
    from .arguments import state_arg
    from .lease_status import status as lease_status
    user = whose_leases(user, all_users)
    return lease_status(state_arg(state), user=user, check=check, refresh=refresh)


def down(lease_ids: list[str], *, all_leases: bool = False, all_users: bool = False, state=None,
         events: Events | None = None, user: str | None = None, released_by: str = "`fleet down`") -> list[str]:
    """Release leases (idempotent). With all_leases, every live lease of `user` (default: the caller;
    all_users: every user's, as `fleet down --all --all-users`), then sweep local machines no live
    lease owns. `released_by` names who released them in the record of a run ended as lost (`fleet
    reap` releases the leases it reaped this way too)."""
    from .arguments import names_arg, state_arg
    if not isinstance(all_leases, bool):      # a templated "no" is truthy: it must not mean everything
        raise UsageError(f"all_leases must be True or False, got {all_leases!r}")
    user = whose_leases(user, all_users)
    lease_ids = names_arg("lease_ids", lease_ids or [])
    state = state_arg(state)
    from .run.context import SilentEvents
    events = events or SilentEvents()
    if not lease_ids and not all_leases:
        raise UsageError("name a lease to release, or use --all")
    if lease_ids and all_leases:   # --all used to drop the named ones unread: a teammate's (or a typo) stayed up
        raise UsageError(f"name leases or use --all, not both (named: {', '.join(lease_ids)})",
                         hint="--all releases every live lease of yours; --all --all-users everyone's")
    damaged: list[str] = []          # rows no one can read: the rest are released all the same
    leases = (state.list_leases(active_only=True, user=user, damaged=damaged) if all_leases
              else [state.get_lease(i) for i in lease_ids])
    for line in damaged:
        events.warn(line)
    if lease_ids:
        leases += _moved_on(state, leases, events)
    released, failures = _release_leases(state, [x for x in leases if x.status in ("active", "leasing")], events,
                                         released_by)
    if all_leases:
        _stop_unleased_supervisors(state, events)
        _sweep_lost_runs(state, events)
        unread: list[str] = []
        live = {i for lease in state.list_leases(active_only=True, damaged=unread)
                for i in (lease.id, *(m.id for m in lease.machines))}   # a leasing lease's next machines too
        if unread:     # a live lease whose machines are unknown: any machine might be one of them
            events.warn("leftover local machines not swept: a live lease's row cannot be read")
        else:
            released += _sweep_leftovers(live, events)
        failures += [line.split()[1] for line in damaged]
    if failures:
        raise InfrastructureError(f"{len(failures)} lease(s) not released: {', '.join(failures)}",
                                  hint="their machines still end at their own deadline; run `fleet down` again")
    return released


def _why(exc: BaseException) -> str:
    return exc.one_line() if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"


RELEASE_WORKERS = 8   # leases released at once by `fleet down` (each provider fans out over its machines)


def _release_leases(state, leases: list[Lease], events: Events,
                    released_by: str = "`fleet down`") -> tuple[list[str], list[str]]:
    """Release leases side by side: the providers' calls (describe, release: seconds per lease)
    run in a bounded pool; every state write stays on this thread, which owns the connection.
    Returns (released, failed) lease ids."""
    from .parallel import parallel
    released, failures = [], []
    todo = []
    marks: dict[str, str] = {}
    for lease in leases:
        events.phase("release", f"{lease.id} ({len(lease.machines)} machine(s))")
        try:
            if _stopped_by_its_supervisor(state, lease, events):
                released.append(lease.id)
                continue
            provider = _provider(lease.provider)
            marks[lease.id] = state.mark_release_started(lease.id)   # its controller then knows why they vanish
            todo.append((lease, provider))
        except Exception as exc:  # noqa: BLE001 — one stuck lease must not keep the others (and the sweep) alive
            events.warn(f"could not release {lease.id}: {_why(exc)}")
            failures.append(lease.id)

    def release(item) -> tuple[list, str | None]:
        lease, provider = item
        found = _describe(provider, lease, events)   # before release: afterwards a local machine is gone
        try:
            provider.release(lease)
        except Exception as exc:  # noqa: BLE001 — one lease's surprise must not leave the others unrecorded
            return found, _why(exc)
        return found, None

    outcomes = parallel(todo, release, max_workers=RELEASE_WORKERS)   # also at interpreter shutdown
    for (lease, _provider_), (found, error) in zip(todo, outcomes):
        if error is not None:
            events.warn(f"could not release {lease.id}: {error}")
            failures.append(lease.id)
            _unmark(state, lease.id, marks[lease.id])
            continue
        try:
            # The ledger before the status: a `down` interrupted here finds the lease again and finishes.
            _close_ledger(state, lease, found, events)
            state.set_lease_status(lease.id, "released")
            released.append(lease.id)
            _end_lost_runs(state, lease, events, released_by)
        except FleetError as exc:
            events.warn(f"could not release {lease.id}: {exc.one_line()}")
            failures.append(lease.id)
    return released, failures


def _unmark(state, lease_id: str, when: str) -> None:
    try:
        state.unmark_release_started(lease_id, when)
    except FleetError:       # the state itself failing: the lease stays marked until a `down` finishes it
        pass


def _moved_on(state, named: list[Lease], events: Events) -> list[Lease]:
    """The live leases that detached runs of the named, ended leases were recovered onto: the user
    named the run's first lease (what `fleet up -d` printed) and means the run."""
    from .run.detach import follow_recovery
    seen = {lease.id for lease in named}
    out = []
    for lease in named:
        if lease.status in ("active", "leasing"):
            continue
        try:
            for moved in follow_recovery(state, lease.id, events):
                if moved not in seen:
                    seen.add(moved)
                    out.append(state.get_lease(moved))
        except Exception as exc:  # noqa: BLE001 — one lease's damaged rows must not keep the others up
            events.warn(f"could not follow the runs of {lease.id} to where they went on: {_why(exc)}")
    return out


def _stop_unleased_supervisors(state, events: Events) -> None:
    from .run.detach import stop_unleased_supervisors
    try:
        stop_unleased_supervisors(state, events)
    except Exception as exc:  # noqa: BLE001 — the leases are released; a supervisor left still ends at its alarm
        events.warn(f"could not stop the supervisors of runs between two attempts: {exc}")


def _stopped_by_its_supervisor(state, lease: Lease, events: Events) -> bool:
    """A detached run's supervisor stops its run and releases the lease itself (outputs home, run
    recorded as cancelled); True when it did."""
    from .run.detach import stop_supervised_runs
    if not stop_supervised_runs(state, lease.id, events):
        return False
    status, _ = state.lease_status(lease.id)
    return status not in ("active", "leasing")


def _sweep_leftovers(live: set[str], events: Events) -> list[str]:
    """Every provider that can find machines no live lease owns (SweepsLeftovers) ends them."""
    from .providers import registry
    from .providers.base import SweepsLeftovers
    ended = []
    for name in registry.names():
        try:
            if not issubclass(registry.provider_class(name), SweepsLeftovers):
                continue
            for machine in _provider(name).sweep(live):
                events.phase("release", f"orphan {name} machine {machine}")
                ended.append(machine)
        except (FleetError, OSError) as exc:   # one broken provider must not keep the others' leftovers alive
            events.warn(f"could not sweep leftover {name} machines: {_why(exc)}")
    return ended


def _end_lost_runs(state, lease: Lease, events: Events, released_by: str = "`fleet down`") -> None:
    """Runs of the released lease whose controller died end as `lost`, with a run record."""
    from .lost_runs import end_runs_of_lease
    try:
        end_runs_of_lease(state, lease, released_by=released_by, events=events)
    except Exception as exc:  # noqa: BLE001 — the machines are released; the next `down --all` retries
        events.warn(f"could not end the runs of {lease.id} whose controller is gone: {exc}")


def _sweep_lost_runs(state, events: Events) -> None:
    """Runs left `running` on leases that ended before (a controller elsewhere, or a crash)."""
    from .lost_runs import sweep_lost_runs
    try:
        sweep_lost_runs(state, events=events)
    except Exception as exc:  # noqa: BLE001
        events.warn(f"could not end runs whose controller is gone: {exc}")


def _describe(provider, lease: Lease, events: Events) -> list:
    """The provider's own list of the lease's machines, including any fleet's state never recorded
    (controller killed inside lease()). Best effort: release must happen either way."""
    try:
        return provider.describe(lease)
    except Exception as exc:  # noqa: BLE001
        events.warn(f"could not list the machines of {lease.id} before releasing them ({exc}); machines "
                    "fleet never recorded may be missing from the cost ledger")
        return []


def _close_ledger(state, lease: Lease, found: list, events: Events) -> None:
    """A lease whose controller died left its cost segments open: bill them up to now, or up to
    the machines' own deadline when that came first (the watchdog ended them then). Machines with
    no segment at all (killed inside lease() before they were reported) get a bounded one."""
    try:
        from .money.ledger import Ledger
        from .models import utcnow
        from .money.unbilled import bill_unbilled
        at = min(utcnow(), lease.deadline)
        # Where the provider knows when every machine ended (Slurm: sacct's End), bill up to then.
        ends = [s.deadline_at for s in found if not s.unrecorded]
        if ends and all(s.state == "gone" for s in found) and all(ends):
            at = min(at, max(ends))
        Ledger(state.db).close_orphans(lease.id, at=at)
        billed = bill_unbilled(state, lease, found)
        if billed:
            events.warn(f"{lease.id}: billed {len(billed)} machine(s) that had no cost segment, up to their "
                        f"release or first deadline, whichever came first: {', '.join(billed)}")
    except Exception as exc:  # noqa: BLE001 — the machines are gone; a ledger hiccup must not hide that
        events.warn(f"could not close the cost ledger of {lease.id}: {exc}")


def check_owner(lease, action: str, configured_user: str | None = None) -> None:
    """A lease's deadline and runs spend its owner's money and are recorded as its owner's: another
    user of a shared state may see it and `fleet down` it, not extend it or run on it. A lease with
    no owner recorded (a damaged or planted row) is no one's to spend: everyone may only end it."""
    from .plan import current_user
    if not isinstance(lease.user, str) or not lease.user.strip():
        raise UsageError(f"lease {lease.id} has no owner recorded: not allowed to {action}",
                         hint=f"`fleet down {lease.id}` releases it; its machines end at their deadline anyway")
    me = current_user(configured_user)
    if lease.user != me:
        raise UsageError(f"lease {lease.id} is {lease.user}'s, not {me}'s: not allowed to {action}",
                         hint="ask its owner; if it is yours under another name, set FLEET_USER to it")


def extend(lease_id: str, seconds: int | float | str, state=None, *, user: str | None = None,
           limits=None) -> "Extension":
    """Every machine of an active lease holds now + `seconds`, at most to its max_duration and, for a
    kept lease, to what `limits`' monthly budgets (money.metering.BudgetLimits) can pay; the
    Extension says until when, and what capped it. A lease that already ends at its cap is refused."""
    from .config.values import parse_duration
    from .run.keep import extend_lease
    from .arguments import limits_arg, name_arg, state_arg, user_arg
    lease_id, user, limits = name_arg("lease_id", lease_id), user_arg(user), limits_arg(limits)
    try:     # before anything moves: inf extended every machine, then failed converting it
        seconds = parse_duration(seconds)
    except UsageError as exc:
        raise UsageError(f"seconds {exc.message}") from None
    state = state_arg(state)
    lease = state.get_lease(lease_id)
    if lease.status != "active":
        raise UsageError(f"lease {lease.id} is {lease.status}, not active")
    check_owner(lease, "extend it", user)
    from .models import utcnow
    if lease.deadline is not None and lease.deadline >= lease.max_deadline - timedelta(seconds=1) or \
            lease.max_deadline <= utcnow():
        raise UsageError(f"lease {lease.id} already ends at its max_duration "
                         f"({lease.max_deadline.strftime('%H:%M:%S UTC')}); nothing was extended",
                         hint="max_duration is fixed when a lease is made: start a new run with a longer "
                              "--max-duration")
    if limits is None:
        return extend_lease(state, lease, seconds)
    # The budget check and the deadline it allows are one transaction: two extends at once (or an
    # extend beside a `fleet up`'s reservation) each saw the other's money as still free. The new
    # deadline is held in the state before any machine moves, and put back if moving them fails.
    with state.db.transaction():
        from .money.reservations import Reservations
        Reservations(state.db).lock_scopes(project=lease.project if limits.project_monthly is not None else None,
                                           owner=lease.user if limits.user_monthly is not None else None)
        budget = _budget_cap(state, lease, limits, seconds)
        put_back = _hold_deadline(state, lease, budget[0] if budget else seconds)
    try:
        extension = extend_lease(state, lease, int(budget[0]) if budget else seconds)
    except BaseException:
        put_back()
        raise
    if budget is not None and extension.capped_by is None:
        from dataclasses import replace
        extension = replace(extension, asked_s=int(seconds), capped_by=budget[1])
    return extension


def _hold_deadline(state, lease, seconds: float):
    """Move the lease's recorded deadline (and so the money it holds) to now + seconds, within its
    max_duration, before its machines are told. Returns what puts the old deadline back: only while
    the state still holds this one (extend_lease records what machines that did move hold)."""
    from .models import to_jsonable, utcnow
    from .money.kept import recorded_deadline
    from .money.ledger import Ledger
    before = recorded_deadline(Ledger(state.db), lease)
    target = min(utcnow() + timedelta(seconds=seconds), lease.max_deadline)
    if before is not None and target <= before:
        return lambda: None
    rows = state.db.execute("SELECT keep_until FROM leases WHERE id = ?", (lease.id,))
    keep_before = rows[0]["keep_until"] if rows else None
    state.set_lease_deadline(lease.id, target, keep_until=target)

    def put_back() -> None:
        state.db.execute("UPDATE leases SET deadline = ?, keep_until = ? WHERE id = ? AND deadline = ?",
                         (to_jsonable(before) if before else None, keep_before, lease.id, to_jsonable(target)))
    return put_back


def _budget_cap(state, lease, limits, seconds: int) -> tuple[float, str] | None:
    """A kept lease's extension as far as the monthly budgets pay (None: they pay for all of it, or
    none applies); refused when they pay for nothing past the deadline it holds now."""
    if limits is None:
        return None
    from .models import utcnow
    from .money.kept import extension_cap_s
    from .money.ledger import Ledger
    now = utcnow()
    found = extension_cap_s(limits, lease, Ledger(state.db), now)
    if found is None or found[0] >= seconds:
        return None
    cap_s, scope = found
    from .money.kept import recorded_deadline
    deadline = recorded_deadline(Ledger(state.db), lease)      # as another extend left it
    held_s = (deadline - now).total_seconds() if deadline else 0
    if cap_s < max(held_s, 0) + 1:
        from .errors import BudgetRefused
        raise BudgetRefused(f"{scope} has nothing left to pay for lease {lease.id} past its deadline; nothing was extended",
                            hint="fleet budget shows what is spent and held; fleet down releases a kept lease")
    return cap_s, f"the monthly budget ({scope}: its money left pays this lease's machines until then)"


def ssh_argv(lease_id: str, node: int = 0, command: list[str] | None = None, state=None) -> list[str]:
    """The `ssh` command line for a machine, with its pinned host key and lease key: nothing learnt on use."""
    from .paths import subdir
    from .state import open_state
    state = state or open_state()
    lease = state.get_lease(lease_id)
    if lease.status != "active":     # its machines are gone: their port may be someone else's now
        raise UsageError(f"lease {lease.id} is {lease.status}, not active")
    try:
        m = next(x for x in lease.machines if x.node_rank == node)
    except StopIteration:
        raise NotFound(f"lease {lease.id} has no node {node}",
                       hint=f"nodes: 0..{len(lease.machines) - 1}" if lease.machines else None) from None
    from .paths import plain_name
    known = subdir("leases") / plain_name(lease.id, "lease id") / "known_hosts"
    known.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    host_id = m.host if m.port == 22 else f"[{m.host}]:{m.port}"
    known.write_text(f"{host_id} {m.host_key}\n")
    argv = ["ssh", "-i", m.key_path, "-p", str(m.port), "-o", f"UserKnownHostsFile={known}",
            "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-o", "GlobalKnownHostsFile=/dev/null",
            f"{m.user}@{m.host}"]
    remote_cd = f"cd {shlex.quote(m.workdir + '/work')} 2>/dev/null || cd {shlex.quote(m.workdir)}"
    if command:
        from .config.command import command_line
        argv.append(f"{remote_cd}; {command_line(command)}")
    else:
        argv += ["-t", f"{remote_cd}; exec ${{SHELL:-/bin/sh}} -l"]
    return argv


def exec_ssh(argv: list[str]) -> None:
    os.execvp(argv[0], argv)

