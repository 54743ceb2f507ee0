"""`fleet up`'s plan before spending: `--dry-run` prints it; on a terminal fleet asks with it.

The plan itself (machines, prices, the most the run can cost) is the library's `Quote`
(fleet/run/offer.py); this module only renders it and asks.
"""
from __future__ import annotations

import sys
from decimal import Decimal
from typing import Callable

from ..config.model import Config
from ..run.offer import Quote


def _usd(amount: Decimal) -> str:
    from ..money.budget import format_usd
    return format_usd(amount * 1_000_000)


def _hours(seconds: int) -> str:
    """4h, 90m, 1d, 45s: the largest unit that divides it, as durations are written in fleet.toml."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _unbilled(q: Quote) -> str:
    """Why a shadow-priced run bills nothing: its machines are simulated (local, the AWS sandbox), or
    they are real and the price is an internal one a team configured (Slurm's price_per_gpu_hour)."""
    if not q.shadow:
        return ""
    return " (simulated: nothing is billed)" if q.simulated else " (shadow price: nothing is billed)"


def plan_lines(q: Quote) -> list[str]:
    """The plan as a few labelled lines, every value from the Quote."""
    per_machine = "" if q.instance_type == q.template else f" (template {q.template})"
    where = q.provider + (f" {q.region}" if q.region else "")
    if q.zones:
        where += f", zone{'s' if len(q.zones) > 1 else ''} " + ", ".join(q.zones)
    lifecycle = q.lifecycle + (" first, on-demand where there is no spot capacity" if q.lifecycle == "spot" else "")
    lines = [f"machines   {q.machines} × {q.instance_type}{per_machine}",
             f"GPUs       {q.gpus} × {q.gpu}" + (f" (asked: {q.gpu_type})" if q.gpu_type else ""),
             f"where      {where}",
             f"lifecycle  {lifecycle}"]
    if q.price_per_hour is None:
        lines.append("price      unknown (set [prices] in fleet.toml)")
    else:
        verb = "would cost" if q.shadow else "costs"
        lines.append(f"price      {verb} {_usd(q.price_per_hour)} per hour ({q.price_source})")
    if q.max_cost is not None:
        per_hour = q.ceiling_per_hour if q.ceiling_per_hour is not None else q.price_per_hour
        most = f"at most    {_usd(q.max_cost)} = {_hours(q.max_duration_s)} max_duration × {_usd(per_hour)}/h"
        if q.ceiling_per_hour is not None:
            most += " (on-demand: spot may rise to it, or have no capacity)"
        lines.append(most + _unbilled(q))
    else:
        lines.append(f"at most    {_hours(q.max_duration_s)} max_duration (price unknown)")
    if q.budget is not None:
        if q.max_cost is not None and q.max_cost <= q.budget:
            stop = "more than the run can cost"
        else:
            stop = f"the run is stopped when it is spent, so it costs at most {_usd(q.budget)}"
        lines.append(f"budget     {_usd(q.budget)}: {stop}")
    # Said because a fleet.toml may be someone else's (a cloned repository): where it sends what is yours.
    if q.secrets:
        lines.append(f"secrets    {', '.join(q.secrets)}: from your environment to every machine")
    if q.store:
        lines.append(f"store      {q.store}: the code and [data] are uploaded there")
    if q.stack:
        lines.append(f"stack      {q.stack}: the network, image and bucket the machines use")
    if q.state:
        lines.append(f"state      {q.state}: the run's records and costs are written there")
    return lines


def show_quote(config: Config, json_out: bool) -> int:
    """`fleet up --dry-run`: the plan on stdout (JSON with --json); nothing is leased or recorded."""
    from ..run.offer import quote
    q = quote(config)
    if json_out:
        from .render import print_json
        print_json({"dry_run": True, "plan": q.to_json()})
    else:
        print("\n".join(["fleet up --dry-run: nothing was leased", *plan_lines(q)]))
    return 0


def confirmer(*, ask: bool) -> Callable[[Quote], bool] | None:
    """The question asked before leasing, or None where fleet must not ask: not wanted (-y, --json,
    CI) or nobody to answer (stdin or stderr is not a terminal)."""
    if not ask or not (sys.stdin.isatty() and sys.stderr.isatty()):
        return None

    def confirm(q: Quote) -> bool:
        print("\n".join(["fleet: the plan", *("  " + line for line in plan_lines(q))]), file=sys.stderr)
        print("Lease these machines? [y/N] ", end="", file=sys.stderr, flush=True)
        try:
            answer = sys.stdin.readline()
        except (EOFError, KeyboardInterrupt):
            return False
        return answer.strip().lower() in ("y", "yes")
    return confirm
