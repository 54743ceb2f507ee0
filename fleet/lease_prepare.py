"""What a lease needs once before its first process starts: a rendezvous port and Python environments.

Both are picked once per lease and recorded in the lease's meta (state database), so every run on
the lease (`fleet up`'s setup and command, then `fleet run LEASE` on a kept lease) sees the same
MASTER_PORT and the same venv. Idempotent: a lease already prepared costs no SSH round trip.
"""
from __future__ import annotations

import json
from typing import Any

from .models import Lease, to_jsonable

RENDEZVOUS = "rendezvous"
PYTHON_ENV = "python_env"


def prepare_rendezvous(ctx, lease: Lease) -> None:
    """Allocate the lease's MASTER_PORT, unless done already. It needs no staged file, so the
    pipeline claims it beside staging (fleet/run/overlap.py); prepare_lease calls it too."""
    if RENDEZVOUS in lease.meta or not lease.machines:
        return
    from .rendezvous import allocate_master_port
    master = min(lease.machines, key=lambda m: m.node_rank)
    patch = {RENDEZVOUS: {"host": master.host, "port": allocate_master_port(ctx.state, lease)}}
    lease.meta.update(patch)
    merge_lease_meta(ctx.state, lease.id, patch)


def prepare_lease(ctx, lease: Lease) -> None:
    """Allocate the lease's MASTER_PORT and make each machine's venv, unless done already."""
    from .parallel import parallel
    prepare_rendezvous(ctx, lease)
    patch: dict[str, Any] = {}
    envs = dict(lease.meta.get(PYTHON_ENV) or {})
    missing = [m for m in lease.machines if m.id not in envs]
    if missing:
        from . import python_env
        setup = ctx.config.setup or ""
        prefer = pinned_set_key(ctx)
        made = dict(parallel(missing, lambda m: (m.id, python_env.prepare(lease, m, setup, prefer))))
        for machine_id, info in made.items():
            discarded = info.pop("discarded", None)
            if discarded:   # changed since it was made: by another lease, or by anything else
                ctx.events.warn(f"{machine_id}: discarded the host's cached Python environment "
                                f"{', '.join(discarded)}: its files no longer match what was recorded")
        envs.update(made)
        patch[PYTHON_ENV] = envs
    if patch:
        lease.meta.update(patch)
        merge_lease_meta(ctx.state, lease.id, patch)


def after_setup(ctx, lease: Lease) -> None:
    """A setup succeeded: keep its environment in the host's cache for the next lease (best effort)."""
    from . import python_env
    envs = lease.meta.get(PYTHON_ENV) or {}
    for machine in python_env.publishers(lease, envs):
        try:
            python_env.publish(machine, envs[machine.id])
        except Exception as exc:  # noqa: BLE001 — a cache miss next time is not this run's failure
            ctx.events.warn(f"could not cache the Python environment of {machine.id}: {exc}")


def pinned_set_key(ctx) -> str:
    """A rerun's recorded package set, as the host cache names it (fleet/environment/capture.py)."""
    rerun = ctx.options.rerun_of
    env = rerun.environment.environment if rerun is not None and rerun.environment is not None else None
    if env is None or env.primary is None or not env.primary.packages:
        return ""
    from .environment.capture import set_cache_key
    return set_cache_key(env.primary)


def master_port(lease: Lease) -> int:
    """The lease's rendezvous port (prepare_lease has run)."""
    return int(lease.meta[RENDEZVOUS]["port"])


def python_env_dir(lease: Lease, machine_id: str) -> str | None:
    return ((lease.meta.get(PYTHON_ENV) or {}).get(machine_id) or {}).get("dir")


def merge_lease_meta(state, lease_id: str, patch: dict[str, Any]) -> None:
    db = state.db
    with db.transaction():
        rows = db.execute("SELECT meta FROM leases WHERE id = ?", (lease_id,))
        if not rows:
            return
        from .state.documents import object_to_extend
        meta = object_to_extend(rows[0]["meta"], f"lease {lease_id}'s meta")
        meta.update(to_jsonable(patch))
        db.execute("UPDATE leases SET meta = ? WHERE id = ?", (json.dumps(meta), lease_id))
