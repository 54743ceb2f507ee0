"""The manifests one sync carries, prepared once for all its machines and only when a machine asks.

A manifest is kept as the store's own canonical bytes (verified against its id) and parsed once as
plain JSON: no Entry objects, no re-encoding. A machine that lacks a manifest but holds the snapshot
its tree was built from gets a delta instead (`delta`): the entries that differ and the paths that
went, usually a few KB where the whole manifest is hundreds. The machine applies it to its cached
copy of the old manifest, re-encodes it canonically and checks the result against the new id; a
delta that does not reproduce the id is refused there and the whole manifest is sent instead.
"""
from __future__ import annotations

import hashlib
import json
import threading
import zlib
from typing import TYPE_CHECKING

from ..errors import IntegrityError
from .store import is_snapshot_id

if TYPE_CHECKING:
    from .manifest import Manifest
    from .store import Store


def _parse(sid: str, raw: bytes) -> dict:
    if hashlib.sha256(raw).hexdigest() != sid:
        raise IntegrityError(f"manifest of snapshot {sid[:12]} is corrupt: its hash does not match its id")
    try:
        body = json.loads(raw)
        if not isinstance(body, dict) or not isinstance(body.get("entries"), list):
            raise ValueError("not a manifest")
    except (ValueError, RecursionError) as exc:      # RecursionError: nesting deeper than the parser goes
        raise IntegrityError(f"manifest {sid[:12]} is unreadable: {exc}") from None
    return body


class Prepared:
    """Everything the machines of one sync share, computed once and only when a machine needs it (a
    no-op re-sync reads no manifest): manifests (canonical bytes, parsed JSON, compressed bytes),
    which file each chunk belongs to, S3 source listings, deltas."""

    def __init__(self, store: Store, ids: set[str], manifests: dict[str, Manifest] | None = None,
                 sources: dict | None = None):
        self.store, self.sources = store, dict(sources or {})
        self._ids, self._given = ids, dict(manifests or {})
        self._raw: dict[str, bytes] = {}
        self._bodies: dict[str, dict] = {}
        self._blobs: dict[str, bytes] = {}
        self._loaded: tuple[dict[str, tuple[str, str]], dict[str, int]] | None = None
        self._lock = threading.RLock()

    # -- manifests, as bytes and as JSON ------------------------------------------------------------
    def raw(self, sid: str) -> bytes:
        with self._lock:
            if sid not in self._raw:
                if sid in self.sources:
                    self._raw[sid] = self.sources[sid].canonical_bytes()
                elif sid in self._given:
                    self._raw[sid] = self._given[sid].canonical_bytes()
                else:
                    self._raw[sid] = self.store.get_manifest(sid)
            return self._raw[sid]

    def body(self, sid: str) -> dict:
        with self._lock:
            if sid not in self._bodies:
                self._bodies[sid] = _parse(sid, self.raw(sid))
            return self._bodies[sid]

    def has(self, sid: str) -> bool:
        return sid in self._ids

    def _load(self) -> tuple[dict[str, tuple[str, str]], dict[str, int]]:
        with self._lock:
            if self._loaded is None:
                owners: dict[str, tuple[str, str]] = {}
                sizes: dict[str, int] = {}
                for sid in self._ids:
                    if sid in self.sources:
                        continue
                    for e in self.body(sid)["entries"]:
                        for h, n in e.get("chunks") or ():
                            owners.setdefault(h, (e["path"], sid))
                            sizes[h] = n
                self._loaded = (owners, sizes)
            return self._loaded

    @property
    def owners(self) -> dict[str, tuple[str, str]]:
        """chunk id → (path, snapshot id) of the first file holding it."""
        return self._load()[0]

    @property
    def sizes(self) -> dict[str, int]:
        return self._load()[1]

    def blob(self, sid: str) -> bytes:
        """The whole manifest, compressed once for every machine that asks."""
        with self._lock:
            if sid not in self._blobs:
                self._blobs[sid] = zlib.compress(self.raw(sid), 6)
            return self._blobs[sid]

    def delta(self, sid: str, base: str) -> bytes | None:
        """Manifest `sid` as a change of `base` (compressed JSON: format, entries to put, paths to
        drop, the new `deleted` list), or None when that would not help (a source listing, a base
        this sync cannot read, or a change that is most of the manifest)."""
        if not is_snapshot_id(base) or sid in self.sources or base in self.sources or base == sid:
            return None        # the machine names its base: never a path for the store to open
        try:
            new, old = self.body(sid), self.body(base)
        except (IntegrityError, OSError, ValueError):
            return None
        except Exception:  # noqa: BLE001 — the store's own NotFound and kin: send the whole manifest
            return None
        before = {e["path"]: e for e in old["entries"]}
        put = [e for e in new["entries"] if before.get(e["path"]) != e]
        if len(put) * 2 > len(new["entries"]):
            return None
        now = {e["path"] for e in new["entries"]}
        body = {"format": new.get("format"), "put": put, "drop": [p for p in before if p not in now],
                "deleted": new.get("deleted", [])}
        return zlib.compress(json.dumps(body, separators=(",", ":")).encode(), 6)

    def object_urls(self, keys: list[str]) -> dict[str, str]:
        out: dict[str, str] = {}
        for listing in self.sources.values():
            out.update(listing.presign([k for k in keys if k not in out]))
        missing = [k for k in keys if k not in out]
        if missing:
            raise IntegrityError(f"sync asked for S3 objects no source lists: {missing[0]}")
        return out
