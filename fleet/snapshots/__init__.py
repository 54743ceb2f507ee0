"""Content-addressed snapshots of code, data and outputs.

Files are split into content-defined chunks (`chunking`), each stored once by its sha256; a
canonical manifest lists every entry, and its own sha256 is the snapshot id (`manifest`). Stores:
local directory or S3 (`store.open_store`). Sync onto machines lives in `sync`.
"""
from .catalog import diff, gc, list_snapshots, load, resolve, show
from .create import CreateResult, SnapshotBuilder, create_snapshot
from .manifest import Entry, Manifest
from .restore import file_hashes, materialise, verify, verify_or_raise
from .store import Store, open_store

__all__ = ["CreateResult", "Entry", "Manifest", "SnapshotBuilder", "Store", "create_snapshot", "diff",
           "file_hashes", "gc", "list_snapshots", "load", "materialise", "open_store", "resolve", "show",
           "verify", "verify_or_raise"]
