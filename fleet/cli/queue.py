"""`fleet queue`: leases waiting (`--wait`) for GPU slots on team hosts or for AWS capacity."""
from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    app.command(name="queue")(queue_command)


def queue_command(json_out: bool = typer.Option(False, "--json", help="Print the queue as JSON.")) -> int:
    """List leases waiting for free GPU slots or cloud capacity (`--wait`), first come first, and why."""
    from dataclasses import asdict
    from ..providers.ssh.queue import WaitQueue
    from ..state import open_state
    from .render import print_json
    from .sweep import text_table
    state = open_state()
    try:
        waiters = WaitQueue(state.db).waiting()
    finally:
        state.close()
    if json_out:
        print_json({"waiting": [asdict(w) for w in waiters]})
        return 0
    if not waiters:
        print("nothing is waiting for GPU slots or capacity")
        return 0
    # '#': the place in its provider's line (an AWS capacity wait never holds up team hosts)
    print(text_table(["#", "PROVIDER", "LEASE", "USER", "PROJECT", "GPUS", "SINCE", "WHY"],
                     [[str(w.position), w.provider, w.lease_id, w.owner, w.project, str(w.gpus),
                       w.requested_at[:19] + "Z", w.reason] for w in waiters]))
    return 0
