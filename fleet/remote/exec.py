"""Run one command per process slot across machines, streaming output home line by line.

Each process runs under the agent's `exec` wrapper in its own process group, so the controller
can signal it (SIGTERM for a graceful stop, SIGKILL after the grace) through a second channel.
"""
from __future__ import annotations

import json
import shlex
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..errors import MachineUnreachable
from ..models import Machine
from .ssh import OutputEnd, Session, connect, shell_command

LineSink = Callable[[str, str, str], None]   # (label, stream "out"|"err", line)


@dataclass
class ProcessSpec:
    machine: Machine
    label: str                   # "0" or "1.3" (node.local-rank): prefixes log lines
    command: str
    env: dict[str, str]
    cwd: str
    pidfile: str
    leaf: str = "work"           # the machine's cgroup leaf (agent exec --leaf): "trial" for a sweep trial


@dataclass
class ProcessResult:
    spec: ProcessSpec
    exit_code: int | None = None
    error: str | None = None
    sink_error: BaseException | None = None   # the line sink raised: it got no more lines (the log file did)


@dataclass
class RunningProcess:
    spec: ProcessSpec
    thread: threading.Thread
    result: ProcessResult
    session: Session | None = None
    done: threading.Event = field(default_factory=threading.Event)


SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def remote_env_path(machine: Machine, venv: str = "") -> dict[str, str]:
    """PATH for an experiment. With the lease's venv: its bin/ first, then the system's (never the
    directory of fleet's own interpreter: `pip install` in setup must not land in fleet's
    virtualenv on local machines). Without one: the machine's configured interpreter first."""
    absolute = machine.python.startswith("/")
    if venv:
        return {"PATH": f"{venv}/bin:{SYSTEM_PATH}"} if absolute else {}
    if absolute:
        directory = machine.python.rsplit("/", 1)[0]
        return {"PATH": f"{directory}:{SYSTEM_PATH}"}
    return {}


def wrapped_command(spec: ProcessSpec) -> str:
    """The command line sent over SSH. It carries no environment values: those travel on the
    channel's stdin (see process_env_payload), so secrets never show in `ps` on a shared host."""
    leaf = ["--leaf", spec.leaf] if spec.leaf != "work" else []
    return agent_command_line(spec, ["exec", "--pidfile", spec.pidfile, "--env-stdin", *leaf, "--",
                                     "sh", "-c", spec.command])


def agent_command_line(spec: ProcessSpec, agent_argv: list[str]) -> str:
    """`cd` into the process's directory and exec the agent with `agent_argv`. The agent itself runs
    with the machine's interpreter, whatever venv the experiment uses."""
    m = spec.machine
    agent_args = shlex.join([m.agent_path, *agent_argv])
    venv = spec.env.get("VIRTUAL_ENV", "")
    env = {"FLEET_MACHINE_ID": m.id, **remote_env_path(m, venv)}
    prefix, python = "", shlex.quote(m.python)
    if venv and "PATH" not in env:
        # A team host's own PATH (CUDA, modules) stays, after the venv; the agent's interpreter is
        # looked up before the venv comes first, so the agent never runs with the experiment's python.
        prefix = (f"fleet_python=$(command -v {python}) && "
                  f'export PATH={shlex.quote(venv + "/bin")}:"$PATH" && ')
        python = '"$fleet_python"'
    # -S: the agent needs only the standard library and its own directory; skipping site (a venv's
    # .pth files, an editable install's finder) saves most of its start, once per process.
    line = f"{prefix}mkdir -p {shlex.quote(spec.cwd)} && cd {shlex.quote(spec.cwd)} && exec {python} -S {agent_args}"
    return shell_command(line, env=env)


def process_env(spec: ProcessSpec) -> dict[str, str]:
    # FLEET_MACHINE_ROOT: the machine's own directory on every provider (local sshd machines also get
    # it from their sshd; on a shared ssh host it is the lease's directory, not the host's home).
    # Both come last: the run's [env] never retags its processes (the tag is how release finds them
    # on a host without cgroups).
    return {**spec.env, "FLEET_MACHINE_ID": spec.machine.id, "FLEET_MACHINE_ROOT": spec.machine.workdir}


def process_env_payload(spec: ProcessSpec) -> bytes:
    return (json.dumps(process_env(spec)) + "\n").encode()

MAX_LINE = 1024 * 1024    # bytes of one output line held before it is passed on in pieces
SECRET_SPAN = 8192        # no piece is cut within this of a secret value (longer ones are not tokens)


class _Output:
    """One process's output: split into lines, masked, written to its log and passed to the sink."""

    def __init__(self, spec: ProcessSpec, sink: LineSink, log_file: Path | None,
                 mask: Callable[[str], str] | None):
        self.spec, self.sink, self.mask, self.log_file = spec, sink, mask, log_file
        self.log = open(log_file, "a", buffering=1) if log_file else None
        self.buffers = {"out": b"", "err": b""}
        self.sink_error: BaseException | None = None

    def feed(self, stream: str, data: bytes, final: bool = False) -> None:
        *lines, rest = (self.buffers[stream] + data).split(b"\n")
        if final and rest:
            lines.append(rest)
            rest = b""
        elif len(rest) > MAX_LINE:
            # A line without end (a progress bar without "\n", or output meant to exhaust memory) is
            # passed on in pieces: the controller holds about MAX_LINE bytes per stream at most.
            cut = self._cut(rest)
            lines.append(rest[:cut])
            rest = rest[cut:]
        self.buffers[stream] = rest
        for raw in lines:
            self.line(stream, raw)

    def _cut(self, rest: bytes) -> int:
        """Where to cut a line too long to hold: not inside a secret (a piece is masked on its own),
        so before any window around the cut that masking would change."""
        cut = len(rest) - SECRET_SPAN
        while self.mask is not None and cut > SECRET_SPAN:
            window = rest[cut - SECRET_SPAN:cut + SECRET_SPAN].decode(errors="replace")
            if self.mask(window) == window:
                break
            cut -= SECRET_SPAN
        return max(cut, 1)

    def line(self, stream: str, raw: bytes) -> None:
        text = raw.decode(errors="replace").rstrip("\r")
        if self.mask is not None:   # secret values never reach the log file or the terminal
            text = self.mask(text)
        if self.log:
            self.log.write(f"{text}\n" if stream == "out" else f"[stderr] {text}\n")
        if self.sink_error is not None:
            return
        try:   # the caller's sink failing is no lost connection: the process runs on, its log written
            self.sink(self.spec.label, stream, text)
        except BaseException as exc:  # noqa: BLE001 — the caller re-raises it (ProcessResult.sink_error)
            self.sink_error = exc

    def close(self) -> None:
        if self.log:
            self.log.close()
            self.log = None


def drain(chan, on_out: Callable[[bytes], None], on_err: Callable[[bytes], None]) -> None:
    """Hand a command's stdout and stderr to `on_out`/`on_err` as they come, until it has exited
    and all its output is read (OutputEnd)."""
    output_ended = OutputEnd()
    while True:
        got = False
        if chan.recv_ready():
            on_out(chan.recv(65536))
            got = True
        if chan.recv_stderr_ready():
            on_err(chan.recv_stderr(65536))
            got = True
        if not got:
            if output_ended(chan):
                return
            chan.status_event.wait(0.05)


def _pump(proc: RunningProcess, sink: LineSink, log_file: Path | None, cancel: threading.Event | None,
          mask: Callable[[str], str] | None = None) -> None:
    spec, result = proc.spec, proc.result
    output = _Output(spec, sink, log_file, mask)
    try:
        session = connect(spec.machine)
        proc.session = session
        if cancel is not None and cancel.is_set():
            result.error = None
            return   # stopped before it started: nothing to signal later
        chan = session.open_channel()
        chan.exec_command(wrapped_command(spec))
        chan.sendall(process_env_payload(spec))
        chan.shutdown_write()   # the experiment's stdin ends here: jobs are not interactive
        drain(chan, lambda data: output.feed("out", data), lambda data: output.feed("err", data))
        output.feed("out", b"", final=True)
        output.feed("err", b"", final=True)
        result.exit_code = chan.recv_exit_status()
        chan.close()
    except MachineUnreachable as exc:
        result.error = str(exc)
    except Exception as exc:  # noqa: BLE001 — a lost connection is a result, not a crash
        result.error = connection_lost(spec.machine.id, exc, proc.session)
    finally:
        output.close()
        result.sink_error = output.sink_error
        proc.done.set()


def connection_lost(machine_id: str, exc: BaseException, session: Session | None) -> str:
    """`machine X: connection lost: why`, with a why even where paramiko gives none (EOFError(),
    SSHException('')): the exception's type then, and what the SSH transport itself saw, or that it
    has closed (the machine went away, not the command)."""
    why = _words(exc)
    try:
        transport = session.client.get_transport() if session is not None else None
        cause = transport.get_exception() if transport is not None else None
        if cause is not None and cause is not exc:
            why += f"; the SSH transport: {_words(cause)}"
        elif transport is not None and not transport.is_active():
            why += "; the SSH transport has closed"
    except Exception:  # noqa: BLE001 — the reason is a courtesy: never a second failure over the first
        pass
    return f"machine {machine_id}: connection lost: {why}"


def _words(exc: BaseException) -> str:
    return str(exc).strip() or type(exc).__name__


def start_processes(specs: list[ProcessSpec], sink: LineSink, log_dir: Path | None = None,
                    cancel: threading.Event | None = None,
                    mask: Callable[[str], str] | None = None) -> list[RunningProcess]:
    """Start every process: one `agent exec` channel for a machine's only process, one `agent group`
    for a machine with several (per-GPU), so a machine costs one agent start however many GPUs it has."""
    from .exec_group import pump_group
    running = [RunningProcess(spec, threading.Thread(target=lambda: None), ProcessResult(spec)) for spec in specs]
    by_machine: dict[str, list[RunningProcess]] = {}
    for proc in running:
        by_machine.setdefault(proc.spec.machine.id, []).append(proc)
    for procs in by_machine.values():
        outputs = [_Output(p.spec, sink, (log_dir / f"rank-{p.spec.label}.log") if log_dir else None, mask)
                   for p in procs] if len(procs) > 1 else []
        if outputs:
            thread = threading.Thread(target=pump_group, args=(procs, outputs, cancel), daemon=True,
                                      name=f"fleet-run-{procs[0].spec.machine.node_rank}")
        else:
            log_file = (log_dir / f"rank-{procs[0].spec.label}.log") if log_dir else None
            thread = threading.Thread(target=_pump, args=(procs[0], sink, log_file, cancel, mask), daemon=True,
                                      name=f"fleet-run-{procs[0].spec.label}")
        for proc in procs:
            proc.thread = thread
        thread.start()
    return running


def signal_processes(running: list[RunningProcess], sig: str) -> None:
    """Signal every still-running process group through a fresh channel (its own is busy streaming):
    one agent call per machine, naming each of its ranks' pid files."""
    by_machine: dict[str, list[RunningProcess]] = {}
    for proc in running:
        if not proc.done.is_set():
            by_machine.setdefault(proc.spec.machine.id, []).append(proc)

    from .exec_group import OLD_AGENTS
    for machine_id in OLD_AGENTS & set(by_machine):   # an agent from before several pid files per call
        procs = by_machine.pop(machine_id)
        for n, proc in enumerate(procs):
            by_machine[f"{machine_id}#{n}"] = [proc]

    def one(procs: list[RunningProcess]) -> None:
        m = procs[0].spec.machine
        argv = [m.python, "-S", m.agent_path, "signal", "--signal", sig]
        for proc in procs:
            argv += ["--pidfile", proc.spec.pidfile]
        session = next((p.session for p in procs if p.session is not None), None)
        if session is not None:
            try:   # a new channel on the streaming connection: no handshake, so a stop is quick
                session.run(argv, check=False, timeout=10)
                return
            except Exception:  # noqa: BLE001 — fall back to a fresh connection
                pass
        try:
            with connect(m, timeout=5) as s:
                s.run(argv, check=False, timeout=10)
        except Exception:  # noqa: BLE001 — an unreachable machine is ended by release anyway
            pass

    threads = [threading.Thread(target=one, args=(procs,), daemon=True) for procs in by_machine.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)


def close_sessions(running: list[RunningProcess]) -> None:
    for proc in running:
        if proc.session:
            proc.session.close()
