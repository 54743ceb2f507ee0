"""Real OpenSSH sshd processes on loopback, one per machine, each under its own directory.

Used by the local provider, and by the AWS sandbox and tests to stand in for remote hosts.
A machine directory holds: sshd_config, ssh_host_ed25519_key(.pub), authorized_keys, sshd.pid,
sshd.log and root/ (the machine's working directory).
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

from ...errors import EnvironmentProblem, InfrastructureError
from ...keys import generate_ed25519

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


def _config_text(d: Path, port: int, machine_id: str, user: str, root: Path, listen: str = "127.0.0.1") -> str:
    """sshd_config of one machine (also rendered for Slurm nodes, which listen on their own address)."""
    return "\n".join([
        f"Port {port}",
        f"ListenAddress {listen}",
        f"HostKey {d / 'ssh_host_ed25519_key'}",
        f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {d / 'authorized_keys'}",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "StrictModes no",
        "PermitRootLogin prohibit-password",
        f"AllowUsers {user}",
        # Every session carries the machine's id so the watchdog can find (and end) its processes.
        # HOME is the machine's own root, as on a fresh machine: otherwise every session runs the
        # controller user's ~/.bashrc (Debian's bash sources it for ssh commands), which can hang
        # (a pyenv rehash lock left by a session the watchdog killed stalled every later session).
        f"SetEnv FLEET_MACHINE_ID={machine_id} FLEET_MACHINE_ROOT={root} HOME={root}",
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
               attempts: int = 5) -> SshdMachine:
    """Start sshd for one machine, detached from the caller (it must outlive a killed controller)."""
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
    os.chmod(auth, 0o600)
    user = getpass.getuser()
    last_error = ""
    for _ in range(attempts):
        port = free_port()
        (d / "sshd_config").write_text(_config_text(d, port, machine_id, user, root))
        log = open(d / "sshd.log", "ab")
        proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log,
                                stdin=subprocess.DEVNULL, start_new_session=True, close_fds=True)
        log.close()
        # Recorded at once, not once it listens: a watchdog started first reads it at expiry.
        (d / "sshd.pid").write_text(str(proc.pid))
        if _wait_listening(port, proc):
            return SshdMachine(d, port, proc.pid, host_key, root, user)
        last_error = (d / "sshd.log").read_text(errors="replace").strip().splitlines()[-1:] or ["exited"]
        last_error = last_error[0]
        _reap(proc)
    raise InfrastructureError(f"sshd for machine {machine_id} would not start: {last_error}",
                              hint="no free port on 127.0.0.1?" if "Address" in last_error else None)


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def _reap(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def start_watchdog(directory: Path, machine_id: str, *, ttl_s: float, max_s: float, kill_pids: list[int],
                   python: str | None = None, telemetry_interval: float = 0,
                   kill_pid_files: list[Path] = ()) -> int:
    """The machine's dead-man switch, started detached (own session) so SIGKILL of the controller
    leaves it running; it ends the machine at its deadline unless a heartbeat extends it."""
    from ...remote.agent import AGENT_PATH
    state = Path(directory) / "root" / ".fleet"
    state.mkdir(parents=True, exist_ok=True)
    agent = state / "agent.py"
    shutil.copyfile(AGENT_PATH, agent)
    companion = AGENT_PATH.with_name("telemetry.py")
    if companion.exists():
        shutil.copyfile(companion, state / "telemetry.py")
    argv = [python or sys.executable, str(agent), "watchdog", "--state-dir", str(state),
            "--machine-id", machine_id, "--ttl", str(ttl_s), "--max", str(max_s),
            "--telemetry-interval", str(telemetry_interval)]
    for pid in kill_pids:
        argv += ["--kill-pid", str(pid)]
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
        raise InfrastructureError(f"watchdog for machine {machine_id} did not start (see {state / 'watchdog.log'})")
    return proc.pid


def pid_alive(pid: int) -> bool:
    from ...remote.agent.agent import alive
    return alive(pid)


def stop_machine_dir(directory: Path, grace_s: float = 2.0) -> None:
    """End a machine from the outside: release its watchdog (which kills its processes), then make sure."""
    d = Path(directory)
    state = d / "root" / ".fleet"
    pids = []
    for name in (state / "watchdog.pid", d / "sshd.pid"):
        try:
            pids.append(int(name.read_text().strip()))
        except (OSError, ValueError):
            pass
    if state.exists():
        try:
            (state / "release").write_text(str(time.time()))
        except OSError:
            pass   # disk full: the kill below ends the machine without the watchdog's help
    deadline = time.monotonic() + grace_s + 3
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:   # reap our own children so they do not linger as zombies
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
    # The watchdog may be dead (killed by hand, machine crashed): finish its job from here.
    from ...remote.agent import agent
    leftovers = [p for p in agent.machine_pids(d.name, pids) if pid_alive(p)]
    if leftovers:
        agent.kill_all(leftovers, grace_s=0.5)
