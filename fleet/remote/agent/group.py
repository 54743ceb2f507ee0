"""`agent group`: one agent process runs all of a machine's per-GPU processes (stdlib only; shipped
beside agent.py, or embedded in it: agent_source()).

With `per_gpu` on an 8-GPU machine, one `agent exec` per process meant eight Python starts on the
machine and eight channels to read; this one starts them all, each in its own process group with
its pid file (so `agent signal` stops each one as before), and relays their output on its own
stdout as framed lines the controller splits again:

    <index> o <line>     a line the process printed on stdout
    <index> e <line>     ... on stderr
    <index> O|E <piece>  the start of a longer line, continued by the next o|e (or O|E) record of it
    <index> x <code>     the process ended with <code> (128+N: killed by signal N), its output all sent

A line has no newline in it, so the framing is unambiguous whatever the process prints.
"""
from __future__ import annotations

import os
import signal
import sys
import time

LINGER_S = 0.5      # a daemon left behind may hold a process's output open: wait this long after it exits
MAX_LINE = 65536    # a longer run of bytes without a newline is relayed in pieces, joined again at home
STOP_MARK = ".stop"   # beside a process's pid file: `agent signal` was asked to stop its group


# A stop signals a process's whole group, and the group can outlive its leader: `python train.py;
# echo done` runs under `sh -c`, which dies at the SIGTERM at once while the training under it is
# still saving its checkpoint. Ended with its leader, the process let the run collect and release
# under that save, so the grace was never given. After a stop, a process ends with its group (the
# controller's SIGKILL after the grace ends what is left); without one, with its leader as before
# (whatever it left running ends with the machine).
def clear_stop(pidfile):
    try:
        os.unlink(pidfile + STOP_MARK)
    except OSError:
        pass


def mark_stop(pidfile):
    try:
        os.close(os.open(pidfile + STOP_MARK, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    except OSError:
        pass


def adopt_orphans():
    """Be the subreaper of what the commands leave: a member of a group whose leader died is then
    this process's child, and reaped here (group_outlives_stop), where it would stay a zombie under
    an init that does not reap (a container's), its group never seen empty."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def reap_orphans(leaders, block=False):
    """Reap the children that ended and are no command's leader (a leader's end is its Popen's to
    read): as subreaper this process inherits all a command orphans (`os.system("upload.sh &")`
    now and then), and each would stay a zombie under it for the whole run. With `block`, until a
    leader ends."""
    flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, flags)
        except (OSError, AttributeError):   # no children (or no waitid on this system)
            return
        if info is None or info.si_pid in leaders:
            return
        try:
            os.waitpid(info.si_pid, 0)
        except ChildProcessError:
            return


def wait_reaping(child):
    """child.wait(), reaping meanwhile what its command orphans (reap_orphans)."""
    reap_orphans({child.pid}, block=True)
    return child.wait()


def group_outlives_stop(pidfile, pgid):
    """A stop was asked for this process, and a member of its group is still running. Call only
    once its leader has been waited for."""
    if not pidfile or not os.path.lexists(pidfile + STOP_MARK):
        return False
    try:
        while os.waitid(os.P_PGID, pgid, os.WEXITED | os.WNOHANG) is not None:
            pass
    except (ChildProcessError, AttributeError):   # none of them ours (or no waitid on this system)
        pass
    try:
        os.killpg(pgid, 0)
    except OSError:   # empty (or, the pid reused, a group that is not ours)
        return False
    return True


def run(procs, record_pid):
    """Start every process of `procs` ([{"argv", "env", "pidfile"}]); relay until all have ended."""
    import subprocess   # here, not at the top: agent.py imports this module for every call (extend too)
    children = []
    signals = _Signals(children)
    adopt_orphans()
    try:
        for p in procs:
            clear_stop(p["pidfile"])
            env = dict(os.environ)
            env.update({str(k): str(v) for k, v in p["env"].items()})
            child = subprocess.Popen([str(a) for a in p["argv"]], start_new_session=True, env=env,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            children.append(child)
            record_pid(p["pidfile"], child.pid)
            signals.deliver()      # one that came while the ranks were starting reaches this one too
    except OSError as exc:
        # All ranks or none: those already started would run on unrelayed, holding their GPUs.
        for child in children:
            kill_group(child, signal.SIGKILL)
            child.wait()
        print(f"fleet-agent: group: could not start rank {len(children) - 1 if children else 0}: {exc}",
              file=sys.stderr)
        return 125
    return _Relay(children, signals, [p["pidfile"] for p in procs]).loop()


class _Signals:
    """SIGTERM, SIGINT and SIGHUP to this agent go to every rank's process group. Caught from before
    the first rank starts (a stop in that moment is not lost), forwarded by the main loop, never from
    the handler: each rank gets each signal once, however the handler interleaves with a start."""

    def __init__(self, children):
        self.children, self.caught, self.sent = children, [], {}
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda sig, _frame: self.caught.append(sig))

    def deliver(self):
        caught = len(self.caught)      # the handler may add one meanwhile: it is the next call's
        for i, child in enumerate(self.children):
            for sig in self.caught[self.sent.get(i, 0):caught]:
                if child.poll() is None:   # an ended rank's pid may name someone else's group by now
                    kill_group(child, sig)
            self.sent[i] = caught


def kill_group(child, sig):
    try:
        os.killpg(child.pid, sig)
    except OSError:
        pass


class _Relay:
    def __init__(self, children, signals, pidfiles):
        import selectors
        self.children, self.signals, self.pidfiles = children, signals, pidfiles
        self.out = sys.stdout.buffer
        self.broken = False
        self.selector = selectors.DefaultSelector()
        self.partial = {}
        self.open_pipes = {i: 2 for i in range(len(children))}
        for i, child in enumerate(children):
            for tag, pipe in ((b"o", child.stdout), (b"e", child.stderr)):
                self.selector.register(pipe, selectors.EVENT_READ, (i, tag))
                self.partial[(i, tag)] = b""

    def loop(self):
        ended, reported = {}, set()
        while len(reported) < len(self.children):
            self.signals.deliver()
            reap_orphans({child.pid for child in self.children if child.returncode is None})
            records = []
            for key, _ in self.selector.select(0.1):
                i, tag = key.data
                data = os.read(key.fd, 65536)
                if data:
                    records += self._lines(i, tag, data)
                else:
                    records += self._close(key.fileobj, i, tag)
            now = time.monotonic()
            for i, child in enumerate(self.children):
                if i in reported:
                    continue
                if i not in ended and child.poll() is not None:
                    ended[i] = now
                if i in ended and (not self.open_pipes[i] or now - ended[i] > LINGER_S) \
                        and not group_outlives_stop(self.pidfiles[i], child.pid):
                    for tag, pipe in ((b"o", child.stdout), (b"e", child.stderr)):
                        records += self._drain(pipe, i, tag) + self._close(pipe, i, tag)
                    code = child.returncode
                    records.append(b"%d x %d\n" % (i, code if code >= 0 else 128 - code))
                    reported.add(i)
            self._send(records)
        return 0

    def _lines(self, i, tag, data):
        *lines, rest = (self.partial[(i, tag)] + data).split(b"\n")
        records = [b"%d %s %s\n" % (i, tag, line) for line in lines]
        if len(rest) > MAX_LINE:   # a piece of a line still going on: the controller joins it to the rest
            records.append(b"%d %s %s\n" % (i, tag.upper(), rest))
            rest = b""
        self.partial[(i, tag)] = rest
        return records

    def _drain(self, pipe, i, tag):
        """What is in the pipe already: the last lines of a group that ended since the last read
        (a stopped training's `checkpoint saved`). Bounded: a daemon writing on must not hold it."""
        if pipe.closed:
            return []
        os.set_blocking(pipe.fileno(), False)
        records = []
        for _ in range(16):
            try:
                data = os.read(pipe.fileno(), 65536)
            except BlockingIOError:
                break
            if not data:
                break
            records += self._lines(i, tag, data)
        return records

    def _close(self, pipe, i, tag):
        if pipe.closed:
            return []
        self.selector.unregister(pipe)
        pipe.close()
        self.open_pipes[i] -= 1
        rest, self.partial[(i, tag)] = self.partial[(i, tag)], b""
        return [b"%d %s %s\n" % (i, tag, rest)] if rest else []

    def _send(self, records):
        if not records or self.broken:
            return
        try:
            self.out.write(b"".join(records))
            self.out.flush()
        except OSError:
            # The controller is gone: the processes' output ends as it did when they wrote to the
            # channel themselves (EPIPE on their next write); the watchdog still holds the deadline.
            self.broken = True
            for key in list(self.selector.get_map().values()):
                self.selector.unregister(key.fileobj)
                key.fileobj.close()
                self.open_pipes[key.data[0]] -= 1
