from __future__ import annotations

import secrets
from datetime import datetime, timezone


def new_lease_id() -> str:
    return "l-" + secrets.token_hex(4)


def new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("r-%Y%m%d-%H%M%S-") + secrets.token_hex(5)
