"""The state database on PostgreSQL (team mode): same interface and migrations as the SQLite one.

Selected by FLEET_STATE_URL=postgresql://… (or `state_url` in fleet.toml). psycopg is imported
lazily so `fleet --help` never loads a database driver. SQL everywhere in fleet is written once
with `?` placeholders; here they become psycopg's `%s` (and a literal `%` becomes `%%`).

Each thread gets its own connection (psycopg connections serialise their users, and fleet leases
machines from a thread pool). Connections run in autocommit; `transaction()` opens a real one,
and `lock_rows()` is SELECT … FOR UPDATE inside it, which is what makes GPU-slot reservation safe
between laptops.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import re
import threading
from typing import Any, Iterator

from ..errors import EnvironmentProblem, StateUnavailable
from .db import BaseDatabase, ConstraintViolation

IDLE_PING_S = 1.0   # a connection idle this long is checked (SELECT 1) before a write outside a transaction uses it
# Any constant works: it only has to be the same in every fleet process sharing the database.
_MIGRATION_LOCK_KEY = 0x666C656574    # "fleet"


def redact_url(url: str) -> str:
    """The URL without its password, for messages."""
    # user:password@ up to the last "@": the password may hold "@" or "/" (then libpq does not
    # read it as one, and the message that says so must not show it either).
    url = re.sub(r"(://[^:/@]*:).*@", r"\1***@", url)
    return re.sub(r"(password=)[^&\s]*", r"\1***", url)


def without_password(url: str) -> str:
    """The URL with no password in it at all (libpq then takes it from PGPASSWORD or ~/.pgpass):
    what may be written to a file the URL's owner did not write themselves."""
    url = re.sub(r"(://[^:/@]*):.*@", r"\1@", url)
    url = re.sub(r"([?&])password=[^&\s]*&?", r"\1", url)
    return url.rstrip("?&")


@functools.lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """`?` → `%s` outside quoted strings/identifiers; `%` → `%%` so psycopg does not read it."""
    out: list[str] = []
    quote = ""
    for ch in sql:
        if quote:
            if ch == quote:
                quote = ""
        elif ch in ("'", '"'):
            quote = ch
        elif ch == "?":
            out.append("%s")
            continue
        out.append("%%" if ch == "%" else ch)
    return "".join(out)


class PostgresDatabase(BaseDatabase):
    dialect = "postgresql"

    def __init__(self, url: str, *, auto_migrate: bool = True, connect_timeout: int = 10):
        try:
            import psycopg  # noqa: F401  (lazy: only team mode needs a driver)
        except ImportError:
            raise EnvironmentProblem("FLEET_STATE_URL names PostgreSQL but psycopg is not installed",
                                     hint="pip install 'fleet-gpu[team]'") from None
        self.url = url.replace("postgres://", "postgresql://", 1) if url.startswith("postgres://") else url
        self.connect_timeout = connect_timeout
        self._local = threading.local()
        self._open: list[tuple[threading.Thread, Any]] = []   # (owning thread, connection)
        self._open_lock = threading.Lock()
        self._conn()                        # fail now, with a clear message, if the server is not there
        if auto_migrate:
            self.migrate()

    def where(self) -> str:
        return redact_url(self.url)

    def __repr__(self) -> str:
        return f"PostgresDatabase({redact_url(self.url)!r})"

    def reached(self) -> list:
        """The server, port, database and user this connection reached: libpq fills in what the URL
        leaves out (PGHOST, PGDATABASE, the login name), so two URLs alike may reach two databases."""
        info = self._conn().info
        return [info.host, info.port, info.dbname, info.user]

    # -- connections ------------------------------------------------------------------------------
    def _conn(self):
        import psycopg
        from psycopg.rows import dict_row
        conn = getattr(self._local, "conn", None)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        try:
            conn = psycopg.connect(self.url, autocommit=True, row_factory=dict_row,
                                   connect_timeout=self.connect_timeout, application_name="fleet")
        except psycopg.Error as exc:
            raise StateUnavailable(f"cannot connect to state database {redact_url(self.url)}: "
                                     f"{_without_password(_first_line(exc), self.url)}",
                                     hint="check FLEET_STATE_URL and that the server is up") from None
        # SQLite hands back float for `x * 1.0` and never Decimal; match it, so code written and
        # tested against SQLite (sums like `a * 1.0 * b`) works unchanged here.
        from psycopg.types.numeric import FloatLoader
        conn.adapters.register_loader("numeric", FloatLoader)
        self._local.conn = conn
        self._local.depth = 0
        with self._open_lock:
            # Threads come and go (bounded pools per phase); close the connections of finished
            # ones so a long run does not creep towards the server's max_connections.
            keep = []
            for owner, c in self._open:
                if c.closed:
                    continue
                if owner.is_alive():
                    keep.append((owner, c))
                else:
                    with contextlib.suppress(Exception):
                        c.close()
            keep.append((threading.current_thread(), conn))
            self._open = keep
        return conn

    def close(self) -> None:
        with self._open_lock:
            conns, self._open = self._open, []
        for _owner, conn in conns:
            with contextlib.suppress(Exception):
                conn.close()
        self._local = threading.local()

    # -- statements -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        import psycopg
        try:
            yield
        except psycopg.errors.IntegrityError as exc:
            raise ConstraintViolation(_first_line(exc)) from exc
        except psycopg.OperationalError as exc:
            # Lost connection, deadlock, serialisation failure, server shutting down…: all pass.
            raise StateUnavailable(f"state database {redact_url(self.url)}: {_first_line(exc)}",
                                     hint="try again; check the database server if it persists") from None

    def _once_more(self, statement, writes: bool = True):
        """statement(conn) on this thread's connection, and once more on a fresh one when the first
        try found the connection lost: psycopg learns that the server restarted or ended the backend
        (pg_terminate_backend) only by using the connection, so the first statement after it always
        failed. Not inside a transaction: what it did so far went with the old connection. A write
        is tried again only where it cannot have happened (the server said it ended the backend, so
        the statement was rolled back): a connection cut after a commit reached the server would
        otherwise insert a row twice."""
        import time

        import psycopg
        conn = self._conn()
        idle = time.monotonic() - getattr(self._local, "used_at", 0.0)
        self._local.used_at = time.monotonic()
        with self._errors():
            if writes and idle > IDLE_PING_S and not getattr(self._local, "depth", 0):
                try:      # a write is not tried twice: first learn, with a read, whether the server is still there
                    conn.execute("SELECT 1")
                except psycopg.OperationalError as exc:
                    if not _connection_lost(conn, exc):
                        raise
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = self._conn()
            try:
                return statement(conn)
            except psycopg.OperationalError as exc:
                if getattr(self._local, "depth", 0) or not _connection_lost(conn, exc):
                    raise
                if writes and (getattr(exc, "sqlstate", None) or "") not in ("57P01", "57P02", "57P03"):
                    raise
            with contextlib.suppress(Exception):
                conn.close()
            return statement(self._conn())

    def execute(self, sql: str, params: tuple | list = ()) -> list[dict[str, Any]]:
        def run(conn):
            if params:
                cur = conn.execute(to_pyformat(sql), tuple(params))
            else:
                cur = conn.execute(sql)   # no parameters: psycopg leaves `%` alone
            return list(cur.fetchall()) if cur.description is not None else []
        return self._once_more(run, writes=_writes(sql))

    def rows(self, sql: str, params: tuple | list = ()) -> list[tuple]:
        """A query's rows as plain tuples, in its column order (as Database.rows)."""
        from psycopg.rows import tuple_row

        def run(conn):
            cur = conn.cursor(row_factory=tuple_row)
            cur.execute(to_pyformat(sql), tuple(params)) if params else cur.execute(sql)
            return cur.fetchall()
        return self._once_more(run, writes=_writes(sql))

    def executemany(self, sql: str, rows: list[tuple]) -> None:
        if not rows:
            return

        def run(conn):
            with conn.cursor() as cur:
                cur.executemany(to_pyformat(sql), [tuple(r) for r in rows])
        self._once_more(run)

    @contextlib.contextmanager
    def transaction(self) -> Iterator["PostgresDatabase"]:
        """A transaction; nested calls join the outer one (as on SQLite) through a savepoint: a
        statement refused inside one (a unique key another writer took first, which the ledger
        catches and catches up from) must leave the outer transaction usable, as SQLite does."""
        conn = self._conn()
        if self._local.depth:
            with self._errors(), conn.transaction():
                yield self
            return
        import psycopg
        self._local.depth = 1
        try:
            with self._errors(), contextlib.ExitStack() as stack:
                try:
                    stack.enter_context(conn.transaction())
                except psycopg.OperationalError as exc:   # BEGIN on a lost connection: nothing done yet
                    if not _connection_lost(conn, exc):
                        raise
                    with contextlib.suppress(Exception):
                        conn.close()
                    conn = self._conn()
                    self._local.depth = 1
                    stack.enter_context(conn.transaction())
                yield self
        finally:
            self._local.depth = 0

    def lock_rows(self, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
        """SELECT … FOR UPDATE: the rows stay locked until the surrounding transaction ends."""
        if not getattr(self._local, "depth", 0):
            raise RuntimeError("lock_rows() outside transaction(): the lock would end at once")
        if not re.search(r"\bFOR\s+(UPDATE|SHARE|NO\s+KEY\s+UPDATE)\b", sql, re.I):
            sql = sql.rstrip().rstrip(";") + " FOR UPDATE"
        return self.execute(sql, params)

    def serialise(self, name: str) -> None:
        if not getattr(self._local, "depth", 0):
            raise RuntimeError("serialise() outside transaction(): the lock would end at once")
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self.execute("SELECT pg_advisory_xact_lock(?)", (key,))

    # -- migrations -------------------------------------------------------------------------------
    def _lock_for_migration(self) -> None:
        # Two fleet commands starting against a fresh database must not both run a migration.
        self.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))

    def applied_migrations(self) -> set[int]:
        # CREATE TABLE IF NOT EXISTS races on PostgreSQL (duplicate pg_type row): serialise it.
        with self.transaction():
            self._lock_for_migration()
            return super().applied_migrations()


def _without_password(text: str, url: str) -> str:
    """`text` (a driver's message) less the URL's password, as written and percent-decoded:
    libpq quotes the part it could not parse, e.g. a password with a bad %-escape."""
    from urllib.parse import parse_qs, unquote, urlsplit
    try:
        parts = urlsplit(url)
        found = [parts.netloc.rpartition("@")[0].partition(":")[2]]
        found += parse_qs(parts.query, keep_blank_values=True).get("password", [])
        found += re.findall(r"password=([^&]*)", parts.query)      # as written: parse_qs decodes it
    except ValueError:
        found = [url]            # a URL urllib cannot split: nothing of it in the message
    # libpq splits at the first "@" where urllib takes the last, so it may quote a piece of it.
    pieces = {piece for p in found for f in (p, unquote(p)) for piece in [f, *re.split(r"[@:]", f)]
              if len(piece) >= 3 or piece == f}
    for form in sorted(pieces - {""}, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def _writes(sql: str) -> bool:
    """Whether a statement may change rows (anything but a plain SELECT or SHOW)."""
    first = sql.lstrip().split(None, 1)[0].upper() if sql.strip() else ""
    return first not in ("SELECT", "SHOW")


def _connection_lost(conn, exc: BaseException) -> bool:
    """The error ended the connection (not the statement): a fresh connection may do better."""
    state = getattr(exc, "sqlstate", None) or ""
    # 08…: connection exceptions; 57P01-3: the server ended the backend (shutdown, restart, terminate).
    return conn.closed or conn.broken or state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
