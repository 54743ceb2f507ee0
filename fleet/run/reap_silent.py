"""`fleet reap`'s judgement of leases whose detached run's supervisor is gone, on every provider
whose leases any computer with the state and the owner's credentials can release
(`ReleasedFromAnywhere`: AWS, team hosts, Slurm through the lease's recorded login node).

A detached run's supervisor runs on node 0 of its lease (AWS, team hosts), on the cluster's login
node (Slurm with `[slurm] login`) or on the computer that started it. When it dies with node 0 (an
instance terminated, a host powered off) or on its own, nothing supervises the run or extends its
lease any more, yet its other machines may keep running (and billing) until their deadline. Once the
supervisor is provably gone — its process dead on this computer, or silent for STALE_BEATS periods
(the rule `fleet status` shows as `supervisor gone`) and not found running on node 0 or the login
node where that answers (one only cut off from the state is left alone: asked to stop, it would
cancel its healthy run) — `fleet reap` releases the lease as `fleet down` does: every machine's
processes ended where its host answers (an unreachable host is marked
down, as on any release), what the machines held freed (team hosts: the GPU slots, and the lease
key's line in each reachable host login's authorized_keys), every ledger segment closed and billed,
the run ended `lost` with a one-line reason. Then the run is resumed as attempt N+1 where its own
settings allow it and a replacement can be leased (fleet/run/lost_resume.py), else it stays lost and
one line says why.

A lease this computer cannot release (the keys to its hosts are elsewhere; a provider that does
not declare the capability) is left alone with a line saying so. --dry-run says what would happen
and changes nothing."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class SilentReap:
    """What `fleet reap` did (or, dry, would do) about leases of supervisors that are gone."""

    released: list[str] = field(default_factory=list)   # lease ids released (dry: would be)
    resumed: list = field(default_factory=list)          # LostRunResume, one per run ended lost
    left: list[str] = field(default_factory=list)        # one line per such lease left alone, saying why


def reap_silent(state, *, owner: str | None, caller: str, state_url: str | None, dry_run: bool,
                events=None) -> SilentReap:
    """Judge the live leases of `owner` (None: every user's) whose detached run's supervisor is
    gone: release them, end their runs lost, resume those whose settings allow it."""
    from .lost_resume import resume_lost_runs
    silent, left = silent_runs(state, owner)
    released = sorted({r["lease_id"] for r in silent}) if dry_run else release_unsupervised(state, silent, events)
    ended = silent if dry_run else [r for r in silent if state.get_run(r["id"])["status"] == "lost"]
    resumed = resume_lost_runs(state, ended, caller=caller, dry_run=dry_run, events=events, state_url=state_url)
    return SilentReap(released, resumed, left)


def silent_runs(state, owner: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """(the running detached runs, one per live lease of `owner`, whose supervisor is gone and whose
    lease this computer can release; one line per such lease it cannot release, saying why)."""
    from ..errors import FleetError
    from ..providers import registry
    from ..providers.base import ReleasedFromAnywhere
    from .supervisor_beat import supervisor_gone
    from ..state.documents import CorruptRecord, stored_object
    damaged: list[str] = []      # one teammate's unreadable row must not stop everyone's reap
    leases = {lease.id: lease for lease in state.list_leases(active_only=True, damaged=damaged)
              if lease.status in ("leasing", "active") and (owner is None or lease.user == owner)}
    found: dict[str, dict[str, Any]] = {}
    left: dict[str, str] = {line: line for line in damaged}
    for run in state.db.execute("SELECT * FROM runs WHERE status = 'running' ORDER BY started_at"):
        lease = leases.get(run.get("lease_id"))
        if lease is None or lease.id in found or lease.id in left:
            continue
        try:
            run["meta"] = stored_object(run["meta"], f"run {run['id']}'s meta")
        except CorruptRecord as exc:
            left[lease.id] = f"lease {lease.id} left alone: {exc.one_line()}"
            continue
        if not run["meta"].get("detached"):
            continue
        gone = supervisor_gone(state, run)
        if not gone:
            continue
        try:
            provider = registry.get(lease.provider)
        except FleetError as exc:
            left[lease.id] = f"lease {lease.id} (run {run['id']}: {gone}) left alone: {exc.one_line()}"
            continue
        if not isinstance(provider, ReleasedFromAnywhere):
            left[lease.id] = (f"lease {lease.id} (run {run['id']}: {gone}) left alone: `fleet reap` does not "
                              f"release {lease.provider} leases; `fleet down {lease.id}` does")
            continue
        why = provider.why_not_released_here(lease)
        if why:
            left[lease.id] = f"lease {lease.id} (run {run['id']}: {gone}) left alone: {why}"
            continue
        if _still_runs(state, run):
            left[lease.id] = (f"lease {lease.id} (run {run['id']}: {gone}) left alone: it still runs there (cut off "
                              f"from the state?); `fleet down {lease.id}` stops it")
            continue
        found[lease.id] = run
    return list(found.values()), list(left.values())


def _still_runs(state, run: dict[str, Any]) -> bool:
    """The silent supervisor on node 0 or the login node provably still runs (the proof `fleet down`
    makes before it signals, nothing signalled): a state it cannot reach for a while, not a death.
    Asked to stop, it would cancel a healthy run, which reap does not resume."""
    from ..errors import FleetError
    from .context import SilentEvents
    from .login_launch import stop_remote_supervisor
    try:
        return bool(stop_remote_supervisor(state, run, SilentEvents(), wait_s=0, probe=True))
    except FleetError:   # unreachable: as silent as gone
        return False


def release_unsupervised(state, silent: list[dict[str, Any]], events) -> list[str]:
    """Release the live leases of detached runs whose supervisor is gone: nothing extends their
    other machines' deadlines any more, yet those may still be minutes away, and would be billed
    until then. Released as `fleet down` does (ledger closed from what the provider reports, the run
    ended `lost` naming the silence)."""
    from ..errors import FleetError
    from ..leases import down
    from .context import SilentEvents
    events = events or SilentEvents()
    gone = [run["lease_id"] for run in silent]
    if not gone:
        return []
    try:
        return down(gone, state=state, events=events,
                    released_by="`fleet reap` (the run's supervisor is silent)")
    except FleetError as exc:   # their machines still end at their deadline; `fleet down` finishes the rest
        events.warn(f"not every lease of a silent supervisor was released: {exc.one_line()}")
        return [lease_id for lease_id in gone if state.lease_status(lease_id)[0] not in ("leasing", "active")]
