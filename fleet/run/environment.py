"""Stage "environment": what the machines are, captured after setup and before the command, and on
a rerun the recorded package set installed again before setup (fleet/environment/).

Machines that can be asked (`CapturesEnvironment`, which SSHMachines is) are probed; a run on
machines that cannot (a test's fake) records no environment. A capture that fails is a warning,
never the run's failure: the experiment's result matters more than its description.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..models import Lease
from .context import RunContext
from .machines import CapturesEnvironment, Machines
from .types import RunOptions

if TYPE_CHECKING:
    from ..environment.model import PinnedEnvironment, RunEnvironment
    from .inputs import Inputs


class EnvironmentStage:
    def __init__(self, machines: Machines, inputs: "Inputs", options: RunOptions):
        self.machines, self.inputs = machines, inputs
        self.pinned: "PinnedEnvironment | None" = options.rerun_of.environment if options.rerun_of else None
        self.captured: "RunEnvironment | None" = None

    def setup_command(self, ctx: RunContext, lease: Lease, setup: str) -> str:
        """The setup to run: on a pinned rerun, the recorded package set's wheels are staged from the
        store first, and setup installs exactly them, offline (fleet/environment/pin.py)."""
        if self.pinned is None or not isinstance(self.machines, CapturesEnvironment):
            return setup
        from ..environment.pin import describe, pinned_setup, stage_wheels
        ctx.events.phase("setup", describe(self.pinned))
        stage_wheels(lease, self.inputs.store, self.pinned, ctx.events)
        return pinned_setup(self.pinned, setup) or setup

    def capture(self, ctx: RunContext, lease: Lease) -> "RunEnvironment | None":
        if not isinstance(self.machines, CapturesEnvironment):
            return None
        try:
            env = self.machines.capture_environment(ctx, lease, self.inputs.store, self.pinned)
        except Exception as exc:  # noqa: BLE001 — see the module docstring
            ctx.events.warn(f"could not capture the machines' environment: {exc}")
            return None
        p = env.primary
        if p is not None:
            ctx.events.phase("environment", f"{p.image.label()}, {p.python}, {len(p.packages)} packages, "
                                            f"GPU {p.gpu.model} (driver {p.gpu.driver}) "
                                            f"[{env.capture_s:.2f}s]")
        for line in env.differences:   # before the command starts, and recorded with the run
            ctx.events.warn(f"environment differs from run {env.pinned_from}: {line}")
        self.captured = env
        if self.pinned is not None:
            from ..environment.pin import package_refusal
            refused = package_refusal(self.pinned, env)
            if refused is not None:   # recorded (self.captured) with its differences, the command not started
                raise refused
        return env
