"""Identity component under Pulumi mocks: the instance role is least privilege."""
from __future__ import annotations

import json

from fleet_stack_mocks import TAGS, run_component

from stacks.components.identity import Identity, IdentityArgs

BUCKET = "arn:aws:s3:::snap-bucket"


def _policy():
    def build():
        ident = Identity("i", IdentityArgs(bucket_arn=BUCKET, region="us-east-1", tags=TAGS))
        return ident, ident.policy.policy
    run, text = run_component(build)
    return run, {s["Sid"]: s for s in json.loads(text)["Statement"]}


def test_reads_bucket_writes_only_own_run_outputs_prefix():
    _, st = _policy()
    assert st["ReadSnapshotBucket"]["Resource"] == f"{BUCKET}/*"
    assert set(st["ReadSnapshotBucket"]["Action"]) == {"s3:GetObject", "s3:GetObjectVersion"}
    write = st["WriteOwnRunOutputs"]
    assert write["Resource"] == f"{BUCKET}/run-outputs/${{aws:userid}}/*"
    assert "s3:DeleteObject" not in write["Action"] and "s3:PutObject" in write["Action"]
    writes = [s for s in st.values() if any(a.startswith("s3:Put") for a in
                                            ([s["Action"]] if isinstance(s["Action"], str) else s["Action"]))]
    assert writes == [write]


def test_machine_role_has_no_ec2_rights():
    """A terminate right conditioned on the target (fleet:lease tag, this stack's profile) let any
    machine end every teammate's machine of the stack; machines end themselves by powering off."""
    _, st = _policy()
    actions = [a for s in st.values() for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])]
    assert not any(a.startswith(("ec2:", "iam:")) or "*" in a for a in actions), actions


def test_role_is_assumable_by_ec2_only():
    run, _ = _policy()
    role = run.one("aws:iam/role:Role")
    trust = json.loads(role.inputs["assumeRolePolicy"])["Statement"]
    assert trust == [{"Action": "sts:AssumeRole", "Effect": "Allow",
                      "Principal": {"Service": "ec2.amazonaws.com"}}]
    assert run.one("aws:iam/instanceProfile:InstanceProfile").inputs["role"] == role.name
