"""One Slurm node made into a fleet machine. Runs ON the compute node as a job step; standard library only.

fleet sends this file's source and a JSON spec on the step's stdin (nothing of fleet is installed on the
node). Inside the step, so that Slurm's process tracking owns everything it starts, it makes the machine
directory (mkdtemp, 0700, in a workdir only root and this user may change), starts the agent's watchdog
and a user-level sshd, links data/ to a shared staging directory when it sees the controller's probe
there, and prints `FLEET-NODE-READY {json}`. It ends the machine on Slurm's SIGTERM (within KillWait,
read from `scontrol show config`), on the controller's `FLEET-NODE-RELEASE <token>` line (released
alone), or at the watchdog's deadline (then it gives its node back, and the job's last machine cancels
the job). SIGUSR1/2 (`scancel -s USR1`) never end it. It reaps and kills what is still below it at
exit (lifecycle: docs/slurm.md, "How a lease works")."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

READY = "FLEET-NODE-READY"
NODE_USER = "FLEET_NODE_USER"       # placeholder in the controller's sshd_config: this node's own user
NODE_DIR = "@FLEET_NODE_DIR@"       # ... and the machine directory this step made
SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/sbin/sshd")
RELEASE = "FLEET-NODE-RELEASE"      # the controller's request on stdin: "<RELEASE> <this machine's token>"
WATCHDOG_END_S = 10    # how long the watchdog may take to end the machine before it is killed
KILL_WAIT_S = 10       # Slurm's KillWait (SIGTERM to SIGKILL) assumed while the cluster has not said: short
USER_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)     # a user's `scancel -s USR1 JOB`: never ends a machine

if __package__:     # imported within fleet; on the node, steps.py sends these modules' text ahead of this one
    from ...remote.mounts import detach_mounts_under
    from .node_job import _kill_wait, _leave_job


def _write(path, text, mode=0o600):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _stat(pid):
    """/proc/PID/stat after the command name: [1] parent, [19] start time (with the pid: one process)."""
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[-1].split()


def _parent(pid):
    try:
        return int(_stat(pid)[1])
    except (OSError, ValueError, IndexError):
        return None


def _sshd():
    for candidate in (shutil.which("sshd"), *SSHD_CANDIDATES):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("fleet node: no OpenSSH server (sshd) on this node; install openssh-server")


def _user():
    import pwd
    return pwd.getpwuid(os.getuid()).pw_name


def _free_port(address):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        return sock.getsockname()[1]


def _listening(address, port, proc, timeout=20.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False


def _start_sshd(spec, d):
    sshd = _sshd()
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)     # privilege separation directory
    last = "exited"
    for _ in range(5):
        port = _free_port(spec["listen"])
        config = spec["sshd_config"].replace("Port 0\n", f"Port {port}\n", 1).replace(NODE_USER, _user())
        config = "\n".join(x.replace(NODE_DIR, d.replace("%", "%%") if x.startswith("AuthorizedKeysFile") else d)
                           for x in config.split("\n"))     # %-tokens: sshd expands them in that one only
        _write(os.path.join(d, "sshd_config"), config)
        with open(os.path.join(d, "sshd.log"), "ab") as log:
            proc = subprocess.Popen([sshd, "-D", "-e", "-f", os.path.join(d, "sshd_config")], stdout=log,
                                    stderr=log, stdin=subprocess.DEVNULL, close_fds=True,
                                    preexec_fn=_ignore_user_signals)
        # The watchdog reads it at expiry and signals it only if pid and start time still match.
        _write(os.path.join(d, "sshd.pid"), f"{proc.pid} {_stat(proc.pid)[19]}")
        if _listening(spec["listen"], port, proc):
            return proc, port
        with open(os.path.join(d, "sshd.log"), errors="replace") as fh:
            last = (fh.read().strip().splitlines() or ["exited"])[-1]
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    raise SystemExit(f"fleet node: sshd would not start: {last}")


def _machine_dir(spec):
    """A new directory (mkdtemp: never a path that exists), 0700, in the workdir's resolved path,
    which only root and this user may change (_workdir_is_ours)."""
    import tempfile
    workdir = spec["workdir"]
    try:
        os.makedirs(workdir, mode=0o700, exist_ok=True)
        real = os.path.realpath(workdir)     # no link someone could re-point later
        _workdir_is_ours(workdir, real)
        return tempfile.mkdtemp(prefix=f"fleet-{spec['machine_id']}-", dir=real)
    except OSError as exc:
        raise SystemExit(f"fleet node: cannot make the machine directory under {workdir}: "
                         f"{exc.strerror or exc}") from None


def _workdir_is_ours(workdir, real):
    """Each directory from / down is root's or this user's, world-writable only with the sticky bit:
    else another user could swap in a directory whose authorized_keys sshd (StrictModes no) reads."""
    import stat
    path = real
    while True:
        st = os.stat(path)
        if st.st_uid not in (0, os.geteuid()):
            why = f"{path} belongs to uid {st.st_uid}"
        elif st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
            why = f"{path} is writable by every user (mode {stat.S_IMODE(st.st_mode):04o}, no sticky bit)"
        else:
            why = None
        if why:
            raise SystemExit(f"fleet node: [slurm] workdir {workdir} is not safe for machine directories: {why}, "
                             "so another user could swap a machine's keys there")
        if path == os.path.dirname(path):
            return
        path = os.path.dirname(path)


def _start_watchdog(spec, d, state):
    agent = os.path.join(state, "agent.py")
    _write(agent, spec["agent"], 0o700)
    if spec.get("telemetry"):
        _write(os.path.join(state, "telemetry.py"), spec["telemetry"], 0o600)
    # -S: the agent is stdlib only, and site's .pth files delayed the watchdog (so ready) per step.
    argv = [sys.executable, "-S", agent, "watchdog", "--state-dir", state, "--machine-id", spec["machine_id"],
            "--ttl", str(spec["ttl"]), "--max", str(spec["max"]),
            "--telemetry-interval", str(spec.get("telemetry_interval") or 0),
            "--kill-pid-file", os.path.join(d, "sshd.pid"),
            "--isolation", "pids"]     # a fleet cgroup would take them out of Slurm's (proctrack/cgroup)
    with open(os.path.join(state, "watchdog.log"), "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL, close_fds=True,
                                preexec_fn=_ignore_user_signals)


def _ignore_user_signals():
    """Ignored, not handled, so it stays so across exec (the agent's `exec` gives the experiment the default)."""
    for sig in USER_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)


def _await_release(token, released):
    """A line with this machine's token on stdin (steps.py request_release); EOF (a killed controller) is not."""
    for line in sys.stdin:
        if token and line.strip() == f"{RELEASE} {token}":
            released.set()
            return


def _await_watchdog(proc, state):
    """The watchdog holds the deadline once its pid file is there; nothing is reported ready before."""
    end = time.monotonic() + 20
    while not os.path.exists(os.path.join(state, "watchdog.pid")):
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit("fleet node: the watchdog did not start")
        time.sleep(0.01)


def _shared_staging(spec, root):
    """The controller's probe is here with its token (this node shares the staging directory): root/data
    ($FLEET_DATA) is then a link into it."""
    shared = spec.get("shared")
    if not shared:
        return False
    # The lease's own directory only (the login node made it, 0700): the token proves the share, not
    # who made what this node sees there. In a node-local /tmp another user who learnt it could plant
    # the directory first, and this machine would then run the code and read the data they put there.
    try:
        import stat
        st = os.lstat(shared["dir"])
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            return False
        fd = os.open(os.path.join(shared["dir"], shared["probe"]), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd) as fh:
            probe = os.fstat(fd)
            if not stat.S_ISREG(probe.st_mode) or probe.st_uid != os.geteuid() or fh.read(256).strip() != shared["token"]:
                return False
    except (OSError, UnicodeDecodeError):
        return False
    data = os.path.join(shared["dir"], "data")
    os.makedirs(data, mode=0o700, exist_ok=True)
    link = os.path.join(root, "data")
    if not os.path.islink(link):
        os.symlink(data, link)
    return True


def _remove_machine_dir(d):
    """Delete the machine's directory, after detaching what a run as root mounted in it: rmtree went
    through a bound host directory and deleted that directory's files. One that stays mounted leaves
    the directory in place (its secrets are gone already), never walked into."""
    if detach_mounts_under(d):
        sys.stderr.write(f"node: {d} left in place: a mount in it could not be detached\n")
        return
    _rmtree(d)


def _remove_tree(path):
    """rmtree that also removes read-only staged data, never through a link (at the top, or inside:
    os.walk lists links to directories among them, and chmod would follow one), nor through a mount
    a run left in it (detached first; one that stays leaves the tree)."""
    if os.path.islink(path) or detach_mounts_under(path):
        return
    todo = [path]      # not os.walk: before Python 3.12 it recurses once per level, as rmtree does
    while todo:
        try:
            with os.scandir(todo.pop()) as entries:
                below = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue
        for sub in below:
            try:
                os.chmod(sub, 0o700)
            except OSError:
                pass
        todo += below
    _rmtree(path)


def _rmtree(path):
    """shutil.rmtree, or `rm -rf` for a tree deeper than Python's stack: rmtree recurses once per level,
    and on a run's tree 1,000 levels deep its RecursionError would end this step with the tree left."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except RecursionError:
        subprocess.run(["rm", "-rf", "--", path], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)


def _expired_by_deadline(state):
    try:
        with open(os.path.join(state, "expired")) as fh:
            return json.load(fh).get("reason") == "deadline"
    except (OSError, ValueError):
        return False


def _kill_below():
    """SIGKILL every process below this step (a watchdog killed at its time left the machine's running),
    through a pidfd opened before the parent is checked again: a pid reused meanwhile is never signalled."""
    for _ in range(3):
        parents, ours, grew = {int(n): _parent(n) for n in os.listdir("/proc") if n.isdigit()}, {os.getpid()}, 1
        while grew:
            below = {pid for pid, parent in parents.items() if parent in ours} - ours
            ours, grew = ours | below, bool(below)
        for pid in ours - {os.getpid()}:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue
            try:
                _parent(pid) in ours and signal.pidfd_send_signal(fd, signal.SIGKILL)
            except OSError:
                pass   # gone meanwhile
            finally:
                os.close(fd)
        if ours == {os.getpid()}:
            return


def _end(procs, until):
    """SIGTERM those running; SIGKILL those left at until() (read again: a SIGTERM brings it forward)."""
    for proc in [p for p in procs if p.poll() is None]:
        proc.terminate()
    while time.monotonic() < until() and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    for proc in [p for p in procs if p.poll() is None]:
        proc.kill()


def main():
    spec = json.loads(sys.stdin.readline())
    d = _machine_dir(spec)
    root = os.path.join(d, "root")
    state = os.path.join(root, ".fleet")
    children = []
    ending = []
    sees_share = []     # this node proved the staging directory is the lease's (its token was there)
    released = threading.Event()
    kill_wait = []      # Slurm's KillWait, learnt once the machine's processes are started
    terminated = []     # when Slurm's SIGTERM came (monotonic): its SIGKILL follows KillWait later

    def kill_at():
        return terminated[0] + (kill_wait[0] if kill_wait else KILL_WAIT_S) if terminated else 1e18

    def end_machine():
        for name in ("ssh_host_ed25519_key", "authorized_keys"):
            try:
                os.unlink(os.path.join(d, name))
            except OSError:
                pass    # the secrets first: Slurm's SIGKILL can come before the children have ended
        # The watchdog alone first, with time to finish (a loaded one still scanning when sshd went lost
        # the sessions' processes); the directory goes before sshd, all before Slurm's SIGKILL.
        began = time.monotonic()
        _end(children[:1], lambda: min(began + WATCHDOG_END_S, max(kill_at() - 3, began + 1)))
        _remove_machine_dir(d)     # the host key must not outlive the machine
        after = time.monotonic()
        _end(children[1:], lambda: min(after + 3, max(kill_at() - 1, after + 0.5)))
        _kill_below()
        _remove_machine_dir(d)     # again: a session may have written (or mounted) there meanwhile
        kw = f"{kill_wait[0]}s" if kill_wait else f"{KILL_WAIT_S}s assumed"
        sys.stderr.write(f"node: machine ended in {time.monotonic() - began:.1f}s (KillWait {kw})\n")

    def cleanup(signum=None, _frame=None):
        if signum is not None and not terminated:
            terminated.append(time.monotonic())
        if ending:
            return     # this handler interrupted the machine's end: that call finishes it, and exits
        ending.append(True)
        end_machine()
        # Slurm's SIGTERM ends the job everywhere: its staged inputs (the lease's share) go; alone, not.
        if sees_share and terminated:
            _remove_tree(spec["shared"]["dir"])
        os._exit(0)

    signal.signal(signal.SIGTERM, cleanup)
    # The machine's orphans (a session whose sshd ended first) are re-parented to this step, not to
    # init, where proctrack/linuxproc and _kill_below would lose them.
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    for sig in USER_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)     # never "released": see the top
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    os.makedirs(state, mode=0o700)
    _write(os.path.join(d, "ssh_host_ed25519_key"), spec["host_key"])
    _write(os.path.join(d, "authorized_keys"), spec["authorized_key"].strip() + "\n")
    shared = _shared_staging(spec, root)
    if shared:
        sees_share.append(True)
    watchdog = _start_watchdog(spec, d, state)
    children.append(watchdog)
    sshd, port = _start_sshd(spec, d)          # while the watchdog's Python starts
    children.append(sshd)
    # Only now: no thread may run while a child is started with preexec_fn (it can deadlock).
    threading.Thread(target=_kill_wait, args=(kill_wait,), daemon=True).start()
    _await_watchdog(watchdog, state)
    ready = {"port": port, "node": os.environ.get("SLURMD_NODENAME", socket.gethostname()),
             "gpus": os.environ.get("CUDA_VISIBLE_DEVICES", ""), "workdir": root,
             "python": sys.executable, "user": _user(), "shared": shared}
    sys.stdout.write(f"{READY} {json.dumps(ready)}\n")
    sys.stdout.flush()
    threading.Thread(target=_await_release, args=(spec.get("release_token"), released), daemon=True).start()
    while all(p.poll() is None for p in children) and not released.is_set():
        released.wait(0.5)
    if released.is_set() or not (_expired_by_deadline(state) and os.environ.get("SLURM_JOB_ID")):
        cleanup()                  # released, or its sshd or watchdog ended: this machine alone
    # Its deadline: the machine ends, then its node leaves the job; a SIGTERM is no longer this step's
    # to act on, and only the node that cancels the job (the last) removes the staging directory.
    signal.signal(signal.SIGTERM, lambda *_: terminated or terminated.append(time.monotonic()))
    ending.append(True)
    end_machine()
    if _leave_job(os.environ["SLURM_JOB_ID"], ready["node"], released) and sees_share:
        _remove_tree(spec["shared"]["dir"])
    os._exit(0)


if __name__ == "__main__":
    main()
