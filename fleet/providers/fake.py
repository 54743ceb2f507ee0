"""The fake provider: machines that exist only as records, for fast tests of everything around a lease.

It keeps the whole contract (offers, lease, describe, release, the capabilities it declares) with
no sshd, no cloud and no processes: a lease is one JSON file under $FLEET_HOME/fake/, so `fleet
status` and `fleet down` in another process see it. The deadline is simulated but still held
without a controller: `describe` reports a machine gone once the clock passes its deadline, as a
watchdog would have ended it. Its machines cannot be reached over SSH.

It is registered only by its entry point in pyproject.toml (`fake = "fleet.providers.fake:FakeProvider"`);
nothing else in fleet names it. That is the whole cost of a provider: one module, one entry.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, ClassVar

from ..config.schema import MACHINES, PRICE, Key
from ..errors import InfrastructureError
from ..models import Lease, Machine, MachineState, Plan, Template
from .base import (BaseProvider, HasLeaseMetadata, ProviderSettings, ReleasesMachines, ReportsMachines,
                   SweepsLeftovers)


@dataclass
class FakeSettings(ProviderSettings):
    price_per_hour: Decimal = Decimal("1")      # per machine
    fail_after: int | None = None               # lease fails after making this many machines

    section: ClassVar[str] = "fake"
    help: ClassVar[str] = "The fake provider (tests): machines that exist only as records."
    keys: ClassVar[dict[str, Key]] = {
        "price_per_hour": Key(PRICE, "Price of one fake machine per hour, in US dollars.", default=1),
        "fail_after": Key(MACHINES, "Make lease fail after this many machines (failure-path tests)."),
    }


class FakeProvider(BaseProvider, ReportsMachines, SweepsLeftovers, HasLeaseMetadata, ReleasesMachines):
    name = "fake"
    settings = FakeSettings
    listed = False
    description = "machines that exist only as records (tests)"

    def __init__(self, settings: FakeSettings | None = None, *, root: Path | None = None,
                 clock: Callable[[], float] = time.time):
        self.config = settings or FakeSettings()
        self._root = root
        self.clock = clock

    @classmethod
    def from_config(cls, config) -> "FakeProvider":
        return cls(cls.settings_from(config))

    @property
    def root(self) -> Path:
        if self._root is None:
            from ..paths import subdir
            self._root = subdir("fake")
        self._root.mkdir(parents=True, exist_ok=True)
        return self._root

    def templates(self) -> dict[str, Template]:
        # Modelled on a cloud provider: its price is billed (simulated_gpus=False), not a shadow
        # "would cost" like local machines', so tests with it exercise real spend and budgets.
        return {f"fake-{n}gpu": Template(f"fake-{n}gpu", self.name, n, "fake", False, self.config.price_per_hour,
                                         "fleet.toml [fake] price_per_hour", description=f"{n} fake GPU(s)")
                for n in (1, 4, 8)}

    def lease_meta(self) -> dict[str, Any]:
        return {"fake_root": str(self.root)}

    def lease(self, plan: Plan, lease_id: str, deadline_s: int,
              on_machine: Callable[[Machine], None] | None = None) -> Lease:
        now = self.clock()
        record: dict[str, Any] = {"machines": {}}
        path = self._path(lease_id)
        machines = []
        try:
            for rank in range(plan.machine_count):
                if self.config.fail_after is not None and rank >= self.config.fail_after:
                    raise InfrastructureError(f"fake provider: machine {rank} of lease {lease_id} failed "
                                              f"(fail_after = {self.config.fail_after})")
                m = Machine(id=f"{lease_id}-n{rank}", lease_id=lease_id, node_rank=rank, host="fake.invalid",
                            port=0, user="fake", key_path="", host_key="", workdir=f"/fake/{lease_id}-n{rank}",
                            gpu_slots=tuple(range(plan.gpus_per_machine)),
                            price_per_hour=plan.template.price_per_hour or Decimal(0),
                            instance_type=plan.instance_type or plan.template.name, provider_ref={"fake": True})
                # The machine holds its deadline from the moment it exists (here: on record).
                record["machines"][m.id] = {"started": now, "deadline": now + deadline_s,
                                            "max": now + plan.max_duration_s}
                path.write_text(json.dumps(record))
                machines.append(m)
                if on_machine is not None:
                    on_machine(m)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        start = datetime.fromtimestamp(now, tz=timezone.utc)
        return Lease(id=lease_id, provider=self.name, template=plan.template.name, machines=machines,
                     created_at=start, deadline=start + timedelta(seconds=deadline_s),
                     max_deadline=start + timedelta(seconds=plan.max_duration_s), project=plan.project,
                     user=plan.user, heartbeat_ttl_s=plan.heartbeat_ttl_s, meta=self.lease_meta())

    def extend(self, lease: Lease, seconds: float) -> None:
        """What a heartbeat does to a real machine's watchdog: push the deadline, never past max."""
        record = self._read(lease.id)
        for m in record["machines"].values():
            if self.clock() < m["deadline"]:
                m["deadline"] = min(m["max"], self.clock() + seconds)
        self._path(lease.id).write_text(json.dumps(record))

    def describe(self, lease: Lease) -> list[MachineState]:
        record = self._read(lease.id)["machines"]
        now = self.clock()
        states = []
        for mid, m in record.items():
            if mid not in {x.id for x in lease.machines}:
                states.append(MachineState(mid, "running" if now < m["deadline"] else "gone", "not in fleet's state",
                                           unrecorded=True, started_at=_utc(m["started"]),
                                           deadline_at=_utc(m["deadline"])))
        for machine in lease.machines:
            m = record.get(machine.id)
            if m is None:
                states.append(MachineState(machine.id, "gone", "released"))
            elif now >= m["deadline"]:
                states.append(MachineState(machine.id, "gone", "deadline passed"))
            else:
                states.append(MachineState(machine.id, "running"))
        return states

    def release(self, lease: Lease) -> None:
        self._path(lease.id).unlink(missing_ok=True)

    def release_machines(self, lease: Lease, machine_ids: list[str]) -> None:
        record = self._read(lease.id)
        if not record["machines"]:
            return
        for mid in machine_ids:
            record["machines"].pop(mid, None)
        self._path(lease.id).write_text(json.dumps(record))

    def sweep(self, live_machine_ids: set[str]) -> list[str]:
        ended = []
        for path in sorted(self.root.glob("*.json")):
            ids = list(_load(path)["machines"])
            if ids and path.stem not in live_machine_ids and not any(i in live_machine_ids for i in ids):
                path.unlink(missing_ok=True)
                ended += ids
        return ended

    def _path(self, lease_id: str) -> Path:
        return self.root / f"{lease_id}.json"

    def _read(self, lease_id: str) -> dict[str, Any]:
        return _load(self._path(lease_id))


def _load(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"machines": {}}


def _utc(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)
