"""The AWS provider: launches GPU machines from the launch templates a fleet stack made.

`AWSProvider` is imported lazily so that `fleet.providers.aws.outputs` (stdlib-only, read by the
stacks program) and `fleet.providers.aws.reap` (deployed alone as a Lambda) never pull in the rest.
"""
from __future__ import annotations

__all__ = ["AWSProvider"]


def __getattr__(name: str):
    if name == "AWSProvider":
        from .provider import AWSProvider
        return AWSProvider
    raise AttributeError(name)
