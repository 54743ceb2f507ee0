"""Small helpers every component shares."""
from __future__ import annotations

import json
from typing import Any

import pulumi

TYPE_PREFIX = "fleet:stacks"     # component type tokens: fleet:stacks:Network, …


def child(parent: pulumi.Resource, **kwargs: Any) -> pulumi.ResourceOptions:
    """Options for a component's child: parented, so the tree in `pulumi preview` reads by concern."""
    return pulumi.ResourceOptions(parent=parent, **kwargs)


def policy_json(*statements: dict[str, Any]) -> str:
    """An IAM policy document as JSON text (statements may contain only plain values)."""
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)}, sort_keys=True)


def policy_output(*statements: dict[str, Any]) -> pulumi.Output[str]:
    """Like policy_json, for statements holding Outputs (ARNs of resources made in this program)."""
    return pulumi.Output.json_dumps({"Version": "2012-10-17", "Statement": list(statements)})


def assume_role_policy(service: str) -> str:
    return policy_json({"Effect": "Allow", "Principal": {"Service": service},
                        "Action": "sts:AssumeRole"})
