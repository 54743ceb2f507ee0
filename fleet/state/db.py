"""One small database interface over SQLite (default) and PostgreSQL (team mode).

SQL is written once with `?` placeholders and portable types; `{serial}` and `{now}` tokens in
migrations are filled per dialect. Migrations are numbered files applied in order, each in its own
transaction, and recorded in `schema_migrations`.
"""
from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
TYPE_CHECKING = False   # as in fleet/__init__.py: `fleet status` does not import typing
if TYPE_CHECKING:
    from typing import Any, Iterator, NoReturn

from ..errors import EnvironmentProblem, StateUnavailable
from .sqlite_errors import (_is_corrupt, corrupt_database, empty_but_used, mismatch_hint,  # noqa: F401
                            space_left, transient_hint)

# Migrations followed by a column repair in fleet/state/repairs.py (its AFTER table).
_REPAIRED = {12}

_TOKENS = {
    "sqlite": {"serial": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"serial": "BIGSERIAL PRIMARY KEY"},
}


def migrations() -> list[tuple[int, str, str]]:
    """(number, name, sql) for every migration shipped with fleet, in order."""
    found = []
    # A plain directory walk: importlib.resources costs ~5 ms of every `fleet` command's start-up.
    for entry in (Path(__file__).parent / "migrations").iterdir():
        match = re.match(r"^(\d{4})_(\w+)\.sql$", entry.name)
        if match:
            found.append((int(match.group(1)), match.group(2), entry.read_text()))
    return sorted(found)


def split_statements(sql: str) -> list[str]:
    lines = [line for line in sql.splitlines() if not line.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]



def _undecodable(exc: BaseException) -> bool:
    """SQLite holds text that is not UTF-8 (a row written around fleet, in a shared database)."""
    return "Could not decode to UTF-8" in str(exc)


@contextlib.contextmanager
def _lenient(conn):
    """Such text read anyway (each bad byte as U+FFFD): one damaged row
    must not stop `fleet status` and `fleet report` for the whole team. Only on that error: the
    default factory is C, a Python one costs every text column of every row."""
    conn.text_factory = lambda raw: raw.decode("utf-8", "replace")
    try:
        yield
    finally:
        conn.text_factory = str

class ConstraintViolation(Exception):
    """A UNIQUE/NOT NULL/foreign-key constraint refused a write, on either database.

    Callers that use a constraint as a guard (GPU slots) catch this one class; the SQLite
    flavour also stays a sqlite3.IntegrityError for code written before PostgreSQL existed.
    """


class _SqliteConstraintViolation(ConstraintViolation, sqlite3.IntegrityError):
    pass


class BaseDatabase:
    """What both databases share: the migration runner. Subclasses provide execute/transaction."""

    dialect = ""

    def execute(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        raise NotImplementedError

    def transaction(self):
        raise NotImplementedError

    def where(self) -> str:
        """The database as messages name it."""
        return type(self).__name__

    def _lock_for_migration(self) -> None:
        """Called first inside each migration transaction; PostgreSQL takes an advisory lock here."""

    def serialise(self, name: str) -> None:
        """Inside transaction(): writers that name the same lock run one at a time until it ends.
        SQLite's BEGIN IMMEDIATE already serialises every writer; PostgreSQL takes an advisory lock."""

    def patience(self, seconds: float):
        """Statements in this block wait at most `seconds` for a lock another process holds (SQLite's
        busy timeout, 30 s otherwise): a run probing whether an outage is over (fleet/run/budget.py)
        must not stall its loop and heartbeat that long on every try."""
        return contextlib.nullcontext(self)

    def mapped_reads(self):
        """A block of large reads (`fleet status`); SQLite maps the file for it (Database)."""
        return contextlib.nullcontext(self)

    def row_batches(self, sql: str, params: tuple | list = (), size: int = 100) -> Iterator[list[tuple]]:
        """rows(sql, params) `size` at a time (SQLite fetches each batch only when asked)."""
        rows = self.rows(sql, params)
        for first in range(0, len(rows), size):
            yield rows[first:first + size]

    def applied_migrations(self) -> set[int]:
        self.execute("CREATE TABLE IF NOT EXISTS schema_migrations "
                     "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)")
        return {r["version"] for r in self.execute("SELECT version FROM schema_migrations")}

    def migrate(self, upto: int | None = None) -> list[int]:
        """Apply pending migrations in order (only those numbered <= `upto` when given); returns them."""
        done = self.applied_migrations()
        known = [number for number, _, _ in migrations()]
        unknown = sorted(done - set(known))
        if unknown:
            # Its tables are not what this fleet's SQL expects: used anyway, writes fail half-way
            # (a lease left `leasing`) or land in columns a newer fleet reads differently.
            raise EnvironmentProblem(
                f"state database {self.where()} has schema {unknown[-1]}, newer than this fleet knows "
                f"({known[-1] if known else 0})",
                hint="upgrade fleet on this computer (pip install -U fleet-gpu)")
        applied = []
        for number, name, sql in migrations():
            if number in done or (upto is not None and number > upto):
                continue
            with self.transaction():
                self._lock_for_migration()
                if number in {r["version"] for r in self.execute(
                        "SELECT version FROM schema_migrations WHERE version = ?", (number,))}:
                    continue   # another process applied it while we waited for the lock
                for statement in split_statements(sql.format_map(_TOKENS[self.dialect])):
                    self.execute(statement)
                if number in _REPAIRED:   # imported only when such a migration is pending
                    from .repairs import AFTER
                    AFTER[number](self)
                self.execute("INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                             (number, name, datetime.now(timezone.utc).isoformat()))
            applied.append(number)
        return applied


def _enable_wal(conn: sqlite3.Connection, attempts: int = 50) -> None:
    """Switch to WAL once per database file. SQLite answers a journal-mode change with "database is
    locked" at once, without waiting on the busy timeout, when another connection is mid-write: two
    fleet commands opening the state together failed that way. WAL is persistent, so a database
    already in WAL needs no change; a new one retries briefly."""
    delay = 0.01
    for attempt in range(attempts):
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal":
                return
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


BUSY_TIMEOUT_MS = 30_000      # how long a statement waits for a lock another process holds


def busy_timeout_ms() -> int:
    """FLEET_STATE_LOCK_WAIT_S overrides the wait (seconds): a site whose backups lock the file longer
    raises it, the fault tests lower it. "nan", "inf" or "-1" would wait for ever or not at all: refused."""
    raw = (os.environ.get("FLEET_STATE_LOCK_WAIT_S") or "").strip()
    try:
        wait = float(raw) if raw else BUSY_TIMEOUT_MS / 1000
    except ValueError:
        wait = -1.0
    if not (0 <= wait <= 86_400):
        raise EnvironmentProblem(f"FLEET_STATE_LOCK_WAIT_S={raw!r} is not a number of seconds "
                                 f"(give one from 0 to 86400; default {BUSY_TIMEOUT_MS // 1000})")
    return int(wait * 1000)
MAPPED_READS_BYTES = 256 << 20   # address space, not memory: only the pages read are mapped in


class Database(BaseDatabase):
    dialect = "sqlite"

    def __init__(self, path: Path, *, auto_migrate: bool = True):
        self.path = Path(path)
        self._busy_ms = busy_timeout_ms()
        self._local = threading.local()
        self._open: list[tuple[threading.Thread, sqlite3.Connection]] = []   # every thread's, for close()
        self._open_lock = threading.Lock()
        fresh = not self.path.exists()
        if empty_but_used(self.path):
            raise corrupt_database(self.path, "the file is empty, but FLEET_HOME shows fleet has used it")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if fresh:
                # Create with 0600 before sqlite opens it: state holds key paths and costs.
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            _enable_wal(self._conn())
        except sqlite3.Error as exc:
            if _is_corrupt(exc):
                raise corrupt_database(self.path, exc) from None
            raise EnvironmentProblem(f"cannot open state database {self.path}: {exc}",
                                     hint="check FLEET_HOME is writable and not full") from None
        except OSError as exc:
            raise EnvironmentProblem(f"cannot open state database {self.path}: {exc}",
                                     hint="check FLEET_HOME is writable and not full") from None
        for suffix in ("-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            if side.exists():
                with contextlib.suppress(OSError):
                    os.chmod(side, 0o600)
        if auto_migrate:
            self.migrate()

    def where(self) -> str:
        return str(self.path)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
            self._close_where(lambda owner: not owner.is_alive())   # threads come and go (pools per phase)
            with self._open_lock:
                self._open.append((threading.current_thread(), conn))
        return conn

    def close(self) -> None:
        """Close this thread's connection and those of threads that have ended. Theirs would wait for
        the garbage collector (a connection's statement cache refers back to it), holding three file
        descriptors each: a program calling fleet.up() in a loop ran out of them."""
        me = threading.current_thread()
        self._close_where(lambda owner: owner is me or not owner.is_alive())
        self._local.conn = None

    def _close_where(self, ended) -> None:
        done, keep = [], []
        with self._open_lock:
            for owner, conn in self._open:
                (done if ended(owner) else keep).append((owner, conn))
            self._open = keep
        for _owner, conn in done:
            with contextlib.suppress(sqlite3.Error):
                conn.close()

    @contextlib.contextmanager
    def mapped_reads(self) -> Iterator["Database"]:
        """Reads in this block come straight from the file mapped in memory, not copied page by page
        into SQLite's cache: `fleet status` at 1,000 leases reads ~350 pages, each a read call and a
        fresh page of memory (~1 ms of its ~25). Unmapped after: a file truncated by someone else
        while mapped would kill the process at its next read of a mapped page (SIGBUS), so the
        mapping lasts only as long as the block."""
        conn = self._conn()
        conn.execute(f"PRAGMA mmap_size={MAPPED_READS_BYTES}")
        try:
            yield self
        finally:
            conn.execute("PRAGMA mmap_size=0")

    @contextlib.contextmanager
    def patience(self, seconds: float) -> Iterator["Database"]:
        conn = self._conn()
        conn.execute(f"PRAGMA busy_timeout={max(0, int(seconds * 1000))}")
        try:
            yield self
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")

    def execute(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        try:
            try:
                cur = self._conn().execute(sql, tuple(params))
                rows = cur.fetchall()
            except sqlite3.OperationalError as exc:
                if not _undecodable(exc):
                    raise
                with _lenient(self._conn()):
                    rows = self._conn().execute(sql, tuple(params)).fetchall()
        except sqlite3.IntegrityError as exc:
            raise _SqliteConstraintViolation(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            self._failed(exc)
        return [dict(r) for r in rows]

    def rows(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        """A query's rows as plain tuples, in its column order: `fleet status` reads thousands of rows,
        and a dict per row costs it ~2 ms at 1,000 leases."""
        conn = self._conn()
        try:
            cur = conn.cursor()
            cur.row_factory = None
            try:
                return cur.execute(sql, tuple(params)).fetchall()
            except sqlite3.OperationalError as exc:
                if not _undecodable(exc):
                    raise
                with _lenient(conn):
                    return cur.execute(sql, tuple(params)).fetchall()
        except sqlite3.DatabaseError as exc:
            self._failed(exc)

    def row_batches(self, sql: str, params: tuple | list = (), size: int = 100) -> Iterator[list[tuple]]:
        """rows(sql, params) `size` at a time, each fetched when asked: a caller that turns each batch
        into something smaller frees it before the next is made, and the next reuses its memory
        (`fleet status`'s machine documents: ~1 MB less at 1,000 leases, fewer page faults)."""
        cur = self._conn().cursor()
        cur.row_factory = None
        given = 0
        try:
            cur.execute(sql, tuple(params))
            batch = cur.fetchmany(size)
            while batch:
                yield batch
                given += len(batch)
                batch = cur.fetchmany(size)
        except sqlite3.OperationalError as exc:
            if not _undecodable(exc):
                self._failed(exc)
            rest = self.rows(sql, params)[given:]    # again, leniently (rare: a damaged row), past what was given
            if rest:
                yield rest
        except sqlite3.DatabaseError as exc:
            self._failed(exc)
        finally:
            cur.close()

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        try:
            self._conn().executemany(sql, rows)
        except sqlite3.IntegrityError as exc:
            raise _SqliteConstraintViolation(str(exc)) from exc
        except sqlite3.DatabaseError as exc:
            self._failed(exc)

    @contextlib.contextmanager
    def transaction(self) -> Iterator["Database"]:
        """A write transaction; SQLite takes the write lock up front so read-modify-write is safe."""
        conn = self._conn()
        if conn.in_transaction:
            yield self
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            self._failed(exc)
        try:
            yield self
        except BaseException:
            self._rollback(conn)
            raise
        else:
            try:
                conn.execute("COMMIT")
            except sqlite3.DatabaseError as exc:
                self._rollback(conn)
                self._failed(exc)

    def _failed(self, exc: sqlite3.DatabaseError) -> NoReturn:
        """A failed statement as one line: a damaged file says what to do; a lock or a full disk is
        StateUnavailable (it passes: a run waits it out); another operational error (a table that is
        not there) is an environment problem; anything else (a bug in fleet's SQL) is raised as it is."""
        if _is_corrupt(exc):
            raise corrupt_database(self.path, exc) from None
        if not isinstance(exc, sqlite3.OperationalError):
            raise exc
        transient = transient_hint(exc)
        if transient is not None:
            raise StateUnavailable(f"state database {self.path}: {exc}{space_left(self.path, exc)}",
                                   hint=transient) from None
        raise EnvironmentProblem(f"state database {self.path}: {exc}", hint=mismatch_hint(exc)) from None

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        """Roll back if a transaction is still open: SQLite ends it by itself on some errors (disk
        full), and a bare ROLLBACK then raised 'no transaction is active' over the real error."""
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.OperationalError:
                pass

    def lock_rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """SELECT … FOR UPDATE on PostgreSQL; SQLite's BEGIN IMMEDIATE already serialises writers."""
        return self.execute(sql, params)
