"""Has a kept lease's deadline passed? Asked by every `fleet` command before it starts
(fleet/cli/main.py), so this module imports nothing but `os`, `json` and `datetime` and reads only
$FLEET_HOME/kept (fleet/money/kept.py writes one marker per kept lease and settles the due ones)."""
import json
import os
from datetime import datetime, timezone


def kept_lease_due() -> bool:
    home = os.environ.get("FLEET_HOME") or os.path.join(os.path.expanduser("~"), ".fleet")
    root = os.path.join(home, "kept")
    try:
        names = os.listdir(root)
    except OSError:
        return False
    now = datetime.now(timezone.utc)
    for name in names:
        try:
            with open(os.path.join(root, name)) as fh:
                deadline = datetime.fromisoformat(json.load(fh)["deadline"])
            if deadline.tzinfo is None:
                deadline = deadline.replace(tzinfo=timezone.utc)
            if deadline <= now:
                return True
        except Exception:  # noqa: BLE001 — a damaged marker (deep nesting: RecursionError): the full check decides
            return True
    return False
