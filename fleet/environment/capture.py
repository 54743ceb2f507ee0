"""Stage "environment" (after setup, before the command): what the run's machines are, captured once
per distinct machine kind with one remote command, and the package set's wheels kept in the store.

    probe    one `python -c` on one machine of each kind, run by the lease's venv (probe.py)
    wheels   the first time a package set is seen, its distributions are repacked on the machine,
             brought home and snapshotted into the run's store under the name env-<set hash>;
             afterwards the name is found, its content checked once per computer (wheels.py),
             and nothing is packed (the common case costs nothing)
    pinned   a rerun compares what it got with the recorded environment: every difference is a line
             in `RunEnvironment.differences`, shown before the command starts and recorded

Secrets never reach the section: the probe reads no environment variable, and the result is masked
with the run's secret values like every other part of the record.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from ..errors import InfrastructureError
from ..models import Lease, Machine
from .image import image_for
from .model import (NONE, GpuInfo, LockFile, MachineEnvironment, Package, PinnedEnvironment, RunEnvironment)
from .wheels import CONSTRAINTS

WHEELS_REF_PREFIX = "env-"
REMOTE_WHEELS = "env-wheels"        # under the machine's state dir: where pack writes


@lru_cache(maxsize=1)
def probe_script() -> str:
    return (Path(__file__).parent / "probe.py").read_text()


def kind_of(provider: str, machine: Machine, template: str) -> str:
    """Machines of one kind share an environment: one instance type (or template) on a provider that
    makes identical machines; on team hosts and cluster nodes each host is its own kind."""
    base = machine.instance_type or template
    return f"{base}@{machine.host}" if provider in ("ssh", "slurm") else base


def lifecycle_of(machine: Machine) -> str:
    if machine.spot:
        return "spot"
    return "on-demand" if machine.provider_ref.get("instance_id") else "host"


def venv_python(lease: Lease, machine: Machine) -> str:
    from ..lease_prepare import python_env_dir
    venv = python_env_dir(lease, machine.id)
    return f"{venv}/bin/python" if venv else machine.python


# The probe runs the lease's venv `python`, which the experiment's setup can replace: what it prints
# is bounded, and so is how long it may take. The largest real answer (thousands of packages, each
# name, version and hash) is a few MiB.
PROBE_MAX_OUTPUT = 16 << 20
PROBE_DEADLINE_S = 300.0


def run_probe(lease: Lease, machine: Machine, *args: str, deadline_s: float = PROBE_DEADLINE_S) -> dict[str, Any]:
    from ..remote.ssh import CommandTimedOut, OutputLimitExceeded, connect
    python = venv_python(lease, machine)
    try:
        with connect(machine, timeout=30) as session:
            result = session.run([python, "-c", probe_script(), *args], check=False, timeout=120,
                                 max_output_bytes=PROBE_MAX_OUTPUT, deadline_s=deadline_s)
    except OutputLimitExceeded:
        raise InfrastructureError(f"could not read the environment of {machine.id}: {python} printed more "
                                  f"than {PROBE_MAX_OUTPUT >> 20} MiB for its {args[0] if args else 'probe'} "
                                  "step (is it still the venv's Python?); stopped reading it") from None
    except CommandTimedOut:
        raise InfrastructureError(f"could not read the environment of {machine.id}: {python}'s "
                                  f"{args[0] if args else 'probe'} step did not finish in {deadline_s:g}s; "
                                  "stopped waiting for it") from None
    lines = result.stdout.strip().splitlines()
    if result.exit_code != 0 or not lines:
        detail = (result.stderr.strip() or result.stdout.strip())[-300:]
        raise InfrastructureError(f"could not read the environment of {machine.id}: {detail}")
    return json.loads(lines[-1])


def machine_environment(*, kind: str, count: int, provider: str, template: str, simulated_gpus: bool,
                        machine: Machine, lease_meta: dict[str, Any], probed: dict[str, Any]) -> MachineEnvironment:
    """The controller's facts about a machine kind plus what its probe reported."""
    g = probed.get("gpu") or {}
    if simulated_gpus:   # the local provider's GPUs are slots: there is no device and no driver
        gpu = GpuInfo(model="simulated", count=len(machine.gpu_slots), driver=NONE, cuda=NONE, simulated=True)
    else:
        gpu = GpuInfo(model=str(g.get("model") or NONE), count=int(g.get("count") or 0),
                      driver=str(g.get("driver") or NONE), cuda=str(g.get("cuda") or NONE))
    packages = tuple(sorted((Package(p["name"], p["version"], p["sha256"]) for p in probed.get("packages") or ()),
                            key=lambda p: p.name.lower()))
    return MachineEnvironment(
        kind=kind, machines=count, provider=provider, template=template,
        instance_type=machine.instance_type or template, lifecycle=lifecycle_of(machine),
        image=image_for(lease_meta, str(probed.get("os_release") or "unknown")),
        kernel=str(probed.get("kernel") or "unknown"), os_release=str(probed.get("os_release") or "unknown"),
        gpu=gpu, python=str(probed.get("python") or "unknown"), packages=packages,
        lock_files=tuple(LockFile(f["name"], f["sha256"]) for f in probed.get("lock_files") or ()))


def capture(ctx, lease: Lease, store=None, pinned: PinnedEnvironment | None = None) -> RunEnvironment:
    """Probe one machine per kind (in parallel), keep new package sets' wheels in `store`, and for a
    rerun list how this environment differs from the pinned one."""
    from ..lease_prepare import prepare_lease
    from ..parallel import parallel
    from ..stage import code_dir
    t0 = time.monotonic()
    prepare_lease(ctx, lease)   # the venv the probe runs in (idempotent: set up already by setup)
    offer = ctx.offer
    kinds: dict[str, list[Machine]] = {}
    for m in sorted(lease.machines, key=lambda m: m.node_rank):
        kinds.setdefault(kind_of(lease.provider, m, offer.template.name), []).append(m)
    probed = dict(parallel(list(kinds.items()),
                           lambda item: (item[0], run_probe(lease, item[1][0], "probe", code_dir(item[1][0])))))
    envs = tuple(machine_environment(kind=k, count=len(ms), provider=lease.provider, template=offer.template.name,
                                     simulated_gpus=offer.template.simulated_gpus, machine=ms[0],
                                     lease_meta=lease.meta, probed=probed[k]) for k, ms in kinds.items())
    wheels = None
    primary = envs[0] if envs else None
    if store is not None and primary is not None and primary.packages:
        try:
            wheels = keep_wheels(lease, kinds[primary.kind][0], primary, store, ctx.events)
        except Exception as exc:  # noqa: BLE001 — the environment is still worth recording without them
            ctx.events.warn(f"could not keep the package set's wheels in the store ({exc}); "
                            "a rerun of this run will install its setup's packages as they are then")
    if primary is not None and primary.packages:
        keep_set_in_host_cache(ctx, lease, primary)
    env = RunEnvironment(machines=envs, wheels_snapshot=wheels)
    if pinned is not None:
        from .diff import pinned_differences
        env = replace(env, pinned_from=pinned.run_id,
                      differences=tuple(pinned.notes) + tuple(pinned_differences(pinned.environment, env)))
    env = replace(env, capture_s=round(time.monotonic() - t0, 3))
    return redacted(env, ctx.config)


def keep_wheels(lease: Lease, machine: Machine, env: MachineEnvironment, store, events=None) -> str:
    """The package set's wheels as a snapshot in the store (named by the set's hash: found, not
    packed, when any earlier run on any host already kept the same set, and its content checked
    to be that set before it is trusted: wheels.py)."""
    from ..snapshots import create_snapshot
    from ..stage import fetch_directory
    from .wheels import remember, wheels_problem
    name = WHEELS_REF_PREFIX + env.packages_hash[:40]
    known = store.get_ref(name)
    if known and store.has_manifest(known):
        problem = wheels_problem(store, known, env)
        if problem is None:
            return known
        if events is not None:
            events.warn(f"the store's snapshot {name} ({known[:12]}) does not hold this package set ({problem}); "
                        "not using it: keeping this run's own wheels under that name")
    elif events is not None:   # the first run with this set: a large one (torch) takes a while, once
        events.phase("environment", f"keeping this package set ({len(env.packages)} packages) in the store "
                                    "for reruns: first time only")
    remote = f"{machine.state_dir}/{REMOTE_WHEELS}"
    # Repacking a large set (torch's GiBs) into deflated wheels takes minutes, once per set.
    run_probe(lease, machine, "pack", remote, *[p.name for p in env.packages], deadline_s=1800)
    with tempfile.TemporaryDirectory(prefix="fleet-wheels-") as tmp:
        got = fetch_directory(machine, remote, Path(tmp))
        if got.skipped:
            raise InfrastructureError(f"could not bring the package set's wheels home: {got.skipped[0]}")
        (Path(tmp) / CONSTRAINTS).write_text("".join(f"{p.pin}\n" for p in env.packages))
        if known is not None:   # the name is fleet's (users cannot give env- names): a wrong one goes
            store.delete_ref(name)
        sid = create_snapshot(tmp, store, name=name).id
    remember(sid, env)    # what this run's own machine packed from the set it reported
    return sid


def set_cache_key(env: MachineEnvironment) -> str:
    """The host cache's name for a package set (beside the per-setup entries, fleet/python_env.py)."""
    return f"set-{env.packages_hash[:24]}"


def keep_set_in_host_cache(ctx, lease: Lease, env: MachineEnvironment) -> None:
    """A venv that setup built from scratch is also kept under its package set's hash, so a rerun of
    any run with this set starts from it on this host (best effort; machines whose venv came from a
    cache entry already had it, and cost nothing here)."""
    from .. import python_env
    from ..lease_prepare import PYTHON_ENV
    envs = lease.meta.get(PYTHON_ENV) or {}
    key = set_cache_key(env)
    for machine in python_env.publishers(lease, envs):
        try:
            python_env.publish(machine, {**envs[machine.id], "key": key})
        except Exception as exc:  # noqa: BLE001 — a cache miss next time is not this run's failure
            ctx.events.warn(f"could not keep the package set in {machine.id}'s cache: {exc}")


def redacted(env: RunEnvironment, config) -> RunEnvironment:
    """Masked with the run's secret values, like every other field of the record (defence in depth:
    nothing the probe reports comes from the environment)."""
    from ..masking import Masker
    masker = Masker.for_config(config).redacting()
    if not masker:
        return env
    return RunEnvironment.from_json(masker.mask_obj(env.to_json())) or env

