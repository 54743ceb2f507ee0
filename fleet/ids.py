from __future__ import annotations

import re
import secrets
from datetime import datetime, timezone

# Attempts are bounded by max_restarts (at most 100, so 101 attempts): a longer "-a<digits>" tail is
# not an attempt number, e.g. the random token of new_run_id that happens to read a123456789.
MAX_ATTEMPT = 1000
_ATTEMPT = re.compile(r"(.+)-a([1-9][0-9]{0,3})")


def new_lease_id() -> str:
    return "l-" + secrets.token_hex(4)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("r-%Y%m%d-%H%M%S-") + secrets.token_hex(5)


def split_attempt(run_id: str) -> tuple[str, int]:
    """(the run's first id, the attempt number): `<run>-a<N>` is attempt N (2..MAX_ATTEMPT) of <run>,
    as recovery names them; any other id is attempt 1 of itself."""
    found = _ATTEMPT.fullmatch(run_id)
    if found is not None and 2 <= int(found.group(2)) <= MAX_ATTEMPT:
        return found.group(1), int(found.group(2))
    return run_id, 1
