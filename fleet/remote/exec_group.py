"""A machine's several processes (per-GPU ranks) under one `agent group` on one channel.

The agent relays each process's lines framed as `<index> o|e <line>` and its end as `<index> x <code>`
(fleet/remote/agent/group.py); here they are split back into each process's log, sink and result,
so the rest of the run sees the same RunningProcess per rank as with one `agent exec` each.
"""
from __future__ import annotations

import json
import threading

from ..errors import MachineUnreachable
from .exec import (ProcessSpec, RunningProcess, _Output, agent_command_line, connection_lost, drain,
                   process_env)
from .ssh import connect

_STREAMS = {b"o": "out", b"e": "err"}
_PIECES = {b"O": "out", b"E": "err"}   # the start of a longer line: joined before it is masked or shown

MAX_FRAME = 4 * 1024 * 1024   # one framed line from the agent (it cuts output into pieces far smaller)


def group_command(specs: list[ProcessSpec]) -> str:
    leaf = ["--leaf", specs[0].leaf] if specs[0].leaf != "work" else []
    return agent_command_line(specs[0], ["group", *leaf])


def group_payload(specs: list[ProcessSpec]) -> bytes:
    """What the agent reads on stdin: each process's command, pid file and environment (secrets
    among it, so never on a command line)."""
    procs = [{"argv": ["sh", "-c", s.command], "pidfile": s.pidfile, "env": process_env(s)} for s in specs]
    return (json.dumps({"procs": procs}) + "\n").encode()


def _dispatch(buffer: bytes, procs: list[RunningProcess], outputs: list[_Output]) -> bytes:
    """Hand every whole framed line in `buffer` to its process; returns the incomplete rest."""
    *lines, rest = buffer.split(b"\n")
    for line in lines:
        index, tag, payload = (line.split(b" ", 2) + [b"", b""])[:3]
        if not index.isdigit() or int(index) >= len(procs):
            continue
        i = int(index)
        if tag in _STREAMS:
            outputs[i].feed(_STREAMS[tag], payload + b"\n")
        elif tag in _PIECES:
            outputs[i].feed(_PIECES[tag], payload)
        elif tag == b"x" and payload.isdigit() and len(payload) <= 4:   # an exit status, not 4,300 digits
            outputs[i].feed("out", b"", final=True)
            outputs[i].feed("err", b"", final=True)
            procs[i].result.exit_code = int(payload)
            procs[i].done.set()   # its output is all in: the run sees this rank end now, not with the machine
    return rest


def pump_group(procs: list[RunningProcess], outputs: list[_Output], cancel: threading.Event | None) -> None:
    specs = [p.spec for p in procs]
    machine = specs[0].machine
    status, error, old_agent, session = None, None, False, None
    try:
        session = connect(machine)
        for p in procs:
            p.session = session
        if cancel is not None and cancel.is_set():
            return   # stopped before it started: nothing to signal later
        chan = session.open_channel()
        chan.exec_command(group_command(specs))
        chan.sendall(group_payload(specs))
        chan.shutdown_write()
        framed, agent_err = [b""], bytearray()   # the agent's stderr: its own words (e.g. the machine has ended)

        def on_out(data: bytes) -> None:
            framed[0] = _dispatch(framed[0] + data, procs, outputs)
            if len(framed[0]) > MAX_FRAME:     # the agent frames every piece: this is no agent of ours
                raise ValueError(f"the agent on {machine.id} sent a frame longer than {MAX_FRAME >> 20} MiB")

        drain(chan, on_out, lambda data: agent_err.extend(data[:max(0, 65536 - len(agent_err))]))
        agent_err = bytes(agent_err)
        status = chan.recv_exit_status()
        chan.close()
        unreported = [o for p, o in zip(procs, outputs) if p.result.exit_code is None]
        if status == 2 and len(unreported) == len(procs) and b"invalid choice" in agent_err and b"group" in agent_err:
            old_agent = True   # a kept lease's agent from before `group`: each rank under its own `agent exec`
            return
        for output in unreported:   # why the agent failed, in the log of every rank it left without an end
            output.feed("err", agent_err, final=True)
    except MachineUnreachable as exc:
        error = str(exc)
    except Exception as exc:  # noqa: BLE001 — a lost connection is a result, not a crash
        error = connection_lost(machine.id, exc, session)
    finally:
        if old_agent:
            _one_agent_each(procs, outputs, cancel)
            return
        for proc, output in zip(procs, outputs):
            # A rank with no end of its own: the connection was lost (error), the agent failed for all
            # of them (its status), or the channel closed without one (-1: the machine went away).
            if proc.result.exit_code is None and error is not None:
                proc.result.error = error
            elif proc.result.exit_code is None and status == 0:
                proc.result.error = f"machine {machine.id}: the agent ended without rank {proc.spec.label}'s exit status"
            elif proc.result.exit_code is None and status is not None:
                proc.result.exit_code = status
            output.close()
            proc.result.sink_error = output.sink_error
            proc.done.set()


def _one_agent_each(procs: list[RunningProcess], outputs: list[_Output], cancel: threading.Event | None) -> None:
    """What ran before `agent group`: a pump and an `agent exec` per rank, and a signal call per rank
    (the old agent's `signal` reads one pid file)."""
    from .exec import _pump
    OLD_AGENTS.add(procs[0].spec.machine.id)
    threads = []
    for proc, output in zip(procs, outputs):
        output.close()
        threads.append(threading.Thread(target=_pump, args=(proc, output.sink, output.log_file, cancel, output.mask),
                                        daemon=True, name=f"fleet-run-{proc.spec.label}"))
        threads[-1].start()
    for thread in threads:
        thread.join()


OLD_AGENTS: set[str] = set()   # machines whose agent predates `group` (and several pid files per signal)
