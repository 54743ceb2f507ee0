"""Values in fleet.toml and on the command line that are more than a type: durations ("1h30m") and
money ("$12.50"), and the bounds every size and duration is held to (absurd values are typos)."""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from typing import Any

from ..errors import UsageError

_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION_PART = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([dhms])", re.IGNORECASE)
DURATION_PATTERN = r"^\s*([0-9]+(\.[0-9]+)?\s*[dhmsDHMS]\s*)+$|^\s*[0-9]+(\.[0-9]+)?\s*$"
DURATION_HELP = "a duration like 90s, 30m, 2h, 1h30m, 1d or a number of seconds"
MONEY_PATTERN = r"^\s*\$?\s*[0-9]+(\.[0-9]+)?\s*$"
MAX_AMOUNT = Decimal(10) ** 9


# Upper bounds, so that no count or duration a user writes can reach arithmetic that overflows
# (datetime + 10**17 s) or loops that never end (a lease of 10**20 machines).
MAX_DURATION_S = 365 * 86400        # a lease, --keep, `fleet extend`: one year
MAX_HEARTBEAT_TTL_S = 86400         # a dead controller's machines must not outlive it by more than a day
MAX_GRACE_S = 86400
MAX_GPUS = 65536                    # per lease; providers cap machines per lease further
MAX_HOST_GPUS = 1024                # per [[hosts]] entry
MAX_IDLE_MINUTES = MAX_DURATION_S // 60


def _seconds_text(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def parse_duration(value: Any, *, max_s: int = MAX_DURATION_S) -> int:
    """'90s' / '30m' / '2h' / '1h30m' / '1d' / 3600 / '3600' → whole seconds, 1 ≤ s ≤ max_s.
    Raises UsageError."""
    seconds: float | None = None
    if isinstance(value, bool):
        seconds = None
    elif isinstance(value, int):
        # compared as an int: float() of a TOML integer of 400 digits raises OverflowError
        seconds = float(min(max(value, -1), max_s + 1))
    elif isinstance(value, float) and value.is_integer():
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
            seconds = float(text)
        else:
            pos, total = 0, 0.0
            for match in _DURATION_PART.finditer(text):
                if match.start() != pos:
                    break
                total += float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()]
                pos = match.end()
            if text and pos == len(text):
                seconds = total
    if seconds is None or not math.isfinite(seconds):
        raise UsageError(f"must be {DURATION_HELP}, got {value!r}")
    if seconds > max_s:
        raise UsageError(f"must be at most {_seconds_text(max_s)}, got {value!r}")
    whole = round(seconds)
    if whole <= 0:
        raise UsageError(f"must be a positive duration (at least 1s), got {value!r}")
    return whole


MIN_AMOUNT = Decimal("0.000001")


def parse_money(value: Any, *, allow_zero: bool = False) -> Decimal:
    """12 / 12.5 / '12.50' / '$12.50' → Decimal US dollars, > 0 (or ≥ 0). Raises UsageError."""
    amount: Decimal | None = None
    if isinstance(value, bool):
        amount = None
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        amount = Decimal(repr(value))          # repr: 0.1 stays 0.1, not its binary expansion
    elif isinstance(value, str) and re.fullmatch(MONEY_PATTERN, value):
        try:
            amount = Decimal(value.strip().lstrip("$").strip())
        except InvalidOperation:
            amount = None
    what = "an amount in US dollars ≥ 0" if allow_zero else "an amount in US dollars > 0"
    if amount is None or not amount.is_finite():
        raise UsageError(f"must be {what} (like 25 or \"12.50\"), got {value!r}")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise UsageError(f"must be {what}, got {value!r}")
    if 0 < amount < MIN_AMOUNT and not allow_zero:   # counted in micro-dollars: 1e-30 was a $0.00 budget
        raise UsageError(f"must be at least ${MIN_AMOUNT} (a millionth of a dollar, what fleet counts in), "
                         f"got {value!r}")
    if amount > MAX_AMOUNT:     # a typo; and micro-dollar sums must stay within 64-bit integers
        raise UsageError(f"must be at most {MAX_AMOUNT:,} US dollars, got {value!r}")
    return amount


SIZE_PATTERN = r"^\s*([0-9]+(\.[0-9]+)?\s*([kKmMgGtT][iI]?)?[bB]?|none)\s*$"
MAX_SIZE = 1 << 60
_UNIT_BYTES = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(value: Any) -> int:
    """'100G' / '500M' / '1.5T' / 10**9 (bytes; K/M/G/T are powers of 1024) / 'none' → bytes, where
    0 means no limit. Raises UsageError."""
    size: int | None = None
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_SIZE:
        return value
    if isinstance(value, str) and value.strip().lower() == "none":
        return 0
    if isinstance(value, str) and (found := re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([kmgt])i?)?b?\s*",
                                                         value, re.IGNORECASE)):
        size = int(float(found.group(1)) * _UNIT_BYTES.get((found.group(2) or "").lower(), 1))
    if size is None or not 0 < size <= MAX_SIZE:
        raise UsageError(f"must be a size like 100G, 500M or 2T (or \"none\"), got {value!r}")
    return size
