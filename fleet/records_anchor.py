"""Anchoring the run-record chain outside the database.

The hash chain catches an edited or removed record anywhere but at the end: whoever can write the
database can rewrite the newest record (content and hash together) or drop it, and the chain still
verifies. So after every append the new tip (seq, run id, hash) is written outside the database:
a file beside a SQLite database ($FLEET_HOME/records.tip in normal use; for a team PostgreSQL
database, a file per database under $FLEET_HOME), written atomically, and, when the run used an
S3 store, the object `<prefix>/records/tip` too. `check_anchors` then requires every anchored hash
to still be in the database. The database may run ahead of an anchor (other users append to a team
database), but an anchored record can never change or vanish unnoticed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import FleetError

log = logging.getLogger("fleet.records")
S3_KEY = ("records", "tip")


def tip_path(db) -> Path:
    path = getattr(db, "path", None)
    if path is not None:
        return Path(path).parent / "records.tip"
    from .paths import fleet_home
    ident = hashlib.sha256(str(getattr(db, "url", db.dialect)).encode()).hexdigest()[:16]
    return fleet_home() / f"records-{db.dialect}-{ident}.tip"


def _tip_bytes(record) -> bytes:
    return json.dumps({"seq": record.seq, "run_id": record.run_id, "hash": record.hash}, sort_keys=True).encode() + b"\n"


def write_local(db, record) -> Path:
    """Atomically replace the tip file (temp file, fsync, rename): never a torn or half-written anchor."""
    path = tip_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".records.tip.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_tip_bytes(record))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def write_anchors(db, record) -> None:
    """Called after every append. The local file must be written; the S3 copy is best effort (the run
    has ended, and an older anchor still pins every record up to it)."""
    write_local(db, record)
    if record.store.startswith("s3://"):
        try:
            from .snapshots import open_store
            store = open_store(record.store)
            store._put(store._key(*S3_KEY), _tip_bytes(record), "write the record anchor")
        except FleetError as exc:
            log.warning("could not anchor run record %s in %s: %s", record.run_id, record.store, exc.one_line())


def _read_local(db) -> dict[str, Any] | None:
    try:
        return json.loads(tip_path(db).read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {"unreadable": True}


def _read_s3(url: str) -> dict[str, Any] | None:
    from .errors import NotFound
    from .snapshots import open_store
    store = open_store(url)
    try:
        return json.loads(store._get(store._key(*S3_KEY), "the record anchor"))
    except NotFound:
        return None
    except ValueError:
        return {"unreadable": True}


def check_anchors(db, store_urls: set[str] = frozenset()) -> list[str]:
    """One line per anchor the database no longer honours (empty when all hold or none exist)."""
    anchors: list[tuple[str, dict | None]] = [(str(tip_path(db)), _read_local(db))]
    for url in sorted(u for u in store_urls if u.startswith("s3://")):
        try:
            anchors.append((url.rstrip("/") + "/records/tip", _read_s3(url)))
        except FleetError as exc:
            anchors.append((url, {"error": exc.one_line()}))
    last = db.execute("SELECT seq, run_id, hash FROM run_records ORDER BY seq DESC LIMIT 1")
    ends = (f"the chain now ends at record #{last[0]['seq']} (run {last[0]['run_id']}, {last[0]['hash'][:12]})"
            if last else "the database holds no run records")
    problems = []
    for where, tip in anchors:
        if tip is None:
            continue
        if tip.get("error"):
            problems.append(f"cannot read the record anchor in {where}: {tip['error']}")
            continue
        if tip.get("unreadable") or not tip.get("hash"):
            problems.append(f"the record anchor {where} is unreadable")
            continue
        if not db.execute("SELECT seq FROM run_records WHERE hash = ?", (tip["hash"],)):
            problems.append(f"run record #{tip.get('seq')} (run {tip.get('run_id')}) anchored in {where} as "
                            f"{tip['hash'][:12]} is no longer in the database: it was rewritten or removed; {ends}")
    return problems
