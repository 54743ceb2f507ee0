"""Providers make machines reachable over SSH and take them away again; nothing more.

The contract is fleet/providers/base.py; providers are found by name through registry.py.
"""
from __future__ import annotations

TYPE_CHECKING = False   # typing is not imported on `fleet status`'s path (fleet/lease_status.py)
if TYPE_CHECKING:
    from typing import Any


def get_provider(name: str, **options: Any) -> Any:
    """A provider by name (imported lazily: `fleet --help` must not import boto3 or paramiko)."""
    from ..arguments import name_arg
    from .registry import get
    return get(name_arg("name", name), **options)
