"""Identity component under Pulumi mocks: the machines' role has no permissions at all."""
from __future__ import annotations

import json

from fleet_stack_mocks import TAGS, run_component, run_program

from stacks.components.identity import Identity, IdentityArgs


def _declare():
    def build():
        ident = Identity("i", IdentityArgs(region="us-east-1", tags=TAGS))
        return ident, ident.role.arn
    run, _ = run_component(build)
    return run


def _machine_role_grants(run) -> list:
    """Every statement any policy resource grants the machine role (inline or attached)."""
    role = run.one("aws:iam/role:Role") if len(run.of_type("aws:iam/role:Role")) == 1 else \
        next(r for r in run.of_type("aws:iam/role:Role") if "ec2.amazonaws.com" in r.inputs["assumeRolePolicy"])
    grants = []
    for r in run.custom:
        if r.inputs.get("role") in (role.name, f"{role.name}-id") and r.type != "aws:iam/instanceProfile:InstanceProfile":
            text = r.inputs.get("policy") or r.inputs.get("policyArn") or ""
            grants.extend(json.loads(text)["Statement"] if text.startswith("{") else [text])
    return grants


def test_machine_role_has_no_ec2_rights():
    """A terminate right conditioned on the target (fleet:lease tag, this stack's profile) let any
    machine end every teammate's machine of the stack; machines end themselves by powering off."""
    grants = _machine_role_grants(run_program())
    actions = [a for s in grants if isinstance(s, dict)
               for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not any(a.startswith(("ec2:", "iam:")) or "*" in a for a in actions), actions


def test_machine_role_cannot_read_or_list_the_bucket():
    """Machines fetch chunks through presigned GETs the controller makes per chunk; a bucket right
    would let any machine list and read every user's store."""
    assert _machine_role_grants(run_program()) == []
    assert _machine_role_grants(_declare()) == []


def test_role_is_assumable_by_ec2_only():
    run = _declare()
    role = run.one("aws:iam/role:Role")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust == [{"Action": "sts:AssumeRole", "Effect": "Allow",
                      "Principal": {"Service": "ec2.amazonaws.com"}}]
    assert run.one("aws:iam/instanceProfile:InstanceProfile").inputs["role"] == role.name
