"""`fleet up --detach` on a Slurm cluster reached over SSH (`[slurm] login`): the run's supervisor
goes to the login node, where Slurm's tools are local.

A supervisor on the laptop would run every Slurm command over the laptop's ssh, and each node
step's srun frontend would hang off one of the laptop's ssh connections: closing the laptop would
end the run. So the launcher (this module, on the laptop) does what must happen where the code is —
plan, pin (code and data snapshots go to the run's S3 store), the budget gate (nothing is started
when it refuses) — then, over the login node's SSH (the destination, port, key, jump host and
known_hosts that [slurm] login uses: provider.login_shell()), copies fleet's package into
`~/.fleet-supervisor/<run>` (0700) and starts `fleet.run.node_supervisor` there under
`[slurm] supervisor_python -I`, handing it the state URL, the store's credentials and the run's
[env] on stdin, never on disk or in argv. It forks into a session of its own (it outlives the ssh
session) and leases for itself: sbatch/salloc, the node steps' srun frontends, heartbeats, budget,
deadline, logs into the state, outputs into the store, ledger, record and release all run on the
login node (handed_lease.LoginNodeLease). The launcher follows its events to the first phase after
staging and leaves.

Unlike node 0 of a cloud lease, the login node is the user's own login: the supervisor runs as the
user, who owns the Slurm jobs anyway, and keeps the login shell's environment (PATH to Slurm's
tools, SLURM_CONF); `-I` keeps user site-packages and PYTHON* variables out of its imports.

Needs a PostgreSQL state and an S3 store (the login node reaches neither of the laptop's SQLite
file nor its directories); without them the supervisor stays a background process of this computer
(fleet/run/detach.py), and the launcher says why in one line.
"""
from __future__ import annotations

import json
import shlex
from dataclasses import asdict, replace
from typing import Any

from ..errors import InfrastructureError
from .context import Events
from .detach import Handoff
from .handed_lease import LOGIN_NODE
from .remote_supervisor import (BOOTSTRAP, fleet_package, last_json, relaunch_meta, remote_env,
                                spec_for_remote, supervisor_state_url)
from .supervisor import SupervisorSpec

SUPERVISOR_DIR = ".fleet-supervisor"   # under the login's home: <this>/<run id>
WHERE = "the login node"
# The supervisor's Python must read fleet's sources: an older one says so in one line, not a SyntaxError.
# One line, no '!': the login shell may be csh.
VERSION_CHECK = ("import sys, json; sys.version_info >= (3, 11) or (print(json.dumps({'error': \"the login node's "
                 "Python is %d.%d (%s); fleet's supervisor needs 3.11 or later: set [slurm] supervisor_python\" % "
                 "(sys.version_info[0], sys.version_info[1], sys.executable)})), sys.exit(3)); ")


def has_login_node(config) -> bool:
    """The run's provider runs its tools on a login node (Slurm), where its supervisor may go."""
    from ..providers.capabilities import SupervisesFromLoginNode
    from ..providers.registry import provider_class
    return issubclass(provider_class(config.provider), SupervisesFromLoginNode)


def why_not_login_node(config, options=None) -> str | None:
    """None when this run's supervisor can run on the provider's login node; else why not, in one line."""
    if not has_login_node(config):
        return f"the {config.provider} provider has no login node to run a supervisor on"
    from .offer import provider_for
    if provider_for(config).login_node() is None:
        return ("fleet runs on the login node itself ([slurm] login unset): the supervisor is a background "
                "process here, in a session of its own, which outlives your ssh session")
    if options is not None and options.keep_s:
        return "--keep leaves the allocation up after the run, for this computer's `fleet run`"
    if not supervisor_state_url(config).startswith(("postgresql://", "postgres://")):
        return ("the login node cannot reach this computer's SQLite state (team mode: "
                "FLEET_STATE_URL=postgresql://…)")
    if not str(config.store or "").startswith("s3://"):
        return "the login node cannot reach a store on this computer (set store = \"s3://BUCKET/PREFIX\")"
    return None


def launch_on_login_node(config, spec: SupervisorSpec, options, events: Events, pins=None) -> tuple[Handoff, int]:
    """Pin, pass the budget gate, start the supervisor on the login node, follow it to the handoff.
    Returns the handoff and the supervisor's pid on the login node. `pins`: inputs pinned already."""
    from ..money.reservations import Reservations
    from ..state import open_state
    from .budget import BudgetGate
    from .inputs import Inputs
    from .lease import NewLease
    from .offer import provider_for
    provider = provider_for(config)
    source = NewLease(provider)
    offer = source.offer(config)
    pins = pins if pins is not None else Inputs(config).pin(options, events)
    state = open_state(config.state_url)
    # Refused here, before anything reaches the login node. The supervisor's own budget stage
    # reserves for the lease it makes; this reservation ends before it starts, so the two never
    # count against each other.
    BudgetGate(config, state).grant(offer, run_id=spec.run_id, lease_id=source.lease_id)
    shell = provider.login_shell()
    try:
        try:
            home = shell.run('printf "%s" "$HOME"', timeout=60).stdout.strip()
            if not home.startswith("/"):
                raise InfrastructureError(f"login node {provider.login_node()}: no home directory to run the "
                                          f"supervisor in (HOME={home!r})")
            remote = f"{home.rstrip('/')}/{SUPERVISOR_DIR}/{spec.run_id}"
            events.phase("handoff", f"copying fleet to the login node ({provider.login_node()}) and starting the "
                                    "run's supervisor there")
            _copy(shell, remote, config)
        finally:
            Reservations(state.db).settle(source.lease_id, None, run_id=spec.run_id)
        payload = {"spec": spec_for_remote(spec, config), "env": {**remote_env(config), **provider.login_node_env()},
                   "pins": asdict(pins), "supervisor_dir": remote, "where": WHERE,
                   "relaunch": relaunch_meta(config, spec, pins)}   # for `fleet reap`'s next attempt (lost_resume.py)
        python = provider.supervisor_python()
        python = f"{home.rstrip('/')}/{python[2:]}" if python.startswith("~/") else python
        started = shell.run(start_command(remote, python), stdin=(json.dumps(payload) + "\n").encode(),
                            check=False, timeout=120)
        answer = last_json(started.stdout)
        if "pid" not in answer:
            raise InfrastructureError(answer.get("error") or f"the supervisor did not start on the login node: "
                                      f"{(started.stderr.strip().splitlines() or ['no answer'])[-1][:300]}")
        pid = int(answer["pid"])
        from .node_launch import follow_handoff
        handoff = follow_handoff(shell, remote, pid, spec.run_id, None, events, where=WHERE)
        return replace(handoff, lease_id=handoff.lease_id or _lease_of(state, spec.run_id, handoff)), pid
    finally:
        shell.close()


def start_command(remote: str, python: str) -> str:
    """The supervisor's start on the login node, with that node's clock at the start: a Python too
    slow to start (node_supervisor.START_WITHIN_S) starts nothing once the launcher gave up on it."""
    return (f"cd {shlex.quote(remote)} && exec {shlex.quote(python)} -I -c {shlex.quote(VERSION_CHECK + BOOTSTRAP)} "
            f"{shlex.quote(remote)} \"$(date +%s)\"")


def _copy(shell, remote: str, config) -> None:
    """fleet's package (unpacked from stdin) and fleet.toml, into the supervisor's 0700 directory."""
    import re
    from pathlib import Path
    parent, _, name = remote.rpartition("/")
    # The run id may come from a row of the shared state (`fleet reap` resuming a lost run): a path
    # made from it is removed below, so it must name one entry of ~/.fleet-supervisor.
    if not parent.endswith("/" + SUPERVISOR_DIR) or not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):
        raise InfrastructureError(f"run id {name!r} refused: a run id is letters, digits, '_', '.', '-'")
    shell.run(f"umask 077 && rm -rf {shlex.quote(remote)} && mkdir -p {shlex.quote(remote + '/pkg')} "
              f"{shlex.quote(remote + '/exp')} {shlex.quote(remote + '/home')} && chmod 700 {shlex.quote(remote)} "
              f"&& tar -xzf - -C {shlex.quote(remote + '/pkg')}", stdin=fleet_package(), timeout=300)
    if config.path is not None:
        shell.run(f"umask 077 && cat > {shlex.quote(remote + '/exp/fleet.toml')}",
                  stdin=Path(config.path).read_bytes())


def _lease_of(state, run_id: str, handoff: Handoff) -> str | None:
    if handoff.summary is not None:
        return handoff.summary.lease_id
    try:
        return state.get_run(run_id).get("lease_id")
    except Exception:  # noqa: BLE001 — shown as "?"; the run row names it
        return None


def stop_on_login_node(state, run: dict[str, Any], events: Events, *, wait_s: float, probe: bool = False) -> bool:
    """`fleet down LEASE` on a run supervised from the login node: SIGTERM to that supervisor over
    the login node's SSH (the run then stops as on Ctrl-C: outputs to the store, recorded as
    cancelled, the allocation released by it), after proving over the same connection that the
    pid is fleet.run.node_supervisor in the run's directory. Waits until it has released the
    lease. False: not provably it (gone, or another process now), nothing signalled. `probe`: only
    whether it provably runs, nothing signalled."""
    from ..providers.capabilities import SupervisesFromLoginNode
    from ..providers.registry import get as get_provider
    from .node_launch import ask_supervisor, controller_pid, wait_released
    from .supervisor_beat import base_run_id
    meta = run.get("meta") or {}
    pid = controller_pid(meta)
    remote = str(meta.get("supervisor_dir") or "")
    lease = state.get_lease(run["lease_id"])
    provider = get_provider(lease.provider)
    if not pid or not remote or meta.get("supervised_on") != LOGIN_NODE \
            or not isinstance(provider, SupervisesFromLoginNode):
        return False
    # The row is the shared state's: only this run's own directory is a supervisor's to be proved by.
    parent, _, name = remote.rstrip("/").rpartition("/")
    if not parent.endswith("/" + SUPERVISOR_DIR) or name not in (run["id"], base_run_id(run["id"])):
        return False
    shell = provider.login_shell(lease)
    if shell is None:
        return False
    try:
        asked = ask_supervisor(lambda line: shell.run(line, check=False, timeout=30), run["id"],
                               f"the login node ({shell.destination}", pid, remote, events, probe=probe)
    finally:
        shell.close()
    if not asked:
        return False
    wait_released(state, lease.id, wait_s)
    return True


def stop_remote_supervisor(state, run: dict[str, Any], events: Events, *, wait_s: float,
                           probe: bool = False) -> bool | None:
    """`stop_on_login_node` or `stop_on_node0`, by where the run's supervisor runs; None: it runs
    on no other machine (a background process of the computer that started it)."""
    on = (run.get("meta") or {}).get("supervised_on")
    if on == LOGIN_NODE:
        return stop_on_login_node(state, run, events, wait_s=wait_s, probe=probe)
    if on:
        from .node_launch import stop_on_node0
        return stop_on_node0(state, run, events, wait_s=wait_s, probe=probe)
    return None
