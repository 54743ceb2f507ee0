#!/usr/bin/env python3
"""fleet agent: the on-machine half of fleet. Standard library only; copied onto every machine.

Subcommands
  watchdog  hold the machine's deadline; at expiry end every process of this machine (those
            carrying FLEET_MACHINE_ID=<id> in their environment), the listed pids (a local
            machine's sshd), and optionally power the machine off (cloud: shutdown = terminate).
  extend    move the deadline to now+TTL *as this machine's clock reads it* (so controller clock
            skew never matters), capped at the hard maximum fixed when the watchdog started.
  release   expire now (the normal end of a lease).
  exec      run a command in its own process group, recording the group id so `signal` can
            stop it; exits with the command's status.
  signal    send a signal to a process group recorded by `exec`.
  status    print the deadline state as JSON.

The deadline lives in files under --state-dir, so the watchdog needs nobody: if the controller
dies, the heartbeat stops and the machine ends itself at the last deadline it was given.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time

POLL_S = 0.5


def _read_float(path, default=None):
    try:
        with open(path) as fh:
            return float(fh.read().strip())
    except (OSError, ValueError):
        return default


def _write_atomic(path, text):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _tagged_pids(machine_id):
    """Processes whose environment carries this machine's id (they survive re-parenting)."""
    needle = f"FLEET_MACHINE_ID={machine_id}".encode()
    me = os.getpid()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as fh:
                if needle in fh.read().split(b"\0"):
                    found.append(int(name))
        except OSError:
            continue
    return found


def _descendants(roots):
    """Every process below `roots` (e.g. sshd's per-connection children), found via /proc."""
    parents = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as fh:
                    parents.setdefault(int(fh.read().rsplit(")", 1)[-1].split()[1]), []).append(int(name))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], list(roots)
    while todo:
        for child in parents.get(todo.pop(), []):
            if child not in found:
                found.append(child)
                todo.append(child)
    return found


def machine_pids(machine_id, roots=()):
    return sorted(set(_tagged_pids(machine_id)) | set(_descendants(roots)) | set(roots))


def kill_all(pids, grace_s=2.0):
    for sig in (signal.SIGTERM, signal.SIGKILL):
        signalled = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                signalled.append(pid)
            except (ProcessLookupError, PermissionError):
                pass
        if not signalled or sig == signal.SIGKILL:
            return
        end = time.monotonic() + grace_s
        while time.monotonic() < end and any(alive(p) for p in signalled):
            time.sleep(0.05)
        pids = [p for p in signalled if alive(p)]


def alive(pid):
    """True for a live process; a zombie (exited, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return False


def _expire(args, reason):
    state = args.state_dir
    try:
        _write_atomic(os.path.join(state, "expired"), json.dumps({"reason": reason, "at": time.time()}))
    except OSError:
        pass   # e.g. the disk is full: the marker is informative, ending the machine is not optional
    # Tagged processes first (the experiment), then the listed pids (e.g. sshd), repeated once
    # in case sshd forked a new session meanwhile.
    roots = list(args.kill_pid or []) + _pids_from_files(args.kill_pid_file or [])
    for _ in range(2):
        kill_all(machine_pids(args.machine_id, roots))
    if args.poweroff:
        for cmd in (["systemctl", "poweroff", "--force"], ["shutdown", "-h", "now"], ["poweroff", "-f"]):
            try:
                if subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0:
                    break
            except OSError:
                continue


def _pids_from_files(paths):
    """Pids recorded in files (read at expiry): a process started after the watchdog, e.g. a local
    machine's sshd, is covered from its first instant, with no window where it has no deadline."""
    pids = []
    for path in paths:
        pid = int(_read_float(path, 0) or 0)
        if pid > 1:
            pids.append(pid)
    return pids


def cmd_watchdog(args):
    state = args.state_dir
    os.makedirs(state, exist_ok=True)
    now = time.time()
    _write_atomic(os.path.join(state, "max_deadline"), repr(now + args.max))
    _write_atomic(os.path.join(state, "deadline"), repr(now + min(args.ttl, args.max)))
    _write_atomic(os.path.join(state, "watchdog.pid"), str(os.getpid()))
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)   # a closed terminal or Ctrl-C in the controller must not end it
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.telemetry_interval > 0:
        _start_telemetry(state, args.telemetry_interval, stop)
    reason = "terminated"
    while not stop.is_set():
        deadline = _read_float(os.path.join(state, "deadline"), now)
        if os.path.exists(os.path.join(state, "release")):
            reason = "released"
            break
        if time.time() >= deadline:
            reason = "deadline"
            break
        stop.wait(POLL_S)
    _expire(args, reason)
    return 0


def _start_telemetry(state, interval, stop):
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path.insert(0, here)
    try:
        import telemetry  # optional companion module, stdlib only
    except ImportError:
        return
    thread = threading.Thread(target=telemetry.loop, args=(os.path.join(state, "telemetry.jsonl"), interval, stop),
                              daemon=True)
    thread.start()


def cmd_extend(args):
    state = args.state_dir
    if os.path.exists(os.path.join(state, "expired")):
        print("expired", file=sys.stderr)
        return 3
    cap = _read_float(os.path.join(state, "max_deadline"))
    target = time.time() + args.ttl
    if cap is not None:
        target = min(target, cap)
    _write_atomic(os.path.join(state, "deadline"), repr(target))
    print(json.dumps({"remaining_s": round(target - time.time(), 3)}))
    return 0


def cmd_release(args):
    _write_atomic(os.path.join(args.state_dir, "release"), str(time.time()))
    return 0


def cmd_status(args):
    state = args.state_dir
    deadline = _read_float(os.path.join(state, "deadline"))
    out = {
        "remaining_s": None if deadline is None else round(deadline - time.time(), 3),
        "expired": os.path.exists(os.path.join(state, "expired")),
        "watchdog_pid": int(_read_float(os.path.join(state, "watchdog.pid"), 0) or 0),
    }
    out["watchdog_alive"] = bool(out["watchdog_pid"]) and alive(out["watchdog_pid"])
    print(json.dumps(out))
    return 0


def cmd_exec(args):
    argv = args.argv[1:] if args.argv and args.argv[0] == "--" else args.argv
    env = None
    if args.env_stdin:   # the run's environment (secrets among it) comes on stdin, never on a command line
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in json.loads(sys.stdin.readline() or "{}").items()})
    child = subprocess.Popen(argv, start_new_session=True, env=env,
                             stdin=subprocess.DEVNULL if args.env_stdin else None)
    if args.pidfile:
        _write_atomic(args.pidfile, str(child.pid))

    def forward(sig, _frame):
        try:
            os.killpg(child.pid, sig)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    code = child.wait()
    return code if code >= 0 else 128 - code


def cmd_signal(args):
    pgid = int(_read_float(args.pidfile, 0) or 0)
    if not pgid:
        return 0
    try:
        os.killpg(pgid, getattr(signal, "SIG" + args.signal))
    except ProcessLookupError:
        pass
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="fleet-agent")
    sub = parser.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watchdog")
    w.add_argument("--state-dir", required=True)
    w.add_argument("--machine-id", required=True)
    w.add_argument("--ttl", type=float, required=True)
    w.add_argument("--max", type=float, required=True)
    w.add_argument("--kill-pid", type=int, action="append")
    w.add_argument("--kill-pid-file", action="append")
    w.add_argument("--poweroff", action="store_true")
    w.add_argument("--telemetry-interval", type=float, default=0)
    e = sub.add_parser("extend")
    e.add_argument("--state-dir", required=True)
    e.add_argument("--ttl", type=float, required=True)
    for name in ("release", "status"):
        sub.add_parser(name).add_argument("--state-dir", required=True)
    x = sub.add_parser("exec")
    x.add_argument("--pidfile")
    x.add_argument("--env-stdin", action="store_true", help="read the child's extra environment as JSON on stdin")
    x.add_argument("argv", nargs=argparse.REMAINDER)
    s = sub.add_parser("signal")
    s.add_argument("--pidfile", required=True)
    s.add_argument("--signal", default="TERM", choices=["TERM", "INT", "KILL", "HUP"])
    args = parser.parse_args(argv)
    handler = {"watchdog": cmd_watchdog, "extend": cmd_extend, "release": cmd_release, "status": cmd_status,
               "exec": cmd_exec, "signal": cmd_signal}[args.cmd]
    try:
        return handler(args)
    except OSError as exc:   # e.g. the machine's disk is full: one line in the run's log, not a traceback
        print(f"fleet-agent: {args.cmd}: {exc}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
