"""`fleet status`: the live leases, each machine as its provider last said, from plain rows.

Built for a thousand leases (docs/control-plane-speed.md): two queries whatever their number
(StateStore.status_records), and no Lease or Machine objects, dataclasses or typing unless a
provider has to be asked, because importing those alone costs more than the status of an empty
state. Where each machine's state comes from:
- local machines are processes on this computer: read live, every time (providers/local/liveness.py,
  a few stat calls each);
- a provider that describes all its leases in one remote call (DescribesLeases, AWS) is asked when
  what it said last is missing or older than its `observed_state_ttl_s` (AWS: 60 s), or on
  `refresh=True` (`fleet status --refresh`); its answer is remembered in the state
  (machine_observations) and shown with its age. A remembered "running" from before a deadline that
  has passed since is not used: whether the machine outlived its deadline (orphaned) needs a new answer;
- any other provider is asked every time, lease by lease (`describe`).
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

LIVE_READ = "local"     # the provider whose machines are read on this computer, without the provider


def status(state=None, *, user: str | None = None, check: bool = True, refresh: bool = False) -> list[dict]:
    """Active leases as views (dicts ready for JSON); `check=False` (`--fast`) asks no provider and
    reads nothing live (every machine unknown); `refresh=True` asks every provider now."""
    from .state import open_state
    state = state or open_state()
    records = state.status_records(user=user)
    if not records:
        return []
    now = datetime.now(timezone.utc)
    damaged = {r["id"] for r in records if not _times_readable(r) or r.get("damaged")}
    observed = _observe(state, [r for r in records if r["id"] not in damaged] if damaged else records, now,
                        check=check, refresh=refresh)
    views = []
    for i, record in enumerate(records):
        views.append(view(record, observed.pop(record["id"], None), now))
        if record["id"] in damaged:
            views[-1]["health"] = "damaged"     # shown, never asked about: `fleet down` sets it aside
        records[i] = None      # freed as it goes: the next views reuse its memory (fewer page faults)
    return views


def _times_readable(record: dict) -> bool:
    """False for a row whose times do not parse (damaged or edited): those read as unknown (None)."""
    ok = True
    for key in ("created_at", "deadline", "max_deadline", "keep_until"):
        try:
            _time(record[key])
        except (TypeError, ValueError):
            record[key], ok = None, False
    return ok


def view(record: dict, states: dict | None, now: datetime) -> dict:
    """One lease view: `record` as StateStore.status_records gives it, `states` {machine id: (state,
    detail, observed_at ISO)} (None: the provider was not asked or did not answer: unknown)."""
    machines = []
    gpus = alive = 0
    for m in record["machines"]:       # a thousand of these per `fleet status`: each lookup once
        get = m.get
        ref = get("provider_ref") or _NO_REF
        if ref.__class__ is not dict:   # a damaged or planted row: never the end of `fleet status`
            ref = _NO_REF
        slots = get("gpu_slots") or []
        if slots.__class__ is not list:     # decoded documents hold lists already: no copy of those
            slots = list(slots)
        gpus += len(slots)
        mid = m["id"]
        st = states.get(mid) if states else None
        if st:
            state, observed_at = st[0], st[2]
            if state == "running":
                alive += 1
        else:
            state, observed_at = "unknown", None
        machines.append({"id": mid, "rank": m["node_rank"], "address": f"{m['user']}@{m['host']}:{m['port']}",
                         "gpus": slots, "instance_type": get("instance_type", ""),
                         "lifecycle": "spot" if get("spot") else "on-demand", "zone": get("zone", ""),
                         "price_per_hour": _price(get("price_per_hour")),
                         "state": state, "observed_at": observed_at,
                         "simulated_gpus": bool(ref.get("simulated_gpus")),
                         "isolation": ref.get("isolation", "unknown")})
    deadline = record["deadline"]
    if machines and all(m["state"] == "unknown" for m in machines):
        health = "unchecked"   # nobody was asked (--fast, no answer yet): not "gone"
    else:
        health = lease_health(record["status"], len(machines), alive, deadline, now)
    return {"id": record["id"], "provider": record["provider"], "template": record["template"],
            "project": record["project"], "user": record["owner"], "status": record["status"], "health": health,
            "gpus": gpus, "created_at": _iso(record["created_at"]), "deadline": _iso(deadline),
            "max_deadline": _iso(record["max_deadline"]), "keep_until": _iso(record["keep_until"]),
            "machines": machines, "runs": record["runs"]}


_NO_REF: dict = {}      # a machine without a provider_ref (read only)


def lease_health(status: str, machines: int, alive: int, deadline, now: datetime) -> str:
    """A lease's health from how many of its machines there are and how many are running."""
    if status == "leasing" and not machines:
        return "leasing"
    if machines and not alive:
        return "gone"
    if alive and deadline and now > (_readable_time(deadline) or now):
        # Machines still up past the last deadline a heartbeat confirmed: no controller extends
        # them (it died); their watchdog or the reaper ends them.
        return "orphaned"
    if alive < machines:
        return "degraded"
    return "up"


def remembered_note(views: list[dict], now: datetime | None = None) -> str | None:
    """One line saying which machine states are remembered answers, and how old the oldest is."""
    return remembered_note_of({m["observed_at"] for v in views for m in v["machines"] if m["observed_at"]}, now)


def remembered_note_of(times: set, now: datetime | None = None) -> str | None:
    """remembered_note from the machines' observed_at times."""
    now = now or datetime.now(timezone.utc)
    old = [t for t in times if (now - _time(t)).total_seconds() >= 1]
    if not old:
        return None
    age = int((now - _time(min(old))).total_seconds())
    return (f"machine states as their provider reported them up to {age // 60}m{age % 60:02d}s ago "
            "(`fleet status --refresh` asks now)")


# -- where the states come from -------------------------------------------------------------------
def _observe(state, records: list[dict], now: datetime, *, check: bool, refresh: bool) -> dict[str, dict]:
    observed: dict[str, dict] = {}
    if not check:                     # --fast: nothing asked, nothing read live: every machine unknown
        return observed
    now_iso = now.isoformat()
    soon = now + FUTURE_SLACK
    ask: dict[str, list[dict]] = {}
    machine_state = None
    for r in records:                 # loops, not comprehensions: each of those is a call (1,000 leases)
        if r["provider"] == LIVE_READ:
            if machine_state is None:
                from .providers.local.liveness import machine_state
            states = observed[r["id"]] = {}
            for m in r["machines"]:
                state_now, detail = machine_state(m.get("provider_ref") or _NO_REF)
                states[m["id"]] = (state_now, detail, now_iso)
        elif not refresh and _remembered_usable(r, now, soon):
            states = observed[r["id"]] = {}
            for m in r["machines"]:
                states[m["id"]] = m["observed"][:3]
        else:
            ask.setdefault(r["provider"], []).append(r)
    for name, group in ask.items():
        observed.update(_ask(state, name, group, now))
    return observed


FUTURE_SLACK = timedelta(seconds=5)   # another computer's clock this far ahead still counts as now


def _remembered_usable(record: dict, now: datetime, soon: datetime) -> bool:
    """Every machine has a remembered answer still fresh, and none predates a deadline passed since.
    An answer stamped in the future (a teammate's computer whose clock runs ahead wrote it) is not
    fresh: its fresh_until would hold for as long as that clock is ahead. `soon`: now + FUTURE_SLACK."""
    return answers_usable([m["observed"] for m in record["machines"]], record["deadline"], now, soon)


def answers_usable(answers: list, deadline, now: datetime, soon: datetime) -> bool:
    """_remembered_usable of a lease whose machines' remembered answers are `answers`."""
    if not answers:
        return False
    deadline = _time(deadline)
    passed = deadline is not None and deadline < now
    for seen in answers:
        if not seen or _time(seen[3]) <= now or _time(seen[2]) > soon or \
                (passed and _time(seen[2]) < deadline):
            return False
    return True


def _ask(state, name: str, records: list[dict], now: datetime) -> dict[str, dict]:
    """The provider's answer for these leases ({} for a provider that failed: its machines show
    unknown), remembered when the provider says for how long it may be."""
    from .leases import _provider
    from .models import Lease, Machine
    from .providers import registry
    from .providers.base import DescribesLeases
    settings = state.lease_settings([r["id"] for r in records])
    leases = [_lease(Lease, Machine, r, *settings[r["id"]]) for r in records]
    try:
        batched = issubclass(registry.provider_class(name), DescribesLeases)
        provider = _provider(name)
    except Exception:  # noqa: BLE001 — status must still list the leases
        return {}
    found: dict[str, list] = {}
    if batched:
        try:
            found = provider.describe_leases(leases)
        except Exception:  # noqa: BLE001
            found = {}
    else:
        for lease in leases:
            try:
                found[lease.id] = provider.describe(lease)
            except Exception:  # noqa: BLE001 — this lease's machines show unknown
                continue
    seen_at = datetime.now(timezone.utc)
    seen_iso = seen_at.isoformat()
    out = {lease_id: {s.machine_id: (s.state, s.detail, seen_iso) for s in states if not s.unrecorded}
           for lease_id, states in found.items()}
    ttl = provider.observed_state_ttl_s if batched else 0    # DescribesLeases declares it
    if ttl > 0 and out:
        until = (seen_at + timedelta(seconds=ttl)).isoformat()
        try:
            state.save_observations([(mid, lease_id, st, detail, seen_iso, until)
                                     for lease_id, by_machine in out.items()
                                     for mid, (st, detail, _) in by_machine.items()])
        except Exception:  # noqa: BLE001 — a state it cannot write to (read-only, locked): asked again next time
            pass
    return out


def _lease(Lease, Machine, record: dict, heartbeat_ttl_s: int, meta: dict):
    """The Lease a provider's describe takes, from a status record and the lease's settings."""
    from .models import parse_time
    machines = [Machine.from_dict({**m, "lease_id": record["id"]}) for m in record["machines"]]
    return Lease(id=record["id"], provider=record["provider"], template=record["template"], machines=machines,
                 created_at=parse_time(record["created_at"]), deadline=parse_time(record["deadline"]),
                 max_deadline=parse_time(record["max_deadline"]), project=record["project"], user=record["owner"],
                 status=record["status"], keep_until=parse_time(record["keep_until"]),
                 heartbeat_ttl_s=heartbeat_ttl_s, meta=meta)


# -- small conversions, without models (and so without dataclasses) --------------------------------
def _time(value) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        dt = value
    else:
        dt = datetime.fromisoformat(value)
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _readable_time(value) -> datetime | None:
    """_time, or None for a damaged value (the listing shows the rest; `--json` marks it damaged)."""
    try:
        return _time(value)
    except (TypeError, ValueError):
        return None


def _iso(value) -> str | None:
    """A stored time as every --json writes one (UTC, ISO 8601); fleet stores them so already."""
    if isinstance(value, str) and value.endswith("+00:00"):
        return value
    dt = _readable_time(value)   # damaged: no time shown (the listing goes on)
    return dt.astimezone(timezone.utc).isoformat() if dt else None


def _price(value) -> str:
    """As str(Decimal(...)) of the stored price, without importing decimal for the usual forms."""
    text = value if isinstance(value, str) else str(value or "0")
    if text.replace(".", "", 1).isdigit() and text[0] != "." and text[-1] != "." \
            and not (text[0] == "0" and text[1:2] not in ("", ".")):
        return text
    from decimal import Decimal
    return str(Decimal(str(value or "0")))
