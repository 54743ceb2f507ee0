"""What each stage of a run hands the next: frozen, typed results (see fleet/run/pipeline.py).

    Offer → BudgetGrant → Lease → StagedInputs → ExecResult → Collected → Released → Cost → RecordRef
                                                                             ↘ all of them → RunSummary

One concern gives another a typed field here, never a key in a shared dict.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from ..gpus import GpuType
from ..models import Plan, Template

if TYPE_CHECKING:
    import threading

    from .checkpoints import Resume
    from ..environment.model import PinnedEnvironment
    from typing import Callable

    from .offer import Quote
    from ..money.budget import BudgetPolicy, IdlePolicy, Price
    from ..money.metering import BudgetLimits


@dataclass(frozen=True)
class RerunOf:
    """`fleet rerun`: the recorded run and the pins its inputs must match byte for byte."""

    run_id: str
    pins: "PinnedInputs"
    environment: "PinnedEnvironment | None" = None   # the recorded environment to install again


@dataclass(frozen=True)
class RunOptions:
    """How this run was asked for, beyond fleet.toml (CLI flags, rerun, CI mode)."""

    keep_s: int | float | str | None = None   # leave the lease up this long after a run that ended on its own (parsed to whole seconds below)
    allow_dirty: bool = False          # run uncommitted changes (captured as a snapshot)
    ci: bool = False                   # CI mode: short cancel grace, CI context in record and summary
    report_ci: bool = True             # in CI mode, the run's own job summary (a sweep's pool: the sweep's instead)
    rerun_of: RerunOf | None = None
    queue_wait_s: float | None = None  # --wait: how long a queueing provider may wait (None: its default)
    trial_leaf: str | None = None      # a sweep trial's own cgroup leaf on its machines (trial-0, …); None: work
    # Asked with the plan (machines, prices, the most the run can cost) after stage "plan", before
    # anything is pinned, reserved or leased; False stops the run there (`fleet up` on a terminal).
    confirm: "Callable[[Quote], bool] | None" = None
    run_id: str | None = None          # chosen before the run starts (a detached run's launcher names it)
    detached: bool = False             # supervised by a detached supervisor (fleet/run/supervisor.py)
    resume: "Resume | None" = None     # a resumed attempt: its number and the checkpoints to restore
    # Set by every stop signal the run receives, kept across attempts by recovery (run_managed): a run
    # already stopping for a loss records "lost", and recovery must still see that its user said stop.
    stop_asked: "threading.Event | None" = None

    def __post_init__(self) -> None:
        for name in ("allow_dirty", "ci", "detached", "report_ci"):   # a templated "no" is truthy: it must not mean yes
            if not isinstance(getattr(self, name), bool):
                from ..errors import UsageError
                raise UsageError(f"{name} must be True or False, got {getattr(self, name)!r}")
        # As `--keep` is checked: from the Python API, NaN kept a lease as long as the budget paid,
        # a negative kept it anyway and "10m" failed after the run, with the lease left up.
        if self.keep_s == 0 and not isinstance(self.keep_s, bool):
            object.__setattr__(self, "keep_s", None)     # 0: no keep, as it always meant
        if self.keep_s is not None:
            from ..config.values import parse_duration
            from ..errors import UsageError
            try:
                object.__setattr__(self, "keep_s", parse_duration(self.keep_s))
            except UsageError as exc:
                raise UsageError(f"keep_s {exc.message}") from None


@dataclass(frozen=True)
class Offer:
    """The machine mix, chosen once by the provider before any money is reserved.

    `template` describes one machine of this mix (GPUs and price per machine); every later stage,
    the budget included, reads the mix from here and nowhere else."""

    provider: str
    template: Template
    machine_count: int
    gpus: int
    max_duration_s: int
    heartbeat_ttl_s: int
    project: str
    user: str
    instance_type: str = ""
    spot: bool = False
    region: str = ""
    zones: tuple[str, ...] = ()        # where machines may land (AWS: the subnets' AZs)
    gpu_type: GpuType | None = None    # what was asked for (`--gpus A100:8`)

    @property
    def price_per_hour(self) -> Decimal | None:
        per = self.template.price_per_hour
        return None if per is None else per * self.machine_count

    def to_plan(self, *, run_id: str = "", budget_deadline_s: int | None = None,
                telemetry_interval_s: float = 0.0) -> Plan:
        """The request a provider's `lease` takes: this offer plus what the budget decided."""
        return Plan(provider=self.provider, template=self.template, gpus=self.gpus, machine_count=self.machine_count,
                    max_duration_s=self.max_duration_s, heartbeat_ttl_s=self.heartbeat_ttl_s, project=self.project,
                    user=self.user, instance_type=self.instance_type, spot=self.spot, run_id=run_id,
                    budget_deadline_s=budget_deadline_s, telemetry_interval_s=telemetry_interval_s,
                    gpu_type=self.gpu_type)

    def with_max_duration(self, seconds: int) -> "Offer":
        return replace(self, max_duration_s=seconds)


@dataclass(frozen=True)
class PinnedInputs:
    """Code commit and snapshots a run's inputs are pinned to (empty: plain directory copy)."""

    code_commit: str | None = None
    code_snapshot: str | None = None
    code_dirty_snapshot: str | None = None
    code_subdir: str = ""
    data_snapshots: dict[str, str] = field(default_factory=dict)
    store_url: str = ""

    @property
    def pinned(self) -> bool:
        return bool(self.code_snapshot)


@dataclass(frozen=True)
class BudgetGrant:
    """The budget gate's answer: allowed, at this price, with this much reserved, until at most
    `exhausted_in_s` from now at full burn (None: no budget, or no known price)."""

    limits: "BudgetLimits"
    price: "Price | None"
    policy: "BudgetPolicy | None"
    reserved_micro: int = 0
    exhausted_in_s: float | None = None
    idle: "IdlePolicy | None" = None
    reserved_for_run: str | None = None   # whose reservation it is (a kept lease may carry others')

    @property
    def budget_deadline_s(self) -> int | None:
        return None if self.exhausted_in_s is None else int(self.exhausted_in_s)

    def lease_meta(self) -> dict[str, Any]:
        """On the lease record before any machine exists: `fleet down` bills machines a killed
        controller never reported at this price (fleet/money/unbilled.py)."""
        if self.price is None:
            return {}
        return {"price": {"per_hour_micro": self.price.per_hour_micro, "source": self.price.source,
                          "shadow": self.price.shadow}}


@dataclass(frozen=True)
class StagedInputs:
    machines: int
    bytes_sent: int
    pinned: bool


@dataclass(frozen=True)
class ExecResult:
    """How setup or the command ended: the first failing rank's exit code, or fleet's own."""

    exit_code: int
    failing_rank: str | None = None
    rank_exit_codes: tuple[tuple[str, int], ...] = ()   # (rank, its own exit code) for every process


@dataclass(frozen=True)
class Collected:
    files: int
    symlinks: int = 0                  # symlinks that came home (kept: they resolve inside the run dir)
    skipped: tuple[str, ...] = ()      # each output that did not come home, and why (first 100)
    # Machines whose outputs did not all come home (transfer cut short, disk full, outputs_max):
    # "node N (machine id): why", one each.
    incomplete: tuple[str, ...] = ()


@dataclass(frozen=True)
class Released:
    released: bool
    kept_until: str | None = None      # ISO time when --keep left the lease up


@dataclass(frozen=True)
class Cost:
    """What the run spent (or, on machines with a shadow price, would have spent)."""

    total_micro: int
    shadow: bool
    budget_usd: Decimal | None = None
    budget_stop: str | None = None
    telemetry_note: str | None = None

    @property
    def usd(self) -> Decimal:
        from ..money.budget import from_micro
        return from_micro(self.total_micro)


@dataclass(frozen=True)
class RecordRef:
    hash: str
    output_snapshot: str | None = None
