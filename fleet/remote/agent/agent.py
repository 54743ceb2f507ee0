#!/usr/bin/env python3
"""fleet agent: the on-machine half of fleet. Standard library only; copied onto every machine.

Subcommands
  watchdog  hold the machine's deadline; at expiry end every process of this machine (containment.py: its
            cgroup v2 unit where the host allows one, else pids proven by start time plus the tag
            FLEET_MACHINE_ID; it lives outside the leaf it kills), optionally powering off (cloud: terminate).
  extend    move the deadline to now+TTL *as this machine's boot clock counts it* (controller clock skew and a
            step of the wall clock never matter), capped at the hard maximum fixed when the watchdog started;
            never moved earlier.
  release   expire now (the normal end of a lease).  stop: release, and end whatever the watchdog left.
  group     run a machine's per-GPU processes, each as `exec` would, relaying their output (group.py).
  exec      run a command in its own process group (inside the machine's cgroup unit when it has
            one), recording the group id so `signal` can stop it; exits with the command's status.
  signal    send a signal to process groups recorded by `exec` or `group`.  status: the deadline, as JSON.

The deadline lives in files under --state-dir, so the watchdog needs nobody: if the controller
dies, the heartbeat stops and the machine ends itself at the last deadline it was given.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time


def _beside(name):
    """A module copied next to this script, as it runs on a machine. A byte-code file cut short on a
    full disk (the import system renames it into place unchecked) failed every later call on `marshal
    data too short` until the watchdog ended the machine: the agent's __pycache__ goes, and nothing is
    written again by this process."""
    try:
        return __import__(name)
    except (EOFError, ValueError, TypeError):
        import shutil
        shutil.rmtree(os.path.join(os.path.dirname(os.path.abspath(__file__)), "__pycache__"), ignore_errors=True)
        sys.dont_write_bytecode = True
        for loaded in ("containment", "agent_args", "group", "wakes", "telemetry", name):
            sys.modules.pop(loaded, None)
        return __import__(name)


if __package__:
    from . import agent_args, containment, group, wakes
else:   # run as a script on a machine: these modules are copied next to it
    containment, agent_args, group, wakes = (_beside("containment"), _beside("agent_args"), _beside("group"),
                                             _beside("wakes"))

POLL_S = 0.5
ISOLATION_FILE = "isolation.json"
# The watchdog and `extend` (both on this machine) hold the deadline in boot_deadline and
# boot_max_deadline as CLOCK_BOOTTIME seconds, which never step and run on through a suspend: held on
# the wall clock, a step back would keep the machine up past its deadline by the step, and a step
# forward would end it early. `deadline` and `max_deadline` hold the same times on the wall clock as it
# read when they were written, for whoever shows them (the local provider); nothing is decided by them.
BOOT_CLOCK = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


# -- the machine's containment ---------------------------------------------------------------------

def read_isolation(state):
    try:
        info = json.loads(containment.read_small(os.path.join(state, ISOLATION_FILE)) or "{}")
        return info if isinstance(info, dict) else {}
    except ValueError:
        return {}


def _unit_of(info, machine_id):
    """The cgroup unit recorded for this machine, only if it is a fleet unit of that very machine."""
    unit = info.get("unit") if info.get("level") == containment.CGROUP else None
    return unit if unit and containment.is_unit(unit, machine_id) else None


def _contain_self(args):
    """Put the watchdog into <unit>/agent (never into work/, the leaf it ends). Returns the record
    written to isolation.json: which isolation this machine gets."""
    info = {"level": containment.PIDS, "sweep_tagged": bool(args.sweep_tagged)}
    if args.isolation == containment.PIDS:
        return info
    unit = args.unit or (containment.unit_path(args.unit_ns, args.machine_id) if args.unit_ns else None)
    try:
        if not unit or not containment.is_unit(unit, args.machine_id):
            raise OSError("no cgroup v2 hierarchy here")
        origin = containment.own_cgroup()
        containment.create_unit(unit)
        containment.join(os.path.join(unit, "agent"))
    except OSError as exc:
        if args.isolation == containment.CGROUP:
            raise OSError(f"cannot contain machine {args.machine_id} in cgroup {unit}: {exc}") from None
        info["detail"] = f"no writable cgroup v2: {exc}"
        return info
    info.update(level=containment.CGROUP, unit=unit, origin=origin)
    return info


def _roots(args):
    """Processes the watchdog was told to end besides its unit, as verified (pid, start) records.

    A bare pid given on the command line is pinned to the process it names right now; pid files
    are read at expiry and count only when they carry "PID STARTTIME" that still matches."""
    roots = []
    for text in args.kill_pid or []:
        record = containment.parse_record(text)
        if record is None and str(text).isdigit():
            start = containment.start_time(int(text))
            record = (int(text), start) if start is not None else None
        if record:
            roots.append(record)
    for path in args.kill_pid_file or []:
        record = containment.read_pid_file(path)
        if record and agent_args.names_a_file_beside(record[0], path):
            roots.append(record)
    return [r for r in roots if containment.same_process(*r)]


def end_machine(machine_id, info, roots=(), grace_s=2.0):
    """End every process of the machine: its cgroup's work leaf (or, with no unit, its tagged
    processes), the verified roots and their descendants. Returns True once nothing is left."""
    unit = _unit_of(info, machine_id)
    clean = True
    for _ in range(2):   # again, in case a root forked a new session meanwhile
        if unit:
            for leaf in _work_leaves(unit):
                clean = containment.kill_unit(leaf) and clean
        records = list(roots) + containment.descendants(roots)
        if not unit or info.get("sweep_tagged"):
            records += containment.tagged(machine_id, exclude={os.getpid()})
        if records:
            clean = containment.kill_verified(records, grace_s=grace_s) and clean
    return clean


def _work_leaves(unit):
    """work/ and any other leaf the machine's commands run in (a sweep's trial-N/), never agent/."""
    leaves = [os.path.join(unit, "work")]
    try:
        names = sorted(os.listdir(unit))
    except OSError:
        return leaves
    return leaves + [os.path.join(unit, n) for n in names
                     if n not in ("work", "agent") and os.path.isdir(os.path.join(unit, n))]


def _expire(args, reason):
    state = args.state_dir
    try:
        containment.write_atomic(os.path.join(state, "expired"), json.dumps({"reason": reason, "at": time.time()}))
    except OSError:
        pass   # e.g. the disk is full: the marker is informative, ending the machine is not optional
    info = args.isolation_info
    for _ in range(50):   # out of descriptors (a trial's flood) is no answer about its processes: again
        try:
            end_machine(args.machine_id, info, _roots(args))
            break
        except OSError:
            time.sleep(0.2)
    unit = _unit_of(info, args.machine_id)
    if unit:   # step out of the unit so it can be removed: nothing of the machine is left behind
        containment.leave(unit, info.get("origin"))
        containment.remove_unit(unit)
    if args.poweroff:
        import subprocess   # loaded when the watchdog started (cmd_watchdog): no file read at expiry
        for cmd in (["systemctl", "poweroff", "--force"], ["shutdown", "-h", "now"], ["poweroff", "-f"]):
            try:
                if subprocess.call(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) == 0:
                    break
            except OSError:
                continue


def cmd_watchdog(args):
    # Loaded now, not where used: the watchdog must not need to read a file at expiry. The short
    # calls (exec, extend, signal: one Python start each) import neither unless they need it.
    __import__("subprocess")   # for the poweroff at expiry (_expire)
    import threading
    state = args.state_dir
    os.makedirs(state, exist_ok=True)
    now, boot = time.time(), time.clock_gettime(BOOT_CLOCK)
    hard_end = boot + args.max   # held here too: the state directory is the login's to write
    _hold(state, "max_deadline", hard_end, now - boot)
    _hold(state, "deadline", boot + min(args.ttl, args.max), now - boot)
    args.isolation_info = _contain_self(args)
    containment.write_atomic(os.path.join(state, ISOLATION_FILE), json.dumps(args.isolation_info))
    for sig in (signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)   # a closed terminal or Ctrl-C in the controller must not end it
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())   # before the pid file: whoever reads it may signal
    # "PID STARTTIME": whoever reads it later can tell this process from one that reused the pid.
    containment.write_pid_file(os.path.join(state, "watchdog.pid"), os.getpid())
    if args.telemetry_interval > 0:
        _start_telemetry(state, args.telemetry_interval, stop)
    reason, stops = "terminated", wakes.Wakes(min(args.ttl, args.max), boot)   # a Slurm suspension: wakes.py
    while not stop.is_set():
        if os.path.exists(os.path.join(state, "release")):
            reason = "released"
            break
        at = time.clock_gettime(BOOT_CLOCK)
        if stops.passed(at, containment.read_float(os.path.join(state, "boot_deadline"), boot)) or at >= hard_end:
            reason = "deadline"
            break
        stop.wait(POLL_S)
    if reason == "terminated" and os.path.exists(os.path.join(state, "release")):
        reason = "released"   # stop_machine's SIGTERM after the release file: no wait for the next poll
    _expire(args, reason)
    return 0


def _hold(state, name, at, wall_minus_boot):
    """boot_<name>, the time decided by, then <name>: the same time on the wall clock, to be shown."""
    containment.write_atomic(os.path.join(state, "boot_" + name), repr(at))
    containment.write_atomic(os.path.join(state, name), repr(at + wall_minus_boot))


def _start_telemetry(state, interval, stop):
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    try:
        telemetry = _beside("telemetry")  # optional companion module, stdlib only
    except ImportError:
        return
    import threading
    thread = threading.Thread(target=telemetry.loop, args=(os.path.join(state, "telemetry.jsonl"), interval, stop),
                              daemon=True)
    thread.start()


def cmd_extend(args):
    state = args.state_dir
    if os.path.exists(os.path.join(state, "expired")):
        print("expired", file=sys.stderr)
        return 3
    now, boot = time.time(), time.clock_gettime(BOOT_CLOCK)
    target = min(boot + args.ttl, containment.read_float(os.path.join(state, "boot_max_deadline"), float("inf")))
    # Only ever later: a shorter TTL (a second `fleet extend 1m`, a heartbeat capped by the budget)
    # must not pull forward a deadline someone was already promised.
    target = max(target, containment.read_float(os.path.join(state, "boot_deadline"), -float("inf")))
    _hold(state, "deadline", target, now - boot)
    print(json.dumps({"remaining_s": round(target - boot, 3)}))
    return 0


def cmd_release(args):
    containment.write_atomic(os.path.join(args.state_dir, "release"), str(time.time()))
    return 0


def cmd_status(args):
    state = args.state_dir
    deadline = containment.read_float(os.path.join(state, "boot_deadline"))
    left = None if deadline is None else round(deadline - time.clock_gettime(BOOT_CLOCK), 3)
    watchdog = containment.read_pid_file(os.path.join(state, "watchdog.pid"))
    print(json.dumps({"remaining_s": left,
                      "expired": os.path.exists(os.path.join(state, "expired")),
                      "watchdog_pid": watchdog[0] if watchdog else 0,
                      "watchdog_alive": bool(watchdog) and containment.same_process(*watchdog),
                      "isolation": read_isolation(state).get("level", "unknown")}))
    return 0


def stop_machine(state, machine_id, *, unit=None, roots=(), grace_s=2.0):
    """End a machine from outside its watchdog: ask it to release the machine, wait, then end what is
    left: the whole unit (a stuck watchdog too), or verified pids and tagged processes without one, and
    the roots' descendants as they are now (one that left the unit is still theirs by descent)."""
    roots = [r for r in roots if containment.same_process(*r)]
    roots += containment.descendants(roots)
    try:
        containment.write_atomic(os.path.join(state, "release"), str(time.time()))
    except OSError:
        pass   # gone or disk full: ending the machine below does not need the watchdog
    watchdog = containment.read_pid_file(os.path.join(state, "watchdog.pid"))
    if watchdog and not agent_args.is_watchdog(watchdog[0], state):
        watchdog = None   # a pid reused by something else: never waited for, never signalled
    elif watchdog:
        held = containment.verify(*watchdog)   # now, not at its next poll; by pidfd: it may be ending now
        if held is not None:
            held.signal(signal.SIGTERM)   # another user's (not permitted): it still sees the release file
            held.close()
    deadline = time.monotonic() + grace_s + 3
    while watchdog and containment.same_process(*watchdog) and time.monotonic() < deadline:
        time.sleep(0.05)
    info = read_isolation(state)
    unit = next((u for u in (_unit_of(info, machine_id), unit)   # one that exists: a pids machine has none
                 if u and os.path.isdir(u) and containment.is_unit(u, machine_id)), None)
    info = {**info, "level": containment.CGROUP, "unit": unit} if unit else {**info, "level": containment.PIDS}
    if unit:
        containment.kill_unit(unit)          # everything in it, the watchdog's leaf included
    elif watchdog and containment.same_process(*watchdog):
        containment.kill_verified([watchdog], grace_s=0.5)
    clean = end_machine(machine_id, info, [r for r in roots if containment.same_process(*r)], grace_s=0.5)
    if unit:
        clean = containment.remove_unit(unit) and clean
    return clean


def cmd_stop(args):
    clean = stop_machine(args.state_dir, args.machine_id, grace_s=args.grace)
    return 0 if clean else 1


def _enter_leaf(leaf_name, cmd):
    """Into the machine's leaf (work/, or a sweep trial's) before anything starts: all a command ever
    spawns (however it daemonises) stays there, and ends with the machine. Returns 125 when the
    machine has ended, else None."""
    unit = _unit_of(read_isolation(os.path.dirname(os.path.abspath(__file__))), os.environ.get("FLEET_MACHINE_ID", ""))
    if unit:
        try:
            leaf = os.path.join(unit, leaf_name)
            if leaf_name != "work" and not os.path.isdir(leaf):
                os.mkdir(leaf)
            # A login that is not the unit's owner cannot move itself, and need not when its
            # session was born in the leaf (the sandbox's unprivileged login, under sshd in work/).
            if os.path.realpath(containment.own_cgroup() or "") != os.path.realpath(leaf):
                containment.join(leaf)
        except OSError as exc:
            print(f"fleet-agent: {cmd}: the machine has ended (cgroup {unit}: {exc.strerror or exc})",
                  file=sys.stderr)
            return 125
    # A Slurm node's sshd and its sessions ignore SIGUSR1/2 (a user's `scancel -s USR1 JOB` must not end
    # the machine: slurm/node.py). A handled signal is reset to the default at exec, an ignored one is not:
    # the command gets them back, so a training's handler (or a shell's trap) still sees the user's signal.
    for sig in (signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(sig, lambda *_: None)
    return None


def _record_pid(pidfile, pid):
    # "PGID STARTTIME": `agent signal` must tell this group from one that reused the pid
    containment.write_atomic(pidfile, containment.pid_record(pid) or str(pid))


def cmd_exec(args):
    import subprocess
    argv = args.argv[1:] if args.argv and args.argv[0] == "--" else args.argv
    env = None
    if args.env_stdin:   # the run's environment (secrets among it) comes on stdin, never on a command line
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in json.loads(sys.stdin.readline() or "{}").items()})
    if failed := _enter_leaf(args.leaf, "exec"):
        return failed
    if args.pidfile:   # a stop asked of the last command under this pid file is not this one's
        group.clear_stop(args.pidfile)
        group.adopt_orphans()
    child = subprocess.Popen(argv, start_new_session=True, env=env,
                             stdin=subprocess.DEVNULL if args.env_stdin else None)
    if args.pidfile:
        _record_pid(args.pidfile, child.pid)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda sig, _frame: group.kill_group(child, sig))
    code = group.wait_reaping(child)
    while group.group_outlives_stop(args.pidfile, child.pid):   # its checkpoint still being saved
        time.sleep(0.1)
    return code if code >= 0 else 128 - code


def cmd_group(args):
    """A machine's per-GPU processes under one agent (group.py); their list, environments (secrets
    among them) included, comes on stdin."""
    procs = json.loads(sys.stdin.readline() or "{}").get("procs") or []
    return _enter_leaf(args.leaf, "group") or group.run(procs, _record_pid)


def cmd_signal(args):
    for pidfile in args.pidfile:
        words = containment.read_small(pidfile).split()
        pgid = int(words[0]) if words and words[0].isdigit() else 0
        start = int(words[1]) if len(words) == 2 and words[1].isdigit() else None
        # Never pid 1's group, nor one whose leader's pid now names another process: the kernel reuses a
        # pid only once no group holds it, so ours is gone and that group is someone else's.
        now = containment.start_time(pgid) if pgid > 1 else None
        if pgid <= 1 or (now is not None and now != start):
            continue
        group.mark_stop(pidfile)    # before the signal: the leader may die of it at once
        try:
            os.killpg(pgid, getattr(signal, "SIG" + args.signal))
        except OSError:   # gone, or not ours to signal: the machine's other ranks still get theirs
            pass
    return 0


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = agent_args.quick_args(argv) or agent_args.parser((containment.CGROUP, containment.PIDS)).parse_args(argv)
    handler = {"watchdog": cmd_watchdog, "extend": cmd_extend, "release": cmd_release, "status": cmd_status,
               "exec": cmd_exec, "group": cmd_group, "signal": cmd_signal, "stop": cmd_stop}[args.cmd]
    try:
        return handler(args)
    except OSError as exc:   # e.g. the machine's disk is full: one line in the run's log, not a traceback
        print(f"fleet-agent: {args.cmd}: {exc}", file=sys.stderr)
        return 125


if __name__ == "__main__":
    sys.exit(main())
