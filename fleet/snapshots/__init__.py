"""Content-addressed snapshots of code, data and outputs.

Files are split into content-defined chunks (`chunking`), each stored once by its sha256; a
canonical manifest lists every entry, and its own sha256 is the snapshot id (`manifest`). Stores:
local directory or S3 (`store.open_store`). Sync onto machines lives in `sync`.

The names below load their module on first use (PEP 562): a caller that needs one submodule, such as
`sync` starting its SSH channels before anything else, does not pay for all of them.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "diff": "catalog", "gc": "catalog", "list_snapshots": "catalog", "load": "catalog", "resolve": "catalog",
    "show": "catalog",
    "CreateResult": "create", "SnapshotBuilder": "create", "create_snapshot": "create",
    "Entry": "manifest", "Manifest": "manifest",
    "file_hashes": "restore", "materialise": "restore", "verify": "restore", "verify_or_raise": "restore",
    "Store": "store", "open_store": "store",
}
__all__ = sorted(_WHERE)

if TYPE_CHECKING:
    from .catalog import diff, gc, list_snapshots, load, resolve, show  # noqa: F401
    from .create import CreateResult, SnapshotBuilder, create_snapshot  # noqa: F401
    from .manifest import Entry, Manifest  # noqa: F401
    from .restore import file_hashes, materialise, verify, verify_or_raise  # noqa: F401
    from .store import Store, open_store  # noqa: F401


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
