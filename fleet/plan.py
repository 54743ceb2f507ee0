"""gpus → machine mix, price per hour, deadlines. Pure: no I/O."""
from __future__ import annotations

import os

from .errors import UsageError

TYPE_CHECKING = False   # see fleet/__init__.py: current_user() is on `fleet status`'s path
if TYPE_CHECKING:
    from .models import Plan, Template
    from .providers.base import MachineMix


_USER_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@+-")


def checked_user(name: str, source: str) -> str:
    """A user name someone typed: it lands in the ledger, reports, AWS tags and slot rows, so one
    clear line now rather than a refusal from AWS mid-lease, or a name that breaks a report."""
    if not (0 < len(name) <= 64 and set(name) <= _USER_CHARS and name[0].isalnum()):
        from .errors import UsageError
        raise UsageError(f"{source} {name[:40]!r} is not a user name: 1-64 letters, digits and . _ @ + -, "
                         "starting with a letter or digit")
    return name


def current_user(configured: str | None = None, *, check: bool = False) -> str:
    """Who is running: `user =`, else FLEET_USER, else the login name. `check`: where the name is about
    to be written (a lease, a run, a host), it must be a user name; reading (status, down, the
    reaper) takes whatever name leases were recorded under, so nobody is locked out of their own."""
    name, source = _user_and_source(configured)
    return checked_user(name, source) if check else name


def whose_leases(user: str | None, all_users: bool) -> str | None:
    """The user whose leases a listing or `--all` means: `user`, else the caller as the CLI names
    them (`user =` of ./fleet.toml, FLEET_USER, the login: what `fleet up` there records leases
    under); None (everyone's) only when all_users is asked for."""
    if not isinstance(all_users, bool):
        raise UsageError(f"all_users must be True or False, got {all_users!r}")
    if all_users:
        return None
    if user is not None:
        from .arguments import user_arg
        return user_arg(user)
    from .config.peek import peek_str
    return current_user(peek_str("user"))


def _user_and_source(configured: str | None) -> tuple[str, str]:
    if configured:
        return configured, "user ="
    env = os.environ.get("FLEET_USER")
    if env:
        return env, "FLEET_USER"
    # getpass.getuser()'s own order, without importing getpass (~3 ms of every `fleet status`).
    for name in ("LOGNAME", "USER", "LNAME", "USERNAME"):
        if os.environ.get(name):
            return os.environ[name], f"the login name (${name}; set FLEET_USER)"
    try:
        import pwd
        return pwd.getpwuid(os.getuid()).pw_name, "the login name (set FLEET_USER)"
    except Exception:  # noqa: BLE001 — no passwd entry in some containers
        return "unknown", "the login name"


def machines_for(gpus: int | None, template: Template) -> tuple[int, int]:
    """(machine_count, total gpus). None means one machine's worth."""
    per = template.gpus_per_machine
    if gpus is None:
        return 1, per
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise UsageError(f"--gpus must be a positive integer, got {gpus!r}")
    if per > 0 and gpus % per:
        lower, upper = (gpus // per) * per, (gpus // per + 1) * per
        options = " or ".join(str(n) for n in (lower, upper) if n > 0)
        raise UsageError(f"--gpus {gpus} is not a multiple of {per} (template {template.name} has {per} GPUs "
                         f"per machine)", hint=f"use --gpus {options}, or another --template")
    return (gpus // per if per else 1), gpus


def make_plan(*, provider: str, template: Template | None = None, gpus: int | None = None, max_duration_s: int,
              heartbeat_ttl_s: int, project: str, user: str, mix: "MachineMix | None" = None) -> Plan:
    """A plan for `gpus` of `template`, or for the machine mix the provider chose (`mix`, from
    `provider.offers`): then the plan's machines, instance type and price are exactly the mix's."""
    if max_duration_s <= 0:
        raise UsageError(f"max_duration must be positive, got {max_duration_s}s")
    if heartbeat_ttl_s <= 0:
        raise UsageError(f"heartbeat_ttl must be positive, got {heartbeat_ttl_s}s")
    instance_type = ""
    if mix is not None:
        template, count, total, instance_type = mix.machine_template(), mix.machines, mix.gpus, mix.instance_type
    elif template is None:
        raise UsageError("a plan needs a template or a machine mix")
    else:
        count, total = machines_for(gpus, template)
    from .models import Plan
    return Plan(provider=provider, template=template, gpus=total, machine_count=count,
                max_duration_s=max_duration_s, heartbeat_ttl_s=heartbeat_ttl_s, project=project, user=user,
                instance_type=instance_type, spot=template.spot)


def first_deadline_s(plan: Plan) -> int:
    """A machine's first deadline: one TTL of grace to come up and be heartbeaten, never past max."""
    return max(1, min(plan.max_duration_s, plan.heartbeat_ttl_s))
