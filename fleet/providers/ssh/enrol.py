"""Adding a host to the team's inventory (`fleet hosts add`): which host key to pin, and the probe
that must pass before the host is stored.

The trust decision, in order: ~/.ssh/known_hosts decides when it knows the host (a different key of
the same type is refused as a possible impersonation); else a fingerprint the user gave must match;
else the user accepted the shown key in advance (--yes); else an interactive user is asked, and a
non-interactive one is refused with the fingerprint to pass.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Callable

from ...errors import InfrastructureError, UsageError
from .hosts import Host, Inventory, Probe, Target, fetch_host_key, fingerprint, known_host_key, probe, resolve


@dataclass(frozen=True)
class KeyChoice:
    key: str                 # "type base64", to pin
    fingerprint: str         # SHA256:…
    source: str              # "known_hosts" | "fingerprint" | "accepted" | "confirmed"


@dataclass(frozen=True)
class Enrolled:
    host: Host
    target: Target
    key: KeyChoice
    probe: Probe


_FINGERPRINT = re.compile(r"SHA256:[A-Za-z0-9+/]{43}=?")

# Asked when no rule decides: (where "host:port", key type, fingerprint) → pin it?
Confirm = Callable[[str, str, str], bool]


def choose_host_key(where: str, *, offered: str, known: str | None, trust: str | None, accept: bool,
                    confirm: Confirm | None) -> KeyChoice:
    """The key to pin for `where`, by the rules in this module's docstring; refusals raise."""
    shown = fingerprint(offered)
    if known:
        # known_hosts decides. (It may hold another key type than the one offered; the probe then
        # checks the known key itself.)
        if known.split()[0] == offered.split()[0] and known.split()[1] != offered.split()[1]:
            raise InfrastructureError(f"{where} offers {shown}, but ~/.ssh/known_hosts has {fingerprint(known)}"
                                      " — refusing (possible impersonation)")
        return KeyChoice(_pinned(known), fingerprint(known), "known_hosts")
    if trust:
        if trust.strip() != shown:
            raise InfrastructureError(f"{where} offers host key {shown}, not {trust.strip()} — refusing")
        return KeyChoice(_pinned(offered), shown, "fingerprint")
    if accept:
        return KeyChoice(_pinned(offered), shown, "accepted")
    if confirm is None:
        raise UsageError(f"{where} host key is {shown}; confirm it is the host's",
                         hint=f"pass --trust {shown} (or --yes) to pin it without a prompt")
    if not confirm(where, offered.split()[0], shown):
        raise UsageError("host key not trusted; nothing added")
    return KeyChoice(_pinned(offered), shown, "confirmed")


def check_words(host: Host) -> None:
    """Address, name and login are single words: `fleet hosts add ""` dialled ":22" (exit 10), a line
    break cut the error to its first line, ESC sequences went into `fleet status`, and a leading '-'
    is an option to ssh."""
    for flag, value in (("address", host.address), ("--name", host.name), ("--user", host.login)):
        if value is None and flag != "address":
            continue
        if not value or value.startswith("-") or any(c.isspace() or not c.isprintable() for c in value):
            raise UsageError(f"host {flag} {value!r}: must be one word without spaces or control characters, "
                             "not starting with '-'",
                             hint="e.g. gpu1.example.org, 10.0.0.5 or an ~/.ssh/config alias" if flag == "address" else None)


def check_workdir(host: Host) -> None:
    from ...config.schema import Invalid
    from .settings import host_workdir
    if host.workdir is None:
        return
    try:
        host_workdir(host.workdir)
    except Invalid as exc:
        raise UsageError(f"host --workdir {exc}", hint="e.g. /scratch/fleet or ~/fleet-leases") from None


def _refuse_same_machine(known: list[Host], candidate: Host) -> None:
    """One machine enrolled twice (another name, address or alias) would have its GPUs handed out
    twice: each enrolment holds its own slots. The same test a lease makes (aliases.one_machine)."""
    from .aliases import one_machine
    for other in known:
        why = one_machine(other, candidate)
        if why:
            raise UsageError(f"host {candidate.name!r} is host {other.name!r} again ({why}): its GPUs would be "
                             "given out twice; nothing was added",
                             hint=f"use {other.name!r}, or `fleet hosts rm {other.name}` first (machines cloned "
                                  "from one image need host keys of their own)")


def _pinned(key: str) -> str:
    return " ".join(key.split()[:2])


def enrol(inventory: Inventory, host: Host, *, trust: str | None = None, accept: bool = False,
          confirm: Confirm | None = None) -> Enrolled:
    """Pin `host`'s key, probe it with that key, and store it; nothing is stored unless all pass."""
    check_words(host)
    check_workdir(host)
    if trust is not None and not _FINGERPRINT.fullmatch(trust.strip()):
        raise UsageError(f"--trust {trust!r} is not a host key fingerprint",
                         hint="SHA256: and 43 base64 characters, as `ssh-keygen -lf` or `fleet hosts add` show it")
    if host.key_path and os.path.isdir(os.path.expanduser(host.key_path)):
        raise UsageError(f"--key {host.key_path} is a directory, not a private key file")
    known = inventory.list()
    if any(h.name == host.name for h in known):
        raise UsageError(f"host {host.name!r} already exists", hint=f"`fleet hosts rm {host.name}` first")
    target = resolve(host)
    where = f"{target.hostname}:{target.port}"
    choice = choose_host_key(where, offered=fetch_host_key(target.hostname, target.port),
                             known=known_host_key(target.hostname, target.port), trust=trust, accept=accept,
                             confirm=confirm)
    host.host_key = choice.key
    _refuse_same_machine(known, host)
    result = probe(host)
    if not result.up:
        raise InfrastructureError(f"host {host.name}: {result.detail}")
    if not result.gpus:   # a host no lease can use: say so now, store nothing
        found = "declared with 0 GPUs" if host.gpus == 0 else "no GPUs found there (no nvidia-smi?)"
        raise UsageError(f"host {host.name}: {found}; nothing was added",
                         hint="give the count with --gpus N (and the model with --gpu-model, e.g. A100-80GB)")
    from ...models import utcnow
    host.status, host.status_detail, host.home = "up", result.detail or None, result.home
    host.gpus, host.gpu_model = result.gpus, result.gpu_model
    host.checked_at = utcnow().isoformat()
    inventory.add(host)
    return Enrolled(host, target, choice, result)
