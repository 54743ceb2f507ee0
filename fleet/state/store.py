"""Typed reads and writes of leases, machines and runs over either database."""
from __future__ import annotations

import json
from operator import itemgetter

from ..errors import NotFound
from .documents import FIX_HINT, CorruptRecord, object_or_empty, object_to_extend, objects_or_errors, stored_object, stored_seconds
from .prefix import no_match, prefix_match

TYPE_CHECKING = False   # as in fleet/__init__.py: `fleet status` with no lease imports neither typing nor models
if TYPE_CHECKING:
    from datetime import datetime
    from typing import Any

    from ..models import Lease, Machine


def utcnow():
    from ..models import utcnow as now
    return now()


def parse_time(value):
    from ..models import parse_time as parse
    return parse(value)


def to_jsonable(value):
    from ..models import to_jsonable as jsonable
    return jsonable(value)


def _iso(dt: datetime | None) -> str | None:
    return to_jsonable(dt) if dt else None


class StateStore:
    def __init__(self, db):
        self.db = db

    def close(self) -> None:
        self.db.close()

    # -- leases ---------------------------------------------------------------------------------
    def save_lease(self, lease: Lease) -> None:
        with self.db.transaction():
            self.db.execute(
                "INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
                " max_deadline, keep_until, heartbeat_ttl_s, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (lease.id, lease.provider, lease.template, lease.project, lease.user, lease.status,
                 _iso(lease.created_at), _iso(lease.deadline), _iso(lease.max_deadline),
                 _iso(lease.keep_until), lease.heartbeat_ttl_s, json.dumps(to_jsonable(lease.meta))))
            for m in lease.machines:
                self.db.execute("INSERT INTO machines (id, lease_id, node_rank, data) VALUES (?,?,?,?)",
                                (m.id, lease.id, m.node_rank, json.dumps(to_jsonable(m))))

    def begin_lease(self, lease_id: str, plan, meta: dict | None = None, deadline_s: int | None = None) -> None:
        """Record the lease before any machine exists, so a controller killed mid-lease leaves a trace
        that `fleet down --all` finds. `meta`: what `fleet down` needs to bill machines it finds
        unrecorded (price, first deadline); `deadline_s`: the machines' first deadline."""
        from datetime import timedelta
        now = utcnow()
        first = deadline_s if deadline_s is not None else min(plan.heartbeat_ttl_s, plan.max_duration_s)
        self.db.execute(
            "INSERT INTO leases (id, provider, template, project, owner, status, created_at, deadline,"
            " max_deadline, keep_until, heartbeat_ttl_s, meta) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (lease_id, plan.provider, plan.template.name, plan.project, plan.user, "leasing", _iso(now),
             _iso(now + timedelta(seconds=first)),
             _iso(now + timedelta(seconds=plan.max_duration_s)), None, plan.heartbeat_ttl_s,
             json.dumps(to_jsonable({**(meta or {}), "gpus": plan.gpus, "machines": plan.machine_count}))))
        self.touch_user(plan.user)

    def touch_user(self, name: str) -> None:
        """Remember who uses this state store (team mode: `fleet status --all-users`, reports by user)."""
        now = _iso(utcnow())
        self.db.execute("INSERT INTO users (name, first_seen_at, last_seen_at) VALUES (?, ?, ?)"
                        " ON CONFLICT (name) DO UPDATE SET last_seen_at = excluded.last_seen_at", (name, now, now))

    def list_users(self) -> list[dict[str, Any]]:
        return self.db.execute("SELECT name, first_seen_at, last_seen_at FROM users ORDER BY name")

    _UPSERT_MACHINE = ("INSERT INTO machines (id, lease_id, node_rank, data) VALUES (?,?,?,?)"
                       " ON CONFLICT (id) DO UPDATE SET node_rank = excluded.node_rank, data = excluded.data")

    def record_machine(self, lease_id: str, machine: Machine, deadline: datetime | None = None) -> None:
        """One machine of a lease still being made (the provider reported it from inside `lease`),
        and the lease's deadline moved to cover it: `fleet down` then releases and bills it."""
        with self.db.transaction():
            self.db.execute(self._UPSERT_MACHINE, (machine.id, lease_id, machine.node_rank,
                                                   json.dumps(to_jsonable(machine))))
            if deadline is not None:
                self.db.execute("UPDATE leases SET deadline = ? WHERE id = ?", (_iso(deadline), lease_id))

    def activate_lease(self, lease: Lease) -> None:
        with self.db.transaction():
            for m in lease.machines:   # some may be recorded already (record_machine)
                self.db.execute(self._UPSERT_MACHINE, (m.id, lease.id, m.node_rank, json.dumps(to_jsonable(m))))
            self.db.execute("UPDATE leases SET status = 'active', deadline = ? WHERE id = ?",
                            (_iso(lease.deadline), lease.id))

    def release_machines(self, lease_id: str, machine_ids: list[str], at: datetime) -> None:
        """Some machines of a live lease were released (the lease goes on with the rest): they leave
        its machine list, and the lease's meta keeps when each went (`released_machines`)."""
        if not machine_ids:
            return
        with self.db.transaction():
            rows = self.db.execute("SELECT meta FROM leases WHERE id = ?", (lease_id,))
            meta = object_to_extend(rows[0]["meta"], f"lease {lease_id}'s meta") if rows else {}
            gone = dict(meta.get("released_machines") or {})
            gone.update({mid: _iso(at) for mid in machine_ids})
            meta["released_machines"] = gone
            self.db.execute("UPDATE leases SET meta = ? WHERE id = ?", (json.dumps(to_jsonable(meta)), lease_id))
            marks = ",".join("?" * len(machine_ids))
            self.db.execute(f"DELETE FROM machines WHERE lease_id = ? AND id IN ({marks})", [lease_id, *machine_ids])

    def _lease_from_row(self, row: dict[str, Any], machines: list[Machine]) -> Lease:
        from ..models import Lease, parse_time
        times = {}
        for key in ("created_at", "deadline", "max_deadline", "keep_until"):
            try:
                times[key] = parse_time(row[key])
            except (TypeError, ValueError):
                raise CorruptRecord(f"state: lease {row['id']}'s {key} is not a time: {str(row[key])[:40]!r}",
                                    hint=FIX_HINT) from None
        return Lease(
            id=row["id"], provider=row["provider"], template=row["template"], machines=machines,
            project=row["project"], user=row["owner"], status=row["status"],
            heartbeat_ttl_s=stored_seconds(row["heartbeat_ttl_s"]),
            meta=stored_object(row["meta"], f"lease {row['id']}'s meta"), **times)

    def _machines_by_lease(self, lease_ids: list[str],
                           errors: dict[str, CorruptRecord] | None = None) -> dict[str, list[Machine]]:
        """Each lease's machines. With `errors`, a machine record that cannot be read is noted there
        against its lease (the others are read on); without it, it raises CorruptRecord."""
        out: dict[str, list[Machine]] = {i: [] for i in lease_ids}
        if not lease_ids:
            return out
        from ..models import Machine
        # Chunk the IN list: SQLite caps bound parameters.
        for start in range(0, len(lease_ids), 500):
            chunk = lease_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for r in self.db.execute(
                    f"SELECT id, lease_id, data FROM machines WHERE lease_id IN ({marks}) ORDER BY node_rank", chunk):
                try:
                    out[r["lease_id"]].append(Machine.from_dict(stored_object(r["data"], f"machine {r['id']}'s record")))
                except CorruptRecord as exc:
                    if errors is None:
                        raise
                    errors.setdefault(r["lease_id"], exc)
        return out

    def get_lease(self, lease_id: str) -> Lease:
        rows = self.db.execute("SELECT * FROM leases WHERE id = ?", (lease_id,))
        if not rows:
            rows = prefix_match(self.db, "leases", "id", lease_id, "created_at")
            if len(rows) != 1:
                raise NotFound(no_match("lease", lease_id, rows), hint="see `fleet status`")
        row = rows[0]
        return self._lease_from_row(row, self._machines_by_lease([row["id"]])[row["id"]])

    def list_leases(self, *, active_only: bool = True, user: str | None = None,
                    damaged: list[str] | None = None) -> list[Lease]:
        """With `damaged`, a lease whose row cannot be read is left out and one line saying why is
        appended there; without it, such a row raises CorruptRecord."""
        sql, params = "SELECT * FROM leases", []
        where = []
        if active_only:
            where.append("status IN ('active', 'leasing')")
        if user is not None:   # "" is a name no lease has, not everyone's
            where.append("owner = ?")
            params.append(user)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.execute(sql + " ORDER BY created_at", params)
        unreadable: dict[str, CorruptRecord] | None = None if damaged is None else {}
        machines = self._machines_by_lease([r["id"] for r in rows], unreadable)
        if damaged is None:
            return [self._lease_from_row(r, machines[r["id"]]) for r in rows]
        out = []
        for r in rows:
            try:
                if r["id"] in unreadable:
                    raise unreadable[r["id"]]
                out.append(self._lease_from_row(r, machines[r["id"]]))
            except CorruptRecord as exc:
                damaged.append(f"lease {r['id']} set aside: {exc.one_line()}")
        return out

    def has_leases_of(self, provider: str) -> bool:
        """Whether this state ever held a lease of `provider` (a sweep for its leftovers can skip
        asking a provider fleet never used here)."""
        return bool(self.db.execute("SELECT 1 FROM leases WHERE provider = ? LIMIT 1", (provider,)))

    def set_lease_status(self, lease_id: str, status: str) -> None:
        released = _iso(utcnow()) if status != "active" else None
        self.db.execute("UPDATE leases SET status = ?, released_at = ? WHERE id = ?", (status, released, lease_id))

    def mark_release_started(self, lease_id: str) -> str:
        """Before destroying a lease's machines from outside its run (`fleet down`): its controller,
        seeing them vanish, reads this and reports the release rather than a failed experiment.
        The status stays active until the release is done (an interrupted `down` finds it again)."""
        when = _iso(utcnow())
        self.db.execute("UPDATE leases SET released_at = ? WHERE id = ? AND released_at IS NULL", (when, lease_id))
        return when

    def unmark_release_started(self, lease_id: str, when: str) -> None:
        """A release that failed (nothing, or not all, destroyed) is not one: the lease's controller
        and `fleet run` on a kept lease go on using it. Only the mark `when` this release wrote."""
        self.db.execute("UPDATE leases SET released_at = NULL WHERE id = ? AND released_at = ? AND status IN "
                        "('active', 'leasing')", (lease_id, when))

    def lease_status(self, lease_id: str) -> tuple[str | None, datetime | None]:
        """(status, released_at) of one lease by exact id; (None, None) when there is none.
        released_at with status active: a release from outside has begun (mark_release_started)."""
        rows = self.db.execute("SELECT status, released_at FROM leases WHERE id = ?", (lease_id,))
        return (rows[0]["status"], parse_time(rows[0]["released_at"])) if rows else (None, None)

    def set_lease_deadline(self, lease_id: str, deadline: datetime, keep_until: datetime | None = None) -> None:
        self.db.execute("UPDATE leases SET deadline = ?, keep_until = COALESCE(?, keep_until) WHERE id = ?",
                        (_iso(deadline), _iso(keep_until), lease_id))

    # -- `fleet status` (fleet/lease_status.py) --------------------------------------------------
    # What a lease view shows; heartbeat_ttl_s and meta only when a provider is asked (lease_settings).
    _STATUS_LEASE = ("id", "provider", "template", "project", "owner", "status", "created_at", "deadline",
                     "max_deadline", "keep_until")

    def lease_settings(self, lease_ids: list[str]) -> dict[str, tuple[int, dict[str, Any]]]:
        """(heartbeat_ttl_s, meta) of these leases: what a provider's describe needs of a lease
        beyond its status record (fleet/lease_status.py, for the leases it asks about)."""
        out = {}
        for start in range(0, len(lease_ids), 500):       # SQLite caps bound parameters
            chunk = lease_ids[start:start + 500]
            for lease_id, ttl, meta in self.db.rows(
                    f"SELECT id, heartbeat_ttl_s, meta FROM leases WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[lease_id] = (ttl, stored_object(meta, f"lease {lease_id}'s meta"))
        return out

    def status_records(self, *, user: str | None = None, runs_limit: int = 200) -> list[dict[str, Any]]:
        """Live leases as plain dicts, oldest first, from two queries however many there are: the
        lease's row with "machines" (each machine's stored document, with "observed": what its
        provider last said, (state, detail, observed_at, fresh_until) or None), and "runs" (its most
        recent runs, newest first, at most max(runs_limit, 2 × leases) in all). No Lease or Machine
        is built, and rows come as tuples: importing dataclasses alone costs `fleet status` more
        than an empty state's whole answer."""
        where, params = "l.status IN ('active', 'leasing')", []
        if user is not None:
            where += " AND l.owner = ?"
            params.append(user)
        with self.db.mapped_reads():
            return self._status_records(where, params, runs_limit)

    def _status_records(self, where: str, params: list, runs_limit: int) -> list[dict[str, Any]]:
        keys = self._STATUS_LEASE
        # Leases and machines in one query (a lease with no machine: one row, its machine columns
        # NULL), unsorted: ORDER BY would have SQLite copy every row, machine documents included
        # (~0.5 MB at 1,000 leases), into a sorter. Leases are put in created_at order here (ISO
        # 8601 text, compared as SQL compares it), a lease's machines in rank order.
        leases: list[dict[str, Any]] = []
        by_id: dict[str, dict[str, Any]] = {}
        several = []
        data_at = len(keys) + 1
        # A batch at a time: its rows and documents are freed before the next is read.
        for rows in self.db.row_batches(
                f"SELECT {', '.join('l.' + k for k in keys)}, m.node_rank, m.data, o.state, o.detail, o.observed_at,"
                " o.fresh_until FROM leases l LEFT JOIN machines m ON m.lease_id = l.id"
                f" LEFT JOIN machine_observations o ON o.machine_id = m.id WHERE {where}", params, 200):
            docs = iter(objects_or_errors([row[data_at] for row in rows if row[data_at] is not None],
                                          "a machine's record"))
            for row in rows:
                lease = by_id.get(row[0])
                if lease is None:
                    lease = by_id[row[0]] = dict(zip(keys, row))
                    lease["machines"], lease["runs"] = [], []
                    leases.append(lease)
                if row[data_at] is None:         # no machine (yet)
                    continue
                machine = next(docs)
                if isinstance(machine, CorruptRecord):   # the lease is shown damaged, the others as they are
                    lease["damaged"] = f"machine {row[data_at - 1]}: {machine.one_line()}"
                    continue
                machine["node_rank"] = row[data_at - 1]
                seen = row[data_at + 1:]
                machine["observed"] = None if seen[0] is None else seen
                machines = lease["machines"]
                if len(machines) == 1:
                    several.append(machines)
                machines.append(machine)
        if not leases:
            return leases
        leases.sort(key=_by_created)
        for machines in several:
            machines.sort(key=_by_rank)
        for lease_id, runs in self.status_runs(where, params, len(leases), runs_limit).items():
            by_id[lease_id]["runs"] = runs
        return leases

    def status_runs(self, where: str, params: list, leases: int, runs_limit: int = 200) -> dict[str, list[dict]]:
        """{lease id: its runs, newest first} of the leases `where` selects (`leases` of them), at
        most max(runs_limit, 2 × leases) runs in all; detached ones whose supervisor went silent
        marked (fleet/state/status_rows.py shares it)."""
        by_lease: dict[str, list[dict]] = {}
        for run_id, lease_id, status, exit_code, meta in self.db.rows(
                # Only a meta that mentions it is read and decoded (most runs' do not).
                "SELECT r.id, r.lease_id, r.status, r.exit_code,"
                " CASE WHEN r.meta LIKE '%\"detached\"%' THEN r.meta END FROM runs r JOIN leases l ON l.id = r.lease_id"
                f" WHERE {where} ORDER BY r.started_at DESC LIMIT ?", [*params, max(runs_limit, 2 * leases)]):
            detached = meta is not None and bool(object_or_empty(meta, f"run {run_id}'s meta").get("detached"))
            run = {"id": run_id, "status": status, "exit_code": exit_code, "detached": detached}
            runs = by_lease.get(lease_id)
            if runs is None:
                runs = by_lease[lease_id] = []
            runs.append(run)
        self._mark_unsupervised([r for runs in by_lease.values() for r in runs
                                 if r["detached"] and r["status"] == "running"])
        return by_lease

    def _mark_unsupervised(self, runs: list[dict[str, Any]]) -> None:
        """Detached runs whose supervisor has gone silent (fleet/run/supervisor_beat.py) get
        "supervisor_gone": why; one more query, only when a detached run is running."""
        if not runs:
            return
        from ..run.supervisor_beat import base_run_id, beat_ages, stale_reason
        beats = beat_ages(self, [r["id"] for r in runs])
        for run in runs:
            reason = stale_reason(beats.get(base_run_id(run["id"])))
            if reason:
                run["supervisor_gone"] = reason

    def save_observations(self, rows: list[tuple]) -> None:
        """What a provider said about machines: (machine_id, lease_id, state, detail, observed_at,
        fresh_until) each, replacing what it said before; rows of leases no longer live go."""
        with self.db.transaction():
            self.db.executemany(
                "INSERT INTO machine_observations (machine_id, lease_id, state, detail, observed_at, fresh_until)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (machine_id) DO UPDATE SET lease_id = excluded.lease_id,"
                " state = excluded.state, detail = excluded.detail, observed_at = excluded.observed_at,"
                " fresh_until = excluded.fresh_until", rows)
            self.db.execute("DELETE FROM machine_observations WHERE lease_id NOT IN"
                            " (SELECT id FROM leases WHERE status IN ('active', 'leasing'))")

    # -- runs -----------------------------------------------------------------------------------
    def create_run(self, run_id: str, *, lease_id: str | None, project: str, user: str, command: str,
                   log_path: str, output_dir: str, meta: dict | None = None, masker=None) -> None:
        """`masker` (fleet.masking.Masker, default: FLEET_SECRET_NAMES only) redacts secret values
        from the command and meta before they are stored."""
        # The row names this process as the run's controller: whoever finds the run still running
        # with that process gone ends it as lost (fleet/lost_runs.py).
        from ..lost_runs import controller_identity
        mask = _redacting(masker)
        resumes = (meta or {}).get("resumed_from")
        with self.db.transaction():
            if resumes:   # one attempt at a time continues a run: two at once billed two sets of machines
                from .resumes import refuse_second_resume
                refuse_second_resume(self, resumes)
            self.db.execute(
                "INSERT INTO runs (id, lease_id, project, owner, command, status, started_at, log_path, output_dir,"
                " meta) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, lease_id, project, user, mask(command), "running", _iso(utcnow()), log_path, output_dir,
                 json.dumps(mask.mask_obj(to_jsonable({"controller": controller_identity(), **(meta or {})})))))

    def finish_run(self, run_id: str, status: str, exit_code: int | None, meta_update: dict | None = None,
                   masker=None) -> None:
        mask = _redacting(masker)
        with self.db.transaction():
            rows = self.db.execute("SELECT meta FROM runs WHERE id = ?", (run_id,))
            meta = object_to_extend(rows[0]["meta"], f"run {run_id}'s meta") if rows else {}
            meta.update(mask.mask_obj(to_jsonable(meta_update or {})))
            self.db.execute("UPDATE runs SET status = ?, exit_code = ?, ended_at = ?, meta = ? WHERE id = ?",
                            (status, exit_code, _iso(utcnow()), json.dumps(meta), run_id))

    def get_run(self, run_id: str) -> dict[str, Any]:
        rows = self.db.execute("SELECT * FROM runs WHERE id = ?", (run_id,))
        if not rows:
            rows = prefix_match(self.db, "runs", "id", run_id)
            if len(rows) != 1:
                raise NotFound(no_match("run", run_id, rows), hint="see `fleet runs ls`")
        row = rows[0]
        row["meta"] = stored_object(row["meta"], f"run {row['id']}'s meta")
        return row

    def list_runs(self, *, lease_id: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        if lease_id:
            rows = self.db.execute("SELECT * FROM runs WHERE lease_id = ? ORDER BY started_at DESC LIMIT ?",
                                   (lease_id, limit))
        else:
            rows = self.db.execute("SELECT * FROM runs ORDER BY started_at DESC LIMIT ?", (limit,))
        for r in rows:
            r["meta"] = stored_object(r["meta"], f"run {r['id']}'s meta")
        return rows


_by_rank = itemgetter("node_rank")
_by_created = itemgetter("created_at")


def _redacting(masker):
    from ..masking import Masker
    return (masker or Masker.for_config(None)).redacting()
