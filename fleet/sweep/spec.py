"""A sweep as asked for: the command template, the trials, and how they share the pool."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ..errors import UsageError
from .params import Trial
from .stopping import StopRule


@dataclass(frozen=True)
class SweepSpec:
    command: str                       # with {name} placeholders (as shown and recorded for the pool)
    trials: tuple[Trial, ...]
    parallel: int = 1                  # trials at once (one slot of machines each)
    gpus_per_trial: int = 1
    trial_timeout_s: int | None = None # a trial still running after this is stopped (None: max_duration)
    budget: Decimal | None = None      # for the whole sweep: the pool's lease, every trial included
    sweep_id: str = ""
    argv: tuple[str, ...] = ()         # the command as words (after `--`): substituted word by word
    stop_if: "StopRule | None" = None  # early stopping (fleet/sweep/stopping.py)
    # How long a pool machine waits on the budget with no trial before it is given back (an empty
    # queue gives it back at once); fleet/sweep/shrink.py.
    idle_release_s: float = 0.0

    def trial_command(self, trial: Trial) -> str:
        return trial.command_argv(self.argv) if self.argv else trial.command(self.command)

    def check(self) -> None:
        if self.parallel < 1:
            raise UsageError("--parallel must be at least 1")
        if self.gpus_per_trial < 1:
            raise UsageError("--gpus-per-trial must be at least 1")
        from ..config.values import MAX_GPUS
        if self.gpus_per_trial > MAX_GPUS:   # 10**23 went through a float: "99999999999999991611392 GPUs"
            raise UsageError(f"--gpus-per-trial must be at most {MAX_GPUS}, got {self.gpus_per_trial}")
        if self.idle_release_s < 0:
            raise UsageError("--idle-release must not be negative")
        if self.trial_timeout_s is not None and self.trial_timeout_s < 1:
            raise UsageError("--trial-timeout must be at least 1s")
        if not self.command.strip():
            raise UsageError("no command to run", hint="fleet sweep --param lr=1e-3,3e-4 -- python train.py --lr {lr}")
        for trial in self.trials[:1]:
            self.trial_command(trial)     # an unknown {name} fails here, before anything is leased
        self._check_lengths()

    def _check_lengths(self) -> None:
        """Each trial's command (and each value, its FLEET_PARAM_*) as long as a machine takes: the
        template is checked as fleet.toml's command is, but its values made some trials' commands
        longer, and each of those failed on the leased pool ("Argument list too long")."""
        from ..config.command import TOO_LONG_HINT, too_long
        for trial in self.trials:
            for name, value in trial.params:
                why = too_long(f"FLEET_PARAM_{name.upper()}={value}")
                if why is not None:
                    raise UsageError(f"parameter {name}'s value in {trial.name} is {why}",
                                     hint="give it a file to read instead")
            why = too_long(self.trial_command(trial))
            if why is not None:
                raise UsageError(f"{trial.name}'s command is {why}", hint=TOO_LONG_HINT)


def new_sweep_id() -> str:
    import secrets
    from datetime import datetime, timezone
    return datetime.now(timezone.utc).strftime("s-%Y%m%d-%H%M%S-") + secrets.token_hex(5)
