"""Run records: what ran, on exactly which inputs, written once, hash-chained.

Each record's canonical JSON body includes the previous record's hash; the record's own hash is
sha256(body). Editing any stored record breaks its own hash; deleting or reordering one breaks the
next record's link. `verify_chain()` names the first record that fails either check.
Secrets never enter a record: env values whose names are configured secrets or look secret are
replaced, and every secret value is scrubbed from every field (command, setup, nested config, env
values that embed one) before the record is hashed and stored (fleet/masking.py).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from decimal import Decimal
from typing import Any, Iterator

from ..errors import IntegrityError, NotFound
from ..masking import MIN_MASKED, REDACTED, Masker, looks_credential, looks_secret, secret_by_name
from ..models import to_jsonable, utcnow

GENESIS = "0" * 64
RECORD_VERSION = 1
_CHAIN_FIELDS = ("prev_hash", "hash", "seq")
# What pins and identifies a run: ids, hashes, times, figures. Never masked: a secret value that
# happens to occur inside one (a short token in a snapshot id) would make the record point nowhere.
_PINNED_FIELDS = ("run_id", "code_commit", "code_snapshot", "code_dirty_snapshot", "data_snapshots",
                  "output_snapshot", "config_hash", "gpus", "machines", "started_at", "ended_at", "exit_status",
                  "status", "cost_usd", "cost_shadow", "lease_id", "rerun_of", "resumed_from", "resumed", "version")


@dataclass
class RunRecord:
    run_id: str
    command: str
    project: str = "default"
    user: str = "unknown"
    provider: str = ""
    template: str = ""
    image_id: str | None = None
    machine_types: list[str] = field(default_factory=list)
    code_commit: str | None = None
    code_snapshot: str | None = None
    code_dirty_snapshot: str | None = None
    code_subdir: str = ""                       # experiment dir inside the repo
    data_snapshots: dict[str, str] = field(default_factory=dict)   # name → snapshot id
    output_snapshot: str | None = None
    store: str = ""
    config_hash: str | None = None
    config: dict[str, Any] = field(default_factory=dict)            # what a rerun needs (secrets redacted)
    gpus: int | None = None
    machines: int | None = None
    env: dict[str, str] = field(default_factory=dict)               # redacted
    started_at: str | None = None
    ended_at: str | None = None
    exit_status: int | None = None
    status: str = ""                            # succeeded | failed | cancelled | budget_stopped | error | lost
    cost_usd: str | None = None                 # Decimal as string: the run's metered cost
    cost_shadow: bool = False                   # cost_usd is what it would cost (machines with a shadow price)
    lease_id: str | None = None
    rerun_of: str | None = None
    ci: dict[str, Any] = field(default_factory=dict)
    # Why fleet ended the run itself (a `lost` run: controller gone), or which machines' outputs did not
    # all come home (output_snapshot then holds only the files that did, each one complete).
    reason: str | None = None
    resumed_from: str | None = None             # the run (or attempt) whose checkpoints this one resumed
    # What a resumed attempt started from, an input like its code: {"attempt": N, "checkpoints": {rank:
    # snapshot id}} ({} when nothing was restored). None in records made before it was kept.
    resumed: dict[str, Any] | None = None
    attempts: list[dict[str, Any]] = field(default_factory=list)   # a recovered run: every attempt, this one last
    # The machines' environment (fleet.environment.RunEnvironment.to_json()): image, GPU, driver, Python,
    # packages with hashes, the wheels snapshot a rerun installs from. Empty in records made before it.
    environment: dict[str, Any] = field(default_factory=dict)
    # Each machine as launched (fleet.run.summary.LaunchedMachine as JSON: rank, id, instance type,
    # spot/on-demand, zone, price per hour). Empty in records made before it.
    launched: list[dict[str, Any]] = field(default_factory=list)
    version: int = RECORD_VERSION
    # chain fields, set by append_record
    prev_hash: str = ""
    hash: str = ""
    seq: int | None = None

    def body(self) -> dict[str, Any]:
        d = to_jsonable(asdict(self))
        for k in ("hash", "seq"):
            d.pop(k, None)
        return d

    @classmethod
    def from_body(cls, body: dict[str, Any], *, hash: str = "", seq: int | None = None) -> "RunRecord":
        known = {f.name for f in fields(cls)}
        rec = cls(**{k: v for k, v in body.items() if k in known})
        rec.hash, rec.seq = hash, seq
        return rec

    def resumed_checkpoints(self) -> dict[str, str]:
        """node rank → the checkpoint snapshot this attempt started from (none: it started afresh)."""
        got = self.resumed.get("checkpoints") if isinstance(self.resumed, dict) else None
        return {str(k): v for k, v in got.items() if isinstance(v, str)} if isinstance(got, dict) else {}

    def snapshot_ids(self) -> dict[str, str]:
        """role:name → id for every snapshot this record depends on or produced."""
        out = {f"data:{k}": v for k, v in self.data_snapshots.items()}
        out |= {f"checkpoint:n{rank}": sid for rank, sid in self.resumed_checkpoints().items()}
        wheels = (self.environment or {}).get("wheels_snapshot")
        for role, sid in (("code", self.code_snapshot), ("code-dirty", self.code_dirty_snapshot),
                          ("output", self.output_snapshot), ("environment", wheels)):
            if sid:
                out[role] = sid
        return out


def canonical(body: dict[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def redact_env(env: dict[str, str], secrets: list[str] | tuple[str, ...] = ()) -> dict[str, str]:
    marked = set(secrets)
    return {k: (REDACTED if k in marked or secret_by_name(k, v) else str(v)) for k, v in env.items()}


def scrub(text: str, env: dict[str, str], secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove secret values that appear literally in text (e.g. a token pasted into the command)."""
    marked = set(secrets)
    for k, v in env.items():
        if (k in marked or secret_by_name(k, v)) and v and len(str(v)) >= MIN_MASKED:
            text = text.replace(str(v), REDACTED)
    return text


def config_hash(raw: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(to_jsonable(raw))).hexdigest()


def ci_context(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The CI facts worth keeping (never tokens): provider, repository, ref, commit, run id/url."""
    import os
    e = environ if environ is not None else dict(os.environ)
    keys = ["GITHUB_REPOSITORY", "GITHUB_REF", "GITHUB_SHA", "GITHUB_RUN_ID", "GITHUB_RUN_ATTEMPT", "GITHUB_WORKFLOW",
            "GITHUB_ACTOR", "GITHUB_SERVER_URL", "CI_PROJECT_PATH", "CI_COMMIT_SHA", "CI_COMMIT_REF_NAME",
            "CI_PIPELINE_ID", "CI_JOB_URL", "BUILDKITE_BUILD_URL", "BUILDKITE_COMMIT"]
    out = {k: e[k] for k in keys if e.get(k) and not looks_secret(k) and not looks_credential(e[k])}
    if out or e.get("CI"):
        out["CI"] = e.get("CI", "true")
    return out


def _db(db=None):
    if db is not None:
        return db
    from ..state import open_state
    return open_state().db


def redact_record(record: RunRecord, secrets: list[str] | tuple[str, ...] = ()) -> RunRecord:
    """Every secret value out of every field: the named secrets' values from the environment and
    [env] values named like secrets, wherever they appear (the command a shell expanded, setup,
    the nested config, another env value that embeds one)."""
    typed = [record.command, *(v for k, v in (record.config or {}).items() if k in ("command", "setup"))]
    masker = Masker.for_config(None, env=record.env, names=tuple(secrets), mark=REDACTED,
                               texts=[t for t in typed if isinstance(t, str)])
    record.env = redact_env(record.env, secrets)
    if masker:
        for f in fields(record):
            if f.name not in _CHAIN_FIELDS and f.name not in _PINNED_FIELDS:
                setattr(record, f.name, masker.mask_obj(getattr(record, f.name)))
    return record


def append_record(record: RunRecord, db=None, *, secrets: list[str] | tuple[str, ...] = ()) -> RunRecord:
    """Write the record once, linked to the current tip. Redacted again here, defensively."""
    db = _db(db)
    redact_record(record, secrets)
    if record.cost_usd is not None:
        record.cost_usd = str(Decimal(str(record.cost_usd)))
    for _attempt in range(5):
        try:
            with db.transaction():
                # One appender at a time: optimistic retries alone let a writer lose every round to
                # others racing for the same tip (6 at once under load ran out of attempts).
                db.serialise("run-records")
                if db.execute("SELECT 1 FROM run_records WHERE run_id = ?", (record.run_id,)):
                    raise IntegrityError(f"run {record.run_id} already has a record; records are written once")
                tip = db.execute("SELECT hash FROM run_records ORDER BY seq DESC LIMIT 1")
                record.prev_hash = tip[0]["hash"] if tip else GENESIS
                body = canonical(record.body())
                record.hash = hashlib.sha256(body).hexdigest()
                db.execute("INSERT INTO run_records (run_id, prev_hash, hash, body, created_at) VALUES (?,?,?,?,?)",
                           (record.run_id, record.prev_hash, record.hash, body.decode(), to_jsonable(utcnow())))
                for role, sid in record.snapshot_ids().items():
                    kind, _, name = role.partition(":")
                    db.execute("INSERT INTO run_snapshots (run_id, role, name, snapshot_id, store) VALUES (?,?,?,?,?)",
                               (record.run_id, kind, name, sid, record.store))
                record.seq = db.execute("SELECT seq FROM run_records WHERE run_id = ?", (record.run_id,))[0]["seq"]
        except IntegrityError:
            raise
        except Exception as exc:   # a racing writer took the same tip (UNIQUE prev_hash): retry on the new tip
            if "unique" in str(exc).lower() or "duplicate" in str(exc).lower():
                continue
            raise
        from .anchor import write_anchors
        write_anchors(db, record)        # outside the database: the newest record cannot be rewritten unseen
        return record
    raise IntegrityError("could not append the run record: the chain tip kept moving")


def _from_row(row: dict[str, Any]) -> RunRecord:
    """A stored record; a damaged one (edited by hand, disk trouble) is an IntegrityError naming it,
    not an internal error (found by fuzzing tampered rows: tests/unit/test_fuzz_inputs.py)."""
    try:
        body = json.loads(row["body"])
        if not isinstance(body, dict):
            raise ValueError("not a JSON object")
        return RunRecord.from_body(body, hash=row["hash"], seq=row["seq"])
    except (ValueError, TypeError, AttributeError) as exc:
        raise IntegrityError(f"run record #{row.get('seq')} (run {row.get('run_id')}) is unreadable: {exc}",
                             hint="`fleet audit --verify` checks the whole chain") from None


def get_record(run_id: str, db=None) -> RunRecord:
    db = _db(db)
    rows = db.execute("SELECT * FROM run_records WHERE run_id = ?", (run_id,))
    if not rows:
        from ..state.prefix import no_match, prefix_match
        rows = prefix_match(db, "run_records", "run_id", run_id, "seq")
        if len(rows) != 1:
            raise NotFound(no_match("run record", run_id, [{"id": r["run_id"]} for r in rows]),
                           hint="see `fleet runs ls`")
    return _from_row(rows[0])


def runs_referencing(snapshot_id: str, db=None) -> list[str]:
    """Run ids whose record pins or produced this snapshot (in any store: ids are content hashes), and
    runs that pin it but have no record yet: one still going, or lost and perhaps resumed (a record
    is written when a run ends; `snapshot rm` then `gc` took a live run's data from under it)."""
    db = _db(db)
    rows = db.execute("SELECT DISTINCT run_id FROM run_snapshots WHERE snapshot_id = ? ORDER BY run_id",
                      (snapshot_id,))
    recorded = [r["run_id"] for r in rows]
    from ..snapshots.store import is_snapshot_id
    if not is_snapshot_id(snapshot_id):
        return recorded
    live = db.execute("SELECT id FROM runs WHERE status IN ('running', 'lost') AND meta LIKE ? ORDER BY id",
                      (f"%{snapshot_id}%",))
    return recorded + [r["id"] for r in live if r["id"] not in recorded]


def record_rows(db, columns: str = "*", *, oldest_first: bool = False, after: int | None = None,
                page: int = 200) -> Iterator[dict[str, Any]]:
    """run_records rows, newest first (or oldest first), read `page` at a time: a walk over thousands
    of records (`fleet audit --verify`, `fleet runs ls --limit 6000`) holds one page, not every record,
    at once. Pages follow seq (not OFFSET), so a record appended meanwhile neither shifts a page nor
    shows twice. `after`: only the rows past that seq in the walk's direction."""
    op, order = (">", "ASC") if oldest_first else ("<", "DESC")
    bound = after
    while True:
        where = "" if bound is None else f" WHERE seq {op} ?"
        rows = db.execute(f"SELECT {columns} FROM run_records{where} ORDER BY seq {order} LIMIT ?",
                          (page,) if bound is None else (bound, page))
        for row in rows:
            bound = row["seq"]
            yield row
        if len(rows) < page:
            return


def iter_records(db=None, *, limit: int | None = 200, project: str | None = None,
                 damaged: list[str] | None = None, page: int = 200,
                 oldest_first: bool = False, intact: bool = False) -> Iterator[RunRecord]:
    """The newest `limit` records (of `project`; None: all of them), newest first (or the oldest,
    oldest first), read a page at a time (record_rows). The project lives in the body, so pages are
    read until enough match; filtering one page of `limit` rows hid a project's runs behind others'
    newer ones. With `damaged`, a record that cannot be read is left out and named there instead of
    raised. `intact`: a record whose content no longer matches its hash counts as damaged too, so
    that a listing never shows an edited record as the one written."""
    db = _db(db)
    given = 0
    if limit is not None and limit <= 0:
        return
    for row in record_rows(db, oldest_first=oldest_first, page=page):
        try:
            record = _from_row(row)
            if intact and modified(row):
                raise IntegrityError(f"run record #{row['seq']} (run {row['run_id']}) was modified: its content "
                                     "no longer matches its hash")
        except IntegrityError as exc:
            if damaged is None:
                raise
            damaged.append(exc.message)
            continue
        if project is None or record.project == project:
            yield record
            given += 1
            if limit is not None and given >= limit:
                return


def list_records(db=None, *, limit: int | None = 200, project: str | None = None,
                 damaged: list[str] | None = None) -> list[RunRecord]:
    """iter_records(...) as a list."""
    return list(iter_records(db, limit=limit, project=project, damaged=damaged))


def modified(row: dict[str, Any], parsed: Any = None) -> bool:
    """Whether a stored row is not the record written: its body does not hash to its hash, or names
    another run. `parsed`: the body already read as JSON."""
    if parsed is None:
        try:
            parsed = json.loads(row["body"])
        except ValueError:
            return True
    return (hashlib.sha256(row["body"].encode()).hexdigest() != row["hash"]
            or not isinstance(parsed, dict) or parsed.get("run_id") != row["run_id"])


def verify_chain(db=None, *, from_seq: int | None = None) -> list[str]:
    """Problems in chain order, first tampered record first; empty when the chain is intact.
    `from_seq`: only what the records from that one to the tip show (a record rewritten with its
    hash shows at the next record's link): whether that record is still vouched for up to the tip."""
    db = _db(db)
    problems: list[str] = []
    prev, prev_label, prev_ok = GENESIS, "the start of the chain", True
    after = None
    if from_seq is not None:
        before = db.execute("SELECT seq, run_id, hash FROM run_records WHERE seq < ? ORDER BY seq DESC LIMIT 1",
                            (from_seq,))
        if before:
            row = before[0]
            prev, prev_label = row["hash"], f"run record #{row['seq']} (run {row['run_id']})"
        after = from_seq - 1
    for row in record_rows(db, oldest_first=True, after=after):
        label = f"run record #{row['seq']} (run {row['run_id']})"
        body = row["body"].encode()
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = {}
        own_ok = not modified(row, parsed)
        if not own_ok:
            problems.append(f"{label} was modified: its content no longer matches its hash")
        elif parsed.get("prev_hash") != prev or row["prev_hash"] != prev:
            if prev_ok and prev != GENESIS:
                # This record is intact but points elsewhere: the one before it was rewritten
                # (content and hash together), or records between them were removed.
                problems.append(f"{prev_label} was rewritten, or a record after it was removed:"
                                f" {label} no longer links to it")
            else:
                problems.append(f"{label} does not link to {prev_label}: a record was removed or reordered")
        prev, prev_label, prev_ok = row["hash"], label, own_ok
    return problems


def verify_chain_or_raise(db=None) -> int:
    problems = verify_chain(db)
    if problems:
        more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
        raise IntegrityError(problems[0] + more)
    return int(_db(db).execute("SELECT COUNT(*) AS n FROM run_records")[0]["n"])
