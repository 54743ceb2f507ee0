"""Launching, finding, waiting for and terminating a lease's instances. Never launches twice.

One RunInstances call per group (MinCount = MaxCount = machines: all or nothing), with a ClientToken
derived from the lease id and the attempt, so a call botocore retries returns the same instances on
AWS. moto (the sandbox and tests) does not honour ClientToken, and AWS only remembers tokens for a
while, so fleet does not rely on it alone: every launch is tagged `fleet:launch=<token>` and, before
any repeat of a call whose outcome is unknown (connection dropped, throttled past botocore's
retries), fleet looks for instances already carrying that tag and adopts them.

Attempt order: spot (when the template allows) across every offer × AZ, then on-demand across the
same; offers are the template's machine mixes, cheapest first; AZs in the stack outputs' order,
except that spot attempts go to the AZ with the lowest known spot price first.
Capacity errors move to the next attempt; a quota error (VcpuLimitExceeded) skips the rest of that
instance family in that market, since other AZs share the quota.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from ...errors import CapacityError, InfrastructureError, UsageError
from ...gpus import gpus_text
from ..base import MachineMix
from .session import QUOTA_CODES, CAPACITY_CODES, QuotaError, error_code, error_message, is_transient, translate

LIVE_STATES = ("pending", "running", "stopping", "stopped")
TAG_LEASE, TAG_LAUNCH, TAG_STACK = "fleet:lease", "fleet:launch", "fleet:stack"
TERMINATE_CHUNK = 1000
PAGE_SIZE = 1000          # describe_instances page size; tests lower it to exercise pagination


@dataclass(frozen=True)
class Attempt:
    offer: MachineMix
    az: str
    subnet_id: str
    spot: bool

    @property
    def family(self) -> str:
        return self.offer.instance_type.split(".")[0]

    def describe(self) -> str:
        market = "spot" if self.spot else "on-demand"
        return f"{self.offer.machines}×{self.offer.instance_type} {market} in {self.az}"


def plan_attempts(offers: list[MachineMix], subnets: dict[str, str], spot_first: bool,
                  spot_price: Callable[[str, str], Any] | None = None) -> list[Attempt]:
    """`spot_price(instance_type, az)` (None: unknown) puts each offer's spot attempts in its
    cheapest AZ first; AZs without a known price keep the stack's order, after them."""
    markets = (True, False) if spot_first else (False,)

    def zones(offer: MachineMix, spot: bool) -> list[tuple[str, str]]:
        items = list(subnets.items())
        if not (spot and spot_price):
            return items
        known = {az: spot_price(offer.instance_type, az) for az, _ in items}
        return sorted(items, key=lambda item: (known[item[0]] is None, known[item[0]] or 0))
    return [Attempt(o, az, subnet, spot) for spot in markets for o in offers for az, subnet in zones(o, spot)]


def client_token(lease_id: str, attempt: Attempt) -> str:
    """Same lease + same attempt → same token (≤ 64 ASCII chars, as EC2 requires)."""
    key = f"{lease_id}|{attempt.offer.instance_type}|{attempt.offer.machines}|{attempt.az}|{attempt.spot}"
    return "fleet-" + hashlib.sha256(key.encode()).hexdigest()[:40]


def tag_list(tags: dict[str, str]) -> list[dict[str, str]]:
    return [{"Key": k, "Value": str(v)} for k, v in tags.items()]


def find_instances(ec2, filters: dict[str, str | Iterable[str]], states: Iterable[str] = LIVE_STATES,
                   tag_keys: Iterable[str] = ()) -> list[dict[str, Any]]:
    """Every instance whose tags equal the filters' values exactly (and carrying a tag named in
    `tag_keys`), across all pages. EC2 reads `*` and `?` in a filter value as wildcards: a lease id
    "l-*" from a planted state row would match every lease's instances, so such a value is refused,
    and what EC2 answers is compared again here."""
    wanted = {k: {v} if isinstance(v, str) else set(v) for k, v in filters.items()}
    for key, values in wanted.items():
        odd = next((v for v in values if not v or "*" in v or "?" in v), None)
        if odd is not None:
            raise UsageError(f"tag value {odd!r} for {key} is not a plain name; no instance is looked up by it")
    flt = [{"Name": f"tag:{k}", "Values": sorted(v)} for k, v in wanted.items()]
    if tag_keys:
        flt.append({"Name": "tag-key", "Values": list(tag_keys)})
    if states:
        flt.append({"Name": "instance-state-name", "Values": list(states)})
    out: list[dict[str, Any]] = []
    pages = ec2.get_paginator("describe_instances").paginate(Filters=flt, PaginationConfig={"PageSize": PAGE_SIZE})
    for page in pages:
        for reservation in page.get("Reservations", []):
            for instance in reservation.get("Instances", []):
                tags = {t.get("Key"): t.get("Value") for t in instance.get("Tags", [])}
                if all(tags.get(k) in values for k, values in wanted.items()):
                    out.append(instance)
    return out


def lease_filter(lease_id: str, stack: str | None) -> dict[str, str]:
    """The tags that make an instance this lease's: its id, and in a stack that tags its machines
    (`fleet:stack`) that stack too. Another stack in the account may carry the same lease id (a
    teammate's, or anyone's who copies the tags): its instances are not this lease's to end or adopt."""
    return {TAG_LEASE: lease_id, **({TAG_STACK: stack} if stack else {})}


def lease_stack(lease, outputs) -> str | None:
    """The stack whose `fleet:stack` tag the lease's machines carry: recorded with the lease at
    launch, else (a lease recorded before that) the stack of the outputs read here, if any."""
    if lease is not None and "stack" in lease.meta:
        return lease.meta["stack"] or None
    return outputs.stack if outputs is not None else None


def run_params(attempt: Attempt, launch_template_id: str, user_data: str, tags: dict[str, str],
               token: str, network: dict[str, Any] | None = None, image_id: str | None = None) -> dict[str, Any]:
    """RunInstances arguments. Subnet (the attempt's AZ) and security group are given per call at
    the instance level, which composes with a launch template that sets `SecurityGroupIds` (as the
    stack's do); public addresses come from the subnets' MapPublicIpOnLaunch."""
    network = network or {}
    all_tags = dict(tags, **{TAG_LAUNCH: token})
    params: dict[str, Any] = {
        "MinCount": attempt.offer.machines, "MaxCount": attempt.offer.machines,
        "ClientToken": token,
        "LaunchTemplate": {"LaunchTemplateId": launch_template_id, "Version": "$Default"},
        "InstanceType": attempt.offer.instance_type,
        "SubnetId": attempt.subnet_id,
        "UserData": user_data,
        # IMDSv2 only; 2 hops so containers on the machine still reach it (as the stack's templates).
        "MetadataOptions": {"HttpTokens": "required", "HttpEndpoint": "enabled", "HttpPutResponseHopLimit": 2},
        "TagSpecifications": [{"ResourceType": "instance", "Tags": tag_list(all_tags)},
                              {"ResourceType": "volume", "Tags": tag_list(all_tags)}],
        "InstanceInitiatedShutdownBehavior": "terminate",   # power-off (the watchdog) = terminate
    }
    if network.get("security_group_id"):
        params["SecurityGroupIds"] = [network["security_group_id"]]
    if image_id:   # a rerun boots the AMI its run recorded, not the launch template's current one
        params["ImageId"] = image_id
    if attempt.spot:
        # One-time request: an interruption terminates (never stops) the instance.
        params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": {
            "SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"}}
    return params


def _backoff(attempt: int, base: float = 0.5, cap: float = 15.0) -> float:
    return min(cap, base * (2 ** attempt))


def launch_once(ec2, params: dict[str, Any], *, tries: int = 5, sleep: Callable[[float], None] = time.sleep,
                ) -> list[dict[str, Any]]:
    """One RunInstances call, repeated only after checking that the earlier try did not launch."""
    token = params["ClientToken"]
    for i in range(tries):
        if i:
            already = find_instances(ec2, {TAG_LAUNCH: token}, states=("pending", "running"))
            if already:
                return already
        try:
            return ec2.run_instances(**params)["Instances"]
        except Exception as exc:  # noqa: BLE001 — classified below
            if not is_transient(exc) or i == tries - 1:
                raise
            sleep(_backoff(i))
    raise AssertionError("unreachable")


def launch(ec2, attempts: list[Attempt], *, lease_id: str, launch_template_id: str, user_data: str,
           tags: dict[str, str], network: dict[str, Any] | None = None, image_id: str | None = None,
           on_attempt: Callable[[Attempt, str], None] | None = None,
           sleep: Callable[[float], None] = time.sleep) -> tuple[Attempt, list[dict[str, Any]]]:
    """Try attempts in order until one launches; return it and its instances."""
    failures: list[str] = []
    blocked: set[tuple[str, bool]] = set()
    quota_hit = ""
    for attempt in attempts:
        if (attempt.family, attempt.spot) in blocked:
            continue
        token = client_token(lease_id, attempt)
        try:
            instances = launch_once(ec2, run_params(attempt, launch_template_id, user_data, tags, token, network,
                                                    image_id), sleep=sleep)
        except Exception as exc:  # noqa: BLE001 — classified below
            code = error_code(exc)
            if code in QUOTA_CODES:
                blocked.add((attempt.family, attempt.spot))
                quota_hit = f"{code}: {error_message(exc)}"
            elif code not in CAPACITY_CODES:
                raise translate(exc, f"launching {attempt.describe()}") from None
            failures.append(f"{attempt.describe()}: {code}")
            if on_attempt:
                on_attempt(attempt, code)
            continue
        if on_attempt:
            on_attempt(attempt, "launched")
        return attempt, instances
    tried = "; ".join(failures[:6]) + (f"; … {len(failures) - 6} more" if len(failures) > 6 else "")
    if quota_hit and all(code_of(f) in QUOTA_CODES for f in failures):
        raise QuotaError(f"account limit reached for every allowed instance type ({quota_hit})",
                         hint="request a quota increase (Service Quotas → EC2 → Running On-Demand/Spot "
                              "P or G instances) or ask for fewer --gpus")
    raise CapacityError(f"no capacity for {gpus_text(attempts[0].offer.gpus if attempts else 0)} in any allowed "
                        f"AZ / instance type ({tried})",
                        hint="try again later, add AZs or instance types to the template, or use fewer --gpus")


def code_of(failure: str) -> str:
    return failure.rsplit(": ", 1)[-1]


def wait_for_state(ec2, lease_id: str, ids: list[str], want: str, *, timeout_s: float = 600,
                   sleep: Callable[[float], None] = time.sleep, stack: str | None = None) -> list[dict[str, Any]]:
    """Poll (one paginated describe per round, with back-off) until every id is in `want`.
    Waiting for "running" fails fast when an instance ends instead (spot reclaimed, capacity)."""
    deadline = time.monotonic() + timeout_s
    wanted = set(ids)
    rounds = 0
    while True:
        found = {i["InstanceId"]: i for i in find_instances(ec2, lease_filter(lease_id, stack), states=())
                 if i["InstanceId"] in wanted}
        states = {i: (found[i]["State"]["Name"] if i in found else "gone") for i in wanted}
        if want == "terminated":
            if all(s in ("terminated", "gone") for s in states.values()):
                return list(found.values())
        else:
            dead = {i: s for i, s in states.items() if s in ("shutting-down", "terminated", "gone", "stopped")}
            if dead:
                reasons = {found[i].get("StateReason", {}).get("Message", "") for i in dead if i in found}
                raise InfrastructureError(f"{len(dead)} instance(s) of lease {lease_id} ended while starting "
                                          f"({', '.join(sorted(r for r in reasons if r)) or 'no reason given'})",
                                          hint="spot capacity may have been reclaimed; try again or use on-demand")
            if all(s == want for s in states.values()):
                return [found[i] for i in ids]
        if time.monotonic() >= deadline:
            waiting = sorted(i for i, s in states.items() if s != want)
            raise InfrastructureError(f"timed out after {timeout_s:.0f}s waiting for {len(waiting)} instance(s) "
                                      f"of lease {lease_id} to be {want} (e.g. {waiting[0]})")
        sleep(_backoff(rounds, base=1.0))
        rounds += 1


def terminate_lease(ec2, lease_id: str, *, wait: bool = True, timeout_s: float = 600,
                    sleep: Callable[[float], None] = time.sleep, only: set[str] | None = None,
                    stack: str | None = None) -> list[str]:
    """Terminate every live instance tagged with the lease in this stack (`only`: those of them with
    these ids, a partial release); already gone is fine. Returns the ids."""
    live = find_instances(ec2, lease_filter(lease_id, stack),
                          states=("pending", "running", "stopping", "stopped", "shutting-down"))
    ids = [i["InstanceId"] for i in live if only is None or i["InstanceId"] in only]
    for start in range(0, len(ids), TERMINATE_CHUNK):
        chunk = ids[start:start + TERMINATE_CHUNK]
        try:
            ec2.terminate_instances(InstanceIds=chunk)
        except Exception as exc:  # noqa: BLE001
            if not error_code(exc).startswith("InvalidInstanceID"):
                raise translate(exc, f"terminating lease {lease_id}") from None
            for one in chunk:   # some vanished between describe and terminate: do the rest singly
                try:
                    ec2.terminate_instances(InstanceIds=[one])
                except Exception as exc2:  # noqa: BLE001
                    if not error_code(exc2).startswith("InvalidInstanceID"):
                        raise translate(exc2, f"terminating {one}") from None
    if wait and ids:
        wait_for_state(ec2, lease_id, ids, "terminated", timeout_s=timeout_s, sleep=sleep, stack=stack)
    return ids
