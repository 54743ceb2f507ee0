"""The validated shape of fleet.toml. `fleet.config.loader.load_config` builds it; every later step trusts it."""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from ..gpus import GpuType


@dataclass
class BudgetsConfig:
    """`[budgets]`: limits beyond the per-run `budget`, in US dollars."""

    project_monthly: Decimal | None = None
    user_monthly: Decimal | None = None
    warn_fraction: Decimal = Decimal("0.8")
    grace_s: int = 30
    idle_gpu_percent: float | None = None    # optional idle policy: stop below this utilisation…
    idle_minutes: float | None = None        # …for this long


@dataclass
class SweepConfig:
    """`[sweep]`: defaults for `fleet sweep` (its flags override each)."""

    command: str | None = None
    params: dict[str, tuple[str, ...]] = field(default_factory=dict)
    samples: int | None = None
    seed: int | None = None
    parallel: int = 1
    gpus_per_trial: int = 1
    trial_timeout_s: int | None = None
    budget: Decimal | None = None
    stop_if: str | None = None
    idle_release_s: int | None = None   # a pool machine waiting this long on the budget is released


@dataclass
class Config:
    path: Path | None                 # the fleet.toml this came from (None: defaults only)
    base_dir: Path                    # the experiment directory (the file's directory)
    project: str
    name: str
    command: str
    setup: str | None = None
    setup_always: bool = False        # run setup even when the setup cache would skip it
    gpus: int | None = None           # None: one machine's worth of the template
    gpu_type: GpuType | None = None   # `gpus = "A100:8"`: only machines with this GPU (None: any)
    template: str | None = None       # None: the provider's default (or, with gpu_type, the cheapest that has it)
    provider: str = "local"
    per_gpu: bool = False
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)   # env names passed from the controller, always redacted
    outputs: str = "outputs"
    outputs_max_bytes: int = 100 << 30   # outputs fetched from one machine at most (0: no limit)
    max_duration_s: int = 4 * 3600
    heartbeat_ttl_s: int = 300
    python: str | None = None         # interpreter on machines; local default: the controller's
    checkpoint_interval_s: int | None = None   # None: checkpoints uploaded only when the command ends
    recovery: str = "spot"            # spot | always | never (docs/managed-runs.md)
    max_restarts: int = 3
    user: str | None = None
    budget: Decimal | None = None     # per-run budget in USD
    budgets: BudgetsConfig = field(default_factory=BudgetsConfig)
    sweep: SweepConfig | None = None   # [sweep], when the file has one
    queue_max_gpus_per_user: int | None = None   # [queue] max_gpus_per_user (team hosts)
    data: dict[str, str] = field(default_factory=dict)   # name → path, pinned as snapshots
    store: str | None = None          # snapshot store URL; default $FLEET_HOME/store
    cache_max: str | None = None      # size cap of each host's chunk cache (sync_remote.cache_max_bytes)
    cache_dir: str | None = None      # chunk cache directory on cloud machines
    prices: dict[str, Decimal] = field(default_factory=dict)   # template/instance type → USD/hour override
    # Each provider's own section ([aws], [[hosts]], …), parsed by the settings class it declares:
    # provider name → its settings (fleet/providers/base.py ProviderSettings).
    provider_settings: dict[str, Any] = field(default_factory=dict)
    state_url: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def output_dir_remote(self) -> str:
        return self.outputs
