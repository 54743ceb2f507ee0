"""Run records as the shared table and document models (fleet/render): the `fleet runs ls` table,
the `fleet runs show` fields, and the audit of one run (`fleet audit RUN`, Markdown)."""
from __future__ import annotations

from typing import Any, Iterable

from ..render import Column, Document, Fields, Heading, Table
from ..render.markdown import code, escape
from .chain import RunRecord

# `fleet runs show`: the record's fields in this order, empty ones left out.
SHOW_FIELDS = ("run_id", "status", "exit_status", "reason", "command", "project", "user", "provider", "template",
               "machine_types", "image_id", "code_commit", "code_subdir", "code_snapshot", "code_dirty_snapshot",
               "data_snapshots", "output_snapshot", "store", "config_hash", "started_at", "ended_at", "cost_usd",
               "rerun_of", "resumed_from", "resumed", "ci", "prev_hash", "hash")


def _short(sid: str | None) -> str:
    return sid[:12] if sid else "-"


def runs_table(records: Iterable[RunRecord]) -> Table:
    columns = [Column("run", no_wrap=True), Column("project"), Column("status", no_wrap=True), Column("exit"),
               Column("commit"), Column("data"), Column("outputs"), Column("started", no_wrap=True), Column("user")]
    rows = [(r.run_id, r.project, r.status or "-", "-" if r.exit_status is None else str(r.exit_status),
             (r.code_commit or "dir")[:10],
             ", ".join(f"{k}={_short(v)}" for k, v in sorted(r.data_snapshots.items())) or "-",
             _short(r.output_snapshot), (r.started_at or "-")[:19], r.user) for r in records]
    return Table(columns, rows, empty="no run records")


def record_json(record: RunRecord) -> dict[str, Any]:
    return dict(record.body(), seq=record.seq, hash=record.hash)


def record_lines(record: RunRecord) -> list[str]:
    """`key  value` lines for `fleet runs show`."""
    body = record_json(record)
    lines = [f"{key:20} {body[key]}" for key in SHOW_FIELDS if body.get(key) not in (None, "", {}, [])]
    if record.launched:   # after the template: what it became
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith("template ")), len(lines))
        lines.insert(at, f"{'launched':20} {launched_text(record.launched)}")
    from ..environment.render import one_line
    env = one_line(record.environment)
    return lines + ([f"{'environment':20} {env}"] if env else [])


def cost_text(r: dict) -> str:
    if r.get("cost_usd") is None:
        return "not recorded"
    if r.get("cost_shadow"):
        return f"${r['cost_usd']} (would cost: these machines carry a shadow price, nothing was billed)"
    return f"${r['cost_usd']}"


def launched_text(launched: list[dict[str, Any]]) -> str:
    """`2 × g6.12xlarge (spot, us-east-1a)` from a record's launched machines."""
    from ..run.summary import LaunchedMachine, launched_mix
    return launched_mix([LaunchedMachine(**m) for m in launched])


def audit_document(a: dict[str, Any]) -> Document:
    """One run's lineage (records.lineage.audit's result): what ran, where, on which inputs, at what
    cost, whether its snapshots and its place in the record chain are intact, on what environment."""
    r = a["record"]
    machines = launched_text(r["launched"]) if r.get("launched") else ", ".join(r.get("machine_types") or [])
    where = escape(f"{r.get('provider')} / {r.get('template')} ({machines})")
    commit = f"commit {code(r.get('code_commit') or 'none (directory snapshot)')}"
    facts = [("Status", escape(f"{r.get('status')} (exit {r.get('exit_status')})")),
             ("Command", code(r.get("command"))),
             ("Who / when", escape(f"{r.get('user')}, {r.get('started_at')} → {r.get('ended_at')}")),
             ("Where", where + (f", image {code(r['image_id'])}" if r.get("image_id") else "")),
             ("Code", commit + (f" in {code(r['code_subdir'])}" if r.get("code_subdir") else "")),
             ("Config hash", code(r.get("config_hash"))),
             ("Cost", escape(cost_text(r))),
             ("Rerun of", escape(r.get("rerun_of") or "-"))]
    snapshots = Table([Column("role"), Column("id", code=True), Column("files"), Column("bytes"), Column("intact")],
                      [(s["role"], s["id"], str(s.get("files", "?")), str(s.get("size", "?")),
                        "yes" if s["present"] else "NO: " + "; ".join(s["problems"])) for s in a["snapshots"]])
    chain = "intact" if a["chain_ok"] else "BROKEN: " + escape("; ".join(a["chain_problems"]))
    blocks: list = [Fields(facts), Heading("Snapshots"), snapshots, Heading("Record chain"),
                    Fields([("record", f"#{a['seq']}, hash {code(a['hash'])}"),
                            ("previous hash", code(r.get("prev_hash"))), ("chain", chain)])]
    if r.get("ci"):
        blocks += [Heading("CI"), Fields(sorted((escape(k), escape(v)) for k, v in r["ci"].items()))]
    from ..environment.render import environment_blocks
    return Document(f"Run {code(r['run_id'])}", blocks + environment_blocks(r.get("environment")))


def audit_markdown(a: dict[str, Any]) -> str:
    from ..render.markdown import to_markdown
    return to_markdown(audit_document(a))
