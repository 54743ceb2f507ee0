"""Guard: the reaper — the same function as `fleet reap` — as a Lambda on an EventBridge schedule.

It is the fourth layer of "always destroy" (after the controller's finally-block, its signal
handlers and the on-machine deadline): when a laptop dies mid-run and a machine's watchdog somehow
fails too, the reaper still terminates instances past their `fleet:expires-at`, and any instance
`fleet:reaper.maxLeaseHours` after its launch whatever that tag says (a launcher writes it).

The function's role can describe instances (Describe* has no resource-level scoping in EC2) and
terminate only instances that carry a fleet lease tag; it writes only to its own log group.
The code is packaged from this repository: fleet/providers/aws/reap.py, whose `lambda_handler` reaps
by expiry only (a Lambda has no lease list), so the Lambda runs exactly the reaper `fleet reap` runs.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pulumi
import pulumi_aws as aws

from fleet.providers.aws.reap import MAX_LIFE_ENV

from .common import TYPE_PREFIX, assume_role_policy, child, policy_output
from .identity import LEASE_TAG

REAPER_SOURCE = Path("fleet") / "providers" / "aws" / "reap.py"
MODULE = "fleet_reap"                      # reap.py's name inside the Lambda package
HANDLER = f"{MODULE}.lambda_handler"
RUNTIME = "python3.12"


@dataclass(frozen=True)
class GuardArgs:
    stack: str
    region: str
    schedule: str
    dry_run: bool
    log_retention_days: int
    max_lease_hours: int        # the hard maximum the reaper allows any machine, whatever its tags say
    package_root: Path          # the directory holding the fleet package (fleet/providers/aws/reap.py)
    tags: dict[str, str]


def lambda_code(package_root: Path) -> pulumi.AssetArchive:
    """reap.py alone: it is stdlib + boto3 only (the Lambda runtime ships boto3), by design of the
    AWS provider, so the function runs exactly the code `fleet reap` runs."""
    source = package_root / REAPER_SOURCE
    if not source.is_file():
        raise pulumi.RunError(f"the reaper {source} is missing: reinstall fleet or run from a checkout")
    return pulumi.AssetArchive({f"{MODULE}.py": pulumi.FileAsset(str(source))})


class Guard(pulumi.ComponentResource):
    function: aws.lambda_.Function

    def __init__(self, name: str, args: GuardArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__(f"{TYPE_PREFIX}:Guard", name, None, opts)
        tags = args.tags
        function_name = f"fleet-{args.stack}-reaper"[:64]
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-reaper", name=f"/aws/lambda/{function_name}",
            retention_in_days=args.log_retention_days, tags=tags, opts=child(self))
        self.role = aws.iam.Role(f"{name}-reaper", assume_role_policy=assume_role_policy(
            "lambda.amazonaws.com"), description="fleet reaper: terminate expired fleet machines",
            tags=tags, opts=child(self))
        self.role_policy = aws.iam.RolePolicy(
            f"{name}-reaper", role=self.role.id,
            policy=policy_output(
                {"Sid": "FindFleetMachines", "Effect": "Allow",
                 "Action": ["ec2:DescribeInstances", "ec2:DescribeTags"], "Resource": "*"},
                {"Sid": "TerminateOnlyFleetMachines", "Effect": "Allow",
                 "Action": "ec2:TerminateInstances",
                 "Resource": f"arn:aws:ec2:{args.region}:*:instance/*",
                 # This stack's machines only: another stack's (or team's) carry fleet:lease too.
                 "Condition": {"Null": {f"aws:ResourceTag/{LEASE_TAG}": "false"},
                               "StringEquals": {"aws:ResourceTag/fleet:stack": args.stack}}},
                {"Sid": "WriteOwnLogs", "Effect": "Allow",
                 "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                 "Resource": self.log_group.arn.apply(lambda a: f"{a}:*")},
            ),
            opts=child(self))
        self.function = aws.lambda_.Function(
            f"{name}-reaper", name=function_name, role=self.role.arn, runtime=RUNTIME,
            handler=HANDLER, code=lambda_code(args.package_root), timeout=300, memory_size=256,
            environment={"variables": {"FLEET_REAPER_DRY_RUN": "1" if args.dry_run else "0",
                                       "FLEET_STACK": args.stack,
                                       MAX_LIFE_ENV: str(args.max_lease_hours)}},
            tags=tags, opts=child(self, depends_on=[self.log_group, self.role_policy]))
        self.rule = aws.cloudwatch.EventRule(
            f"{name}-reaper", schedule_expression=args.schedule,
            description="fleet: reap expired machines", tags=tags, opts=child(self))
        self.target = aws.cloudwatch.EventTarget(
            f"{name}-reaper", rule=self.rule.name, arn=self.function.arn, opts=child(self))
        self.permission = aws.lambda_.Permission(
            f"{name}-reaper", action="lambda:InvokeFunction", function=self.function.name,
            principal="events.amazonaws.com", source_arn=self.rule.arn, opts=child(self))
        self.register_outputs({"function_name": self.function.name,
                               "function_arn": self.function.arn, "schedule": args.schedule})

