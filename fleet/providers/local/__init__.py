"""The local provider: machines are real OpenSSH sshds on 127.0.0.1 (see provider.py)."""
from __future__ import annotations

from .provider import LocalProvider, lease_key_path

__all__ = ["LocalProvider", "lease_key_path"]
