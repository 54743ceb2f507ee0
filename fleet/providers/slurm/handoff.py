"""The Slurm provider's part of a detached run supervised from the cluster's login node
(fleet/run/login_launch.py does the rest).

With `[slurm] login` every Slurm command of the launching computer runs on the login node over
OpenSSH, and so do the node steps' srun frontends, each hanging off one of this computer's ssh
connections: a supervisor here would take the run with it when the laptop closes. So `fleet up -d`
(with a PostgreSQL state and an S3 store) starts the run's supervisor on the login node itself,
where Slurm's tools are local: `LoginShell` is how the launcher (and `fleet down` from anywhere)
reaches it, through the very destination, port, key, jump host and known_hosts that [slurm] login
uses; and `on_login_node` is how that supervisor knows it runs there (its environment names the
login node), so its Slurm provider runs sbatch/srun/scancel locally while the lease's meta still
says how other computers reach the cluster.
"""
from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from typing import Any

from ...errors import EnvironmentProblem
from ..capabilities import ReleasedFromAnywhere, SupervisesFromLoginNode
from .errors import LoginNodeUnreachable

ON_LOGIN_NODE = "FLEET_SLURM_ON_LOGIN_NODE"   # set (to [slurm] login) in the login node's supervisor only


def on_login_node(cfg: Any) -> bool:
    """This process is the supervisor that runs on `cfg.login` itself: Slurm's tools are local."""
    return bool(cfg.login) and os.environ.get(ON_LOGIN_NODE) == cfg.login


@dataclass
class ShellResult:
    returncode: int
    stdout: str
    stderr: str


class LoginShell:
    """Commands on the login node through an SSHRunner's own ssh options (shared master
    connection included). Each command runs under `sh -c`: a login shell may be csh."""

    def __init__(self, runner: Any):
        import tempfile
        self.runner = runner
        self.destination = runner.destination
        # A master connection of its own, not the one Slurm's short commands share: that one may
        # belong to another fleet process, and ends when that process's world does (a CI job's
        # cgroup, a pid namespace), cutting a handoff in flight (exit 255) whose command may
        # already have run, so it could not safely be tried again.
        self._control = tempfile.mkdtemp(prefix="fleet-login-")
        self.mux = ["-o", "ControlMaster=auto", "-o", f"ControlPath={self._control}/%C", "-o", "ControlPersist=60"]

    def run(self, command: str, *, stdin: bytes | None = None, check: bool = True,
            timeout: float = 60) -> ShellResult:
        full = self.runner.base + self.mux + [self.destination, "--", "sh -c " + shlex.quote(command)]
        try:
            done = subprocess.run(full, input=stdin if stdin is not None else b"", capture_output=True,
                                  timeout=timeout)
        except FileNotFoundError:
            raise EnvironmentProblem("ssh (the OpenSSH client) is not installed") from None
        except subprocess.TimeoutExpired:
            raise LoginNodeUnreachable(f"login node {self.destination}: no answer within {timeout:.0f}s") from None
        result = ShellResult(done.returncode, done.stdout.decode(errors="replace"),
                             done.stderr.decode(errors="replace"))
        if done.returncode == self.runner.UNREACHABLE:
            why = (result.stderr.strip().splitlines() or ["ssh failed"])[-1]
            raise LoginNodeUnreachable(f"login node {self.destination} did not answer: {why}")
        if check and done.returncode != 0:
            why = (result.stderr.strip() or result.stdout.strip()).splitlines()[-1:] or [""]
            raise LoginNodeUnreachable(f"login node {self.destination}: `{command[:80]}` exited "
                                       f"{done.returncode}: {why[0][:200]}")
        return result

    def close(self) -> None:
        """End this shell's master connection (else it ends 60 s after its last command)."""
        import shutil
        try:
            subprocess.run(self.runner.base + self.mux + ["-O", "exit", self.destination], capture_output=True,
                           timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            pass
        shutil.rmtree(self._control, ignore_errors=True)


class LoginNodeSupervision(SupervisesFromLoginNode, ReleasedFromAnywhere):
    """SlurmProvider's side of SupervisesFromLoginNode, and of ReleasedFromAnywhere: a lease records
    the login node it was made through (lease_meta), so any computer with the key to that login
    cancels its jobs there, as `fleet down` does; one made on the login node itself (no login
    recorded) is released where Slurm's tools run."""

    def why_not_released_here(self, lease: Any) -> str | None:
        import shutil
        from pathlib import Path
        meta = lease.meta or {}
        login = meta.get("slurm_login")
        if login:
            key = meta.get("slurm_identity")
            if key and not Path(key).expanduser().is_file():
                return (f"the key to its login node {login} ({key}) is not on this computer: "
                        "run `fleet reap` where it is")
            return None
        if on_login_node(self.config) or not self.config.login:
            missing = [tool for tool in ("squeue", "scancel", "sacct") if shutil.which(tool) is None]
            if not missing:
                return None
            return (f"it was made on the cluster's login node itself (no [slurm] login recorded) and Slurm's "
                    f"tools ({', '.join(missing)}) are not on this computer: run `fleet reap` on that login node")
        return ("it was made on the cluster's login node itself (no [slurm] login recorded), and this computer "
                f"reaches a cluster through {self.config.login}, maybe another: run `fleet reap` on that login node")

    def login_shell(self, lease: Any = None) -> LoginShell | None:
        from .commands import SSHRunner
        from .settings import SlurmSettings
        cfg = self.config
        meta = (lease.meta or {}) if lease is not None else {}
        if meta.get("slurm_login") and meta["slurm_login"] != cfg.login:   # `fleet down` elsewhere: the lease's
            cfg = SlurmSettings(login=meta["slurm_login"], login_port=meta.get("slurm_login_port"),
                                identity=meta.get("slurm_identity"), jump=meta.get("slurm_jump"),
                                known_hosts=meta.get("slurm_known_hosts"))
        if not cfg.login or (lease is not None and not meta.get("slurm_login")):
            return None
        return LoginShell(SSHRunner(cfg.login, port=cfg.login_port, identity=cfg.identity,
                                    known_hosts=cfg.known_hosts, jump=cfg.jump, multiplex=False))

    def login_node(self) -> str | None:
        return self.config.login

    def supervisor_python(self) -> str:
        return self.config.supervisor_python

    def login_node_env(self) -> dict[str, str]:
        return {ON_LOGIN_NODE: self.config.login or ""}
