"""`fleet up --detach` on AWS or team hosts: the run's supervisor goes to node 0 of its own lease.

The launcher (this module, on the laptop) does what must happen where the code is: plan, pin
(the code and data snapshots go to the run's store), the budget gate (nothing is leased when it
refuses), and the lease. Then, over node 0's SSH connection, it copies fleet's own package, the
lease's SSH key (and what the provider adds: fleet/providers/node0.py) to node 0 and starts `fleet.run.node_supervisor` there
(fleet/run/node_supervisor.py), handing it, on stdin and never on disk, the state URL, the store
and provider credentials and the run's [env]. It follows that supervisor's progress until the
inputs are staged and leaves: the laptop can close, and nothing runs that the lease does not
already pay for.

The supervisor holds those secrets, and node 0 also runs the experiment, so the two are different
users: the launcher logs in to node 0 as the machine's supervisor login (EC2: `fleet-supervisor`,
made at boot, userdata.py; the sandbox: its own user; a team host: its entry's `supervisor_login`),
not as the experiment's login (node_login.py), and puts
everything in that user's directory (0700). The supervisor runs with a clean environment, HOME in
that directory and `python -I` (no user site, no PYTHON* variables, no current directory on the
path), so it imports nothing the experiment's user could have written.

Needs what node 0 can reach without the laptop: a PostgreSQL state and an S3 store. Without
them (or on a provider that does not declare SupervisesFromNode0) the supervisor stays a background process of this
computer (fleet/run/detach.py), and the launcher says why in one line.
"""
from __future__ import annotations

import json
import shlex
import signal
import time
from pathlib import Path
from typing import Any

from ..errors import InfrastructureError
from .context import Events, RunContext
from .detach import HANDOFF_PHASES, Handoff, ReportedError
from .handed_lease import NODE_0
from .node_login import refuse_root_capable_login, supervisor_login
from .remote_supervisor import (BOOTSTRAP, fleet_package, last_json, relaunch_meta, remote_env,
                                spec_for_remote, supervisor_state_url)
from .supervisor import EVENTS, SupervisorSpec

HANDOFF_TIMEOUT_S = 3600.0       # staging a large dataset from node 0 may take this long


def why_not_node0(config, options=None) -> str | None:
    """None when this run's supervisor can run on node 0; else why not, in one line."""
    if config.provider == "local":
        return "local machines run on this computer"
    if options is not None and options.keep_s:
        return "--keep leaves the machines up after the run, and node 0 cannot keep itself"
    from ..providers.base import SupervisesFromNode0
    from ..providers.registry import provider_class
    if not issubclass(provider_class(config.provider), SupervisesFromNode0):
        return f"the {config.provider} provider cannot run a supervisor on node 0 (built for aws and ssh)"
    if not supervisor_state_url(config).startswith(("postgresql://", "postgres://")):
        return "node 0 cannot reach this computer's SQLite state (team mode: FLEET_STATE_URL=postgresql://…)"
    if not str(config.store or "").startswith("s3://"):
        return "node 0 cannot reach a store on this computer (set store = \"s3://BUCKET/PREFIX\")"
    return None


def launch_on_node0(config, spec: SupervisorSpec, options, events: Events, pins=None) -> tuple[Handoff, int]:
    """Lease, start the supervisor on node 0, follow it to the handoff. Returns the handoff and
    the supervisor's pid on node 0. Anything failing before the handoff releases the lease.
    `pins`: inputs pinned already (the reaper resuming a run: its own code and data), not pinned here."""
    from ..models import utcnow
    from ..plan import first_deadline_s
    from ..providers.base import HasLeaseMetadata
    from ..state import open_state
    from .budget import BudgetGate
    from .inputs import Inputs
    from .lease import NewLease
    from .offer import provider_for
    from .telemetry_fetch import TELEMETRY_INTERVAL_S
    source = NewLease(provider_for(config))
    offer = source.offer(config)
    pins = pins if pins is not None else Inputs(config).pin(options, events)
    state = open_state(config.state_url)
    run_id, lease_id = spec.run_id, source.lease_id
    grant = BudgetGate(config, state).grant(offer, run_id=run_id, lease_id=lease_id)
    plan = offer.to_plan(run_id=run_id, budget_deadline_s=grant.budget_deadline_s,
                         telemetry_interval_s=TELEMETRY_INTERVAL_S)
    first = first_deadline_s(plan)
    if grant.budget_deadline_s is not None:
        first = max(1, min(first, grant.budget_deadline_s))
    ctx = RunContext(config=config, offer=offer, plan=plan, run_id=run_id, lease_id=lease_id, state=state,
                     events=events, run_dir=config.base_dir / "runs" / run_id, started_at=utcnow(),
                     options=options, command=config.command)
    events.phase("lease", f"{offer.machine_count} × {offer.instance_type or offer.template.name}"
                          f"{', spot' if offer.spot else ''}; the supervisor will run on node 0")
    meta = source.provider.lease_meta() if isinstance(source.provider, HasLeaseMetadata) else {}
    state.begin_lease(lease_id, plan, deadline_s=first,
                      meta={**grant.lease_meta(), **meta, "first_deadline_s": first, "supervised_on": NODE_0,
                            "relaunch": relaunch_meta(config, spec, pins)})
    handoff = source.provider.node0_handoff()
    try:
        lease = source.acquire(ctx, first, lambda machine: None)   # billed from node 0, since lease creation
        return _start_and_follow(config, spec, pins, lease, state, events, source.provider, handoff)
    except BaseException:
        _release(ctx, state)   # on team hosts this also revokes the lease's key
        raise


def _release(ctx, state) -> None:
    """Release the lease as `fleet down` does, so its machines' time up to the release reaches the
    ledger: this launcher opens no cost segment (node 0's supervisor opens them once it runs), so
    a handoff that fails would otherwise leave every machine unbilled. Where the supervisor got as
    far as opening them, they are closed, never billed twice (fleet/money/ledger.py)."""
    from ..errors import FleetError
    from ..leases import down
    from ..money.reservations import Reservations
    try:
        down([ctx.lease_id], state=state, events=ctx.events, released_by="`fleet up -d` (its handoff to node 0 failed)")
    except Exception as exc:  # noqa: BLE001 — the handoff's own error is the one the user is shown
        why = exc.one_line() if isinstance(exc, FleetError) else f"{type(exc).__name__}: {exc}"
        ctx.events.warn(f"release of {ctx.lease_id} failed ({why}); its machines end at their deadline; "
                        f"run `fleet down {ctx.lease_id}` to retry")
    finally:
        try:
            Reservations(state.db).settle(ctx.lease_id, None, run_id=ctx.run_id)
        except Exception:  # noqa: BLE001 — the lease's released status frees it anyway
            pass


def _start_and_follow(config, spec, pins, lease, state, events: Events, provider, handoff) -> tuple[Handoff, int]:
    from dataclasses import asdict
    from ..money.reservations import Reservations
    from ..remote.ssh import wait_ready
    node0 = min(lease.machines, key=lambda m: m.node_rank)
    events.phase("ready", f"waiting for SSH on node 0 ({node0.id})")
    login, remote = supervisor_login(node0)
    if login.user == node0.user:
        events.warn(f"node 0 names no supervisor login of its own: the run's supervisor there runs as {node0.user}, "
                    "the experiment's user, which can read the credentials it holds (SECURITY.md)")
    refuse_root_capable_login(node0, login)
    session = wait_ready(login, timeout=600)
    try:
        if not remote.startswith("/"):   # under the supervisor login's home (a team host's login)
            home = session.run('printf "%s" "$HOME"', timeout=60).stdout.strip()
            remote = f"{home.rstrip('/')}/{remote}"
        events.phase("handoff", f"copying fleet to node 0 ({node0.id}) and starting the run's supervisor there "
                                f"(as {login.user})")
        key = handoff.lease_key(lease, node0, events)
        _copy_files(session, remote, config, lease, key, handoff.files(config, provider, remote))
        handoff.after_copy(session, remote)
        # The launcher's reservation ends here; node 0's budget stage makes the run's own.
        Reservations(state.db).settle(lease.id, None, run_id=spec.run_id)
        payload = {"spec": spec_for_remote(spec, config), "env": {**remote_env(config), **handoff.env(config, remote)},
                   "lease_id": lease.id, "pins": asdict(pins), "supervisor_dir": remote}
        # A clean environment: nothing of the login session's (its HOME may be the experiment's).
        keep = " ".join(f'{name}="${name}"' for name in ("FLEET_MACHINE_ID", "FLEET_MACHINE_ROOT"))
        command = (f"cd {shlex.quote(remote)} && exec env -i HOME={shlex.quote(remote)} "
                   f"PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 {keep} {shlex.quote(login.python)} -I -c "
                   f"{shlex.quote(BOOTSTRAP)} {shlex.quote(remote)}")
        started = session.run(command, stdin=(json.dumps(payload) + "\n").encode(), check=False, timeout=120)
        answer = last_json(started.stdout)
        if "pid" not in answer:
            raise InfrastructureError(answer.get("error") or f"the supervisor did not start on node 0: "
                                      f"{(started.stderr.strip().splitlines() or ['no answer'])[-1][:300]}")
        pid = int(answer["pid"])
        return follow_handoff(session, remote, pid, spec.run_id, lease.id, events), pid
    finally:
        session.close()


def _copy_files(session, remote: str, config, lease, key: bytes, extra: dict[str, bytes]) -> None:
    home = f"{remote}/home"
    key_dir = f"{home}/leases/{lease.id}"
    session.run(f"umask 077 && rm -rf {shlex.quote(remote)} && mkdir -p {shlex.quote(remote + '/pkg')} "
                f"{shlex.quote(remote + '/exp')} && mkdir -p -m 700 {shlex.quote(key_dir)} && "
                f"chmod 700 {shlex.quote(remote)}")
    files = {f"{remote}/pkg.tar.gz": fleet_package(), f"{key_dir}/id_ed25519": key, **extra}
    if config.path is not None:
        files[f"{remote}/exp/fleet.toml"] = Path(config.path).read_bytes()
    with session.transfer() as sftp:
        for path, data in files.items():
            with sftp.open(path, "wb") as fh:
                fh.set_pipelined(True)
                fh.write(data)
            sftp.chmod(path, 0o600)
    session.run(f"umask 077 && tar -xzf {shlex.quote(remote + '/pkg.tar.gz')} -C {shlex.quote(remote + '/pkg')}")


def follow_handoff(session, remote: str, pid: int, run_id: str, lease_id: str | None, events: Events,
                   where: str = "node 0") -> Handoff:
    """Node 0's (or the login node's: login_launch.py) progress, its events.jsonl read over SSH,
    until the first phase after staging. Ctrl-C here asks it to stop (SIGTERM), and its end is
    followed as an attached run's."""
    path = f"{remote}/{EVENTS}"
    offset = 0
    cancelled: list[bool] = []
    previous = signal.getsignal(signal.SIGINT)

    def forward(signum, _frame) -> None:
        cancelled.append(True)
        session.run(f"kill -TERM {shlex.quote(str(int(pid)))}", check=False, timeout=30)

    import threading
    in_main = threading.current_thread() is threading.main_thread()   # signal handlers: main thread only
    if in_main:
        signal.signal(signal.SIGINT, forward)
    try:
        end = time.monotonic() + HANDOFF_TIMEOUT_S
        while time.monotonic() < end:
            out = session.run(f"tail -c +{shlex.quote(str(offset + 1))} {shlex.quote(path)} 2>/dev/null; "
                              f"kill -0 {shlex.quote(str(int(pid)))} 2>/dev/null || echo '#gone'",
                              check=False, timeout=60).stdout
            gone = out.endswith("#gone\n")
            data = out[:-len("#gone\n")] if gone else out
            complete = data.rfind("\n") + 1
            offset += len(data[:complete].encode())
            for line in data[:complete].splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                kind = record.get("kind")
                if kind == "phase":
                    events.phase(record.get("name", ""), record.get("detail", ""))
                    if record.get("name") in HANDOFF_PHASES and not cancelled:
                        return Handoff(run_id, lease_id, staged_at=record.get("t"))
                elif kind == "warn":
                    events.warn(record.get("message", ""))
                elif kind == "end":
                    from .summary import RunSummary
                    return Handoff(run_id, lease_id, summary=RunSummary.from_json(record["summary"]))
                elif kind == "error":
                    raise ReportedError(record.get("message", "the run failed"), int(record.get("exit_code", 1)))
            if gone and not complete:
                break
            time.sleep(0.3)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, previous)
    raise InfrastructureError(f"the supervisor of run {run_id} on {where} ended before the run started",
                              hint=f"see {remote}/supervisor.log on {where} (readable by the supervisor's own user only)")


def stop_on_node0(state, run: dict[str, Any], events: Events, *, wait_s: float, probe: bool = False) -> bool:
    """`fleet down LEASE` on a run supervised from node 0: SIGTERM to that supervisor over node 0's
    SSH connection (the run then stops as on Ctrl-C: outputs and checkpoints to the store, run
    recorded as cancelled, machines released by it), after proving over the same connection that
    the pid is fleet.run.node_supervisor in this lease's directory. Waits until it has released
    the lease. False: not provably it (gone, or another process now), nothing signalled."""
    from ..remote.ssh import connect
    meta = run.get("meta") or {}
    pid = controller_pid(meta)
    lease = state.get_lease(run["lease_id"])
    node0 = next((m for m in lease.machines if m.id == meta.get("supervised_on")), None)
    if not pid or node0 is None:
        return False
    login, remote = supervisor_login(node0)
    # The run row is the shared state's: a directory other than the one node 0's machine names (made
    # absolute under the login's home where it is relative: a team host's) would let it point at
    # another lease's supervisor under the same login.
    recorded = meta.get("supervisor_dir")
    if recorded is not None:
        if not isinstance(recorded, str) or not (recorded == remote or (
                not remote.startswith("/") and recorded.endswith("/" + remote))):
            return False
        remote = recorded   # where it runs, as it recorded itself

    def run_line(line: str):
        with connect(login, timeout=10) as session:
            return session.run(line, check=False, timeout=30)
    if not ask_supervisor(run_line, run["id"], f"node 0 ({node0.id}", pid, remote, events, probe=probe):
        return False
    wait_released(state, lease.id, wait_s)
    return True


def controller_pid(meta: dict[str, Any]) -> int:
    """The supervisor's pid as its run row records it; 0 where the row (the shared state's, any
    teammate's to write) holds no number."""
    try:
        return int((meta.get("controller") or {}).get("pid") or 0)
    except (TypeError, ValueError):
        return 0


def ask_supervisor(run_line, run_id: str, where: str, pid: int, remote: str, events: Events, *, probe: bool) -> bool:
    """Prove and signal (term_if_supervisor) over `run_line`, a remote shell on the supervisor's
    host: True when it was the supervisor and got SIGTERM (`probe`: only that it runs). `where`
    opens the parenthesis the pid closes: 'node 0 (m-1', 'the login node (me@login'."""
    from ..errors import FleetError
    try:
        if not probe:
            events.phase("release", f"asking the supervisor of run {run_id} on {where}, pid {pid}) to stop")
        return "signalled" in run_line(term_if_supervisor(pid, remote, "0" if probe else "TERM")).stdout
    except FleetError as exc:
        events.warn(f"could not reach the supervisor of run {run_id} on {where.split(' (')[0]}: {exc.one_line()}")
        return False


def wait_released(state, lease_id: str, wait_s: float) -> None:
    end = time.monotonic() + wait_s
    while time.monotonic() < end and state.lease_status(lease_id)[0] in ("active", "leasing"):
        time.sleep(0.5)


def term_if_supervisor(pid: int, remote: str, sig: str = "TERM") -> str:
    """One remote command: SIGTERM to `pid` only if, at that moment, it is this user's
    fleet.run.node_supervisor with `remote` (its directory) as an argument; it prints `signalled`
    when it was (sig "0": it runs). Proved and signalled in one command: proved in one round trip
    and signalled in the next, the pid could name another process by then. Under `sh -c`: a login
    shell may be csh."""
    pid = int(pid)
    if pid <= 0 or not remote or "\n" in remote:
        return "false"
    argv = shlex.quote(f"/proc/{pid}/cmdline")
    line = (f"test -O {shlex.quote(f'/proc/{pid}')} && tr '\\000' '\\n' < {argv} | grep -qF fleet.run.node_supervisor "
            f"&& tr '\\000' '\\n' < {argv} | grep -qxF -- {shlex.quote(remote)} "
            f"&& kill -{shlex.quote(sig)} {shlex.quote(str(pid))} && echo signalled")
    return "sh -c " + shlex.quote(line)
