"""`fleet up --detach` (its launcher half) and `fleet attach RUN`."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer


def register(app: typer.Typer) -> None:
    app.command()(attach)


def up_detached(config, file: Path | None, overrides: dict[str, Any], options, events, json_out: bool) -> int:
    """Start the run's supervisor, show its progress until the inputs are staged, then leave."""
    import os
    from ..ids import new_run_id
    from ..run.detach import follow_until_handoff, launch
    from ..run.supervisor import SupervisorSpec
    if options.confirm is not None:   # asked here: the supervisor has no terminal to ask on
        from ..errors import Cancelled
        from ..run.offer import Quote, choose_offer, provider_for
        if not options.confirm(Quote.of(choose_offer(provider_for(config), config), config)):
            raise Cancelled("not started: the plan was declined; nothing was leased or spent")
    run_id = new_run_id()
    spec = SupervisorSpec(run_id=run_id, cwd=os.getcwd(), config_file=str(file.resolve()) if file else None,
                          overrides={k: v for k, v in overrides.items() if v is not None}, keep_s=options.keep_s,
                          allow_dirty=options.allow_dirty, queue_wait_s=options.queue_wait_s,
                          resume=options.resume.of_run if options.resume else None)
    from ..run.login_launch import has_login_node, launch_on_login_node, why_not_login_node
    from ..run.node_launch import launch_on_node0, why_not_node0
    where = "login node" if has_login_node(config) else "node 0"
    why_not = why_not_login_node(config, options) if where == "login node" else why_not_node0(config, options)
    proc = None
    try:
        if why_not is None and where == "login node":   # a Slurm cluster over SSH: the laptop may close
            handoff, pid = launch_on_login_node(config, spec, options, events)
        elif why_not is None:   # a cloud lease: the supervisor goes to its node 0, the laptop may close
            handoff, pid = launch_on_node0(config, spec, options, events)
        else:
            if config.provider != "local":
                events.warn(f"the run's supervisor stays on this computer, which must stay up until the run "
                            f"ends: {why_not}")
            proc = launch(spec)
            handoff, pid = follow_until_handoff(proc, run_id, events), proc.pid
    finally:
        events.close()
    if handoff.summary is not None:   # it ended before staging was done (e.g. no machines)
        from .up import _show
        _show(handoff.summary, json_out)
        return handoff.summary.exit_code
    lease = handoff.lease_id or "?"
    if json_out:
        from .render import print_json
        print_json({"run_id": run_id, "lease_id": handoff.lease_id, "status": "running", "detached": True,
                    "supervisor_pid": pid, "supervised_on": where if proc is None else "this computer"})
    else:
        where = f"on {where}, " if proc is None else ""
        print(f"fleet: run {run_id} detached on lease {lease} (supervisor {where}pid {pid}): follow it with "
              f"`fleet logs {run_id} -f` or `fleet attach {run_id}`, stop it with `fleet down {lease}`",
              file=sys.stderr)
    return 0


def attach(
    run: str = typer.Argument(..., help="Run id (see `fleet status`)."),
    json_out: bool = typer.Option(False, "--json", help="Print the run's JSON summary on stdout when it ends."),
) -> int:
    """Follow a run's logs until it ends and exit with its exit code; Ctrl-C leaves it running."""
    from ..errors import ExitCode
    from ..run_logs import follow_logs
    from ..state import open_state
    state = open_state()
    run_id = state.get_run(run)["id"]
    out = sys.stderr if json_out else sys.stdout
    try:
        from ..render.text import terminal_line
        for line in follow_logs(run_id, follow=True, state=state):
            print(terminal_line(line), file=out, flush=True)
    except KeyboardInterrupt:
        print(f"fleet: left run {run_id} running; `fleet attach {run_id}` to follow it again", file=sys.stderr)
        return 0
    # Resumed on new machines: the last attempt made tells (one named but never started: the one before).
    from ..run.detach import latest_attempt
    row = latest_attempt(state, run_id) or state.get_run(run_id)
    summary = (row.get("meta") or {}).get("summary") or {}
    summary = summary if isinstance(summary, dict) else {}
    if row["status"] == "lost" or summary.get("exit_code") is None:
        message, status = summary.get("message") or row["status"], row["status"]
        if status == "running":   # the follow ended without an end: its supervisor is gone
            from ..run.supervisor_beat import supervisor_gone
            message = (f"{supervisor_gone(state, row) or 'its supervisor is gone'}; `fleet down "
                       f"{row.get('lease_id')}` releases its machines and records the run as lost, then "
                       f"`fleet up --resume {row['id']}` continues from its checkpoints")
            status = "no longer supervised"
        if json_out:
            from .render import print_json
            print_json(summary or {"run_id": run_id, "status": row["status"], "message": message})
        print(f"fleet: run {row['id']} {status}: {message}", file=sys.stderr)
        return int(ExitCode.INFRASTRUCTURE)
    from ..run.summary import RunSummary
    from .up import _show
    try:
        result = RunSummary.from_json(summary)
    except (TypeError, ValueError):   # a shared state's row another program wrote: say so, not "internal error"
        result = None
    if result is None or isinstance(result.exit_code, bool) or not isinstance(result.exit_code, int):
        print(f"fleet: run {row['id']} {row['status']}: its summary in the state cannot be read (a hand edit or "
              "another program changed that row; `fleet runs show` has what is left)", file=sys.stderr)
        return int(ExitCode.INFRASTRUCTURE)
    _show(result, json_out)
    return result.exit_code
