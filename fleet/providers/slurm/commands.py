"""Slurm's command-line tools, driven from fleet: argv builders, runners, and one typed façade.

fleet never links against Slurm; it runs the cluster's own `sbatch`, `squeue`, `sacct`, `scancel`,
`scontrol` and `srun`, either here (fleet runs on the login node: `LocalRunner`) or on a login node
over OpenSSH (`SSHRunner`: the user's ssh config, agent and known_hosts apply; host keys are never
learnt on first use). Both are `Runner`s, so tests and the provider inject whichever they need.
`SlurmCommands` turns output into the typed values of parsing.py and failures into the typed
errors of errors.py; it counts its calls per tool so callers can prove polling stays constant.
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
from collections import Counter
from dataclasses import dataclass, replace
from typing import Mapping, Protocol, Sequence

from ...errors import EnvironmentProblem
from .errors import (ControllerUnreachable, LoginNodeUnreachable, SlurmError, ToolMissing, classify_failure,
                     read_output)
from .handoff import on_login_node
from .ownership import is_leases, list_jobs, login_user, one_job, sacct_argv, same_job
from .parsing import STEPS_FORMAT, TIMES_ENV, AccountedJob, JobStep, QueuedJob, parse_sacct, parse_scontrol_job, parse_steps
from .settings import SlurmSettings, reads_as_ssh_option
from .tool_env import LISTING_FILTERS, tool_env


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class Runner(Protocol):
    def __call__(self, argv: Sequence[str], *, stdin: str | None = None, env: Mapping[str, str] | None = None,
                 timeout: float = 60) -> CommandResult: ...


class LocalRunner:
    """Runs Slurm's tools on this computer; `env` (e.g. SLURM_CONF) is added to every call's."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = dict(env or {})

    def __call__(self, argv: Sequence[str], *, stdin: str | None = None, env: Mapping[str, str] | None = None,
                 timeout: float = 60) -> CommandResult:
        try:
            # errors="replace": another user's job name or comment is in squeue's output, and one byte
            # that is not UTF-8 there must not stop every fleet command on the cluster.
            done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True, errors="replace",
                                  timeout=timeout, env=tool_env(self.env, env))
        except FileNotFoundError:
            raise ToolMissing(f"{argv[0]} not found on this computer",
                              hint="run fleet on a Slurm login node, or set [slurm] login") from None
        except PermissionError as exc:
            raise ToolMissing(f"{argv[0]} is not executable on this computer ({exc.strerror})") from None
        except subprocess.TimeoutExpired:
            raise ControllerUnreachable(f"{argv[0]} did not return within {timeout:.0f}s",
                                        slurm_reason="timeout") from None
        return CommandResult(tuple(argv), done.returncode, done.stdout, done.stderr)


OUTPUT_BEGINS = "FLEET-SSH-OUTPUT-BEGINS"


class SSHRunner:
    """Runs Slurm's tools on a login node through the OpenSSH client (BatchMode: never prompts)."""

    UNREACHABLE = 255     # ssh's own failure status (connection, authentication, host key)

    def __init__(self, destination: str, *, port: int | None = None, identity: str | None = None,
                 known_hosts: str | None = None, env: Mapping[str, str] | None = None,
                 connect_timeout_s: int = 15, options: Sequence[str] = (), ssh: str = "ssh",
                 jump: str | None = None, multiplex: bool = False):
        for what, value in (("login node", destination), ("jump host", jump)):
            # A lease's meta (the shared state, writable by any teammate) names these for `fleet down`
            # and `fleet reap` elsewhere: one ssh would read as an option (-oProxyCommand=…) is refused.
            if value is not None and (not value or reads_as_ssh_option(value)):
                raise LoginNodeUnreachable(f"{what} {value!r} refused: must be user@host (no leading '-', no spaces)")
        self.destination = destination
        self.env = dict(env or {})
        common = [ssh, "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout_s}",
                  "-o", "StrictHostKeyChecking=yes", "-o", "ServerAliveInterval=15"]
        if identity:
            common += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        if known_hosts:
            common += ["-o", f"UserKnownHostsFile={known_hosts}"]
        base = list(common)
        if jump:
            # ProxyCommand rather than -J: ssh does not hand -i/-o to a ProxyJump's own ssh, so the
            # jump host would be reached without this key, known_hosts or BatchMode.
            host, jport = split_port(jump)
            hop = common + (["-p", str(jport)] if jport else []) + ["-W", "%h:%p", host]
            base += ["-o", "ProxyCommand=" + shlex.join(hop)]
        if port:
            base += ["-p", str(port)]
        self.base = base + list(options)       # what a long-lived node step runs under: its own connection
        # Short commands (sbatch, squeue, sinfo, scancel, sacct) share one master connection that
        # lingers 30 s after the last: a lease's dozen commands pay one key exchange and login, not
        # one each (~0.5 s apiece on loopback under load, more to a real login node).
        control = _control_dir() if multiplex else None
        self.mux = (["-o", "ControlMaster=auto", "-o", f"ControlPath={control}/%C", "-o", "ControlPersist=30"]
                    if control else [])

    def remote_command(self, argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
        merged = {**self.env, **(env or {})}
        for key in merged:
            if not key.replace("_", "").isalnum() or key[0].isdigit():
                raise ValueError(f"invalid environment variable name {key!r}")
        unset = [a for name in LISTING_FILTERS for a in ("-u", name)]     # the login shell's own (tool_env.py)
        return shlex.join(["env", *unset, *(f"{k}={v}" for k, v in merged.items())] + list(argv))

    def __call__(self, argv: Sequence[str], *, stdin: str | None = None, env: Mapping[str, str] | None = None,
                 timeout: float = 60) -> CommandResult:
        # The login shell may print first (a .bashrc's greeting, conda's prompt): only what follows
        # the marker is the tool's (`id -u` read the greeting as a uid, squeue as a job's line).
        remote = f"echo {OUTPUT_BEGINS}; " + self.remote_command(argv, env)
        full = self.base + self.mux + [self.destination, "--", remote]
        try:
            done = subprocess.run(full, input=stdin if stdin is not None else "", capture_output=True,
                                  text=True, errors="replace", timeout=timeout)
        except FileNotFoundError:
            raise EnvironmentProblem("ssh (the OpenSSH client) is not installed") from None
        except subprocess.TimeoutExpired:
            raise LoginNodeUnreachable(f"login node {self.destination}: {argv[0]} did not return within "
                                       f"{timeout:.0f}s") from None
        if done.returncode == self.UNREACHABLE:
            why = (done.stderr.strip().splitlines() or ["ssh failed"])[-1]
            raise LoginNodeUnreachable(f"login node {self.destination} did not answer: {why}")
        at = done.stdout.find(OUTPUT_BEGINS + "\n")
        stdout = done.stdout[at + len(OUTPUT_BEGINS) + 1:] if at >= 0 else done.stdout
        return CommandResult(tuple(argv), done.returncode, stdout, done.stderr)

    def disconnect(self) -> None:
        """End the shared master connection now (the next command opens a new one)."""
        if self.mux:
            subprocess.run(self.base + self.mux + ["-O", "exit", self.destination], capture_output=True, timeout=30)


def _control_dir() -> str | None:
    """A private directory for ssh's control sockets, short enough for a socket path; None (no
    multiplexing) where it is not provably ours (another user's, a symlink, open to others)."""
    import stat
    import tempfile
    path = os.path.join(tempfile.gettempdir(), f"fleet-ssh-{os.getuid()}")
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    except OSError:
        return None
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return path


def split_port(destination: str) -> tuple[str, int | None]:
    """"user@host:2222" → ("user@host", 2222); without a port, (destination, None)."""
    host, sep, port = destination.rpartition(":")
    if sep and port.isdigit() and "]" not in port:
        return host, int(port)
    return destination, None


@dataclass(frozen=True)
class AllocationRequest:
    """What fleet asks Slurm for: N nodes × G GPUs for at most `time_limit_s`."""
    name: str
    nodes: int
    gpus_per_node: int
    time_limit_s: int
    comment: str = ""                    # fleet's tag: fleet:lease=<id>, found again by the reaper
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    constraint: str | None = None
    gpus_flag: str = "gres"              # "gres" → --gres=gpu:G; "gpus-per-node" → --gpus-per-node=G
    gpu_type: str | None = None          # a GRES type: --gres=gpu:a100:G / --gpus-per-node=a100:G
    output: str | None = None            # sbatch --output (the batch step's own stdout/stderr)
    workdir: str | None = None


def time_limit_arg(seconds: int) -> str:
    """Slurm counts time limits in whole minutes; round down so the limit never passes fleet's cap."""
    return str(max(1, int(seconds) // 60))


def _allocation_flags(req: AllocationRequest) -> list[str]:
    if req.nodes < 1 or req.gpus_per_node < 0:
        raise ValueError("an allocation needs at least one node and a GPU count >= 0")
    flags = [f"--job-name={req.name}", f"--nodes={req.nodes}", "--ntasks-per-node=1",
             f"--time={time_limit_arg(req.time_limit_s)}"]
    if req.gpus_per_node:
        count = f"{req.gpu_type}:{req.gpus_per_node}" if req.gpu_type else str(req.gpus_per_node)
        flags.append(f"--gpus-per-node={count}" if req.gpus_flag == "gpus-per-node" else f"--gres=gpu:{count}")
    for flag, value in (("--comment", req.comment), ("--partition", req.partition), ("--account", req.account),
                        ("--qos", req.qos), ("--constraint", req.constraint), ("--output", req.output),
                        ("--chdir", req.workdir)):
        if value:
            flags.append(f"{flag}={value}")
    return flags


def sbatch_argv(req: AllocationRequest) -> list[str]:
    """sbatch reading its script from stdin; --no-requeue: a job fleet leased never silently restarts
    on other nodes after NODE_FAIL (Slurm's default requeues it, as PENDING with reason BeginTime)."""
    return ["sbatch", "--parsable", "--no-requeue", *_allocation_flags(req)]


def salloc_argv(req: AllocationRequest, immediate_s: int | None = None) -> list[str]:
    """An allocation with no shell: returns once granted; steps then run with `srun --jobid`. With
    `immediate_s`, salloc gives up (and withdraws the job) unless granted within that time. (salloc
    has no --output: there is no batch step to write it.)"""
    flags = _allocation_flags(replace(req, output=None))
    return ["salloc", "--no-shell", *([f"--immediate={immediate_s}"] if immediate_s else []), *flags]


def granted_job_id(salloc_stderr: str) -> str | None:
    """The job id from salloc's "salloc: Granted job allocation 123"."""
    match = re.search(r"Granted job allocation (\d+)", salloc_stderr)
    return match.group(1) if match else None


def srun_argv(job_id: str, command: Sequence[str], *, nodes: int | None = None, ntasks_per_node: int = 1,
              label: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """A step inside an existing allocation; --overlap so it can share the nodes with the batch step."""
    argv = ["srun", f"--jobid={job_id}", "--overlap", f"--ntasks-per-node={ntasks_per_node}", "--kill-on-bad-exit=1"]
    if nodes:
        argv.append(f"--nodes={nodes}")
    if label:
        argv.append("--label")
    return argv + list(extra) + list(command)


def scancel_argv(job_ids: Sequence[str], signal: str | None = None, *, user: str | None = None,
                 name: str | None = None) -> list[str]:
    """`user`, `name`: filters slurmctld applies itself, to the listed ids too (only jobs matching
    all of them are signalled)."""
    argv = ["scancel", "--quiet"]
    if signal:
        argv += ["--full", f"--signal={signal}"]
    argv += [f"--user={user}"] if user else []
    argv += [f"--name={name}"] if name else []
    return argv + list(job_ids)


def time_limit_argv(job_id: str, seconds: int) -> list[str]:
    return ["scontrol", "update", f"JobId={job_id}", f"TimeLimit={time_limit_arg(seconds)}"]


def shrink_argv(job_id: str, nodes: Sequence[str]) -> list[str]:
    """A running job keeps only `nodes` (a subset of its own); the others go back to the cluster."""
    return ["scontrol", "update", f"JobId={job_id}", f"NodeList={','.join(nodes)}"]


def steps_argv(job_id: str) -> list[str]:
    return ["squeue", "--steps", f"--jobs={job_id}", "--noheader", f"--format={STEPS_FORMAT}"]


# sacct's times as parse_sacct reads them: UTC, ISO 8601. A user's own SLURM_TIME_FORMAT (often
# "relative" in a login node's rc file: `Ystday 06:02`) would otherwise change how it prints them.
SACCT_ENV = TIMES_ENV


class SlurmCommands:
    """Slurm's tools through one runner, answering in typed values or typed errors."""

    def __init__(self, runner: Runner, *, timeout_s: float = 60, user: str | None = None):
        self.runner = runner
        self.timeout_s = timeout_s
        self.user = user       # whom the tools run as: asked once (ownership.login_user) unless given
        self.uid: int | None = None   # and their uid (ownership.login_uid)
        self.calls: Counter[str] = Counter()

    def _run(self, argv: list[str], *, stdin: str | None = None, env: Mapping[str, str] | None = None,
             check: bool = True) -> CommandResult:
        self.calls[argv[0]] += 1
        result = self.runner(argv, stdin=stdin, env=env, timeout=self.timeout_s)
        if check and result.returncode != 0:
            raise classify_failure(argv[0], result.returncode, result.stderr or result.stdout)
        return result

    def submit(self, req: AllocationRequest, script: str) -> str:
        """sbatch the script; the job id. Refusals raise the typed errors of errors.py."""
        out = self._run(sbatch_argv(req), stdin=script).stdout
        # sbatch's own line ("123" or "123;cluster"), first: a site's wrapper may add lines after it.
        found = re.search(r"^\s*(\d+)(?:;\S*)?\s*$", out, re.M)
        if found is None:       # sbatch said yes: a job may be queued under the lease's name all the same
            try:
                self.cancel([], user=login_user(self), name=req.name)
            except Exception:  # noqa: BLE001 — its time limit ends it; the missing id is what to report
                pass
            raise SlurmError(f"sbatch printed no job id: {out.strip()[:200]!r}")
        return found.group(1)

    def allocate_now(self, req: AllocationRequest) -> str | None:
        """`salloc --no-shell --immediate`: the job id when the cluster grants the allocation at
        once, scheduled on the spot as srun's are (sbatch's batch jobs wait for the scheduler: 0.1-3 s
        on an idle cluster). None when it cannot (busy nodes, or a refusal): the caller then
        submits with sbatch, which queues and names the pending reason or the refusal."""
        result = self._run(salloc_argv(req, immediate_s=1), check=False)
        if result.returncode != 0:
            return None
        job_id = granted_job_id(result.stderr)
        if job_id is None:      # granted, but the id is not where it should be: withdraw it by its tag
            self.cancel([j.job_id for j in self.queue() if j.comment == req.comment and j.name == req.name
                         and not j.state.finished])
        return job_id

    def queue(self, job_ids: Sequence[str] | None = None) -> list[QueuedJob]:
        """The controller's view of these jobs of the login user's (all of them when None); a job it
        forgot, or another user's, is absent. One squeue call per id (ownership.list_jobs)."""
        return list_jobs(self, set(job_ids) if job_ids is not None else None)

    def job(self, job_id: str) -> QueuedJob | None:
        """One job by id, whoever's (`user_id` names its owner: ownership.owned before acting on it);
        one squeue call that slurmctld answers with that job alone (what polling uses)."""
        return one_job(self, job_id)

    def tagged(self, comment_prefix: str) -> list[QueuedJob]:
        """Jobs whose comment starts with fleet's tag (what the reaper and `fleet down --all` look for)."""
        return [j for j in self.queue() if j.comment.startswith(comment_prefix)]

    def accounting(self, job_ids: Sequence[str], lease_id: str | None = None) -> list[AccountedJob]:
        """sacct's records (times in UTC); with `lease_id`, only the login user's that carry the
        lease's name or tag. Raises SlurmError where the cluster keeps no accounting."""
        if not job_ids:
            return []
        user = login_user(self) if lease_id is not None else None
        records = read_output("sacct", parse_sacct, self._run(sacct_argv(job_ids, user), env=SACCT_ENV).stdout)
        return same_job([r for r in records if lease_id is None or is_leases(r, lease_id)])

    def cancel(self, job_ids: Sequence[str], signal: str | None = None, *, user: str | None = None,
               name: str | None = None) -> None:
        """scancel; idempotent: a job that already ended is not an error. With `user` and `name`,
        job_ids may be empty (every job of that user with that name)."""
        if not job_ids and not (user and name):
            return
        result = self._run(scancel_argv(job_ids, signal, user=user, name=name), check=False)
        if result.returncode != 0 and not _only_gone(result.stderr):
            raise classify_failure("scancel", result.returncode, result.stderr)

    def job_record(self, job_id: str) -> dict[str, str] | None:
        """`scontrol show job`'s fields (JobState, NodeList, BatchFlag, BatchHost, …); None once the
        controller has forgotten the job."""
        result = self._run(["scontrol", "show", "job", "--oneliner", job_id], check=False)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return None
            raise classify_failure("scontrol", result.returncode, result.stderr)
        return read_output("scontrol", parse_scontrol_job, result.stdout)

    def steps(self, job_id: str) -> list[JobStep]:
        """The job's running steps; none once it has ended."""
        result = self._run(steps_argv(job_id), check=False)
        if result.returncode != 0:
            if "Invalid job id" in result.stderr:
                return []
            raise classify_failure("squeue", result.returncode, result.stderr)
        return read_output("squeue", parse_steps, result.stdout)

    def signal_step(self, step_id: str, signal: str) -> None:
        """Send one signal to every process of a step (`scancel --signal`: the step is not ended by
        it); a step that has just ended is not an error."""
        result = self._run(["scancel", "--quiet", f"--signal={signal}", step_id], check=False)
        if result.returncode != 0 and not _only_gone(result.stderr):
            raise classify_failure("scancel", result.returncode, result.stderr)

    def shrink(self, job_id: str, nodes: Sequence[str]) -> None:
        """`scontrol update NodeList`: a job owner may shrink a running job (only growing needs an operator)."""
        self._run(shrink_argv(job_id, nodes))

    def set_time_limit(self, job_id: str, seconds: int) -> None:
        """scontrol update TimeLimit; clusters often let only operators raise it (a SlurmError says so)."""
        self._run(time_limit_argv(job_id, seconds))


def _only_gone(stderr: str) -> bool:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return bool(lines) and all("Invalid job id" in ln or "already completing or completed" in ln
                               or "Job/step already" in ln for ln in lines)


def login_runner(cfg: SlurmSettings, env: dict[str, str] | None = None) -> Runner:
    """Where Slurm's tools run: here (also in a detached run's supervisor on the login node: handoff.py),
    or on `[slurm] login` over SSH (through `jump` when set); `env` is added to every command (tests)."""
    if not cfg.login or on_login_node(cfg):
        return LocalRunner(env)
    return SSHRunner(cfg.login, port=cfg.login_port, identity=cfg.identity, known_hosts=cfg.known_hosts,
                     jump=cfg.jump, env=env, multiplex=True)
