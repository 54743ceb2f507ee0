"""The local provider: machines are real OpenSSH sshds on 127.0.0.1 (see provider.py)."""
from __future__ import annotations

__all__ = ["LocalProvider", "lease_key_path"]


def __getattr__(name: str):
    # Imported on first use: `fleet status` reads local machines through liveness.py alone, without
    # the provider (models, dataclasses, typing).
    if name in __all__:
        from . import provider
        return getattr(provider, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
