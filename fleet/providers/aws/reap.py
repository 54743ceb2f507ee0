"""The orphan reaper: terminate fleet instances whose controller stopped extending them, that are
past their expiry, or that belong to no live lease.

The fourth layer of "machines always end" (after the controller's finally-block, its signal
handlers and each machine's own watchdog). `reap` is a plain function over an EC2 client; the CLI
(`fleet reap`) feeds it the live leases from fleet's state, and the stacks deploy this very file as
a scheduled Lambda (`lambda_handler`), where no lease list exists and only the tags apply.

The tags it reads: `fleet:deadline`, the lease's heartbeat deadline, rewritten by the controller
after every heartbeat (one CreateTags for all the lease's instances) and by `--keep`/`fleet extend`;
once it is DEADLINE_GRACE in the past the controller is gone, and the instance goes within one
reaper period. `fleet:expires-at` (launch + max duration) is the hard line for instances without
a deadline tag, or whose deadline tag someone keeps pushing. That tag is the launcher's word, so it
is capped in turn: an instance goes once it has run `max_life` (the stack's
`fleet:reaper.maxLeaseHours`, else DEFAULT_MAX_LIFE) plus EXPIRY_GRACE, whatever its tag says. One pass costs one filtered,
paginated DescribeInstances (1000 instances a page) plus one TerminateInstances per 1000
instances to end, however many leases there are.

This module imports nothing from fleet and nothing beyond the standard library and boto3, so the
stack can ship it as the Lambda's only file.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from typing import Any, Iterable

TAG_LEASE = "fleet:lease"
TAG_EXPIRES = "fleet:expires-at"
TAG_DEADLINE = "fleet:deadline"
# The deadline tag is written with the controller's clock and read with the reaper's: spare this
# much skew (and the last beat's CreateTags in flight) before ending a machine at its deadline.
DEADLINE_GRACE = timedelta(seconds=60)
TAG_USER = "fleet:user"
TAG_STACK = "fleet:stack"
REAPABLE_STATES = ("pending", "running", "stopping", "stopped")
# An instance with a lease tag but no readable expiry is judged by age instead.
NO_EXPIRY_MAX_AGE = timedelta(hours=48)
# The hard maximum a fleet instance may run, whatever its fleet:expires-at says (a launcher could
# write 9999-12-31): the Lambda gets the stack's fleet:reaper.maxLeaseHours as FLEET_REAPER_MAX_LEASE_HOURS,
# and the AWS provider refuses a max_duration above it. EXPIRY_GRACE: the provider's teardown grace
# (provider.py EXPIRY_GRACE_S), which its own expires-at adds too.
DEFAULT_MAX_LIFE = timedelta(days=7)
# The most stacks/config.py lets fleet:reaper.maxLeaseHours be (366 * 24): a larger value, from an edited
# Lambda environment or stack output, is held to it: a timedelta of 10**20 hours overflows, ending the pass.
MAX_LEASE_HOURS_LIMIT = 366 * 24
EXPIRY_GRACE = timedelta(minutes=15)
MAX_LIFE_ENV = "FLEET_REAPER_MAX_LEASE_HOURS"
# Instances this young are spared the "no live lease" rule: their lease may still be being written.
YOUNG_GRACE = timedelta(minutes=10)
TERMINATE_CHUNK = 1000
PAGE_SIZE = 1000


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def _as_utc(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    return _parse_time(value) if isinstance(value, str) else None


def fleet_instances(ec2, stack: str | None = None) -> list[dict[str, Any]]:
    """Every not-yet-terminated instance carrying a fleet:lease tag of this stack (all pages): its
    `fleet:stack` tag equal to `stack`, or, with no stack, no such tag at all. Another stack's or
    another team's instances are never this reaper's to judge, whatever tags they share."""
    flt = [{"Name": "tag-key", "Values": [TAG_LEASE]},
           {"Name": "instance-state-name", "Values": list(REAPABLE_STATES)}]
    if stack:
        flt.append({"Name": f"tag:{TAG_STACK}", "Values": [stack]})
    found = []
    pages = ec2.get_paginator("describe_instances").paginate(Filters=flt, PaginationConfig={"PageSize": PAGE_SIZE})
    for page in pages:
        for reservation in page.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                tags = {t.get("Key"): t.get("Value") for t in instance.get("Tags", [])}
                if tags.get(TAG_STACK) == (stack or None):
                    found.append(instance)
    return found


def judge(instance: dict[str, Any], live_lease_ids: set[str] | None, now: datetime,
          owner: str | None = None, known_lease_ids: set[str] | None = None,
          max_life: timedelta = DEFAULT_MAX_LIFE) -> str | None:
    """Why this instance should go, or None to spare it. `known_lease_ids`: every lease the caller's
    state has a row of (any status); an instance of another lease is judged by expiry and deadline
    only: job B's `fleet reap` (its own FLEET_HOME, the same login `runner`) ended job A's run."""
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    lease = tags.get(TAG_LEASE, "")
    expires = _parse_time(tags.get(TAG_EXPIRES))
    launched = _as_utc(instance.get("LaunchTime"))
    if expires is not None and now >= expires:
        return f"expired at {expires.isoformat()}"
    # Differences from now, never sums with a tag's time: a tag at the end of time (9999-12-31T23:59:59Z)
    # plus the grace overflowed, and the whole pass stopped with no instance ended.
    if launched is not None and now - launched >= max_life + EXPIRY_GRACE:
        return f"launched over {max_life} ago: past the hard maximum, whatever its {TAG_EXPIRES} tag says"
    deadline = _parse_time(tags.get(TAG_DEADLINE))
    if deadline is not None and now - DEADLINE_GRACE >= deadline:
        return f"heartbeat deadline {deadline.isoformat()} passed: its controller stopped extending the lease"
    if expires is None and launched is not None and now - launched >= NO_EXPIRY_MAX_AGE:
        return f"no readable {TAG_EXPIRES} tag and launched over {NO_EXPIRY_MAX_AGE} ago"
    if live_lease_ids is None or lease in live_lease_ids:
        return None
    if tags.get("fleet:role") == "image-builder":
        return None     # a bake has no lease row: its expiry (above) and its own shutdown end it
    if owner is not None and tags.get(TAG_USER) != owner:
        return None     # someone else's lease: this controller's state cannot speak for it
    if known_lease_ids is not None and lease not in known_lease_ids:
        return None     # a lease this state never held: another FLEET_HOME's, however its user is named
    if launched is not None and now - launched < YOUNG_GRACE:
        return None
    return f"lease {lease or '?'} is not live"


def reap(ec2_client, live_lease_ids: Iterable[str] | None, now: datetime | None = None, dry_run: bool = False,
         owner: str | None = None, stack: str | None = None,
         known_lease_ids: Iterable[str] | None = None, max_life: timedelta | None = None) -> list[dict[str, Any]]:
    """Find and (unless dry_run) terminate orphans. Returns one action per instance judged.

    live_lease_ids: leases fleet still holds (None: unknown, only expiry counts — the Lambda).
    owner: only judge other users' instances by expiry (a personal state store knows only its own).
    stack: only this stack's instances are judged (fleet_instances).
    max_life: the hard maximum run time (DEFAULT_MAX_LIFE when None).
    """
    now = now or datetime.now(timezone.utc)
    live = None if live_lease_ids is None else set(live_lease_ids)
    known = None if known_lease_ids is None else set(known_lease_ids)
    actions = []
    for inst in fleet_instances(ec2_client, stack):
        reason = judge(inst, live, now, owner, known, max_life or DEFAULT_MAX_LIFE)
        if reason is None:
            continue
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        actions.append({"instance_id": inst["InstanceId"], "lease": tags.get(TAG_LEASE),
                        "user": tags.get(TAG_USER), "instance_type": inst.get("InstanceType"),
                        "state": inst["State"]["Name"], "reason": reason,
                        "action": "would-terminate" if dry_run else "terminate"})
    if not dry_run:
        ids = [a["instance_id"] for a in actions]
        for start in range(0, len(ids), TERMINATE_CHUNK):
            chunk = ids[start:start + TERMINATE_CHUNK]
            try:
                ec2_client.terminate_instances(InstanceIds=chunk)
            except Exception as exc:  # noqa: BLE001 — one vanished meanwhile, or one is not ours to end
                if _code(exc) not in _SINGLY:
                    raise
                for one in chunk:   # the rest singly: one such instance must not spare every other
                    try:
                        ec2_client.terminate_instances(InstanceIds=[one])
                    except Exception as exc2:  # noqa: BLE001
                        code = _code(exc2)
                        if code not in _SINGLY:
                            raise
                        for a in actions:
                            if a["instance_id"] == one:
                                a["action"] = "already-gone" if code.startswith("InvalidInstanceID") else "refused"
    return actions


# Codes after which the rest of a batch is still terminated one by one.
_SINGLY = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed", "UnauthorizedOperation")


def _code(exc: BaseException) -> str:
    return str((getattr(exc, "response", None) or {}).get("Error", {}).get("Code", ""))


def max_life_of(hours: Any) -> timedelta:
    """The stack's maxLeaseHours as the hard maximum, MAX_LEASE_HOURS_LIMIT hours at most; anything but
    a positive whole number ("1e300", "nan", "-5", "²", which isdigit() takes and int() does not) gives
    DEFAULT_MAX_LIFE."""
    try:
        n = int(str(hours).strip())
    except ValueError:
        return DEFAULT_MAX_LIFE
    return timedelta(hours=min(n, MAX_LEASE_HOURS_LIMIT)) if n > 0 else DEFAULT_MAX_LIFE


def max_life_from_env() -> timedelta:
    """FLEET_REAPER_MAX_LEASE_HOURS (set by the stack), read by max_life_of."""
    return max_life_of(os.environ.get(MAX_LIFE_ENV, ""))


def lambda_handler(event, context):  # noqa: ARG001 — the Lambda signature
    """Scheduled Lambda entry point: expiry-only reaping in the function's own region.
    event may carry {"dry_run": true}. FLEET_REAPER_DRY_RUN=1 in the environment does the same."""
    import boto3
    dry_run = bool((event or {}).get("dry_run")) or os.environ.get("FLEET_REAPER_DRY_RUN") == "1"
    actions = reap(boto3.client("ec2"), None, dry_run=dry_run, stack=os.environ.get("FLEET_STACK") or None,
                   max_life=max_life_from_env())
    print(json.dumps({"reaped": len(actions), "dry_run": dry_run, "actions": actions}, default=str))
    return {"reaped": len(actions), "dry_run": dry_run, "actions": actions}
