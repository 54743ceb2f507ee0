"""A detached run's supervisor on node 0 of its own lease (AWS, team hosts): the launcher
(fleet/run/node_launch.py) leases the machines, copies fleet's package here and starts this
module over node 0's SSH connection; from then on the laptop may close.

It runs the same `fleet.run.recovery.run_managed` as every supervisor, its first attempt on the
lease it was handed (fleet/run/handed_lease.py: staging, setup, heartbeats of every node, budget,
deadline, logs into the shared state, outputs and checkpoints into the run's store, ledger,
record), and at the very end releases node 0 itself — last, after the ledger is closed and the
run recorded: on AWS releasing it ends this process; on a team host (which stays up) it frees the
slots, revokes the lease's key on every host and removes that key here, then exits.

What it is given on stdin, one JSON line, never written to disk here: the run's spec (as the
local supervisor's spec.json), the environment it needs to reach the state (a PostgreSQL URL),
the store (S3) and the provider (the caller's AWS credentials, for the store and for terminating the
machines), and the run's [env]. The lease's SSH key (and, on AWS, the stack's outputs) are files in
its directory (0600).
It runs as node 0's supervisor user, not the experiment's, so the experiment can neither read its
memory nor write this code (node_launch.py, SECURITY.md).

    python3 -I -c BOOTSTRAP DIR     (remote_supervisor.BOOTSTRAP: DIR/pkg on the path, then main; reads the
                                     line, forks into the background, prints {"pid": N} and exits;
                                     the child runs the run)
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

MODULE = "fleet.run.node_supervisor"
NEEDS = ("paramiko", "boto3", "psycopg", "pyfastcdc")   # SSH to the nodes, the provider, the state, output snapshots
# The login node's launcher stops waiting for {"pid": N} at 120 s and tells the user it failed: a
# bootstrap reaching the fork later than this (by the login node's own clock) starts nothing.
START_WITHIN_S = 90.0


def _missing_modules() -> list[str]:
    import importlib.util
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def _daemonize(directory: Path) -> int | None:
    """Fork into a session of its own with stdio on supervisor.log; the parent gets the child's
    pid (and returns it), the child None. The SSH channel ends when the parent exits: the child
    holds none of its descriptors."""
    read_end, write_end = os.pipe()
    if os.fork():
        os.close(write_end)
        with os.fdopen(read_end) as fh:
            return int(fh.read().strip() or 0)
    os.close(read_end)
    os.setsid()
    import signal
    signal.signal(signal.SIGHUP, signal.SIG_IGN)   # the ssh session it came from ending is no reason to stop
    if os.fork():
        os._exit(0)
    with os.fdopen(write_end, "w") as fh:
        fh.write(str(os.getpid()))
    log = os.open(directory / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    return None


def _late(started: list[str], where: str) -> str | None:
    """Why not to start: the remote command's start (epoch seconds, when its launcher passes it) is
    longer ago than the launcher waits."""
    try:
        waited = time.time() - float(started[0])
    except (IndexError, ValueError):
        return None
    if waited <= START_WITHIN_S:
        return None
    return (f"{where}'s python took {waited:.0f} s to start fleet's supervisor, too long (the launcher stops "
            "waiting): nothing was started; a faster [slurm] supervisor_python, or try again")


def main(argv: list[str]) -> int:
    directory = Path(argv[0]).resolve()
    payload = json.loads(sys.stdin.readline() or "{}")
    missing = _missing_modules()
    if missing:
        where = payload.get("where") or "node 0"
        print(json.dumps({"error": f"{where}'s python ({sys.executable}) lacks {', '.join(missing)}: "
                                   "fleet cannot supervise the run from there"}), flush=True)
        return 3
    late = _late(argv[1:], payload.get("where") or "node 0")
    if late:
        print(json.dumps({"error": late}), flush=True)
        return 3
    pid = _daemonize(directory)
    if pid is not None:
        print(json.dumps({"pid": pid}), flush=True)
        return 0
    code = 1
    try:
        code = _supervise(directory, payload)
    finally:
        os._exit(int(code))   # the double fork's child: no interpreter teardown in a daemon
    return code


def _supervise(directory: Path, payload: dict[str, Any]) -> int:
    from ..errors import ExitCode, FleetError
    from .supervisor import EVENTS, FileEvents, SupervisorSpec, die_with_lease
    os.environ.update({str(k): str(v) for k, v in (payload.get("env") or {}).items()})
    os.environ["FLEET_HOME"] = str(directory / "home")
    spec = SupervisorSpec(**payload["spec"])
    events = FileEvents(directory / EVENTS)
    code: int = ExitCode.INFRASTRUCTURE
    lease = provider = beat = handoff = None
    try:
        os.chdir(directory / "exp")
        from ..config.loader import load_config
        config_file = directory / "exp" / "fleet.toml"
        config = load_config(config_file if config_file.exists() else None, cwd=directory / "exp",
                             overrides=spec.overrides)
        die_with_lease(config)
        from ..state import open_state
        from .offer import provider_for
        state = open_state(config.state_url)
        # The laptop cannot prove from /proc what runs on node 0: the beat in the state says it lives.
        from .supervisor_beat import SupervisorBeat
        beat = SupervisorBeat(state, spec.run_id).start()
        provider = provider_for(config)
        if not payload.get("lease_id"):   # on a Slurm login node (login_launch.py): it leases for itself
            code = _run_leasing(config, spec, payload, provider, events)
            return int(code)
        handoff = provider.node0_handoff()
        lease = _local_keys(state.get_lease(payload["lease_id"]), directory)
        code = _run(config, spec, payload, provider, handoff, lease, events)
    except FleetError as exc:
        events.failed(exc.one_line(), exc.exit_code)
        code = exc.exit_code
    except BaseException as exc:  # noqa: BLE001 — the launcher shows one line; the traceback goes to the log
        import traceback
        traceback.print_exc()
        events.failed(f"the supervisor on {payload.get('where') or 'node 0'} failed: {type(exc).__name__}: {exc}",
                      ExitCode.INFRASTRUCTURE)
    finally:
        events.close()
        if beat is not None:
            beat.stop()
        if not payload.get("lease_id"):   # the login node stays up: nothing of the run's stays there
            _tidy(directory)
        if lease is not None and provider is not None:
            _release_self(provider, lease)
            if handoff is not None and not handoff.release_ends_supervisor:
                handoff.finish(lease, directory)   # the host stays up: nothing of the lease's stays here
    return int(code)


def _run(config, spec, payload: dict[str, Any], provider, handoff, lease, events) -> int:
    from ..ci import masked_events
    from .handed_lease import HandedLease, PinnedNewLease
    from .pipeline import Pipeline
    from .recovery import run_managed
    from .types import PinnedInputs
    pins = PinnedInputs(**payload["pins"])
    handed = HandedLease(provider, lease, pins, supervisor_dir=payload.get("supervisor_dir"))
    first: list[bool] = []

    def attempt(config, *, events, options):
        if not first:   # the lease the launcher made; later attempts lease from here, as any supervisor
            first.append(True)
            return _unless_node0_lost(Pipeline(config, handed, options=options, events=events).run(),
                                      handed.node0, config)
        if not handoff.leases_from_node0:
            from ..errors import InfrastructureError
            raise InfrastructureError(handoff.why_no_lease_from_node0 or "node 0 cannot lease new machines")
        return Pipeline(_less_node0(config, handed.node0), PinnedNewLease(provider, pins), options=options,
                        events=events).run()

    sink = masked_events(config, events)
    options = spec.options()
    if spec.resume:   # `fleet up --resume RUN -d`, or the reaper resuming a run whose node 0 vanished
        from dataclasses import replace
        from .lost_resume import resume_for
        options = replace(options, resume=resume_for(config, spec.resume, continues=spec.continues))
    summary = run_managed(config, options=options, events=sink, run=attempt)
    events.ended(summary.to_json())
    return summary.exit_code


def _run_leasing(config, spec, payload: dict[str, Any], provider, events) -> int:
    """The whole run from the login node: every attempt leases here (handed_lease.LoginNodeLease),
    so the node steps' srun frontends are this process's children, and a preempted or failed
    job's next attempt (recovery) is leased from here too."""
    from ..ci import masked_events
    from .handed_lease import LoginNodeLease
    from .pipeline import Pipeline
    from .recovery import run_managed
    from .types import PinnedInputs
    pins = PinnedInputs(**payload["pins"])

    def attempt(config, *, events, options):
        source = LoginNodeLease(provider, pins, str(payload.get("supervisor_dir") or ""), payload.get("relaunch"))
        return Pipeline(config, source, options=options, events=events).run()

    options = spec.options()
    if spec.resume:
        from dataclasses import replace
        from .lost_resume import resume_for
        options = replace(options, resume=resume_for(config, spec.resume, continues=spec.continues))
    summary = run_managed(config, options=options, events=masked_events(config, events), run=attempt)
    events.ended(summary.to_json())
    return summary.exit_code


def _tidy(directory: Path) -> None:
    """After the run: fleet's package, fleet.toml and the FLEET_HOME it used go (the lease's keys
    were forgotten at its release); its events and log stay for the user to read."""
    from ..deep_trees import rmtree     # the outputs are as deep as the run made them
    for name in ("home", "exp", "pkg"):
        rmtree(directory / name, ignore_errors=True)


def _unless_node0_lost(summary, node0, config):
    """Node 0 lost (its spot notice, or gone under the command) takes this supervisor with it: no
    attempt is started that nothing would supervise. The run ends here; its checkpoints are in
    the store for `fleet up --resume`."""
    if not summary.machines_lost or node0.id not in (summary.message or ""):
        return summary
    from .recovery import _link
    message = (f"{summary.message}; not resumed: node 0 runs this run's supervisor (`fleet up --resume "
               f"{summary.run_id}` continues from its checkpoints)")
    final = summary.updated(machines_lost=None, message=message)
    try:
        from ..state import open_state
        open_state(config.state_url).finish_run(summary.run_id, final.status, final.exit_code,
                                                {"summary": final.to_json()})
    except Exception:  # noqa: BLE001 — the attempt's own record stands; this is the verdict
        pass
    _link(summary.run_id, None, config)   # followers stop here
    return final


def _less_node0(config, node0):
    """Attempt N>1 runs on a new lease while node 0 of the first one lives on as its supervisor,
    billed at the end (_bill_tail): the attempt may spend only what is left once node 0's longest
    life through it (max_duration at its price) is set aside, so the two never overspend the budget."""
    if config.budget is None:
        return config
    from dataclasses import replace
    from decimal import Decimal
    from ..errors import BudgetRefused
    node0_cost = (Decimal(node0.price_per_hour) * Decimal(int(config.max_duration_s)) / 3600).quantize(Decimal("0.000001"))
    left = config.budget - node0_cost
    if left <= 0:
        raise BudgetRefused(f"the ${config.budget} left cannot keep node 0 ({node0.id}) supervising another attempt "
                            f"(${node0_cost} at most) and pay for new machines")
    return replace(config, budget=left)


def _local_keys(lease, directory: Path):
    """The lease as node 0 reaches its machines: with the key the launcher copied here."""
    from dataclasses import replace
    key = directory / "home" / "leases" / lease.id / "id_ed25519"
    return replace(lease, machines=[replace(m, key_path=str(key)) for m in lease.machines])


def _release_self(provider, lease) -> None:
    """Node 0 last: its time after the run's record billed, and the state saying released, before
    it is terminated (this process ends with the machine)."""
    from ..state import open_state
    try:
        state = open_state()
        _bill_tail(state, lease)
        if state.lease_status(lease.id)[0] in ("active", "leasing"):
            state.set_lease_status(lease.id, "released")
        sys.stdout.flush()
        provider.release(lease)
    except Exception as exc:  # noqa: BLE001 — its watchdog ends it at its deadline anyway
        print(f"fleet: releasing node 0 failed ({exc}); it ends at its own deadline", flush=True)


def _bill_tail(state, lease) -> None:
    """The run's ledger closed node 0's segment when the run was recorded; node 0 lived on while
    the outputs were snapshotted, the record written and the lease released. That time is one more
    segment of the run's (at the same price), from that close until now, just before node 0 goes."""
    from ..money.budget import Price
    from ..money.ledger import Ledger, parse_iso
    node0 = min(lease.machines, key=lambda m: m.node_rank)
    ledger = Ledger(state.db)
    rows = [e for e in ledger.read(lease_id=lease.id).entries if e.machine_id == node0.id]
    closed = {e.segment_id for e in rows if e.kind == "close"}
    if not closed or any(e.segment_id not in closed for e in rows):
        return   # never metered, or a segment still open: whoever closes it bills to its end
    last = max((e for e in rows if e.kind == "close"), key=lambda e: e.end_at)
    segment = ledger.open_segment(lease=lease, machine=node0, run_id=last.run_id, at=parse_iso(last.end_at),
                                  price=Price(last.rate_micro, last.price_source, last.shadow))
    ledger.close([segment])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
