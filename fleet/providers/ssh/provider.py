"""The ssh provider: a team's own GPU hosts, shared by leasing GPU slots on them.

A lease machine is a slice of a host: a set of GPU slot indices (reserved transactionally in the
state database, see slots.py; fleet's run code sets CUDA_VISIBLE_DEVICES to exactly these)
and its own working directory ~/.fleet-leases/<lease>/<machine>. Its watchdog (the fleet agent,
started detached with setsid/nohup) ends only the processes tagged with this machine's
FLEET_MACHINE_ID at the deadline — never the host, which other leases are using.

Hosts that do not answer are marked down and skipped; a host is probed at most every
PROBE_FRESH_S seconds per lease, so many leases in a row do not each re-probe every host.
"""
from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from typing import Callable

from ...errors import CapacityError, InfrastructureError, MachineUnreachable, UsageError
from ...gpus import GpuType
from .hosts import Host, Inventory, host_machine, probe_all
from ...models import Lease, Machine, MachineState, Plan, Template, utcnow
from ..base import (BaseProvider, LeaseWatch, MachineMix, Queueing, ReleasesMachines, ReportsMachines,
                    SupervisesFromNode0)
from . import slots as ssh_slots
from .handoff import SUPERVISOR_DIR, ReleasedWithKeys
from .machine_agent import start_watchdog, stop_machine
from .settings import HostConfig, SSHSettings

PROBE_FRESH_S = 30.0
HELD_SLACK_S = 60.0   # an unreachable machine's GPU slots stay taken this long past its deadline
LEASES_DIR = ".fleet-leases"
_PRICE_SOURCE = "own hardware: no charge unless [prices] sets a shadow price for this template"


def ssh_templates(prices: dict | None = None) -> dict[str, Template]:
    """`hosts` puts the whole request on one host (one machine); `hosts-Ngpu` makes machines of N GPUs."""
    prices = prices or {}
    out = {"hosts": Template("hosts", "ssh", 0, "from hosts", False, Decimal(str(prices.get("hosts", 0))),
                             _PRICE_SOURCE, description="all requested GPUs on one host")}
    for n in (1, 2, 4, 8):
        name = f"hosts-{n}gpu"
        out[name] = Template(name, "ssh", n, "from hosts", False, Decimal(str(prices.get(name, 0))),
                             _PRICE_SOURCE, description=f"{n} GPU slot(s) per machine, on any host")
    return out


class SSHHostsProvider(BaseProvider, ReportsMachines, Queueing, ReleasesMachines, SupervisesFromNode0, ReleasedWithKeys):
    name = "ssh"
    settings = SSHSettings
    description = "your team's own GPU hosts ([[hosts]] or `fleet hosts add`), shared by GPU slot"

    def __init__(self, config=None, state=None, hosts: list[HostConfig] | None = None, python: str | None = None,
                 probe_timeout_s: float = 5.0):
        self.config = config
        self._state = state
        self._config_hosts = hosts if hosts is not None else list(self.settings_from(config).hosts)
        self.python = python or getattr(config, "python", None) or "python3"
        self.probe_timeout_s = probe_timeout_s

    @classmethod
    def from_config(cls, config) -> "SSHHostsProvider":
        return cls(config)

    # -- plumbing ---------------------------------------------------------------------------------
    @property
    def state(self):
        if self._state is None:
            from ...state import open_state
            self._state = open_state(getattr(self.config, "state_url", None))
        return self._state

    def inventory(self) -> Inventory:
        return Inventory(self.state.db, self._config_hosts)

    def node0_handoff(self):
        """`fleet up -d`: the supervisor runs on node 0's host as its `supervisor_login` (handoff.py)."""
        from .handoff import SSHHandoff
        return SSHHandoff()

    def templates(self) -> dict[str, Template]:
        return ssh_templates(getattr(self.config, "prices", None))

    def gpu_types(self) -> list[str]:
        """Each GPU model in the inventory, with its hosts (as last probed or declared)."""
        by_model: dict[str, list[str]] = {}
        for h in self.inventory().list():
            model = h.gpu_model or ("not probed yet" if h.gpus is None else "unknown model")
            by_model.setdefault(model, []).append(h.name)
        return [f"{model} ({', '.join(names)})" for model, names in by_model.items()]

    def offers(self, template: str, gpus: int | None, gpu_type: GpuType | None = None) -> list[MachineMix]:
        """The template's one mix; with `gpu_type`, only when some host has that GPU (and then the
        lease places machines on such hosts only)."""
        mixes = super().offers(template, gpus)
        if gpu_type is None:
            return mixes
        models = sorted({h.gpu_model for h in self._hosts_with_models() if h.gpu_model and gpu_type.matches(h.gpu_model)})
        if not models:
            return []
        return [replace(m, gpu_model=", ".join(models)) for m in mixes]

    def _hosts_with_models(self) -> list[Host]:
        """The inventory, having probed (once, in parallel) the hosts whose GPU model is not known yet:
        a request for a GPU type must not miss a host only because nobody has asked it before."""
        from ...plan import current_user
        inv = self.inventory()
        inv.sync_config_hosts(current_user(getattr(self.config, "user", None)))
        unknown = [h for h in inv.list() if not h.gpu_model and h.status != "down" and not h.damaged]
        if unknown:
            for name, result in probe_all(unknown, self.probe_timeout_s).items():
                inv.record_probe(name, result)
        return inv.list()

    machine_cap_hint = "ask for fewer GPUs, or add hosts ([[hosts]] in fleet.toml or `fleet hosts add`)"

    @property
    def max_machines_per_lease(self) -> int:
        """Every machine takes at least one GPU slot: never more than the inventory's GPUs (a host
        whose GPUs are not yet discovered counts as many as a host may declare). Read, not probed."""
        from ...config.values import MAX_HOST_GPUS
        return max(1, sum(h.gpus or MAX_HOST_GPUS for h in self.inventory().list()))

    def usable_hosts(self, user: str, exclude: set[str] = frozenset(),
                     gpu_type: GpuType | None = None) -> dict[str, tuple[Host, str]]:
        """Hosts that are up with GPUs (of `gpu_type`, when given): name → (host, remote home).
        Probes stale or unknown ones."""
        inv = self.inventory()
        inv.sync_config_hosts(user)
        hosts = [h for h in inv.list() if h.name not in exclude]
        stale = [h for h in hosts if not _fresh(h) and not h.damaged]
        probed = probe_all(stale, self.probe_timeout_s)
        for name, result in probed.items():
            inv.record_probe(name, result)
        from .homes import remember
        remember([(h, probed[h.name].home) for h in stale if h.name in probed and probed[h.name].up])
        by_name = {h.name: h for h in inv.list()}
        out = {}
        for h in hosts:
            h = by_name.get(h.name, h)
            home = _home(h)
            if h.status == "up" and (h.gpus or 0) > 0 and home and (
                    gpu_type is None or gpu_type.matches(h.gpu_model or "")):
                out[h.name] = (h, home)
        from .aliases import refuse_aliases
        refuse_aliases([h for h, _home_dir in out.values()])
        return out

    def _reserve(self, plan: Plan, lease_id: str, requests: list[tuple[str, int]], capacity: dict[str, int],
                 watch: LeaseWatch | None, down: set[str]) -> list:
        """The slots now; with `--wait`, through the queue (fleet/providers/ssh/queue.py). `down`: hosts
        left out as they did not answer just now, named when that leaves none."""
        from .queue import reserve_or_wait
        try:
            return reserve_or_wait(self.state.db, plan, lease_id, requests, capacity, watch, provider=self.name,
                                   max_gpus_per_user=getattr(self.config, "queue_max_gpus_per_user", None))
        except CapacityError as exc:
            if not down:
                raise
            raise CapacityError(f"{exc.message}: {', '.join(sorted(down))} did not answer SSH just now",
                                hint=exc.hint) from None

    # -- the contract -----------------------------------------------------------------------------
    def lease(self, plan: Plan, lease_id: str, deadline_s: int,
              on_machine: Callable[[Machine], None] | None = None, watch: LeaseWatch | None = None) -> Lease:
        if plan.machine_count < 1:
            raise UsageError("a lease needs at least one machine")
        need = plan.gpus_per_machine or plan.gpus // plan.machine_count
        machine_ids = [f"{lease_id}-n{rank}" for rank in range(plan.machine_count)]
        exclude: set[str] = set()
        for attempt in (1, 2, 3):
            usable = self.usable_hosts(plan.user, exclude, plan.gpu_type)
            placements = self._reserve(plan, lease_id, [(m, need) for m in machine_ids],
                                       {n: h.gpus for n, (h, _) in usable.items()}, watch, exclude)
            machines, failures = self._start_all(plan, lease_id, deadline_s, placements, usable)
            if not failures:
                break
            self._stop_all(machines)
            ssh_slots.free(self.state.db, lease_id)
            down = {p.host for p, exc in failures if isinstance(exc, MachineUnreachable)}
            if attempt == 3 or not down or len(down) < len(failures):
                raise failures[0][1]
            exclude |= down   # died since their last probe (trusted a while): a live host, or "none is up"
        # Reported once every machine holds its deadline (a retry may move a machine to another
        # host, so not earlier); a machine the controller never hears of still ends at its deadline.
        try:
            for m in sorted(machines, key=lambda m: m.node_rank):
                if on_machine is not None:
                    on_machine(m)
        except BaseException:
            self._stop_all(machines)
            ssh_slots.free(self.state.db, lease_id)
            raise
        now = utcnow()
        return Lease(id=lease_id, provider=self.name, template=plan.template.name,
                     machines=sorted(machines, key=lambda m: m.node_rank), created_at=now,
                     deadline=now + timedelta(seconds=deadline_s),
                     max_deadline=now + timedelta(seconds=plan.max_duration_s), project=plan.project,
                     user=plan.user, heartbeat_ttl_s=plan.heartbeat_ttl_s,
                     meta={"hosts": sorted({m.provider_ref["host"] for m in machines})})

    def describe(self, lease: Lease) -> list[MachineState]:
        from ...remote.ssh import connect

        def one(m: Machine) -> MachineState:
            try:
                with connect(m, timeout=self.probe_timeout_s) as s:
                    r = s.run([m.python, m.agent_path, "status", "--state-dir", m.state_dir], check=False,
                              timeout=30, deadline_s=30)
            except InfrastructureError as exc:
                return MachineState(m.id, "unreachable", exc.one_line())
            try:
                status = json.loads(r.stdout)
            except ValueError:
                return MachineState(m.id, "gone", "no fleet agent state on the host")
            if status.get("expired") or not status.get("watchdog_alive"):
                return MachineState(m.id, "gone", "watchdog ended")
            return MachineState(m.id, "running", f"{m.provider_ref.get('host')} slots {list(m.gpu_slots)}")
        return _pool_map(one, lease.machines)

    def release(self, lease: Lease) -> None:
        """End each machine's processes and remove its workdir, then free its slots.

        A machine whose host does not answer cannot be cleaned now: its host is marked down (no new
        lease lands there until a probe finds it up), its watchdog still ends its processes at the
        last deadline it was given, and its slots stay taken until then (slots.py held_until).
        """
        self._stop_and_free(lease, lease.machines, None)   # and the lease's own key (handoff.py) revoked

    def release_machines(self, lease: Lease, machine_ids: list[str]) -> None:
        """Those machines' processes ended and workdirs removed, their GPU slots freed for the
        queue; the lease's other machines keep theirs. An unreachable one's host is marked down,
        as `release` does."""
        wanted = set(machine_ids)
        machines = [m for m in lease.machines if m.id in wanted]
        self._stop_and_free(lease, machines, [m.id for m in machines])

    def _stop_and_free(self, lease: Lease, machines: list[Machine], free_ids: list[str] | None) -> None:
        """Stop `machines`, mark the hosts of unreachable ones down (their processes may hold the
        GPUs until the watchdog's deadline: no new lease lands there until a probe finds the host
        up), then free the slots (`free_ids` None: all the lease's). Raises the first other error."""
        # The lease's own key (handoff.py) leaves each login where none of its machines stays.
        staying = {(m.host, m.port, m.user) for m in lease.machines if free_ids is not None and m.id not in free_ids}
        results = self._stop_all(machines, revoke=lease.id, staying=staying)
        inv = self.inventory()
        from .hosts import Probe
        unreachable = [m.id for m, exc in zip(machines, results) if isinstance(exc, MachineUnreachable)]
        for m, exc in zip(machines, results):
            if isinstance(exc, MachineUnreachable) and m.provider_ref.get("host"):
                inv.record_probe(m.provider_ref["host"], Probe(False, exc.one_line()))
        ssh_slots.free(self.state.db, lease.id, free_ids, held=unreachable,
                       held_until=self._watchdog_end(lease) if unreachable else None)
        others = [e for e in results if e is not None and not isinstance(e, MachineUnreachable)]
        if others:
            raise others[0]

    def _watchdog_end(self, lease: Lease) -> datetime:
        """When an unreachable machine's watchdog ends its processes at the latest: the last deadline
        it can have been given (the lease's, as recorded or as this process knows it), never past
        the hard max deadline, plus a slack for the watchdog's own poll."""
        from ...money.ledger import parse_iso
        ends = [lease.deadline] if lease.deadline is not None else []
        rows = self.state.db.execute("SELECT deadline FROM leases WHERE id = ?", (lease.id,))
        if rows and rows[0]["deadline"]:
            try:
                ends.append(parse_iso(rows[0]["deadline"]))
            except ValueError:
                pass   # unreadable: the deadline this process knows stands
        end = max(ends) if ends else utcnow()
        if lease.max_deadline is not None:
            end = min(end, lease.max_deadline)
        return end + timedelta(seconds=HELD_SLACK_S)

    # -- machines on hosts ------------------------------------------------------------------------
    def _start_all(self, plan: Plan, lease_id: str, deadline_s: int, placements, usable):
        ranks = {f"{lease_id}-n{r}": r for r in range(plan.machine_count)}
        declared = {c.name or c.address: c for c in self._config_hosts}

        def start(p: ssh_slots.Placement) -> Machine:
            host, home = usable[p.host]
            base = host_machine(host, p.machine_id, python=self.python)
            workdir = f"{leases_root(host, home)}/{lease_id}/{p.machine_id}"
            m = Machine(id=p.machine_id, lease_id=lease_id, node_rank=ranks[p.machine_id], host=base.host,
                        port=base.port, user=base.user, key_path=base.key_path, host_key=base.host_key,
                        workdir=workdir, gpu_slots=p.slots, python=self.python,
                        price_per_hour=plan.template.price_per_hour or Decimal("0"),
                        instance_type=host.gpu_model or "", provider_ref={"host": p.host}, zone=p.host)
            entry = declared.get(p.host)
            if entry is not None and entry.supervisor_login:   # node 0 here: `fleet up -d`'s supervisor login
                m.provider_ref.update(supervisor_user=entry.supervisor_login, supervisor_python=entry.supervisor_python
                                      or self.python, supervisor_dir=f"{SUPERVISOR_DIR}/{lease_id}")
            start_watchdog(m, ttl_s=deadline_s, max_s=plan.max_duration_s,
                           telemetry_interval=plan.telemetry_interval_s)
            return m

        machines, failures = [], []
        for p, result in zip(placements, _pool_map(_capture(start), placements)):
            if isinstance(result, BaseException):
                failures.append((p, result))
                machines.append(_placeholder(p, lease_id, ranks, usable, self.python))
            else:
                machines.append(result)
        return machines, failures

    def _stop_all(self, machines: list[Machine], revoke: str = "", staying=frozenset()) -> list[BaseException | None]:
        """One result per machine (None: stopped); machines with nothing on a host are skipped.
        `revoke`: a lease id whose own key (handoff.py) each machine's login (but those `staying`) stops
        accepting: once per login, after its machines are stopped (node 0 connects with that very key)."""
        results = _pool_map(_capture(lambda m: stop_machine(m) if m.workdir else None, none_on_success=True),
                            machines)
        if revoke:
            from .handoff import revoke_lease_key
            logins = {(m.host, m.port, m.user): m for m, r in zip(machines, results)
                      if m.workdir and not isinstance(r, MachineUnreachable)}
            logins = {login: m for login, m in logins.items() if login not in staying}
            _pool_map(_capture(lambda m: revoke_lease_key(m, revoke)), list(logins.values()))   # else: its expiry
        return results


def _placeholder(p, lease_id, ranks, usable, python) -> Machine:
    """A machine that failed to start, described well enough for stop_machine to clean up after it."""
    host, home = usable[p.host]
    try:
        base = host_machine(host, p.machine_id, python=python)
    except Exception:  # noqa: BLE001 — nothing reachable to clean
        return Machine(p.machine_id, lease_id, ranks[p.machine_id], "", 0, "", "", "", "")
    return Machine(id=p.machine_id, lease_id=lease_id, node_rank=ranks[p.machine_id], host=base.host,
                   port=base.port, user=base.user, key_path=base.key_path, host_key=base.host_key,
                   workdir=f"{leases_root(host, home)}/{lease_id}/{p.machine_id}", gpu_slots=p.slots, python=python,
                   provider_ref={"host": p.host})


def _fresh(h: Host) -> bool:
    if h.status != "up" or not h.checked_at or h.gpus is None or not _home(h):
        return False
    checked = datetime.fromisoformat(h.checked_at)
    return (datetime.now(timezone.utc) - checked).total_seconds() < PROBE_FRESH_S


def leases_root(host: Host, home: str) -> str:
    root = host.workdir or f"~/{LEASES_DIR}"
    if root == "~" or root.startswith("~/"):
        root = home + root[1:]
    return root.rstrip("/")


def _home(h: Host) -> str:
    from .homes import home_of
    return home_of(h)


def _capture(fn, none_on_success: bool = False):
    def wrapped(item):
        try:
            result = fn(item)
            return None if none_on_success else result
        except BaseException as exc:  # noqa: BLE001 — reported per item by the caller
            return exc
    return wrapped


def _pool_map(fn, items: list) -> list:
    from ...parallel import parallel
    return parallel(items, fn)   # also at interpreter shutdown: a release from a run in a worker thread
