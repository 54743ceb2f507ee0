"""provider = "slurm": a lease is one Slurm allocation, N nodes × G GPUs; each node becomes a fleet Machine.

lease: `sbatch` a job that only holds the allocation (`--no-requeue`, `--comment fleet:lease=<id>`,
`--time` = the lease's end in whole minutes, rounded up but never past max_duration); wait while it
pends, telling the run its queue reason (`Queueing`), up to `wait`; then start, as a job step on each
node (`srun --jobid --nodelist --overlap`), a user-level sshd with the lease's pinned host key and the
agent's watchdog (fleet/providers/slurm/node.py). Everything a machine runs lives inside the job, so
`scancel` ends it all, and slurmctld's time limit ends it even with no controller and no agent.
describe, release, extend and the watch for NODE_FAIL/PREEMPTED ask squeue for the lease's job by id
(one call per recorded job, whatever the number of nodes; never `squeue --json`: ownership.py);
release_machines shrinks the allocation (shrink.py). The run reaches the nodes over SSH."""
from __future__ import annotations

import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

from ...errors import Cancelled, InfrastructureError, NotFound
from ...gpus import GpuType
from ...keys import generate_ed25519, secure_delete
from ...models import Lease, Machine, MachineState, Plan, Template, utcnow
from ...parallel import submit_or_thread   # at interpreter shutdown: on plain threads
from ..base import (BaseProvider, HasHardLimit, HasLeaseMetadata, LeaseWatch, MachineMix, Queueing, QueueStatus,
                    ReleasesMachines, ReportsMachines, SweepsLeftovers)
from .accounting import ended_at, lease_accounting
from .commands import AllocationRequest, Runner, SlurmCommands, login_runner
from .errors import HOPELESS_PENDING, LoginNodeUnreachable, QosLimitExceeded, QueueWaitExpired, SlurmError, ToolMissing
from .handoff import LoginNodeSupervision
from .parsing import JobState, QueuedJob
from .limits import raise_time_limit, time_limit_minutes
from .loss import ExplainsJobLoss
from .ownership import TAG, cancel_leases_jobs, job_name, lease_jobs, owned, owns, tag
from .settings import SlurmSettings
from .shrink import release_nodes
from .staging import remove_staging, staging_dir_of, staging_probe
from .steps import NodeStep, node_source, reap, start_node
from .watch import Unreadable, watch_job, why

HOLD = "#!/bin/sh\n# fleet: this job only holds the allocation; fleet's node steps run inside it.\nexec sleep 100000000\n"
NODE_USER = "FLEET_NODE_USER"        # node.py puts the node's own user name here in sshd_config
NODE_DIR = "@FLEET_NODE_DIR@"        # ... and the machine directory it made
STEP_START_TIMEOUT_S = 120.0
GPU_COUNTS = (1, 2, 4, 8)


class SlurmProvider(BaseProvider, ReportsMachines, Queueing, SweepsLeftovers, HasLeaseMetadata, HasHardLimit,
                    ReleasesMachines, ExplainsJobLoss, LoginNodeSupervision):
    name = "slurm"
    settings = SlurmSettings
    description = "allocations on a Slurm cluster (sbatch/srun here or on a login node over SSH)"

    def __init__(self, settings: SlurmSettings | None = None, *, runner: Runner | None = None):
        self.config = settings or SlurmSettings()
        self.slurm = SlurmCommands(runner or login_runner(self.config))
        self._steps: dict[str, list[NodeStep]] = {}
        self._watches: dict[str, threading.Event] = {}

    @classmethod
    def from_config(cls, config) -> "SlurmProvider":
        return cls(cls.settings_from(config))

    def templates(self) -> dict[str, Template]:
        rate = self.config.price_per_gpu_hour
        return {f"slurm-{g}gpu": Template(
            f"slurm-{g}gpu", self.name, g, gpu_model="gres/gpu", price_per_hour=rate * g if rate else None,
            price_source="shadow: fleet.toml [slurm] price_per_gpu_hour (internal price, nothing is billed)",
            description=f"{g} GPU(s) per Slurm node") for g in GPU_COUNTS}

    def gpu_types(self) -> list[str]:
        return ["any GRES type the cluster defines (see `sinfo -o '%P %G'`)"]

    def offers(self, template: str, gpus: int | None, gpu_type: GpuType | None = None) -> list[MachineMix]:
        """The template's one mix; a GPU type is asked of Slurm as a GRES type (`gpu:a100:2`), which
        the cluster grants or refuses at submission."""
        mixes = super().offers(template, gpus)
        if gpu_type is None:
            return mixes
        return [replace(m, gpu_model=gpu_type.slurm_name) for m in mixes]

    def lease_meta(self) -> dict[str, Any]:
        """How `fleet down` in another process reaches the same cluster."""
        cfg = self.config
        return {k: v for k, v in (("slurm_login", cfg.login), ("slurm_login_port", cfg.login_port),
                                  ("slurm_identity", cfg.identity), ("slurm_jump", cfg.jump),
                                  ("slurm_known_hosts", cfg.known_hosts)) if v}

    # -- lease -----------------------------------------------------------------------------------
    def lease(self, plan: Plan, lease_id: str, deadline_s: int,
              on_machine: Callable[[Machine], None] | None = None, watch: LeaseWatch | None = None) -> Lease:
        from ..local import lease_key_path
        watch = watch or LeaseWatch(cancel=threading.Event())
        key_path = lease_key_path(lease_id)
        public = generate_ed25519(key_path, comment=f"fleet-lease-{lease_id}")
        host_key = key_path.with_name("host_ed25519")
        host_public = generate_ed25519(host_key, comment=f"fleet-host-{lease_id}")
        cfg = self.config
        req = AllocationRequest(name=job_name(lease_id), nodes=plan.machine_count,
                                gpus_per_node=plan.gpus_per_machine, time_limit_s=time_limit_minutes(plan) * 60,
                                comment=tag(lease_id), partition=cfg.partition, account=cfg.account, qos=cfg.qos,
                                constraint=cfg.constraint, gpus_flag=cfg.gpu_flag, output="/dev/null",
                                workdir=cfg.workdir,
                                gpu_type=plan.gpu_type.slurm_name if plan.gpu_type is not None else None)
        job_id = None
        shared: dict[str, str] | None = None
        steps: list[NodeStep] = []
        try:
            # Granted at once when the nodes are free (no batch scheduling delay); else queued by sbatch.
            job_id = self.slurm.allocate_now(req) or self.slurm.submit(req, HOLD)
            job = self._wait_running(job_id, watch)
            addresses = self._addresses(job.nodes)
            shared = staging_probe(self.slurm, self.config, lease_id)
            started = utcnow()
            machines = self._start_machines(plan, lease_id, job_id, job.nodes, addresses, public, host_key,
                                            host_public, key_path, deadline_s, steps, on_machine, shared)
        except BaseException:
            if job_id is not None:
                try:
                    self.slurm.cancel([job_id])
                except Exception:  # noqa: BLE001 — the time limit ends it; the original error matters
                    pass
            reap(steps)
            _forget_keys(key_path)
            if shared:
                remove_staging(self.slurm, shared["dir"])
            raise
        self._steps[lease_id] = steps
        self._watch(lease_id, job_id, watch)
        return Lease(id=lease_id, provider=self.name, template=plan.template.name, machines=machines,
                     created_at=started, deadline=started + timedelta(seconds=deadline_s),
                     max_deadline=started + timedelta(seconds=plan.max_duration_s), project=plan.project,
                     user=plan.user, heartbeat_ttl_s=plan.heartbeat_ttl_s,
                     meta={**self.lease_meta(), "slurm_job": job_id,
                           **({"slurm_staging": shared["dir"]} if shared else {})})

    def _wait_running(self, job_id: str, watch: LeaseWatch) -> QueuedJob:
        """Poll squeue (one call per poll) until the job runs; pending is reported, not an error."""
        limit = watch.max_wait_s if watch.max_wait_s is not None else self.config.wait_s
        begun = time.monotonic()
        delay, last = 0.05, None    # a job starts within a few hundred ms on an idle cluster: fast, then back off
        unreadable = Unreadable(job_id)
        while True:
            try:
                job = self.slurm.job(job_id)
                job = job if job is not None and owned(self.slurm, job) else None     # the login user's only
                unreadable.ok()
            except (SlurmError, LoginNodeUnreachable) as exc:    # once is no reason to give the lease up
                if isinstance(exc, ToolMissing):                    # ... but a squeue not there is
                    raise
                if (line := unreadable.failed(exc)) is not None:     # watch.py: when it is
                    raise SlurmError(line, slurm_reason="squeue unreadable") from None
                if time.monotonic() - begun >= limit:    # the wait asked for bounds this too (the job is cancelled)
                    raise QueueWaitExpired(f"Slurm job {job_id}: no answer from squeue fleet could read within the "
                                           f"wait of {limit:.0f}s ({unreadable.last_error}); cancelled it") from None
                if watch.cancel.wait(delay):
                    raise Cancelled(f"cancelled while Slurm job {job_id} was pending; the job is cancelled") from None
                delay = min(self.config.poll_s, delay * 2)
                continue
            waited = time.monotonic() - begun
            if job is None:
                raise SlurmError(f"Slurm job {job_id} left the queue before it started")
            if job.state is JobState.RUNNING and job.nodes:
                return job
            if job.state.finished:
                raise SlurmError(f"Slurm job {job_id} ended before it started: {why(job)}",
                                 slurm_reason=job.reason or job.state.value)
            if (job.state, job.reason) != last:
                last = (job.state, job.reason)
                watch.on_queue(QueueStatus(job_id, job.state.value, job.reason or "", waited))
            if job.reason and HOPELESS_PENDING.search(job.reason):
                self.slurm.cancel([job_id])
                raise QosLimitExceeded(f"Slurm job {job_id} can never start as asked ({job.reason}); cancelled it",
                                       slurm_reason=job.reason, hint="ask for fewer GPUs or nodes, or another "
                                                                     "partition/qos")
            if watch.cancel.is_set():
                self.slurm.cancel([job_id])
                raise Cancelled(f"cancelled while Slurm job {job_id} was pending ({job.reason or job.state.value}); "
                                "the job is cancelled")
            if waited >= limit:
                self.slurm.cancel([job_id])
                took = f"{waited / 60:.0f}m" if waited >= 120 else f"{waited:.0f}s"
                raise QueueWaitExpired(f"Slurm job {job_id} still pending after {took} "
                                       f"({job.reason or job.state.value}); cancelled it, nothing is left queued",
                                       hint="wait longer with `fleet up --wait 30m` or [slurm] wait, or ask for "
                                            "fewer GPUs")
            watch.cancel.wait(min(delay, max(0.05, limit - waited)))
            delay = min(self.config.poll_s, delay * 2)

    def _addresses(self, nodes: tuple[str, ...]) -> dict[str, str]:
        """Each node's NodeAddr (where its sshd listens and the controller connects): one sinfo call."""
        out = self.slurm._run(["sinfo", "--noheader", "--Node", f"--nodes={','.join(nodes)}", "--format=%N|%o"]).stdout
        found = {}
        for line in out.splitlines():
            name, _, addr = line.strip().partition("|")
            if name and addr:
                found[name] = addr
        return {n: found.get(n, n) for n in nodes}

    def _start_machines(self, plan: Plan, lease_id: str, job_id: str, nodes: tuple[str, ...],
                        addresses: dict[str, str], public: str, host_key: Path, host_public: str, key_path: Path,
                        deadline_s: int, steps: list[NodeStep],
                        on_machine: Callable[[Machine], None] | None,
                        shared: dict[str, str] | None = None) -> list[Machine]:
        from ...paths import subdir
        from ...remote.agent import AGENT_PATH, agent_source
        from ..local.sshd import _config_text
        # Read once for all the lease's nodes (the next lease reads them again). The agent is one file
        # (containment embedded): the node step receives it on stdin, nothing is installed there.
        agent, source, telemetry = agent_source(), node_source(), AGENT_PATH.with_name("telemetry.py")
        telemetry_text = telemetry.read_text() if telemetry.exists() else None
        logs = subdir("slurm") / lease_id

        def start(rank: int) -> Machine:
            node, machine_id = nodes[rank], f"{lease_id}-n{rank}"
            d = Path(NODE_DIR)     # the node makes it (a random name: node.py _machine_dir) and reports it
            spec = {"machine_id": machine_id, "workdir": self.config.workdir, "listen": addresses[node],
                    "sshd_config": _config_text(d, 0, machine_id, NODE_USER, d / "root", listen=addresses[node]),
                    "host_key": host_key.read_text(), "authorized_key": public, "agent": agent,
                    "telemetry": telemetry_text, "ttl": deadline_s,
                    "max": plan.max_duration_s, "telemetry_interval": plan.telemetry_interval_s, "shared": shared}
            step = start_node(self.slurm.runner, job_id, node, self.config.python, source, spec,
                              logs / f"step-{rank}.log", STEP_START_TIMEOUT_S)
            steps.append(step)
            ready = step.ready
            if self.config.shared_dir and not ready.get("shared"):
                raise InfrastructureError(f"[slurm] shared_dir {self.config.shared_dir} is not shared with Slurm node "
                                          f"{node}: it does not see what the login node wrote there as its own (not there, "
                                          "or not a directory of this user's, mode 700, as the node sees it: an NFS "
                                          "idmap or root_squash maps the owner otherwise)")
            slots = tuple(int(x) for x in str(ready.get("gpus") or "").split(",") if x.strip().isdigit())
            return Machine(id=machine_id, lease_id=lease_id, node_rank=rank, host=addresses[node],
                           port=int(ready["port"]), user=ready["user"], key_path=str(key_path),
                           host_key=host_public, workdir=ready["workdir"],
                           staging_dir=shared["dir"] if shared and ready.get("shared") else "",
                           gpu_slots=slots or tuple(range(plan.gpus_per_machine)), python=ready["python"],
                           price_per_hour=plan.template.price_per_hour or Decimal(0),
                           instance_type=plan.template.name, peer_host=addresses[node],
                           # The machine is a job step: scancel ends what Slurm's process tracking holds
                           # (ProctrackType: proctrack/cgroup holds everything); fleet's watchdog adds pids.
                           provider_ref={"job_id": job_id, "node": node, "gpu_binding": ready.get("gpus") or "",
                                         "isolation": "slurm-job", **self.lease_meta()})

        machines: list[Machine] = []
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=min(16, len(nodes))) as pool:
            # Reported in this thread as each comes up (the caller's database connection lives here).
            for future in as_completed([submit_or_thread(pool, start, r) for r in range(len(nodes))]):
                try:
                    machine = future.result()
                    machines.append(machine)
                    if on_machine is not None and not errors:
                        on_machine(machine)
                except BaseException as exc:  # noqa: BLE001 — collected; the caller cancels the job
                    errors.append(exc)
        if errors:
            raise errors[0]
        return sorted(machines, key=lambda m: m.node_rank)

    def _watch(self, lease_id: str, job_id: str, watch: LeaseWatch) -> None:
        """While the lease lives in this process: one squeue call per poll (watch.watch_job)."""
        stop = threading.Event()
        self._watches[lease_id] = stop
        threading.Thread(target=watch_job, args=(self.slurm, lease_id, job_id, watch, self.config.poll_s, stop),
                         name=f"slurm-watch-{lease_id}", daemon=True).start()

    # -- describe / release ------------------------------------------------------------------------
    def _commands_for(self, lease: Lease) -> SlurmCommands:
        """The lease's own cluster: `fleet down` elsewhere has no fleet.toml, the lease meta says."""
        meta = lease.meta or {}
        if meta.get("slurm_login") and meta.get("slurm_login") != self.config.login:
            return SlurmCommands(login_runner(SlurmSettings(
                login=meta["slurm_login"], login_port=meta.get("slurm_login_port"), identity=meta.get("slurm_identity"),
                jump=meta.get("slurm_jump"), known_hosts=meta.get("slurm_known_hosts"))))
        return self.slurm

    def _lease_jobs(self, slurm: SlurmCommands, lease: Lease) -> list[QueuedJob]:
        return lease_jobs(slurm, lease.id, _recorded_jobs(lease))   # the login user's only (ownership.py)

    def describe(self, lease: Lease) -> list[MachineState]:
        slurm = self._commands_for(lease)
        jobs = self._lease_jobs(slurm, lease)
        live = [j for j in jobs if not j.state.finished and j.state is not JobState.COMPLETING]
        job = live[0] if live else (jobs[0] if jobs else None)
        now = utcnow()
        if job is None or job not in live:
            ended = ended_at(slurm, [job.job_id] if job else _recorded_jobs(lease), lease.id)
            detail = f"job {job.job_id} {why(job)}" if job else "no Slurm job"
            return [MachineState(m.id, "gone", detail, deadline_at=ended) for m in lease.machines]
        state = "pending" if job.state.queued else "running"
        # Slurm's time limit counts run time (elapsed_s) only: a suspension moves the end later, and
        # the start is not now minus run time.
        started = job.started or now - timedelta(seconds=job.elapsed_s or 0)
        limit_end = now + timedelta(seconds=job.time_limit_s - (job.elapsed_s or 0)) if job.time_limit_s else None
        # A machine whose node the running job no longer holds was released (release_machines).
        held = set(job.nodes) if state == "running" and job.nodes else None
        states = [MachineState(m.id, state, f"job {job.job_id} on {m.provider_ref.get('node', '?')}")
                  if held is None or m.provider_ref.get("node") in held else
                  MachineState(m.id, "gone", f"node {m.provider_ref.get('node')} given back by job {job.job_id}")
                  for m in lease.machines]
        recorded = {m.id for m in lease.machines} | set((lease.meta or {}).get("released_machines") or ())
        covered = {m.provider_ref.get("node") for m in lease.machines}
        for rank, node in enumerate((job.nodes or (None,) * job.node_count) if state == "running" else ()):
            machine_id = f"{lease.id}-n{rank}"
            if machine_id not in recorded and node not in covered:   # made by a controller killed inside lease()
                states.append(MachineState(machine_id, state, "not in fleet's state", unrecorded=True,
                                           started_at=started, deadline_at=limit_end))
        return states

    def release(self, lease: Lease) -> None:
        stop = self._watches.pop(lease.id, None)
        if stop is not None:
            stop.set()
        slurm, cancelled = self._commands_for(lease), False
        try:     # a failed scancel is retried by the next release; the lease's files go now regardless
            cancel_leases_jobs(slurm, lease.id, _recorded_jobs(lease))   # only jobs proven the lease's
            cancelled = True
        finally:   # slurmctld down: each machine ends itself (keys removed) before its frontend is killed
            steps = self._steps.pop(lease.id, [])
            for step in steps if not cancelled else ():
                step.request_release()
            reap(steps)
            staged = staging_dir_of(lease.id, (lease.meta or {}).get("slurm_staging"))
            if staged is not None:
                remove_staging(slurm, staged)
            from ..local import lease_key_path
            _forget_keys(lease_key_path(lease.id))

    def release_machines(self, lease: Lease, machine_ids: list[str]) -> None:
        """End those machines' node steps and give their nodes back to the cluster (shrink.py)."""
        slurm = self._commands_for(lease)
        release_nodes(slurm, lease, machine_ids, self._steps.get(lease.id, []),
                      owned=lambda job_id: owns(slurm, lease.id, job_id))

    def extend_limit(self, lease: Lease, until: datetime) -> datetime:
        """`scontrol update TimeLimit` so the allocation lasts to `until` (limits.raise_time_limit)."""
        return raise_time_limit(self._commands_for(lease), lease, _recorded_jobs(lease), until)

    def accounting(self, lease: Lease) -> dict[str, Any]:
        """sacct's view of the lease: GPU-seconds (elapsed × allocated GRES, each size of a job that
        shrank counted for its own stretch) and what they cost at price_per_gpu_hour. One sacct call."""
        return lease_accounting(self._commands_for(lease), _recorded_jobs(lease), self.config.price_per_gpu_hour,
                                lease.id)

    def sweep(self, live_machine_ids: set[str]) -> list[str]:
        """fleet's jobs (by comment tag) of leases this FLEET_HOME made that no live lease owns."""
        from ...state import open_state
        state = open_state()
        if not state.has_leases_of("slurm"):
            return []          # this FLEET_HOME never leased from Slurm: no job can be ours
        ended: list[str] = []
        for job in self.slurm.queue():        # the login user's jobs: another user's tag is never read
            if not job.comment.startswith(TAG) or job.state.finished:
                continue
            lease_id = job.comment[len(TAG):]
            if lease_id in live_machine_ids or any(m.startswith(f"{lease_id}-n") for m in live_machine_ids):
                continue
            try:
                owner = state.get_lease(lease_id)
            except NotFound:
                continue      # not this FLEET_HOME's (another laptop of the team): never ours to end
            # A live lease (a teammate's queuing `fleet up`) is its release's; an unrecorded job is not the lease's.
            recorded = _recorded_jobs(owner)
            if owner.status in ("active", "leasing") or (recorded and job.job_id not in recorded):
                continue
            self.slurm.cancel([job.job_id])
            ended += [f"{lease_id}-n{r}" for r in range(max(1, job.node_count))]
        return ended


def _recorded_jobs(lease: Lease) -> list[str]:
    ids = {str(m.provider_ref["job_id"]) for m in lease.machines if m.provider_ref.get("job_id")}
    if (lease.meta or {}).get("slurm_job"):
        ids.add(str(lease.meta["slurm_job"]))
    return sorted(ids)


def _forget_keys(key_path: Path) -> None:
    secure_delete(key_path)
    secure_delete(key_path.with_name("host_ed25519"))
    shutil.rmtree(key_path.parent, ignore_errors=True)

