"""The ssh provider: a team's own GPU hosts (hosts.py: the inventory), shared by GPU slots (slots.py)."""
from __future__ import annotations

from .provider import SSHHostsProvider

__all__ = ["SSHHostsProvider"]
