"""Real OpenSSH sshd processes on loopback, one per machine, each under its own directory.

Used by the local provider, and by the AWS sandbox and tests to stand in for remote hosts.
A machine directory holds: sshd_config, ssh_host_ed25519_key(.pub), authorized_keys, sshd.pid
("PID STARTTIME"), sshd.log and root/ (the machine's working directory).

Containment (fleet/isolation): where cgroup v2 is writable, sshd starts inside the machine's unit
(<unit>/work), so every session and everything it spawns belongs to the machine however it
daemonises, and the watchdog sits in <unit>/agent. Otherwise pids are verified by start time.
"""
from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ... import isolation
from ...errors import EnvironmentProblem, InfrastructureError
from ...keys import generate_ed25519
from ...remote.agent import containment

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")


def find_sshd() -> str:
    override = os.environ.get("FLEET_SSHD")
    candidates = (override,) if override else (shutil.which("sshd"), *SSHD_CANDIDATES)
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise EnvironmentProblem(
        "OpenSSH server (sshd) not found: the local provider runs each machine as an sshd on 127.0.0.1",
        hint="install it: sudo apt-get install openssh-server (Debian/Ubuntu) or brew install openssh")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class SshdMachine:
    directory: Path
    port: int
    pid: int
    host_key: str          # public host key line "ssh-ed25519 AAAA…"
    root: Path
    user: str
    isolation: str = "pids"   # "cgroup" | "pids": see fleet/isolation


def _quoted(value: object, tokens: bool = False) -> str:
    """One sshd_config argument: a FLEET_HOME with a space broke every machine; `%` is a token
    where sshd expands them (a FLEET_HOME of /tmp/a%u failed every login). paths.fleet_home refuses
    the quotes and control characters no quoting survives."""
    text = str(value).replace("%", "%%") if tokens else str(value)
    return f'"{text}"'


def _config_text(d: Path, port: int, machine_id: str, user: str, root: Path, listen: str = "127.0.0.1",
                 also: tuple[str, ...] = ()) -> str:
    """sshd_config of one machine (also rendered for Slurm nodes, which listen on their own address)."""
    return "\n".join([
        f"Port {port}",
        f"ListenAddress {listen}",
        f"HostKey {_quoted(d / 'ssh_host_ed25519_key')}",
        # fleet writes sshd.pid itself, with the start time that proves it later ("PID STARTTIME").
        "PidFile none",
        f"AuthorizedKeysFile {_quoted(d / 'authorized_keys', tokens=True)}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {' '.join((user, *also))}",
        # Every session carries the machine's id so the watchdog can find (and end) its processes.
        # HOME is the machine's own root, as on a fresh machine: otherwise every session runs the
        # controller user's ~/.bashrc (Debian's bash sources it for ssh commands), which can hang
        # (a pyenv rehash lock left by a session the watchdog killed stalled every later session).
        # SHLVL=1: bash then sources no ~/.bashrc for an ssh command (Debian's bash does at level 1), and
        # PermitUserRC no: no ~/.ssh/rc. A run or sweep trial writes in HOME; the next one's commands and
        # fleet's own (agent exec, the reset between trials) must not run what it left there.
        f"SetEnv FLEET_MACHINE_ID={machine_id} {_quoted(f'FLEET_MACHINE_ROOT={root}')} {_quoted(f'HOME={root}')} SHLVL=1",
        "PermitUserRC no",
        "Subsystem sftp internal-sftp",
        "MaxStartups 200:30:400",
        "MaxSessions 200",
        "X11Forwarding no",
        "PrintMotd no",
        "LogLevel ERROR",
        "",
    ])


def _privsep_dir() -> None:
    if os.geteuid() == 0 and not os.path.isdir("/run/sshd"):
        try:
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
        except OSError as exc:
            raise EnvironmentProblem(f"sshd needs /run/sshd and it cannot be created: {exc}") from None


def start_sshd(directory: Path, machine_id: str, authorized_key: str, *, host_key_path: Path | None = None,
               attempts: int = 5, login: str | None = None, also: tuple[str, ...] = ()) -> SshdMachine:
    """Start sshd for one machine, detached from the caller (it must outlive a killed controller).

    `login`: the machine's user, when not this process's own (root only: the AWS sandbox's
    stand-in for an instance's unprivileged `fleet` user); its working directory is made its own.
    `also`: further users the same key may log in as (the sandbox's supervisor login)."""
    sshd = find_sshd()
    _privsep_dir()
    d = Path(directory)
    root = d / "root"
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    key_path = d / "ssh_host_ed25519_key"
    if host_key_path:
        shutil.copyfile(host_key_path, key_path)
        os.chmod(key_path, 0o600)
        host_key = " ".join(Path(str(host_key_path) + ".pub").read_text().split()[:2])
    else:
        host_key = generate_ed25519(key_path, comment=f"fleet-host-{machine_id}")
    auth = d / "authorized_keys"
    auth.write_text(authorized_key.strip() + "\n")
    user = login or getpass.getuser()
    # sshd reads the keys file as the user logging in: another login needs it readable (public keys).
    os.chmod(auth, 0o644 if user != getpass.getuser() else 0o600)
    if user != getpass.getuser():
        _hand_over(d, root, user)
    work = _work_leaf(d, machine_id)
    last_error = ""
    for _ in range(attempts):
        port = free_port()
        (d / "sshd_config").write_text(_config_text(d, port, machine_id, user, root, also=tuple(
            u for u in also if u != user)))
        argv = [sshd, "-D", "-e", "-f", str(d / "sshd_config")]
        if work:   # join the unit, then become sshd: inside it before it can accept a connection
            argv = ["/bin/sh", "-c", 'echo $$ > "$0/cgroup.procs" || exit 126; exec "$@"', work, *argv]
        log = open(d / "sshd.log", "ab")
        proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                                close_fds=True)
        log.close()
        # Recorded at once, not once it listens: a watchdog started first reads it at expiry.
        containment.write_pid_file(d / "sshd.pid", proc.pid)
        if (d / "root" / ".fleet" / "expired").exists():
            # The watchdog ended the machine meanwhile (and may have read sshd.pid before it was
            # written): an sshd with no deadline must not be left behind.
            _reap(proc)
            raise InfrastructureError(f"machine {machine_id} reached its deadline while its sshd was starting")
        if _wait_listening(port, proc):
            return SshdMachine(d, port, proc.pid, host_key, root, user, "cgroup" if work else "pids")
        last_error = (d / "sshd.log").read_text(errors="replace").strip().splitlines()[-1:] or ["exited"]
        last_error = last_error[0]
        _reap(proc)
    raise InfrastructureError(f"sshd for machine {machine_id} would not start: {last_error}",
                              hint="no free port on 127.0.0.1?" if "Address" in last_error else None)


def _hand_over(d: Path, root: Path, user: str) -> None:
    """The machine directory stays this (root) process's, traversable only; its working directory
    (and everything in it, the watchdog's state included, as on an AWS instance) becomes `user`'s."""
    import pwd
    entry = pwd.getpwnam(user)
    os.chmod(d, 0o711)
    for path in [root, *root.rglob("*")]:
        os.lchown(path, entry.pw_uid, entry.pw_gid)


def _work_leaf(d: Path, machine_id: str) -> str | None:
    """The cgroup leaf sshd must start in, or None (verified pids). With a watchdog already running
    its unit is reused, never re-created: a unit it removed at expiry means the machine has ended."""
    from ...remote.agent.agent import read_isolation
    state = d / "root" / ".fleet"
    if (state / "expired").exists():
        raise InfrastructureError(f"machine {machine_id} has reached its deadline: not starting its sshd")
    if (state / "watchdog.pid").exists():
        info = read_isolation(str(state))
        if info.get("level") != isolation.CGROUP:
            return None
        work = Path(info["unit"]) / "work"
        if not work.is_dir():
            raise InfrastructureError(f"machine {machine_id} has ended (its cgroup is gone): not starting its sshd")
        return str(work)
    unit = isolation.prepare_local_unit(d)     # no watchdog yet (the AWS sandbox starts sshd first)
    return f"{unit}/work" if unit else None


def _listening(port: int) -> bool | None:
    """Whether something listens on 127.0.0.1:port, read from the kernel's socket table (Linux):
    a probe connection would be one more connection for sshd to accept and log. None: no table."""
    try:
        table = Path("/proc/net/tcp").read_text()
    except OSError:
        return None
    wanted = f"0100007F:{port:04X}"
    return any(f" {wanted} " in line and line.split()[3] == "0A" for line in table.splitlines()[1:])


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        listening = _listening(port)
        if listening:
            return True
        if listening is None:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return True
            except OSError:
                pass
        time.sleep(0.02)
    return False


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def start_watchdog(directory: Path, machine_id: str, *, ttl_s: float, max_s: float, kill_pids: list[int],
                   python: str | None = None, telemetry_interval: float = 0,
                   kill_pid_files: list[Path] = (), agent_dir: Path | None = None) -> int:
    """The machine's dead-man switch, started detached (own session) so SIGKILL of the controller
    leaves it running; it ends the machine at its deadline unless a heartbeat extends it.

    It joins <unit>/agent of the machine's cgroup unit (made here when cgroup v2 is writable) and
    ends <unit>/work from there; `kill_pids` are pinned to their start time now.

    `agent_dir`: where the watchdog's own copy of the agent lives when the machine's login is not
    this process's user (the state directory is then that login's, and a watchdog run from there
    would import whatever it put beside agent.py)."""
    from ...remote.agent import AGENT_FILES
    state = Path(directory) / "root" / ".fleet"
    state.mkdir(parents=True, exist_ok=True)
    homes = [state] if agent_dir is None else [state, Path(agent_dir)]
    for home in homes:
        home.mkdir(parents=True, exist_ok=True, mode=0o700)
        for source in AGENT_FILES:
            if source.exists():
                shutil.copyfile(source, home / source.name)
    agent = homes[-1] / "agent.py"
    unit = isolation.prepare_local_unit(Path(directory))
    # -S, as on Slurm nodes: the agent is standard library only (telemetry reads NVML through ctypes
    # when pynvml is not importable), and a venv's site (.pth files, an editable install's finder) is
    # most of its start: eight machines start eight watchdogs while the lease waits for them.
    argv = [python or sys.executable, "-S", str(agent), "watchdog", "--state-dir", str(state),
            "--machine-id", machine_id, "--ttl", str(ttl_s), "--max", str(max_s),
            "--telemetry-interval", str(telemetry_interval)]
    argv += ["--isolation", "cgroup", "--unit", unit] if unit else ["--isolation", "pids"]
    for pid in kill_pids:
        record = containment.pid_record(pid)
        if record:
            argv += ["--kill-pid", record.replace(" ", ":")]
    for pid_file in kill_pid_files:
        argv += ["--kill-pid-file", str(pid_file)]
    log = open(state / "watchdog.log", "ab")
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
                            close_fds=True)
    log.close()
    deadline = time.monotonic() + 10
    while not (state / "watchdog.pid").exists() and time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    if not (state / "watchdog.pid").exists():
        raise InfrastructureError(f"watchdog for machine {machine_id} did not start: {_last_words(state / 'watchdog.log')}")
    return proc.pid


def _last_words(log: Path) -> str:
    """Why the watchdog ended, from its log: the machine's directory, log and all, is deleted when the
    failed lease is released, so `see …/watchdog.log` named a file that no longer existed (a full
    FLEET_HOME: the watchdog could not write its pid file, the one place that said so gone)."""
    try:
        with open(log, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = [line.strip() for line in fh.read().decode("utf-8", "replace").splitlines() if line.strip()]
    except OSError as exc:
        return f"its log {log} cannot be read ({exc.strerror or exc})"
    if lines:
        return lines[-1]
    machines = log.parents[3]   # <machines>/<id>/root/.fleet/watchdog.log: the id's directory goes at release
    try:
        free = shutil.disk_usage(log.parent).free
    except OSError:
        free = None
    if free is not None and free < 1 << 20:
        return f"it could not even write its log: {free // 1024} KiB free on the disk of {machines}: free space there"
    return "it wrote nothing to its log"


def pid_alive(pid: int) -> bool:
    from ...remote.agent.containment import alive
    return alive(pid)


def machine_isolation(directory: Path) -> str:
    """The isolation a machine directory's processes have: what its watchdog recorded, else whether
    a unit exists for it."""
    from ...remote.agent.agent import read_isolation
    level = read_isolation(str(Path(directory) / "root" / ".fleet")).get("level")
    return level or ("cgroup" if isolation.existing_unit(Path(directory)) else "pids")


def stop_machine_dir(directory: Path, grace_s: float = 2.0) -> None:
    """End a machine from the outside: release its watchdog (which ends its processes), then make
    sure. Only the machine's own processes are signalled: its cgroup unit's members, or pids whose
    recorded start time still matches (a stale pid file never hits a process that reused the pid)."""
    from ...remote.agent import agent
    d = Path(directory)
    sshd = containment.read_pid_file(d / "sshd.pid")
    if sshd and not _runs_config(sshd[0], d / "sshd_config"):
        sshd = None
    if sshd is None and containment.read_small(d / "sshd.pid").strip().isdigit():   # an earlier fleet's
        from . import legacy
        sshd = legacy.proven_pid(d / "sshd.pid", lambda pid: _runs_config(pid, d / "sshd_config"))
        legacy.end_watchdog(d, grace_s)
    agent.stop_machine(str(d / "root" / ".fleet"), d.name, unit=isolation.unit_for(d),
                       roots=[sshd] if sshd else [], grace_s=grace_s)
    if sshd:   # reap our own child so it does not linger as a zombie
        try:
            os.waitpid(sshd[0], os.WNOHANG)
        except ChildProcessError:
            pass


def _runs_config(pid: int, config: Path) -> bool:
    """The pid is an sshd started with this machine's sshd_config (its command line says so). sshd's
    listener retitles itself into one string ("sshd: /usr/sbin/sshd -D -e -f <config> [listener] …"),
    so the words inside each argument count too."""
    try:   # an sshd by its binary too: any process of the login's can name the config (`tail -f …`)
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if not os.path.basename(os.readlink(f"/proc/{pid}/exe")).startswith("sshd"):
            return False
    except OSError:
        return False
    wanted = str(config).encode()
    return any(wanted == a or wanted in a.split() for a in argv)
