"""Where a warning said below a run goes: FLEET_HOME's mode, an unreadable ./fleet.toml, a price
source or a Slurm job that changed hands are noticed deep inside, far from any Events. While a run
is in progress in this thread they go to its Events (`warn`), as docs/python-api.md promises a
library caller (without `events=` a run is silent); anywhere else, to stderr as one line."""
from __future__ import annotations

import sys
import threading
from contextlib import contextmanager
from typing import Any, Iterator

_local = threading.local()


@contextmanager
def warnings_to(events: Any) -> Iterator[None]:
    """For the duration of a run in this thread, warnings go to `events` (nested runs: the inner)."""
    previous = getattr(_local, "events", None)
    _local.events = events
    try:
        yield
    finally:
        _local.events = previous


def warn(message: str) -> None:
    events = getattr(_local, "events", None)
    if events is None:
        print(f"fleet: warning: {message}", file=sys.stderr, flush=True)
    else:
        events.warn(message)
