"""Anchoring the run-record chain outside the database.

The hash chain catches an edited or removed record anywhere but at the end: whoever can write the
database can rewrite the newest record (content and hash together), or rewrite any record and
recompute every hash after it, and the chain still verifies. So after every append the new tip
(seq, run id, hash) is written outside the database:

- a file beside a SQLite database ($FLEET_HOME/records.tip; for a team PostgreSQL database, a file
  per database under $FLEET_HOME), written atomically. With a signing key kept apart from
  FLEET_HOME (FLEET_RECORDS_KEY, or FLEET_RECORDS_KEY_FILE outside FLEET_HOME) the file carries an
  HMAC-SHA256 of the tip, so someone who can write FLEET_HOME but not read the key cannot forge it.
- when the run used an S3 store, the object `<prefix>/records/tip`. In a bucket created with
  S3 Object Lock every tip is a new object version under retention (the bucket's default mode, else
  GOVERNANCE, for the longer of its default period and RETENTION_DAYS): nobody without the right to bypass retention can delete or
  overwrite an old tip, and `check_anchors` requires every one of them to still be in the chain.

`check_anchors` requires every anchored hash to still be in the database, and an anchor to exist
once this user has records. The database may run ahead of an anchor (other users append to a team
database), but an anchored record can never change or vanish unnoticed. SECURITY.md says exactly
what an attacker who can write FLEET_HOME can and cannot hide with each setup.
"""
from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import stat
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from ..errors import EnvironmentProblem, FleetError, UsageError

log = logging.getLogger("fleet.records.chain")
S3_KEY = ("records", "tip")
# Retention of each S3 tip, at least: a bucket's default rule is sized for chunks (a fleet stack's is
# 30 days), after which its lifecycle would expire the old tips the audit relies on.
RETENTION_DAYS = 3650
MIN_KEY_BYTES = 16
MAX_KEY_BYTES = 4096


# -- the signing key ------------------------------------------------------------------------------

def signing_key() -> bytes | None:
    """FLEET_RECORDS_KEY (the key itself) or FLEET_RECORDS_KEY_FILE (a file outside FLEET_HOME)."""
    raw = os.environ.get("FLEET_RECORDS_KEY", "")
    path = os.environ.get("FLEET_RECORDS_KEY_FILE", "").strip()
    if raw:
        key = raw.encode()
    elif path:
        from ..paths import fleet_home
        p = Path(path).expanduser().resolve()
        home = fleet_home(create=False).resolve()
        if p == home or p.is_relative_to(home):
            raise UsageError(f"FLEET_RECORDS_KEY_FILE {p} is inside FLEET_HOME {home}: whoever can rewrite the "
                             "records could read it", hint="keep the records key outside FLEET_HOME")
        try:      # a regular file, read to a bound: /dev/zero once took the controller out of memory
            with open(os.open(p, os.O_RDONLY | os.O_NONBLOCK), "rb") as fh:    # a FIFO must not block
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    raise UsageError(f"FLEET_RECORDS_KEY_FILE {p} is not a regular file")
                key = fh.read(MAX_KEY_BYTES + 1).strip()
        except OSError as exc:
            raise EnvironmentProblem(f"cannot read FLEET_RECORDS_KEY_FILE {p}: {exc.strerror or exc}") from None
        if len(key) > MAX_KEY_BYTES:
            raise UsageError(f"FLEET_RECORDS_KEY_FILE {p} holds more than {MAX_KEY_BYTES} bytes: not a key",
                             hint="e.g. `openssl rand -hex 32 > FILE`")
    else:
        return None
    if len(key) < MIN_KEY_BYTES:
        raise UsageError(f"the records signing key is {len(key)} bytes; use at least {MIN_KEY_BYTES}",
                         hint="e.g. `openssl rand -hex 32`")
    return key


def _core(tip: dict[str, Any]) -> bytes:
    return json.dumps({k: tip.get(k) for k in ("seq", "run_id", "hash")}, sort_keys=True).encode()


def _sign(tip: dict[str, Any], key: bytes) -> str:
    return hmac.new(key, b"fleet-records-tip\0" + _core(tip), hashlib.sha256).hexdigest()


# -- writing --------------------------------------------------------------------------------------

def tip_path(db) -> Path:
    path = getattr(db, "path", None)
    if path is not None:
        return Path(path).parent / "records.tip"
    from ..paths import fleet_home
    ident = hashlib.sha256(str(getattr(db, "url", db.dialect)).encode()).hexdigest()[:16]
    return fleet_home() / f"records-{db.dialect}-{ident}.tip"


def _tip(record, key: bytes | None = None) -> dict[str, Any]:
    tip: dict[str, Any] = {"seq": record.seq, "run_id": record.run_id, "hash": record.hash}
    if key is not None:
        tip["sig"] = _sign(tip, key)
    return tip


def _tip_bytes(tip: dict[str, Any]) -> bytes:
    return json.dumps(tip, sort_keys=True).encode() + b"\n"


def write_local(db, record, key: bytes | None = None) -> Path:
    """Atomically replace the tip file (temp file, fsync, rename): never a torn or half-written anchor."""
    path = tip_path(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".records.tip.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(_tip_bytes(_tip(record, key)))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def _lock_mode(store) -> tuple[str, int] | None:
    """The bucket's Object Lock (mode, days for new tips), or None when it has none: its default mode,
    for the longer of its default period and RETENTION_DAYS. Asked on every write (one small call per
    run): a bucket's lock cannot be turned off, but it can be turned on."""
    from botocore.exceptions import BotoCoreError, ClientError
    try:
        conf = store.client.get_object_lock_configuration(Bucket=store.bucket)["ObjectLockConfiguration"]
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "ObjectLockConfigurationNotFoundError":
            raise store._error(exc, "read the bucket's Object Lock configuration") from None
        return None
    except BotoCoreError as exc:
        raise store._error(exc, "read the bucket's Object Lock configuration") from None
    if conf.get("ObjectLockEnabled") != "Enabled":
        return None
    rule = (conf.get("Rule") or {}).get("DefaultRetention") or {}
    days = int(rule.get("Days") or 365 * int(rule.get("Years") or 0) or 0)
    return rule.get("Mode") or "GOVERNANCE", max(days, RETENTION_DAYS)


def write_s3(store, tip: dict[str, Any]) -> None:
    key = store._key(*S3_KEY)
    lock = _lock_mode(store)
    if lock is None:
        store._put(key, _tip_bytes(tip), "write the record anchor")
        return
    from botocore.exceptions import BotoCoreError, ClientError
    mode, days = lock
    try:     # a new version, retained: an older tip can be neither overwritten nor deleted
        store.client.put_object(Bucket=store.bucket, Key=key, Body=_tip_bytes(tip), ObjectLockMode=mode,
                                ObjectLockRetainUntilDate=datetime.now(timezone.utc) + timedelta(days=days))
    except (ClientError, BotoCoreError) as exc:
        raise store._error(exc, "write the record anchor") from None


def write_anchors(db, record) -> None:
    """Called after every append. The local file must be written; the S3 copy is best effort (the run
    has ended, and an older anchor still pins every record up to it). A key that cannot be read is
    a warning here (the run's record is already stored); `fleet audit --verify` then fails on it."""
    try:
        key = signing_key()
    except FleetError as exc:
        log.warning("run record %s anchored unsigned: %s", record.run_id, exc.one_line())
        key = None
    lost = _anchored_but_missing(db, record)
    if lost is not None:   # kept: replacing it would erase the only evidence that records were lost
        log.warning("the records anchor %s names record #%s (run %s), which the database no longer holds "
                    "(emptied or replaced?): it is kept, and `fleet audit --verify` fails until the database "
                    "is restored; if those records are gone for good, move the anchor aside to start a new one",
                    tip_path(db), lost.get("seq"), lost.get("run_id"))
    else:
        write_local(db, record, key)
    if record.store.startswith("s3://"):
        try:
            from ..snapshots import open_store
            write_s3(open_store(record.store), _tip(record, key))
        except FleetError as exc:
            log.warning("could not anchor run record %s in %s: %s", record.run_id, record.store, exc.one_line())


# -- checking -------------------------------------------------------------------------------------

def _anchored_but_missing(db, record) -> dict[str, Any] | None:
    """The local tip, when it names a record (not the one just written) that the database lacks."""
    tip = _read_local(db)
    if not tip or tip.get("unreadable") or not isinstance(tip.get("hash"), str) or tip["hash"] == record.hash:
        return None
    return None if db.execute("SELECT 1 FROM run_records WHERE hash = ?", (tip["hash"],)) else tip


def _read_local(db) -> dict[str, Any] | None:
    try:
        tip = json.loads(tip_path(db).read_text())
        return tip if isinstance(tip, dict) else {"unreadable": True}
    except FileNotFoundError:
        return None
    except ValueError:
        return {"unreadable": True}


def _parse(data: bytes) -> dict[str, Any]:
    try:
        tip = json.loads(data)
        return tip if isinstance(tip, dict) else {"unreadable": True}
    except ValueError:
        return {"unreadable": True}


def _read_s3(url: str) -> list[dict[str, Any]]:
    """Every tip the bucket still holds: all versions under Object Lock, else the current one."""
    from botocore.exceptions import BotoCoreError, ClientError

    from ..errors import NotFound
    from ..snapshots import open_store
    store = open_store(url)
    key = store._key(*S3_KEY)
    if _lock_mode(store) is None:
        try:
            return [_parse(store._get(key, "the record anchor"))]
        except NotFound:
            return []
    tips = []
    try:
        for page in store.client.get_paginator("list_object_versions").paginate(Bucket=store.bucket, Prefix=key):
            for v in page.get("Versions", []):       # delete markers hide nothing: every version is read
                if v["Key"] == key:
                    body = store.client.get_object(Bucket=store.bucket, Key=key, VersionId=v["VersionId"])["Body"]
                    tips.append(_parse(body.read()))
    except (ClientError, BotoCoreError) as exc:
        raise store._error(exc, "read the record anchor's versions") from None
    return tips


def _has_own_records(db) -> bool:
    """Whether this user should hold an anchor: any record in a SQLite database (its own), else a
    record this user wrote in the team database."""
    if getattr(db, "path", None) is not None:
        return bool(db.execute("SELECT seq FROM run_records LIMIT 1"))
    from ..plan import current_user
    me = current_user()
    from .chain import record_rows
    for row in record_rows(db, "seq, body"):          # a page at a time: a team's records are many
        with contextlib.suppress(ValueError, AttributeError):
            if json.loads(row["body"]).get("user") == me:
                return True
    return False


def check_anchors(db, store_urls: set[str] = frozenset()) -> list[str]:
    """One line per anchor the database no longer honours, is missing, or cannot be trusted (empty
    when all hold, or when there is nothing to anchor)."""
    try:
        key = signing_key()
    except FleetError as exc:
        return [f"cannot check the record anchor's signature: {exc.one_line()}"]
    problems: list[str] = []
    where = str(tip_path(db))
    local = _read_local(db)
    anchors: list[tuple[str, dict]] = []
    if local is None:
        if _has_own_records(db):
            problems.append(f"the record anchor {where} is missing: the database holds run records, so it was "
                            "deleted, the records were copied here from elsewhere, or a fleet from before record "
                            "anchors wrote them (after such an upgrade, the next run writes one)")
    elif key is not None and not local.get("unreadable") and not hmac.compare_digest(
            str(local.get("sig", "")), _sign(local, key)):
        problems.append(f"the record anchor {where} is not signed with the records key: it was forged or "
                        "written without the key")
    else:
        anchors.append((where, local))
    for url in sorted(u for u in store_urls if u.startswith("s3://")):
        s3_where = url.rstrip("/") + "/records/tip"
        try:
            tips = _read_s3(url)
        except FleetError as exc:
            problems.append(f"cannot read the record anchor in {url}: {exc.one_line()}")
            continue
        if not tips:
            problems.append(f"the record anchor {s3_where} is missing, though run records used that store")
        anchors += [(s3_where, tip) for tip in tips]
    last = db.execute("SELECT seq, run_id, hash FROM run_records ORDER BY seq DESC LIMIT 1")
    ends = (f"the chain now ends at record #{last[0]['seq']} (run {last[0]['run_id']}, {last[0]['hash'][:12]})"
            if last else "the database holds no run records")
    seen: set[tuple[str, str]] = set()
    for where, tip in anchors:
        if tip.get("unreadable") or not tip.get("hash"):
            problems.append(f"the record anchor {where} is unreadable")
            continue
        if (where, tip["hash"]) in seen:
            continue
        seen.add((where, tip["hash"]))
        if not db.execute("SELECT seq FROM run_records WHERE hash = ?", (tip["hash"],)):
            problems.append(f"run record #{tip.get('seq')} (run {tip.get('run_id')}) anchored in {where} as "
                            f"{tip['hash'][:12]} is no longer in the database: it was rewritten or removed; {ends}")
    return problems


def anchor_notes(db, store_urls: set[str] = frozenset()) -> list[str]:
    """What the anchors in use cannot catch (printed by `fleet audit --verify`, never a failure)."""
    try:
        signed = signing_key() is not None
    except FleetError:
        signed = False
    locked = False
    for url in (u for u in store_urls if u.startswith("s3://")):
        with contextlib.suppress(FleetError):
            from ..snapshots import open_store
            locked = locked or _lock_mode(open_store(url)) is not None
    if signed or locked:
        return []
    return ["note: the record anchor is neither signed (FLEET_RECORDS_KEY) nor in an S3 Object Lock bucket: "
            "whoever can write FLEET_HOME can rewrite records and the anchor together unseen (see SECURITY.md)"]
