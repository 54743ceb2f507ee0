"""boto3 clients for fleet, and AWS errors turned into one line a user can act on.

Clients use botocore's adaptive retry mode (client-side rate limiting plus retries of throttling
and transient errors). `AWS_ENDPOINT_URL` (the sandbox's moto server) is honoured by botocore itself.
"""
from __future__ import annotations

from typing import Any

from ...errors import (CapacityError, ConfigError, EnvironmentProblem, FleetError, InfrastructureError,
                       NotFound)

RETRIES = {"mode": "adaptive", "max_attempts": 8}

# The instance type/AZ/market has no room right now: try the next one.
CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientCapacity",
    "InsufficientReservedInstanceCapacity", "Unsupported", "InsufficientFreeAddressesInSubnet",
    "SpotMaxPriceTooLow", "MaxSpotInstanceCountExceeded", "InsufficientCapacityOnHost",
})
# An account quota for this instance family and market: other AZs will not help, other families may.
QUOTA_CODES = frozenset({"VcpuLimitExceeded", "InstanceLimitExceeded", "MaxSpotInstanceCountExceeded"})
THROTTLE_CODES = frozenset({"RequestLimitExceeded", "Throttling", "ThrottlingException",
                            "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"})


class QuotaError(CapacityError):
    """An account limit (e.g. VcpuLimitExceeded): needs a quota increase, not a retry."""


def error_code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", "")) if hasattr(exc, "response") else ""


def error_message(exc: BaseException) -> str:
    if hasattr(exc, "response"):
        msg = str(exc.response.get("Error", {}).get("Message", "")).strip()
        if msg:
            return msg.splitlines()[0]
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def check_region(region: str) -> None:
    from ...boto_sessions import new_session
    session = new_session()
    known = set()
    for partition in ("aws", "aws-cn", "aws-us-gov"):
        known.update(session.get_available_regions("ec2", partition_name=partition))
    if known and region not in known:
        raise ConfigError(f"unknown AWS region {region!r}",
                          hint="set `region` in the stack config (e.g. us-east-1) and run `fleet stack up`")


def make_client(region: str, service: str = "ec2", session: Any = None):
    from botocore.config import Config

    from ...boto_sessions import new_session
    check_region(region)
    session = session or new_session()
    if session.get_credentials() is None:
        raise EnvironmentProblem("no AWS credentials found",
                                 hint="set AWS_PROFILE (after `aws sso login`) or AWS_ACCESS_KEY_ID and "
                                      "AWS_SECRET_ACCESS_KEY, or use the sandbox: scripts/aws_sandbox.py")
    return session.client(service, region_name=region,
                          config=Config(retries=dict(RETRIES), connect_timeout=10, read_timeout=60))


def translate(exc: BaseException, doing: str) -> FleetError:
    """Any botocore/AWS failure → the FleetError a user can act on (one line)."""
    if isinstance(exc, FleetError):
        return exc
    from botocore.exceptions import (ClientError, EndpointConnectionError, NoCredentialsError,
                                     NoRegionError, PartialCredentialsError)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return EnvironmentProblem(f"{doing}: no usable AWS credentials ({error_message(exc)})",
                                  hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY")
    if isinstance(exc, NoRegionError):
        return ConfigError(f"{doing}: no AWS region", hint="set `region` in the stack config")
    if isinstance(exc, EndpointConnectionError):
        return InfrastructureError(f"{doing}: cannot reach AWS ({error_message(exc)})",
                                   hint="check the network, the region, and AWS_ENDPOINT_URL if set")
    if isinstance(exc, ClientError):
        code, msg = error_code(exc), error_message(exc)
        if code in {"AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "SignatureDoesNotMatch",
                    "ExpiredToken", "AccessDenied", "UnrecognizedClientException"}:
            return EnvironmentProblem(f"{doing}: AWS refused the credentials: {code}: {msg}",
                                      hint="refresh them (`aws sso login`) or use a role allowed to launch")
        if code.startswith("InvalidLaunchTemplate") or code in {"InvalidSubnetID.NotFound",
                                                                "InvalidGroup.NotFound", "InvalidAMIID.NotFound"}:
            return NotFound(f"{doing}: {code}: {msg}",
                            hint="the stack outputs are stale: run `fleet stack up` and save the outputs again")
        if code in QUOTA_CODES:
            return QuotaError(f"{doing}: account limit {code}: {msg}",
                              hint="ask for a quota increase in Service Quotas, or use fewer GPUs")
        if code in CAPACITY_CODES:
            return CapacityError(f"{doing}: {code}: {msg}")
        return InfrastructureError(f"{doing}: {code or type(exc).__name__}: {msg}")
    return InfrastructureError(f"{doing}: {type(exc).__name__}: {error_message(exc)}")


def is_transient(exc: BaseException) -> bool:
    """Failures after which the request may or may not have been carried out: look before retrying."""
    from botocore.exceptions import ClientError, ConnectionClosedError, ConnectionError, ReadTimeoutError
    if isinstance(exc, (ConnectionError, ConnectionClosedError, ReadTimeoutError)):
        return True
    return isinstance(exc, ClientError) and error_code(exc) in THROTTLE_CODES
