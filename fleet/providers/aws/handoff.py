"""What a detached AWS run's supervisor on node 0 needs besides fleet's package and the lease's key
(fleet/run/node_launch.py, fleet/providers/node0.py): the stack's outputs as a file (which region,
subnets and templates its later attempts lease from), where that file is, and the laptop's AWS
credentials (terminating the instances; the S3 store's credentials travel for every provider).
Releasing node 0 terminates the instance, which ends the supervisor with it."""
from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from ..node0 import Node0Handoff


class AWSHandoff(Node0Handoff):
    release_ends_supervisor = True
    leases_from_node0 = True

    def files(self, config: Any, provider: Any, remote: str) -> dict[str, bytes]:
        return {f"{remote}/aws-outputs.json": _outputs_file(config, provider)}

    def env(self, config: Any, remote: str) -> dict[str, str]:
        return {"FLEET_AWS_OUTPUTS": f"{remote}/aws-outputs.json"}

    def after_copy(self, session: Any, remote: str) -> None:
        from .sandbox import sandbox_enabled
        if not sandbox_enabled():
            return
        # The sandbox's stand-in for the cloud: which instance is which loopback machine. Node 0
        # terminating instances must stop their machines, as EC2 would.
        from ...paths import subdir
        home = f"{remote}/home"
        machines = subdir("aws-sandbox") / "machines"
        session.run(f"mkdir -p {shlex.quote(home + '/aws-sandbox')} && "
                    f"ln -s {shlex.quote(str(machines))} {shlex.quote(home + '/aws-sandbox/machines')}")


def _outputs_file(config: Any, provider: Any) -> bytes:
    """The stack outputs, as the file this computer reads them from."""
    from ...errors import UsageError
    source = os.environ.get("FLEET_AWS_OUTPUTS") or getattr(getattr(provider, "aws", None), "outputs", None)
    if not source:
        raise UsageError("the supervisor on node 0 needs the stack outputs as a file",
                         hint="set FLEET_AWS_OUTPUTS=FILE or `[aws] outputs = \"FILE\"` (`fleet stack up` writes it)")
    path = Path(source).expanduser()
    return (path if path.is_absolute() else config.base_dir / path).read_bytes()
