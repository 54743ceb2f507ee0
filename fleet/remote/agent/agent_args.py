"""The agent's command line (stdlib only; shipped beside agent.py, or embedded in it: agent_source()).

`quick_args` reads the calls made once per process and per heartbeat without argparse; `parser` is
the whole grammar, for everything else (the watchdog, stop, status, release) and for anything the
quick reader does not recognise exactly. `process_argv` and the checks beside it read other
processes' command lines: how the agent knows its machine's sshd and watchdog from a pid a file names.
"""
from __future__ import annotations


def process_argv(pid):
    """A process's argv as /proc has it ([] for one that is gone): how the agent tells its own
    processes (an sshd of this machine, its watchdog) by what they were started with."""
    import os
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return [os.fsdecode(a) for a in fh.read().split(b"\0") if a]
    except OSError:
        return []


def names_a_file_beside(pid, pid_file):
    """An sshd whose command line names a file beside the pid file (`sshd -f <dir>/sshd_config`, retitled
    by sshd into one string): the login may write the file, and a forged "PID STARTTIME" had any tree
    ended. An sshd by its binary: any process of the login's can name such a file (`tail -f …/sshd.log`)."""
    import os
    here, words = os.path.dirname(os.path.abspath(pid_file)), [w for a in process_argv(pid) for w in [a, *a.split()]]
    try:
        sshd = os.path.basename(os.readlink("/proc/%d/exe" % int(pid))).startswith("sshd")
    except (OSError, ValueError):
        return False
    return sshd and any(os.path.isabs(w) and os.path.dirname(os.path.normpath(w)) == here for w in words)


def is_watchdog(pid, state):
    """The pid runs this machine's watchdog (its command line names the state directory)."""
    import os
    return "watchdog" in process_argv(pid) and os.path.abspath(state) in [os.path.abspath(a) for a in process_argv(pid)]


class _Args:
    """What argparse's Namespace would hold for the same call."""

    def __init__(self, cmd, **values):
        self.cmd = cmd
        self.__dict__.update(values)


_SIGNALS = ("TERM", "INT", "KILL", "HUP")


def quick_args(argv):
    """The calls made once per process and per heartbeat (exec, signal, extend), in exactly the form
    the controller sends them, read without argparse: its import, with re, gettext and shutil for its
    help formatter, was half of each call's ~40 ms of CPU (16 per 8-machine `fleet up`, on machines
    that may share cores). Anything else, or anything unexpected: None, and argparse reads it."""
    if not argv or argv[0] not in ("exec", "group", "signal", "extend"):
        return None
    cmd, rest, values = argv[0], list(argv[1:]), {}
    flags = {"exec": {"--pidfile", "--leaf"}, "group": {"--leaf"}, "signal": {"--pidfile", "--signal"},
             "extend": {"--state-dir", "--ttl"}}[cmd]
    while rest and rest[0] != "--":
        opt = rest.pop(0)
        if cmd == "exec" and opt == "--env-stdin" and "env_stdin" not in values:
            values["env_stdin"] = True
            continue
        key = opt[2:].replace("-", "_")
        if opt not in flags or not rest or rest[0].startswith("-"):
            return None
        if cmd == "signal" and key == "pidfile":   # one call stops all of a machine's ranks
            values.setdefault("pidfile", []).append(rest.pop(0))
            continue
        if key in values:
            return None
        values[key] = rest.pop(0)
    if cmd == "exec":
        if rest[:1] != ["--"] or not leaf_name_ok(values.get("leaf", "work")):
            return None
        return _Args(cmd, pidfile=values.get("pidfile"), env_stdin=values.get("env_stdin", False),
                     leaf=values.get("leaf", "work"), argv=rest)
    if rest:                    # words after "--": exec's only
        return None
    if cmd == "group":
        return _Args(cmd, leaf=values.get("leaf", "work")) if leaf_name_ok(values.get("leaf", "work")) else None
    if cmd == "signal":
        signal_name = values.get("signal", "TERM")
        if "pidfile" not in values or signal_name not in _SIGNALS:
            return None
        return _Args(cmd, pidfile=values["pidfile"], signal=signal_name)
    try:
        return _Args(cmd, state_dir=values["state_dir"], ttl=float(values["ttl"]))
    except (KeyError, ValueError):
        return None


def leaf_name_ok(text):
    return text == "work" or (text.startswith("trial-") and text[6:].isdigit() and len(text) <= 12)


def leaf_name(text):
    """work, or trial-N: a sweep trial's leaf (several trials may share a machine, one leaf each)."""
    if leaf_name_ok(text):
        return text
    import argparse
    raise argparse.ArgumentTypeError(f"not a leaf name: {text!r} (work or trial-N)")


def parser(isolations):
    """`isolations`: the watchdog's --isolation levels besides auto (containment's names)."""
    import argparse
    parser = argparse.ArgumentParser(prog="fleet-agent")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watchdog")
    w.add_argument("--state-dir", required=True)
    w.add_argument("--machine-id", required=True)
    w.add_argument("--ttl", type=float, required=True)
    w.add_argument("--max", type=float, required=True)
    w.add_argument("--kill-pid", action="append", help="PID:STARTTIME (a bare PID is pinned at start)")
    w.add_argument("--kill-pid-file", action="append", help="a file holding \"PID STARTTIME\", read at expiry")
    w.add_argument("--isolation", choices=["auto", *isolations], default="auto")
    w.add_argument("--unit", help="the machine's cgroup directory (…/fleet/<ns>/<machine-id>)")
    w.add_argument("--unit-ns", help="namespace of the unit under <cgroup2>/fleet/, when --unit is not given")
    w.add_argument("--sweep-tagged", action="store_true",
                   help="with a unit, also end processes tagged FLEET_MACHINE_ID outside it (team hosts)")
    w.add_argument("--poweroff", action="store_true")
    w.add_argument("--telemetry-interval", type=float, default=0)
    e = sub.add_parser("extend")
    e.add_argument("--state-dir", required=True)
    e.add_argument("--ttl", type=float, required=True)
    for name in ("release", "status"):
        sub.add_parser(name).add_argument("--state-dir", required=True)
    st = sub.add_parser("stop")
    st.add_argument("--state-dir", required=True)
    st.add_argument("--machine-id", required=True)
    st.add_argument("--grace", type=float, default=15.0)
    x = sub.add_parser("exec")
    x.add_argument("--pidfile")
    x.add_argument("--env-stdin", action="store_true", help="read the child's extra environment as JSON on stdin")
    x.add_argument("--leaf", default="work", type=leaf_name,
                   help="the machine's cgroup leaf to run in (trial-N: a sweep trial's own, emptied after it)")
    x.add_argument("argv", nargs=argparse.REMAINDER)
    g = sub.add_parser("group", help="run the processes listed as JSON on stdin, relaying their output")
    g.add_argument("--leaf", default="work", type=leaf_name)
    s = sub.add_parser("signal")
    s.add_argument("--pidfile", required=True, action="append", help="repeated: one process group each")
    s.add_argument("--signal", default="TERM", choices=list(_SIGNALS))
    return parser
