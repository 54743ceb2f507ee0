"""`fleet status` as the shared table model (fleet/render): one row per lease view (leases.status).
Kept apart from leases.py so that `fleet status` loads only what it renders."""
from __future__ import annotations

from datetime import datetime, timezone   # not models: `fleet status` imports no dataclasses

from .render.table import Column, Table

STATUS_COLUMNS = ("lease", "provider", "launched", "user", "health", "machines", "gpus", "deadline in", "runs")
SIMULATED_NOTE = "local GPUs are simulated slots (CUDA_VISIBLE_DEVICES is set, no GPU is attached)"


def status_table(views: list[dict]):
    """`fleet status` as the shared table model (fleet/render): one row per lease."""
    now = datetime.now(timezone.utc)
    rows = []
    for v in views:             # plain loops, not comprehensions: each of those is a call (1,000 rows)
        machines, runs = v["machines"], v["runs"]
        up_count = 0
        for m in machines:
            if m["state"] == "running":
                up_count += 1
        shown = _runs_cell(runs)
        rows.append((v["id"], v["provider"], launched(v), v["user"], v["health"],
                     f"{up_count}/{len(machines)}", str(v["gpus"]), _remaining(v["deadline"], now), shown))
    return _table(rows)


def _runs_cell(runs: list) -> str:
    """The RUNS cell: the lease's last two runs at most."""
    if not runs:
        return "-"
    if len(runs) == 1:
        return _run_cell(runs[0])
    return f"{_run_cell(runs[0])}, {_run_cell(runs[1])}"


def _table(rows: list[tuple]) -> Table:
    columns = [Column(c, no_wrap=c in ("lease", "runs")) for c in STATUS_COLUMNS]
    return Table(columns, rows, title="fleet leases", empty="no live leases")


def status_from_rows(leases: list[tuple]) -> tuple[Table, list[str]] | None:
    """status_table and status_notes of the live leases, the same text, made straight from the
    state's rows (fleet/state/status_rows.py `table_rows`): no record or view dicts per lease or
    machine, only the fields the table shows. None where those rows cannot serve (a lease whose
    provider is to be asked now): the caller then takes the views' path."""
    from .lease_status import _NO_REF, FUTURE_SLACK, LIVE_READ, _iso, answers_usable, lease_health, remembered_note_of
    from .state.status_rows import DEADLINE, ID, OWNER, PROVIDER, STATUS, TEMPLATE
    now = datetime.now(timezone.utc)
    now_iso, soon = now.isoformat(), now + FUTURE_SLACK
    machine_state = None
    rows, times, simulated = [], set(), False
    for lease, machines, runs in leases:       # plain loops (1,000 rows), as status_table
        if lease[PROVIDER] == LIVE_READ:       # read live, as lease_status._observe does
            if machine_state is None:
                from .providers.local.liveness import machine_state
            alive = 0
            for m in machines:
                if machine_state(m[4] or _NO_REF)[0] == "running":
                    alive += 1
            if machines:
                times.add(now_iso)
        elif answers_usable([m[5] for m in machines], lease[DEADLINE], now, soon):
            alive = 0
            for m in machines:
                seen = m[5]
                if seen[0] == "running":
                    alive += 1
                if seen[2]:
                    times.add(seen[2])
        else:
            return None                         # its provider is to be asked now: the views' path does
        gpus = 0
        for kind, spot, zone, slots, ref, _ in machines:
            slots = slots or ()
            gpus += len(slots if slots.__class__ is list else list(slots))
            if not simulated and ref.__class__ is dict and ref.get("simulated_gpus"):   # planted: anything
                simulated = True
        template = lease[TEMPLATE]
        if len(machines) == 1:
            kind, spot, zone = machines[0][:3]
            shown_as = _one_machine(kind, "spot" if spot else "on-demand", zone, template)
        else:
            shown_as = launched({"template": template, "machines": [
                {"instance_type": "" if kind is None else kind, "lifecycle": "spot" if spot else "on-demand",
                 "zone": zone} for kind, spot, zone, *_ in machines]})
        shown = _runs_cell(runs)
        rows.append((lease[ID], lease[PROVIDER], shown_as, lease[OWNER],
                     lease_health(lease[STATUS], len(machines), alive, lease[DEADLINE], now),
                     f"{alive}/{len(machines)}", str(gpus), _remaining(_iso(lease[DEADLINE]), now), shown))
    remembered = remembered_note_of(times)
    return _table(rows), ([SIMULATED_NOTE] if simulated else []) + ([remembered] if remembered else [])


def _run_cell(run: dict) -> str:
    return f"{run['id']} ({run['status']}{', supervisor gone' if run.get('supervisor_gone') else ''})"


def launched(view: dict) -> str:
    """What the lease is made of: `2 × g6.12xlarge spot us-east-1a (aws-8gpu)`; just the template
    where its machines are the template itself (local)."""
    machines = view["machines"]
    if len(machines) == 1:      # most leases: the same text without grouping (1,000 rows of `fleet status`)
        m = machines[0]
        return _one_machine(m.get("instance_type"), m.get("lifecycle", "on-demand"), m.get("zone", ""), view["template"])
    groups: dict[tuple[str, str, str], int] = {}
    for m in machines:
        key = (m.get("instance_type") or view["template"], m.get("lifecycle", "on-demand"), m.get("zone", ""))
        groups[key] = groups.get(key, 0) + 1
    if not groups:
        return view["template"]
    parts = [f"{n} × {kind}" + (" spot" if lifecycle == "spot" else "") + (f" {zone}" if zone else "")
             for (kind, lifecycle, zone), n in groups.items()]
    kinds = {kind for kind, _, _ in groups}
    return ", ".join(parts) + ("" if kinds == {view["template"]} else f" ({view['template']})")


def _one_machine(kind, lifecycle, zone, template: str) -> str:
    kind = kind or template
    return (f"1 × {kind}" + (" spot" if lifecycle == "spot" else "") + (f" {zone}" if zone else "")
            + ("" if kind == template else f" ({template})"))


def status_notes(views: list[dict]) -> list[str]:
    from .lease_status import remembered_note
    simulated = any(m["simulated_gpus"] for v in views for m in v["machines"])
    remembered = remembered_note(views)
    return ([SIMULATED_NOTE] if simulated else []) + ([remembered] if remembered else [])


def _remaining(iso: str | None, now) -> str:
    if not iso:
        return "-"
    when = datetime.fromisoformat(iso)
    seconds = int(((when if when.tzinfo else when.replace(tzinfo=timezone.utc)) - now).total_seconds())
    if seconds <= 0:
        return "passed"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
