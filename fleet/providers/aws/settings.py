"""`[aws]` in fleet.toml: the AWS provider's own section (stdlib-only, like outputs.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from ...config.schema import BOOL, STRING, Key, Kind, choice
from ..base import ProviderSettings

CONNECT = Kind(choice(("public", "private")), {"type": "string", "enum": ["public", "private"]})


@dataclass
class AWSSettings(ProviderSettings):
    outputs: str | None = None              # a stack outputs JSON file
    stack: str | None = None                # or a Pulumi stack read live
    stack_dir: str | None = None
    connect: str = "public"                 # reach machines on their public or private IPs
    allow_custom_endpoint: bool = False     # AWS_ENDPOINT_URL is a real private endpoint, not moto

    section: ClassVar[str] = "aws"
    help: ClassVar[str] = "AWS settings: where the stack outputs are and how to reach the machines."
    starter: ClassVar[str] = """\
# AWS provider settings (the region and account come from the stack outputs).
# [aws]
# outputs = "stack-outputs.json"  # written by `fleet stack up`; $FLEET_AWS_OUTPUTS overrides
# stack = "dev"                   # or read a Pulumi stack's outputs live (needs the pulumi CLI)
# stack_dir = "."                 # the Pulumi project directory for `stack`
# connect = "public"              # "private": reach machines on private IPs (controller inside the VPC)
# allow_custom_endpoint = false   # true: AWS_ENDPOINT_URL is a real private endpoint, not moto
"""
    keys: ClassVar[dict[str, Key]] = {
        "outputs": Key(STRING, "Stack outputs file (written by `fleet stack up`). $FLEET_AWS_OUTPUTS overrides."),
        "stack": Key(STRING, "Pulumi stack to read the outputs from live (needs the pulumi CLI)."),
        "stack_dir": Key(STRING, "Directory of the Pulumi project for `stack`.", default="."),
        "connect": Key(CONNECT, "How the controller reaches machines: their public or private IP.",
                       default="public"),
        "allow_custom_endpoint": Key(BOOL, "Allow AWS_ENDPOINT_URL without the sandbox (a real private "
                                           "endpoint, not moto).", default=False),
    }

    def outputs_source(self) -> dict[str, Any]:
        """What fleet.providers.aws.outputs.resolve_outputs reads."""
        return {k: v for k, v in (("outputs", self.outputs), ("stack", self.stack), ("stack_dir", self.stack_dir))
                if v}
