"""Guard component under Pulumi mocks: the reaper Lambda on a schedule, able to end only fleet machines."""
from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pulumi
import pytest
from fleet_stack_mocks import REPO, TAGS, run_component

from stacks.components.guard import HANDLER, Guard, GuardArgs, lambda_code


def _declare(**over):
    args = dict(stack="test", region="eu-west-1", schedule="rate(5 minutes)", dry_run=False,
                log_retention_days=14, max_lease_hours=48, package_root=REPO, tags=TAGS)
    args.update(over)

    def build():
        g = Guard("g", GuardArgs(**args))
        return g, g.role_policy.policy
    return run_component(build)


def test_scheduled_function_runs_the_repositorys_reaper():
    run, _ = _declare()
    fn = run.one("aws:lambda/function:Function").inputs
    assert fn["handler"] == HANDLER == "fleet_reap.lambda_handler"
    assert fn["environment"]["variables"]["FLEET_REAPER_DRY_RUN"] == "0"
    # the hard maximum the reaper allows any machine, whatever its fleet:expires-at says
    assert fn["environment"]["variables"]["FLEET_REAPER_MAX_LEASE_HOURS"] == "48"
    code = fn["code"]
    assert isinstance(code, pulumi.AssetArchive)
    (name, asset), = code.assets.items()
    assert name == "fleet_reap.py" and Path(asset.path) == REPO / "fleet/providers/aws/reap.py"
    rule = run.one("aws:cloudwatch/eventRule:EventRule").inputs
    assert rule["scheduleExpression"] == "rate(5 minutes)"
    target = run.one("aws:cloudwatch/eventTarget:EventTarget").inputs
    assert target["arn"] == f"arn:aws:lambda:us-east-1:123456789012:function:{fn['name']}"
    perm = run.one("aws:lambda/permission:Permission").inputs
    assert perm["principal"] == "events.amazonaws.com" and perm["sourceArn"].endswith("rule/g-reaper")
    logs = run.one("aws:cloudwatch/logGroup:LogGroup").inputs
    assert logs["name"] == f"/aws/lambda/{fn['name']}" and logs["retentionInDays"] == 14


def test_role_terminates_only_this_stacks_lease_tagged_instances():
    run, text = _declare()
    st = {s["Sid"]: s for s in json.loads(text)["Statement"]}
    term = st["TerminateOnlyFleetMachines"]
    assert term["Action"] == "ec2:TerminateInstances"
    assert term["Resource"] == "arn:aws:ec2:eu-west-1:*:instance/*"
    # Another stack's (or team's) instances carry fleet:lease too: never this reaper's to end.
    assert term["Condition"] == {"Null": {"aws:ResourceTag/fleet:lease": "false"},
                                 "StringEquals": {"aws:ResourceTag/fleet:stack": "test"}}
    fn = run.one("aws:lambda/function:Function").inputs
    assert fn["environment"]["variables"]["FLEET_STACK"] == "test"
    assert all(a.startswith("ec2:Describe") for a in st["FindFleetMachines"]["Action"])
    assert st["WriteOwnLogs"]["Resource"].endswith("log-group:/aws/lambda/fleet-test-reaper:*")


def test_packaged_handler_imports_alone_and_honours_dry_run(tmp_path, monkeypatch):
    """The Lambda gets reap.py alone: it must import with no fleet package around it."""
    src = (REPO / "fleet/providers/aws/reap.py").read_text()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("fleet_reap.py", src)
    with zipfile.ZipFile(buf) as z:
        z.extractall(tmp_path)
    import subprocess
    import sys
    probe = ("import sys; sys.path[:0]=[sys.argv[1]]; import fleet_reap, inspect; "
             "assert callable(fleet_reap.lambda_handler); assert 'fleet' not in sys.modules; print('ok')")
    out = subprocess.run([sys.executable, "-I", "-c", probe, str(tmp_path)], capture_output=True,
                         text=True, timeout=30)
    assert out.stdout.strip() == "ok", out.stderr


def test_missing_reaper_source_is_a_clear_error(tmp_path):
    with pytest.raises(pulumi.RunError, match="reap.py is missing"):
        lambda_code(tmp_path)
