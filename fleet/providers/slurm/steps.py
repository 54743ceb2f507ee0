"""The controller's half of a node step: start fleet/providers/slurm/node.py on one allocated node with
`srun --jobid J --nodelist NODE --overlap`, hand it its spec on stdin, read back its ready line.

The srun (or the ssh to the login node that runs it) keeps running in its own session for as long
as the step does: it is how the step stays attached, it never carries experiment output, and it
outlives a killed controller (the job's time limit and the machine's watchdog end it then). Its
stdin stays open: it is how this controller asks the machine alone to end (`request_release`, a
line with the machine's own token), where a signal could be anyone's (`scancel -s USR1 JOB`).
"""
from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ...errors import InfrastructureError
from ...remote import mounts
from .commands import LocalRunner, Runner, SSHRunner, srun_argv
from .tool_env import tool_env

# What the node runs after remote/mounts.py (node_source), in this order: node.py last (it calls main()).
NODE_PARTS = tuple(Path(__file__).with_name(name) for name in ("node_job.py", "node.py"))
READY = "FLEET-NODE-READY"
RELEASE = "FLEET-NODE-RELEASE"     # node.py ends its machine alone on "<RELEASE> <its token>"
# Reads the node's source (first stdin line, JSON-quoted: node_source()) and runs it; node.py reads the
# spec line next.
# The step starts in the submitting directory, whose planted json.py must not run here: '' leaves
# sys.path first (sys is built in). Not -I, which would drop the PYTHONHOME a module-loaded Python needs.
BOOT = ("import sys;sys.path[:]=[p for p in sys.path if p not in('','.')];import json;"
        "exec(compile(json.loads(sys.stdin.readline()),'fleet-node','exec'))")


def node_source() -> str:
    """The text the node step runs: node.py with the modules it imports within fleet (remote/mounts.py,
    node_job.py) ahead of it. Read by the caller once for all the nodes it starts (start_node's `source`)."""
    return "\n".join([mounts.source(), *(part.read_text() for part in NODE_PARTS)])


def step_name(node: str) -> str:
    """The node step's name in the job (how partial release finds it: shrink.py)."""
    return f"fleet-node-{node}"


@dataclass
class NodeStep:
    node: str
    proc: subprocess.Popen
    ready: dict[str, Any]
    log: Path
    release_token: str = ""

    def request_release(self) -> bool:
        """Ask node.py, on the step's stdin, to end its machine alone (the job goes on); False when
        the frontend is gone (the caller ends the machine another way)."""
        if not self.release_token or self.proc.stdin is None or self.proc.poll() is not None:
            return False
        try:
            self.proc.stdin.write(f"{RELEASE} {self.release_token}\n".encode())
            self.proc.stdin.flush()
            return True
        except (OSError, ValueError):      # a broken pipe, or closed
            return False


def step_argv(runner: Runner, argv: Sequence[str]) -> tuple[list[str], dict[str, str] | None]:
    """What to Popen so `argv` runs where the runner runs Slurm's tools (here, or on the login node)."""
    if isinstance(runner, SSHRunner):
        return runner.base + [runner.destination, "--", runner.remote_command(argv)], None
    return list(argv), tool_env(runner.env if isinstance(runner, LocalRunner) else None)


def start_node(runner: Runner, job_id: str, node: str, python: str, source: str, spec: dict[str, Any], log: Path,
               timeout_s: float) -> NodeStep:
    """Start the node step (`source`: node_source()'s text) and wait for its ready line;
    InfrastructureError naming srun's own complaint if the step ends or stays silent first."""
    # -S: node.py is standard library only; the site-packages' .pth files (certifi, setuptools' hooks,
    # …) cost a loaded interpreter tens of ms per step start and can print or fail on a node.
    argv = srun_argv(job_id, [python, "-S", "-c", BOOT], nodes=1, extra=["--ntasks=1", f"--nodelist={node}",
                                                                    f"--job-name={step_name(node)}"])
    full, env = step_argv(runner, argv)
    token = secrets.token_hex(16)          # this machine's alone: only its release request carries it
    spec = {**spec, "release_token": token}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as err:
        proc = subprocess.Popen(full, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, env=env,
                                start_new_session=True, close_fds=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        proc.stdin.write((json.dumps(source) + "\n" + json.dumps(spec) + "\n").encode())
        proc.stdin.flush()                 # kept open: request_release writes on it
    except BrokenPipeError:
        pass
    timer = threading.Timer(timeout_s, proc.kill)    # a step that never answers must not hang the lease
    timer.daemon = True
    timer.start()
    try:
        ready = None
        for raw in proc.stdout:
            line = raw.decode(errors="replace").strip()
            if line.startswith(READY):
                ready = json.loads(line[len(READY):])
                break
    finally:
        timer.cancel()
    if ready is None:
        proc.kill()
        proc.wait()
        raise InfrastructureError(f"the fleet step on Slurm node {node} (job {job_id}) did not start: "
                                  f"{last_line(log) or 'no output'}")
    return NodeStep(node, proc, ready, log, token)


def last_line(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def reap(steps: list[NodeStep], timeout_s: float = 30) -> None:
    """Wait for step frontends whose step Slurm has ended (after scancel); kill any that hang on."""
    end = time.monotonic() + timeout_s
    for step in steps:
        try:
            step.proc.wait(max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            step.proc.kill()
            step.proc.wait()
        for pipe in (step.proc.stdin, step.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:            # a broken pipe's unflushed bytes
                    pass
