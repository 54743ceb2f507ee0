"""The local provider: each machine is a real OpenSSH sshd on 127.0.0.1.

Machines live under $FLEET_HOME/machines/<machine-id>/ (see fleet/providers/local/sshd.py). Their GPUs
are simulated slots. The watchdog is started detached before `lease` returns, so a machine ends at
its deadline even if the controller is SIGKILLed the next instant.
"""
from __future__ import annotations

import errno
import os
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from ...errors import Cancelled, UsageError
from ...keys import generate_ed25519
from ...models import Lease, Machine, MachineState, Plan, Template, utcnow
from ...paths import plain_name, subdir
from ..base import (BaseProvider, DescribesLeases, ReleasesMachines, ReportsMachines, StopsOnCancel,
                    SweepsLeftovers, check_machine_count)
from .liveness import machine_state
from .templates import DEFAULT_TEMPLATE, LOCAL_TEMPLATES
# sshd (socket, subprocess, …) and the thread pool are imported where machines are made or ended:
# `fleet status` only describes them.


def lease_key_path(lease_id: str) -> Path:
    return subdir("leases") / plain_name(lease_id, "lease id") / "id_ed25519"


class LocalProvider(BaseProvider, ReportsMachines, StopsOnCancel, SweepsLeftovers, DescribesLeases,
                    ReleasesMachines):
    name = "local"
    description = "sshd sandboxes on this computer (simulated GPUs)"
    # Each machine is an sshd plus a watchdog on this computer: 64 of them is already a lot for a laptop.
    max_machines_per_lease = 64

    def __init__(self, python: str | None = None, max_parallel: int = 8, **_ignored):
        self.python = python or sys.executable
        self.max_parallel = max_parallel

    @classmethod
    def from_config(cls, config) -> "LocalProvider":
        return cls(python=getattr(config, "python", None))

    def templates(self) -> dict[str, Template]:
        return dict(LOCAL_TEMPLATES)

    default_template = DEFAULT_TEMPLATE

    def lease(self, plan: Plan, lease_id: str, deadline_s: int,
              on_machine: Callable[[Machine], None] | None = None,
              cancel: threading.Event | None = None) -> Lease:
        check_machine_count(self, plan)
        from concurrent.futures import CancelledError, ThreadPoolExecutor, as_completed

        from ...parallel import submit_or_thread   # at interpreter shutdown: on plain threads
        from .sshd import find_sshd, start_sshd, start_watchdog
        find_sshd()
        cancel = cancel or threading.Event()
        key_path = lease_key_path(lease_id)
        public = generate_ed25519(key_path, comment=f"fleet-lease-{lease_id}")
        machines_dir = subdir("machines")
        gpus = plan.gpus_per_machine

        def start(rank: int) -> Machine:
            machine_id = f"{lease_id}-n{rank}"
            d = machines_dir / machine_id
            if cancel.is_set():
                raise Cancelled("cancelled while leasing")
            if not key_path.exists():   # `fleet down` of this lease while it is leasing removed its key
                raise Cancelled(f"lease {lease_id} was released while leasing (`fleet down`)")
            d.mkdir(mode=0o700)
            # Watchdog first, sshd second (it reads sshd.pid at expiry): the other way round, a
            # controller killed between the two left an sshd with no deadline (fault matrix).
            start_watchdog(d, machine_id, ttl_s=deadline_s, max_s=plan.max_duration_s,
                           kill_pids=[], kill_pid_files=[d / "sshd.pid"], python=self.python,
                           telemetry_interval=plan.telemetry_interval_s)
            if cancel.is_set():   # the watchdog alone is released below; no sshd to start and stop
                raise Cancelled("cancelled while leasing")
            sshd = start_sshd(d, machine_id, public)
            return Machine(
                id=machine_id, lease_id=lease_id, node_rank=rank, host="127.0.0.1", port=sshd.port,
                user=sshd.user, key_path=str(key_path), host_key=sshd.host_key, workdir=str(sshd.root),
                gpu_slots=tuple(range(gpus)), python=self.python,
                price_per_hour=plan.template.price_per_hour or 0, instance_type=plan.template.name,
                provider_ref={"dir": str(d), "sshd_pid": sshd.pid, "simulated_gpus": True,
                              "isolation": sshd.isolation})

        machines: list[Machine] = []
        errors: list[BaseException] = []
        with ThreadPoolExecutor(max_workers=min(self.max_parallel, plan.machine_count)) as pool:
            futures = [submit_or_thread(pool, start, r) for r in range(plan.machine_count)]
            # Reported as each one comes up (this thread, so the caller's database connection is
            # reused), not when all have: a controller killed meanwhile leaves them on record.
            for future in as_completed(futures):
                try:
                    machine = future.result()
                    machines.append(machine)
                    if on_machine is not None and not errors:
                        on_machine(machine)
                except CancelledError:
                    pass
                except BaseException as exc:  # noqa: BLE001 — collected, machines released below
                    errors.append(exc)
                if errors or cancel.is_set():
                    # Stop making machines: at most the ones in flight finish, then all are released.
                    for pending in futures:
                        pending.cancel()
        now = utcnow()
        lease = Lease(id=lease_id, provider=self.name, template=plan.template.name,
                      machines=sorted(machines, key=lambda m: m.node_rank), created_at=now,
                      deadline=now + timedelta(seconds=deadline_s),
                      max_deadline=now + timedelta(seconds=plan.max_duration_s), project=plan.project,
                      user=plan.user, heartbeat_ttl_s=plan.heartbeat_ttl_s)
        if errors or cancel.is_set():
            released = not key_path.exists()     # `fleet down` meanwhile: what failed, failed because of it
            try:
                self._release_dirs([machines_dir / f"{lease_id}-n{r}" for r in range(plan.machine_count)])
            except Exception as exc:  # noqa: BLE001 — said, so that the failure that ended the lease is the one raised
                from ...warn_sink import warn
                warn(f"lease {lease_id}: cleaning up after it failed: {exc} (its machines end at their "
                     "deadline; `fleet down --all` deletes what is left)")
            finally:
                _delete_lease_key(lease_id)
            if released:
                raise Cancelled(f"lease {lease_id} was released while leasing (`fleet down`)")
            failures = [e for e in errors if not isinstance(e, Cancelled)]
            raise failures[0] if failures else Cancelled("cancelled while leasing")
        return lease

    def describe(self, lease: Lease) -> list[MachineState]:
        return self._states(lease, self._lease_dirs(lease))

    def describe_leases(self, leases: list[Lease]) -> dict[str, list[MachineState]]:
        """All leases from one listing of the machines directory (`fleet status`): probing each
        lease's directories by name cost 1,000 × (FLEET_HOME check, mkdir, stats) at 1,000 leases."""
        wanted = {lease.id for lease in leases}
        dirs: dict[str, list[tuple[int, Path]]] = {}
        try:
            with os.scandir(subdir("machines")) as entries:
                for e in entries:
                    lease_id, sep, rank = e.name.rpartition("-n")
                    if sep and lease_id in wanted and rank.isdigit() and e.is_dir(follow_symlinks=False):
                        dirs.setdefault(lease_id, []).append((int(rank), Path(e.path)))
        except OSError:
            pass
        return {lease.id: self._states(lease, [d for _, d in sorted(dirs.get(lease.id, []))]) for lease in leases}

    def _states(self, lease: Lease, dirs: list[Path]) -> list[MachineState]:
        """The lease's machines (sshd alive, deadline not passed), and any of `dirs` (its machine
        directories) fleet's state never recorded."""
        states = []
        recorded = {m.id for m in lease.machines}
        for d in dirs:
            if d.name not in recorded:   # made by a controller killed inside lease()
                states.append(MachineState(d.name, "gone" if (d / "root" / ".fleet" / "expired").exists()
                                           else "running", "not in fleet's state", unrecorded=True,
                                           deadline_at=_deadline_file(d)))
        for m in lease.machines:
            states.append(MachineState(m.id, *machine_state(m.provider_ref)))
        return states

    def release(self, lease: Lease) -> None:
        # The key first: a `fleet up` still making this lease's machines makes no more (lease()).
        _delete_lease_key(lease.id)
        dirs = _owned_dirs(lease.machines)
        # Also those the state never recorded (controller killed inside lease()): every machine of the lease.
        dirs += [d for d in self._lease_dirs(lease) if d not in dirs]
        self._release_dirs(dirs)

    def release_machines(self, lease: Lease, machine_ids: list[str]) -> None:
        """Stop those machines (sshd, watchdog, their processes) and delete their directories; the
        lease's key stays for the others."""
        wanted = set(machine_ids)
        self._release_dirs(_owned_dirs([m for m in lease.machines if m.id in wanted]))

    def _release_dirs(self, dirs: list[Path]) -> None:
        existing = [d for d in dirs if d.exists()]
        for d in dirs:   # removed by another release while its machine was starting: its unit is still ended
            if d not in existing:
                _end_orphan_unit(d)
        if not existing:
            return
        from ...parallel import parallel
        failed: dict[Path, OSError] = {}
        # also at interpreter shutdown (a run in a worker thread)
        for d, exc in zip(existing, parallel(existing, _end_machine_dir_or_failure)):
            # Out of descriptors side by side (`ulimit -n 64`; a tree walk holds one per level), one at
            # a time they fit; one written in while it was deleted is tried again after the others.
            if exc is not None and exc.errno in _AGAIN_ALONE:
                try:
                    _end_machine_dir(d)
                except OSError as again:
                    exc = again
                else:
                    exc = None
            if exc is not None:   # kept (its processes may still run, its disk is still used) for a later
                failed[d] = exc   # release, and raised once the others have gone
        if failed:
            raise next(iter(failed.values()))

    @classmethod
    def _lease_dirs(cls, lease: Lease) -> list[Path]:
        """The machine directories this provider made for a lease (named <lease>-n<rank>).

        Probed by name for the planned ranks rather than globbed: `fleet status` asks this for
        every live lease, and a glob per lease (a regex compile and a full directory scan each)
        made status with 1,000 leases 2.5× slower than with none. A recorded count beyond what a
        lease may have (a record from before the cap, or a damaged one: 10**20 hung status and
        down) is never iterated: the directory is listed once instead, bounded by what exists."""
        root = subdir("machines")
        try:
            count = max(int(lease.meta.get("machines") or 0), len(lease.machines))
        except (TypeError, ValueError):
            count = cls.max_machines_per_lease + 1
        if count <= cls.max_machines_per_lease:
            return [d for d in (root / f"{lease.id}-n{rank}" for rank in range(count))
                    if d.is_dir() and not d.is_symlink()]
        prefix = f"{lease.id}-n"
        try:
            with os.scandir(root) as entries:
                found = [Path(e.path) for e in entries
                         if e.name.startswith(prefix) and e.name[len(prefix):].isdigit()
                         and e.is_dir(follow_symlinks=False)]
        except OSError:
            return []
        return sorted(found, key=lambda d: int(d.name[len(prefix):]))

    def orphan_dirs(self, live_machine_ids: set[str]) -> list[Path]:
        """Machine directories no live lease owns (e.g. a controller killed mid-lease)."""
        root = subdir("machines")
        # Never through a link: one planted in machines/ would have another FLEET_HOME's machine ended.
        return [d for d in root.iterdir() if d.is_dir() and not d.is_symlink() and d.name not in live_machine_ids
                and d.name.rsplit("-n", 1)[0] not in live_machine_ids]

    def sweep(self, live_machine_ids: set[str]) -> list[str]:
        orphans = self.orphan_dirs(live_machine_ids)
        self._release_dirs(orphans)
        # Units whose directory is gone (a watchdog SIGKILLed, then its directory removed): ended too.
        from ...isolation import leftover_units
        root, live = subdir("machines"), live_machine_ids
        units = [n for n in (os.path.basename(u) for u in leftover_units(root)) if n not in live
                 and n.rsplit("-n", 1)[0] not in live and not (root / n).exists()]
        for name in units:
            _end_orphan_unit(root / name)
        return sorted({d.name for d in orphans} | set(units))


def _owned_dirs(machines) -> list[Path]:
    """The machines' directories, each only if it is one this provider makes (a plain name directly
    in FLEET_HOME/machines): the state holds the path, and a planted row naming any other directory
    must not get it stopped and deleted at release."""
    root, out = subdir("machines"), []
    for m in machines:
        ref = m.provider_ref.get("dir")
        if not ref:
            continue
        d = Path(ref)
        if d.parent != root and Path(os.path.realpath(d)).parent != Path(os.path.realpath(root)):
            raise UsageError(f"machine {m.id}'s directory {ref} is not in {root}: not stopping or deleting it",
                             hint="was the state database edited by hand or by someone else?")
        if d.name != m.lease_id and not d.name.startswith(f"{m.lease_id}-n"):   # another lease's machine
            raise UsageError(f"machine {m.id}'s directory {ref} is another lease's: not stopping or deleting it",
                             hint="was the state database edited by hand or by someone else?")
        out.append(root / plain_name(d.name, "machine directory"))
    return out


_SHORT = (errno.EMFILE, errno.ENFILE)   # out of descriptors
# Out of descriptors side by side, or written in while it was deleted (ENOTEMPTY first: a `fleet up`
# still making the machine): stopped and deleted once more, alone, once the others are.
_AGAIN_ALONE = (*_SHORT, errno.ENOTEMPTY)


def _end_machine_dir(d: Path) -> None:
    """Stop one machine, then delete its directory (its venv alone is hundreds of files): in the
    same worker, so deleting 8 machines' directories is not a serial tail after stopping them. What
    cannot be deleted raises (a directory left behind is a machine's disk nothing frees)."""
    from ...deep_trees import rmtree
    from ...remote.mounts import detach_mounts_under
    from .sshd import stop_machine_dir
    stop_machine_dir(d)
    # A mount that stays: the directory is left rather than deleted through it. strict: a mount table
    # unread for want of descriptors raises, and the machine is tried again alone, not left unsaid.
    if detach_mounts_under(d, strict=True):
        return
    failures: list[OSError] = []

    def failed(_call, path, exc) -> None:   # rmtree goes on past it: as much as can be is deleted
        if not isinstance(exc, FileNotFoundError):   # deleted meanwhile by another release
            exc.filename = path                      # the whole path, not the name within its directory
            failures.append(exc)
    rmtree(d, onexc=failed)
    if any(isinstance(e, PermissionError) for e in failures):
        # A tree a run made read-only (HOME is the machine's directory: Go's module cache is one), which
        # its owner deletes once it is writable again, as `chmod -R u+w` then `rm -rf` would.
        failures.clear()
        _owner_writable(d)
        rmtree(d, onexc=failed)
    if failures:   # the first is the cause (the directories above it are then not empty), but out of
        raise next((e for e in failures if e.errno in _SHORT), failures[0])   # descriptors: retried alone


def _owner_writable(top: Path) -> None:
    """Every directory under `top` (links not followed) readable, writable and searchable by its owner."""
    import stat
    todo = [str(top)]
    while todo:
        path = todo.pop()
        try:
            mode = os.lstat(path).st_mode
            if not stat.S_ISDIR(mode):
                continue
            os.chmod(path, stat.S_IMODE(mode) | stat.S_IRWXU)
            with os.scandir(path) as entries:
                todo += [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:     # not the owner's, or gone: the delete after says what stays
            continue


def _end_machine_dir_or_failure(d: Path) -> OSError | None:
    """_end_machine_dir in a worker: what failed is returned, so one machine does not stop the others."""
    try:
        _end_machine_dir(d)
    except OSError as exc:
        return exc
    return None


def _end_orphan_unit(d: Path) -> None:
    from ...isolation import existing_unit
    from ...remote.agent import containment
    try:
        unit = existing_unit(d)
        if unit is not None:
            containment.kill_unit(unit, timeout=30)
            containment.remove_unit(unit)
    except OSError:   # best effort: the release of the machines that exist must go on
        pass


def _delete_lease_key(lease_id: str) -> None:
    from ...keys import secure_delete
    secure_delete(lease_key_path(lease_id))
    import shutil
    shutil.rmtree(lease_key_path(lease_id).parent, ignore_errors=True)


def _deadline_file(d: Path) -> datetime | None:
    """The deadline the machine's own watchdog holds (epoch seconds in root/.fleet/deadline)."""
    from ...remote.agent.containment import read_float   # a FIFO or link planted there is no deadline
    at = read_float(str(d / "root" / ".fleet" / "deadline"))
    try:
        return None if at is None else datetime.fromtimestamp(at, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None

