"""The controller's side of per-lease Python environments (the machine's side: remote/pyenv_remote.py).

Before a lease's first setup or run, every machine gets its own venv (cloned from a per-host cache
when one matches); after a setup succeeded, one machine per host keeps a copy in that cache for the
next lease with the same interpreter, setup command and requirement files.
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from .errors import InfrastructureError
from .models import Lease, Machine

REMOTE_CACHE = "~/.cache/fleet/pyenv"   # per host and user, outside every lease's workdir


def env_dir(machine: Machine) -> str:
    """The lease's venv on the machine: inside its workdir, so it goes with the machine."""
    return f"{machine.workdir}/pyenv"


def cache_dir(lease: Lease, machine: Machine) -> str:
    """Where a host keeps environments between leases, outside every lease's workdir.

    Team hosts: beside the user's lease workdirs there (the root configured for the host).
    Machines on the controller's own host (local provider, AWS sandbox): under FLEET_HOME, with
    everything else fleet makes there. Elsewhere (a cloud instance): the login's ~/.cache."""
    suffix = f"/{lease.id}/{machine.id}"
    if lease.provider == "ssh" and machine.workdir.endswith(suffix):
        return machine.workdir[:-len(suffix)] + f"/.pyenv-cache-{machine.user}"   # per login, as chunks
    from .snapshots.sync_remote import on_this_computer_as_us
    if lease.provider == "local" or on_this_computer_as_us(machine):
        from .paths import subdir
        return str(subdir("cache") / "pyenv")
    return REMOTE_CACHE


@lru_cache(maxsize=1)
def _script() -> str:
    return (Path(__file__).parent / "remote" / "pyenv_remote.py").read_text()


def _remote(machine: Machine, *args: str, timeout: float = 600) -> dict[str, Any]:
    from .remote.ssh import connect
    # Not -S in general, though the script is standard library only: on Python < 3.11 a virtualenv is
    # set up by site, and base_python() must see a machine.python that is a venv's as one. This very
    # interpreter on this computer (local machines) is >= 3.11, and its site is most of its start.
    import sys
    from .snapshots.sync_remote import on_this_computer_as_us
    # -I always: the session starts in the login's home, where runs write, and `-c` puts it on sys.path.
    flags = ["-I", "-S"] if machine.python == sys.executable and on_this_computer_as_us(machine) else ["-I"]
    with connect(machine, timeout=30) as session:
        result = session.run([machine.python, *flags, "-c", _script(), *args], check=False, timeout=timeout)
    lines = result.stdout.strip().splitlines()
    if result.exit_code != 0 or not lines:
        detail = (result.stderr.strip() or result.stdout.strip())[-400:]
        raise InfrastructureError(f"could not prepare the Python environment on {machine.id}: {detail}")
    return json.loads(lines[-1])


def prepare(lease: Lease, machine: Machine, setup: str, prefer: str = "") -> dict[str, Any]:
    """Make (or find) the machine's venv for this lease; returns what the machine reported.
    `prefer`: a package-set cache entry (set-<hash>) to start from when none matches the setup."""
    from .stage import code_dir
    args = [env_dir(machine), cache_dir(lease, machine), code_dir(machine), setup] + ([prefer] if prefer else [])
    info = _remote(machine, "prepare", *args)
    return {k: info[k] for k in ("dir", "key", "cache", "source", "discarded") if k in info}


def publishers(lease: Lease, envs: dict[str, dict[str, Any]]) -> list[Machine]:
    """One machine per host and cache key whose venv was made fresh for this lease (others cloned
    an entry that is already cached; machines of a host would otherwise publish the same thing)."""
    chosen: dict[tuple[str, str, str], Machine] = {}
    for m in lease.machines:
        info = envs.get(m.id) or {}
        if info.get("source") == "fresh" and info.get("key"):
            chosen.setdefault((m.host, info.get("cache", ""), info["key"]), m)
    return list(chosen.values())


def publish(machine: Machine, info: dict[str, Any]) -> dict[str, Any]:
    return _remote(machine, "publish", info["dir"], info["cache"], info["key"])
