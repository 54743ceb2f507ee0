"""Where `fleet image` works: the AWS region and network an image is baked in (the stack outputs',
else the environment's), and the bake mode the AWS sandbox allows."""
from __future__ import annotations

import os
from pathlib import Path

from .bake import BakeOptions


def stack_outputs(path: Path | None):
    """The stack outputs at `path`, else $FLEET_AWS_OUTPUTS; None without either."""
    from ..providers.aws.outputs import load_outputs
    source = path or os.environ.get("FLEET_AWS_OUTPUTS")
    return load_outputs(source) if source else None


def ec2_client(region: str | None, outputs):
    """EC2 in `region`, else the stack's, else AWS_REGION / AWS_DEFAULT_REGION."""
    from ..errors import ConfigError
    from ..providers.aws.session import make_client
    region = region or (outputs.region if outputs else None) or os.environ.get("AWS_REGION") \
        or os.environ.get("AWS_DEFAULT_REGION")
    if not region:
        raise ConfigError("no AWS region for the image", hint="pass --region, set AWS_REGION, or "
                                                              "point FLEET_AWS_OUTPUTS at stack outputs")
    return make_client(region)


def bake_options(outputs, *, check: bool = False, ssh_cidr: str | None = None) -> BakeOptions:
    """In the sandbox every bake is a check-mode bake (it installs nothing); outside it a check-mode
    bake is refused, since its image must not reach a real account. With stack outputs the builder
    uses the stack's subnet and SSH group."""
    from ..errors import UsageError
    from ..providers.aws.sandbox import Sandbox, sandbox_enabled
    sandbox = Sandbox() if sandbox_enabled() else None
    if check and sandbox is None:
        raise UsageError("--check runs only in the AWS sandbox (FLEET_AWS_SANDBOX=1)",
                         hint="a check-mode bake installs nothing, so its image must not reach a real account")
    options = BakeOptions(mode="check" if (check or sandbox) else "apply", sandbox=sandbox, ssh_cidr=ssh_cidr)
    if outputs is not None:
        options.subnet_id = next(iter(outputs.subnets.values()))
        options.security_group_id = outputs.security_group_id
        options.stack = outputs.stack or None
    return options
