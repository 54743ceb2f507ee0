"""`fleet runs diff A B`: what differs between two recorded runs, by concern.

    code         commit, code snapshot (files added/removed/changed), uncommitted diff, subdirectory
    data         each [data] entry's snapshot id, with the files that changed between the two, and
                 the checkpoints a resumed attempt started from
    environment  image, machine, GPU, driver, OS, Python, packages, lock files (fleet/environment/diff.py)
    parameters   the command and every recorded configuration key (setup, gpus, template, env, …)

Bookkeeping that always differs (run ids, times, cost, outputs, the chain) is not a difference.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..environment.diff import Change, diff_environments
from ..environment.model import RunEnvironment
from ..render import Bullets, Column, Document, Heading, Paragraph, Table
from ..render.markdown import code
from .chain import RunRecord

AREAS = ("code", "data", "environment", "parameters")
MAX_FILES = 20          # files named per changed snapshot; the count is always complete
# Recorded config keys that are not parameters of the experiment (they name or bill it).
NOT_PARAMETERS = frozenset({"project", "name", "budget", "store"})


@dataclass(frozen=True)
class RunDiff:
    a: str
    b: str
    changes: dict[str, list[Change]] = field(default_factory=dict)   # area → changes, every area present

    @property
    def identical(self) -> bool:
        return not any(self.changes.values())

    def to_json(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "identical": self.identical,
                "differences": {area: [c.to_json() for c in self.changes.get(area, [])] for area in AREAS}}


def _files(store_url: str, a: str | None, b: str | None) -> str | None:
    """'N files changed: x, y' between two snapshots, when both are still in the store."""
    if not a or not b:
        return None
    try:
        from ..snapshots import diff, open_store
        d = diff(open_store(store_url or None), a, b)
    except Exception:  # noqa: BLE001 — a snapshot gone from the store still differs by id
        return None
    names = [f"+{p}" for p in d.added] + [f"-{p}" for p in d.removed] + [f"~{p}" for p in d.changed]
    shown = ", ".join(names[:MAX_FILES]) + (f", … ({len(names) - MAX_FILES} more)" if len(names) > MAX_FILES else "")
    return f"{len(names)} file(s) differ: {shown}" if names else "same files"


def _short(sid: str | None) -> str | None:
    return sid[:12] if sid else None


def code_changes(a: RunRecord, b: RunRecord) -> list[Change]:
    out = []
    if a.code_commit != b.code_commit:
        out.append(Change("commit", "", a.code_commit, b.code_commit))
    if a.code_subdir != b.code_subdir:
        out.append(Change("subdirectory", "", a.code_subdir or "/", b.code_subdir or "/"))
    if a.code_snapshot != b.code_snapshot:
        files = _files(a.store, a.code_snapshot, b.code_snapshot) if a.store == b.store else None
        out.append(Change("snapshot", files or "", _short(a.code_snapshot), _short(b.code_snapshot)))
    if a.code_dirty_snapshot != b.code_dirty_snapshot:
        files = (_files(a.store, a.code_dirty_snapshot, b.code_dirty_snapshot) if a.store == b.store else None)
        out.append(Change("uncommitted diff", files or "", _short(a.code_dirty_snapshot),
                          _short(b.code_dirty_snapshot)))
    return out


def data_changes(a: RunRecord, b: RunRecord) -> list[Change]:
    out = []
    for name in sorted(set(a.data_snapshots) | set(b.data_snapshots)):
        x, y = a.data_snapshots.get(name), b.data_snapshots.get(name)
        if x != y:
            files = _files(a.store, x, y) if a.store == b.store else None
            out.append(Change(name, files or "", _short(x), _short(y)))
    # A resumed attempt's checkpoints are inputs too: two runs of one code and data from other
    # checkpoints are not the same run.
    ca, cb = a.resumed_checkpoints(), b.resumed_checkpoints()
    for rank in sorted(set(ca) | set(cb)):
        if ca.get(rank) != cb.get(rank):
            files = _files(a.store, ca.get(rank), cb.get(rank)) if a.store == b.store else None
            out.append(Change(f"checkpoint of node {rank}", files or "", _short(ca.get(rank)), _short(cb.get(rank))))
    return out


def _text(value: Any) -> str | None:
    if value is None:
        return None
    import json
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def parameter_changes(a: RunRecord, b: RunRecord) -> list[Change]:
    out = []
    if a.command != b.command:
        out.append(Change("command", "", a.command, b.command))
    ca, cb = dict(a.config), dict(b.config)
    for key in sorted((set(ca) | set(cb)) - NOT_PARAMETERS - {"command"}):
        x, y = ca.get(key), cb.get(key)
        if key == "env":   # key by key: one changed variable, not the whole table
            ex, ey = x or {}, y or {}
            out += [Change("env", k, _text(ex.get(k)), _text(ey.get(k))) for k in sorted(set(ex) | set(ey))
                    if ex.get(k) != ey.get(k)]
        elif x != y:
            out.append(Change(key, "", _text(x), _text(y)))
    return out


def diff_runs(a: RunRecord, b: RunRecord) -> RunDiff:
    env = diff_environments(RunEnvironment.from_json(a.environment), RunEnvironment.from_json(b.environment))
    return RunDiff(a=a.run_id, b=b.run_id, changes={
        "code": code_changes(a, b), "data": data_changes(a, b), "environment": env,
        "parameters": parameter_changes(a, b)})


def diff_document(d: RunDiff) -> Document:
    """`fleet runs diff --md`: one section per area, its changes as a table (or "same")."""
    if d.identical:
        return Document(f"Run {code(d.a)} → {code(d.b)}",
                        [Paragraph("No differences in code, data, environment or parameters.")])
    blocks: list = []
    for area in AREAS:
        changes = d.changes.get(area, [])
        blocks.append(Heading(area.capitalize()))
        if not changes:
            blocks.append(Bullets(["same"]))
            continue
        blocks.append(Table([Column("what"), Column("change"), Column(d.a), Column(d.b)],
                            [(f"{c.area} {c.item}".strip(), c.kind, "-" if c.before is None else c.before,
                              "-" if c.after is None else c.after) for c in changes]))
    return Document(f"Run {code(d.a)} → {code(d.b)}", blocks)


def markdown(d: RunDiff) -> str:
    from ..render.markdown import to_markdown
    return to_markdown(diff_document(d))


def text_lines(d: RunDiff) -> list[str]:
    if d.identical:
        return [f"runs {d.a} and {d.b}: no differences in code, data, environment or parameters"]
    out = []
    for area in AREAS:
        for c in d.changes.get(area, []):
            out.append(f"{area:12} {c.line()}")
    return out
