"""Where fleet keeps its files: everything lives under $FLEET_HOME (default ~/.fleet)."""
from __future__ import annotations

import os
import threading
from pathlib import Path

from .errors import EnvironmentProblem


_verified: set[Path] = set()   # homes this process has already proved writable


def fleet_home(create: bool = True) -> Path:
    home = Path(os.environ.get("FLEET_HOME") or Path.home() / ".fleet").expanduser()
    if create:
        try:
            home.mkdir(parents=True, exist_ok=True, mode=0o700)
            if home not in _verified:   # the write probe once per process: status calls this per lease
                probe = home / f".write-probe-{os.getpid()}-{threading.get_ident()}"   # concurrent fleets each probe their own
                probe.write_text("")
                probe.unlink()
                _verified.add(home)
        except OSError as exc:
            raise EnvironmentProblem(
                f"FLEET_HOME {home} is not writable: {exc.strerror or exc}",
                hint="set FLEET_HOME to a writable directory",
            ) from None
    return home


def subdir(name: str) -> Path:
    path = fleet_home() / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path
