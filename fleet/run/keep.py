"""After a run: release the lease, or keep it up (`--keep`) and extend it later (`fleet extend`)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import FleetError
from ..models import Lease, Machine, to_jsonable, utcnow
from ..parallel import parallel
from .context import Events
from .state_wait import at_once

# --keep is for looking at machines after a run ended on its own (failed ones above all); a
# cancelled, budget-stopped or broken run releases as if --keep had not been given.
KEEPABLE = ("succeeded", "failed", "setup-failed")

MAX_REMAINING_S = 366 * 24 * 3600   # longer than any lease may be kept


def release_lease(provider, state, lease_id: str, lease: Lease | None, events: Events, wait=None) -> bool:
    """Whether the machines are gone. A provider release that failed leaves them up (to their
    deadline); once it succeeded they are gone whatever the state records, so a failure to record
    it (waited out with `wait`, fleet/run/state_wait.py) never reads as machines still up: those
    would be billed as kept to their deadline."""
    try:
        if lease is not None:
            provider.release(lease)
    except Exception as exc:  # noqa: BLE001 — the watchdog still ends the machines; say so
        events.warn(f"release of {lease_id} failed ({exc}); machines end at their deadline; "
                    "run `fleet down --all` to retry")
        return False
    try:
        (wait or at_once)(lambda: state.set_lease_status(lease_id, "released"), f"lease {lease_id}'s release")
    except Exception as exc:  # noqa: BLE001 — the machines are gone: the run is still recorded as far as it can be
        events.warn(f"lease {lease_id} was released, but the state database could not record that ({exc}): "
                    f"it shows as active until `fleet down {lease_id}` records the release")
    return True


@dataclass(frozen=True)
class Extension:
    """What `--keep` / `fleet extend` got: the deadline every machine holds now, and, when that is
    less than asked, what capped it (`max_duration`, or the provider's hard end) and why."""

    asked_s: int
    until: datetime
    capped_by: str | None = None

    @property
    def granted_s(self) -> float:
        return max(0.0, (self.until - utcnow()).total_seconds())

    def describe(self) -> str:
        """`until 04:42 UTC (capped by max_duration: the lease ends at 04:42 UTC, 1h asked)`."""
        at = self.until.strftime("%H:%M:%S UTC")
        if self.capped_by is None:
            return f"until {at}"
        return f"until {at}, not the {_span(self.asked_s)} asked: capped by {self.capped_by}"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def try_keep(state, lease: Lease, keep_s: int, events: Events) -> str | None:
    """Keep the lease up for keep_s; the ISO time it is really kept until (capped by max_duration),
    or None when that failed."""
    try:
        kept = keep_lease(state, lease, keep_s, events)
    except FleetError as exc:
        events.warn(f"could not keep lease {lease.id} ({exc.one_line()}); releasing it")
        return None
    return to_jsonable(kept.until)


def keep_lease(state, lease: Lease, keep_s: int, events: Events) -> Extension:
    """Leave the lease up for keep_s (at most to its max_duration): its machines now hold that
    deadline, no heartbeat needed."""
    kept = extend_lease(state, lease, keep_s)
    events.phase("keep", f"lease {lease.id} kept {kept.describe()}: `fleet down {lease.id}` to release")
    return kept


def extend_lease(state, lease: Lease, seconds: int, provider=None) -> Extension:
    """Every machine's deadline to now + `seconds` (never past max_deadline, never earlier than a
    machine already holds it). Where the provider keeps its own hard end (Slurm's time limit:
    `HasHardLimit`), that is raised first, and the machines never get more than it granted; a
    refusal raises before any machine is touched."""
    from ..remote.ssh import connect
    limit = (lease.max_deadline - utcnow()).total_seconds()
    ttl = max(0.0, min(float(seconds), limit))
    capped_by = None
    if ttl < seconds:
        capped_by = (f"max_duration (the lease was made to end by "
                     f"{lease.max_deadline.strftime('%H:%M:%S UTC')}; it is never extended past that)")
    if provider is None:
        from ..providers import get_provider
        try:
            provider = get_provider(lease.provider)
        except FleetError:
            provider = None       # not installed here: the machines' own deadlines still move
    from ..providers.base import HasHardLimit
    if isinstance(provider, HasHardLimit):
        hard_end = provider.extend_limit(lease, utcnow() + timedelta(seconds=ttl))
        if (hard_end - utcnow()).total_seconds() < ttl - 60:   # Slurm counts whole minutes
            capped_by = f"{provider.hard_limit_name} ({hard_end.strftime('%H:%M:%S UTC')})"
        ttl = max(0.0, min(ttl, (hard_end - utcnow()).total_seconds()))
    held: list[float] = []

    def one(m: Machine) -> None:
        with connect(m, timeout=10) as s:
            out = s.run([m.python, m.agent_path, "extend", "--state-dir", m.state_dir, "--ttl", f"{ttl:.3f}"])
        held.append(_remaining_s(out.stdout, ttl))

    try:
        parallel(lease.machines, one)
    except BaseException:
        if held:     # some moved (the others failed): the state holds the latest any of them holds now,
            until = utcnow() + timedelta(seconds=max(held))    # never less than another extend recorded
            from ..money.kept import recorded_deadline
            from ..money.ledger import Ledger
            until = max(until, recorded_deadline(Ledger(state.db), lease))
            state.set_lease_deadline(lease.id, until, keep_until=until)
        raise
    # What every machine holds now: the agent keeps a later deadline it was already given.
    until = utcnow() + timedelta(seconds=min(held, default=ttl))
    state.set_lease_deadline(lease.id, until, keep_until=until)
    from ..money.kept import move_marker
    move_marker(state.db, lease.id, until)   # the start-up check's copy of the deadline
    from ..heartbeat import publish_once
    problem = publish_once(lease, until, provider)     # e.g. AWS: the reaper's fleet:deadline tag
    if problem:
        import logging
        logging.getLogger("fleet").warning(problem)
    return Extension(asked_s=int(seconds), until=until, capped_by=capped_by)


def _remaining_s(agent_output: str, asked: float) -> float:
    """The agent's answer to `extend` ({"remaining_s": …}); what was asked where it said nothing."""
    import json
    import math
    try:
        remaining = float(json.loads(agent_output.strip().splitlines()[-1])["remaining_s"])
    except (ValueError, KeyError, IndexError, TypeError, OverflowError):
        return asked
    # The machine's word: NaN, a negative or an absurd figure would set the lease's recorded deadline
    # (and so where its kept time stops being billed) anywhere; it counts as saying nothing.
    return remaining if math.isfinite(remaining) and 0 <= remaining <= MAX_REMAINING_S else asked


def keep_within_budget(ctx, keep_s: int) -> int:
    """Kept time is billed like run time, so `--keep` never outlives what the run's budget (and the
    monthly ones) can still pay at the lease's burn rate; 0: nothing left, release."""
    cap = ctx.budget.deadline_cap_s(ctx) if ctx.budget is not None else None
    if cap is None or cap >= keep_s:
        return keep_s
    if cap < 1:
        ctx.events.warn("--keep: the budget has nothing left to pay for keeping the machines; releasing them")
        return 0
    ctx.events.warn(f"--keep capped at {int(cap)}s: the budget pays for no more at this lease's price")
    return int(cap)
