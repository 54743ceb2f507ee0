"""Providers make machines reachable over SSH and take them away again; nothing more."""
from __future__ import annotations

from ..errors import UsageError
from .base import Provider

PROVIDERS = ("local", "ssh", "aws")


def get_provider(name: str, **options) -> Provider:
    """Import a provider lazily: `fleet --help` must not import boto3 or paramiko."""
    if name == "local":
        from .local import LocalProvider
        return LocalProvider(**options)
    if name == "ssh":
        from .ssh import SSHHostsProvider
        return SSHHostsProvider(**options)
    if name == "aws":
        from .aws import AWSProvider
        return AWSProvider(**options)
    raise UsageError(f"unknown provider {name!r}", hint="choose one of: " + ", ".join(PROVIDERS))
