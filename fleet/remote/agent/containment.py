"""Which processes are one machine's, and ending all of them without touching anyone else's.

Standard library only: copied next to agent.py onto every machine (fleet.isolation wraps it for
the controller). Two levels, best first:
  cgroup  <cgroup2 mount>/fleet/<namespace>/<machine-id>: leaf work/ holds the machine's processes (a
          local machine's sshd and so every session; on a team host every `agent exec`), leaf agent/
          its watchdog, which ends work/ from outside. Ending = cgroup.kill (freeze + SIGKILL each
          member before 5.14) until cgroup.events says `populated 0`. Double forks, setsid and
          stripped environments stay inside; a foreign process is never a member.
  pids    no writable cgroup v2 (a team host without root): only processes proven the machine's are
          signalled: a "PID STARTTIME" record (field 22 of /proc/PID/stat) whose start time still
          matches, its descendants, and processes tagged FLEET_MACHINE_ID, each held as a pidfd and
          re-checked before it is signalled (no reuse).
"""
import errno
import os
import signal
import stat
import time

CGROUP = "cgroup"
PIDS = "pids"
BASE = "fleet"
LEAVES = ("agent", "work")
_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def safe_name(name):
    """[A-Za-z0-9][A-Za-z0-9._-]{0,127} and nothing else (no separator, "..", line break). Not a
    regex: importing `re` was a fifth of each agent call's start."""
    return isinstance(name, str) and 0 < len(name) <= 128 and name[0] not in "._-" and set(name) <= _NAME_CHARS


# -- cgroup v2 ------------------------------------------------------------------------------------

def cgroup2_mount(mountinfo="/proc/self/mountinfo"):
    """Where the unified (v2) hierarchy is mounted (/sys/fs/cgroup, or …/unified when hybrid), or None."""
    try:
        with open(mountinfo) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return None
    for line in lines:
        left, _, right = line.partition(" - ")
        if right.split()[:1] == ["cgroup2"]:
            point = left.split()[4]
            if "\\" not in point:    # escaped characters are rare: `re` stays off the agent's start
                return point
            import re
            return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), point)
    return None


def unit_path(ns, machine_id, mount=None):
    mount = mount or cgroup2_mount()
    if not mount or not safe_name(machine_id) or not safe_name(ns):
        return None
    return os.path.join(mount, BASE, ns, machine_id)


def is_unit(path, machine_id=None, mount=None):
    """True for a fleet machine unit (<cgroup2 mount>/fleet/<ns>/<id>) only: isolation.json is the
    login's to write, and any directory named …/fleet/<ns>/<id> had its cgroup.procs pids killed."""
    mount = mount or cgroup2_mount()
    if not mount:
        return False
    path = os.path.normpath(str(path))
    ns, name = os.path.basename(os.path.dirname(path)), os.path.basename(path)
    return (os.path.dirname(os.path.dirname(path)) == os.path.join(os.path.normpath(mount), BASE)
            and safe_name(ns) and safe_name(name)
            and (machine_id is None or name == machine_id))


def _write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def _read(path, only=None):
    try:
        with open(path) as fh:
            return fh.read()
    except OSError as exc:
        return _nothing(exc, "", only)


def _nothing(exc, value=None, only=None):
    """A failed read of /proc, a cgroup or a state file is "nothing there" (given `only`: those errnos alone);
    out of descriptors (EMFILE, ENFILE) is no answer and raises: read as "gone", a release skipped live processes."""
    if exc.errno in (errno.EMFILE, errno.ENFILE) or only and exc.errno not in only:
        raise exc
    return value


def create_unit(path):
    """Make the unit and its leaves; raises OSError when this process may not (then: pids)."""
    for attempt in range(20):
        try:
            for leaf in LEAVES:
                os.makedirs(os.path.join(path, leaf), exist_ok=True)
            break
        except FileNotFoundError:
            # Another machine's watchdog removed the (then empty) namespace between our makedirs: again.
            if attempt == 19:
                raise
    work = os.path.join(path, "work")
    if not os.access(os.path.join(work, "cgroup.procs"), os.W_OK):
        raise PermissionError(errno.EACCES, "cgroup.procs not writable", work)
    if not (os.path.exists(os.path.join(work, "cgroup.kill")) or os.path.exists(os.path.join(work, "cgroup.freeze"))):
        raise OSError(errno.ENOTSUP, "neither cgroup.kill nor cgroup.freeze", work)
    return path


def join(leaf, pid=0):
    """Move a process (default: this one) into a leaf; its children are born there."""
    _write(os.path.join(leaf, "cgroup.procs"), str(pid or os.getpid()))


def own_cgroup(mount=None):
    """This process's cgroup directory in the v2 hierarchy."""
    mount = mount or cgroup2_mount()
    for line in _read("/proc/self/cgroup").splitlines():
        if line.startswith("0::"):
            return os.path.join(mount, line[3:].lstrip("/")) if mount else None
    return None


def members(path):
    """Pids in a cgroup and every cgroup below it. A listing or read that fails raises (os.walk's default
    skips it: a kill then left that cgroup's processes running) unless the cgroup is gone, so was empty."""
    pids, gone = [], (errno.ENOENT, errno.ENODEV)
    for top, _dirs, files in os.walk(path, onerror=lambda exc: _nothing(exc, only=gone)):
        if "cgroup.procs" in files:
            pids += [int(p) for p in _read(os.path.join(top, "cgroup.procs"), gone).split() if p.isdigit()]
    return pids


def populated(path):
    """Whether any process is left in the cgroup or below it (False once it is gone)."""
    for line in _read(os.path.join(path, "cgroup.events")).splitlines():
        if line.startswith("populated "):
            return line.split()[1] != "0"
    return False


def kill_unit(path, timeout=60.0):
    """SIGKILL every process in the cgroup tree and wait until it is empty. True once it is."""
    end = time.monotonic() + timeout
    next_kill = 0.0
    while os.path.isdir(path) and populated(path):
        if time.monotonic() >= end:
            return False
        if time.monotonic() >= next_kill:   # again now and then: a member may be in a fork
            try:
                if os.path.exists(os.path.join(path, "cgroup.kill")):
                    _write(os.path.join(path, "cgroup.kill"), "1")
                else:
                    _freeze_and_kill(path)
            except FileNotFoundError:
                return True
            next_kill = time.monotonic() + 1.0
        time.sleep(0.02)
    return True


def _freeze_and_kill(path):
    """Kernels before 5.14: freeze (no member can fork), SIGKILL each member, thaw so they die."""
    try:
        _write(os.path.join(path, "cgroup.freeze"), "1")
        end = time.monotonic() + 5
        while "frozen 1" not in _read(os.path.join(path, "cgroup.events")) and time.monotonic() < end:
            time.sleep(0.01)
        for pid in members(path):   # members of a frozen cgroup: none can exit and be reused now
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    finally:
        try:
            _write(os.path.join(path, "cgroup.freeze"), "0")
        except OSError:
            pass


def remove_unit(path):
    """rmdir the (empty) unit, its leaves and, when empty, the namespace and base above it."""
    if not is_unit(path):
        return False
    for top, dirs, _files in sorted(os.walk(path), key=lambda w: -w[0].count(os.sep)):
        try:
            os.rmdir(top)
        except FileNotFoundError:
            pass
        except OSError:
            return False
    parent = os.path.dirname(path)
    for d in (parent, os.path.dirname(parent)):
        try:
            os.rmdir(d)   # fails while another machine lives there: that is fine
        except OSError:
            break
    return True


def leave(path, fallback=None):
    """Move this process out of a unit (to `fallback` or the hierarchy's root) so it can be removed."""
    for target in (fallback, cgroup2_mount()):
        if target and os.path.isdir(target):
            try:
                join(target)
                return True
            except OSError:
                continue
    return False


# -- processes verified by start time ---------------------------------------------------------------

def _stat(pid):
    """(state, ppid, start time in clock ticks since boot) from /proc/PID/stat, or None."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[1]), int(fields[19])
    except OSError as exc:
        return _nothing(exc, None)
    except (IndexError, ValueError):
        return None


def start_time(pid):
    return None if (st := _stat(pid)) is None else st[2]


def pid_record(pid):
    """"PID STARTTIME" for a live process, or None."""
    return None if (start := start_time(pid)) is None else f"{pid} {start}"


def write_pid_file(path, pid):
    if (record := pid_record(pid)) is None:
        raise ProcessLookupError(errno.ESRCH, f"process {pid} is gone", str(path))
    tmp, fh = _new_file(path)
    with fh:
        fh.write(record + "\n")
    os.replace(tmp, path)


def _new_file(path):
    """A temporary file beside `path` at a name nobody could plant a link at first: root's watchdog
    writes in the login's state directory (AWS), and a link at a predictable name (path.tmpPID)
    had root write through it into any file."""
    tmp = "%s.tmp%d.%s" % (path, os.getpid(), os.urandom(6).hex())
    return tmp, os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o666), "w")


def parse_record(text):
    """(pid, start) from "PID STARTTIME" (or "PID:STARTTIME"); None for anything else, including a
    bare pid: a pid nobody can prove is still the same process is never signalled."""
    parts = str(text).replace(":", " ").split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) <= 1:
        return None
    return int(parts[0]), int(parts[1])


def read_pid_file(path):
    return parse_record(read_small(path, strict=True).strip())


def same_process(pid, start):
    """The process recorded as (pid, start) is still alive (a zombie counts as gone)."""
    return (st := _stat(pid)) is not None and st[2] == start and st[0] not in ("Z", "X")


class Verified:
    """A process proven to be the one recorded, held by pidfd where the kernel offers one."""

    def __init__(self, pid, start, fd):
        self.pid, self.start, self.fd = pid, start, fd

    def signal(self, sig):
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            elif same_process(self.pid, self.start):   # no pidfds: check, then signal
                os.kill(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def alive(self):
        return same_process(self.pid, self.start)

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def verify(pid, start):
    """A Verified for (pid, start) if that very process still runs, else None."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if not same_process(pid, start):   # checked after the pidfd is held: it names this process
        if fd is not None:
            os.close(fd)
        return None
    return Verified(pid, start, fd)


def tagged(machine_id, exclude=()):
    """(pid, start) of processes whose environment carries FLEET_MACHINE_ID=<machine_id>."""
    needle = f"FLEET_MACHINE_ID={machine_id}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        before = start_time(name)
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
        except OSError as exc:
            _nothing(exc, None)
            continue
        # The same start time before and after: the environment read was this process's.
        if needle in env and before is not None and start_time(name) == before:
            found.append((int(name), before))
    return found


def descendants(roots):
    """(pid, start) of every process below the given verified (pid, start) roots."""
    todo = [pid for pid, start in roots if same_process(pid, start)]
    if not todo:
        return []
    children = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(name)
            if st is not None:
                children.setdefault(st[1], []).append((int(name), st[2]))
    found = []
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child[0])
    return found


def kill_verified(records, grace_s=2.0, timeout=10.0):
    """SIGTERM, then SIGKILL, the processes recorded as (pid, start) that are still those processes."""
    procs = [p for p in (verify(pid, start) for pid, start in dict.fromkeys(records)) if p is not None]
    try:
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, timeout)):
            live = [p for p in procs if p.alive()]
            if not live:
                return True
            for p in live:
                p.signal(sig)
            end = time.monotonic() + wait
            while time.monotonic() < end and any(p.alive() for p in live):
                time.sleep(0.02)
        return not any(p.alive() for p in procs)
    finally:
        for p in procs:
            p.close()


def alive(pid):
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    return (st := _stat(pid)) is not None and st[0] != "Z"


def read_small(path, limit=4096, strict=False):
    """A state file's text ("" for none): a regular file, never through a link, never blocking. The
    login writes the state directory: a FIFO or /dev/zero link at `deadline` hung the watchdog for good."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb", buffering=0) as fh:
            return fh.read(limit).decode(errors="replace") if stat.S_ISREG(os.fstat(fd).st_mode) else ""
    except OSError as exc:   # strict: out of descriptors raises (the watchdog's deadline read stays lenient)
        return _nothing(exc, "") if strict else ""


def read_float(path, default=None):
    try:
        return float(read_small(path).strip())
    except ValueError:
        return default


def write_atomic(path, text):
    tmp, fh = _new_file(path)
    with fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
