"""The agent on a team host: a machine's watchdog started (its deadline, its containment), and the
machine stopped at release."""
from __future__ import annotations

import json
import shlex

from ...errors import InfrastructureError
from ...models import Machine


# Run on the host with its python (-S: standard library only): $1 the leases root (the host's
# `workdir`), $2 the machine's workdir (<root>/<lease>/<machine>), $3 its state directory. The root
# may be shared by a team (/scratch/fleet): each directory on its path, as written and as resolved,
# must be root's or this user's and world-writable only with the sticky bit, and the lease's and
# the machine's own directories this user's alone (0700, not links). Else another user could swap
# in a directory holding their own agent.py, which this login would then run (at release too).
_PREPARE = r"""
import os, stat, sys
root, workdir, state = sys.argv[1:4]
def refuse(why):
    sys.exit("fleet: unsafe workdir, %s; another user could replace what fleet runs there (workdir %s)"
             % (why, root))
def safe(path, st):
    if st.st_uid not in (0, os.geteuid()):
        refuse("uid %d owns %s" % (st.st_uid, path))
    if stat.S_ISDIR(st.st_mode) and st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX:
        refuse("every user may write to %s (mode %04o, no sticky bit)" % (path, stat.S_IMODE(st.st_mode)))
os.makedirs(root, mode=0o700, exist_ok=True)
for path in {os.path.abspath(root), os.path.realpath(root)}:
    while True:
        safe(path, os.lstat(path))
        if path == os.path.dirname(path):
            break
        path = os.path.dirname(path)
for d in (os.path.dirname(workdir), workdir, state):
    try:
        os.mkdir(d, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(d)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        refuse("a directory not this lease's own (uid %d, mode %04o) stands at %s"
               % (st.st_uid, stat.S_IMODE(st.st_mode), d))
"""


def start_watchdog(m: Machine, *, ttl_s: float, max_s: float, telemetry_interval: float = 0) -> str:
    """Copy the agent into the machine's workdir and start its watchdog detached from this SSH session.

    The watchdog runs without FLEET_MACHINE_ID in its own environment, so it never counts itself
    among the processes it must end; no --kill-pid, no --poweroff: the host stays up. Where the
    host lets this login write cgroup v2 (root, or a delegated subtree) the machine gets a unit of
    its own (every `agent exec` joins it); otherwise verified pids plus the tag. Returns the
    isolation the host gave ("cgroup" | "pids"), also kept in m.provider_ref["isolation"].
    """
    from ...isolation import requested
    from ...remote.agent import AGENT_FILES
    from ...isolation import namespace
    from ...remote.ssh import connect
    level = requested()
    lease_dir = m.workdir.rsplit("/", 1)[0]
    with connect(m, timeout=10) as s:
        s.run([m.python, "-I", "-S", "-c", _PREPARE, lease_dir.rsplit("/", 1)[0], m.workdir, m.state_dir], timeout=30)
        with s.transfer() as sftp:
            for source in AGENT_FILES:
                if source.exists():
                    sftp.put(str(source), f"{m.state_dir}/{source.name}")
        argv = [m.python, m.agent_path, "watchdog", "--state-dir", m.state_dir, "--machine-id", m.id,
                "--ttl", f"{ttl_s:.3f}", "--max", f"{max_s:.3f}", "--telemetry-interval", str(telemetry_interval),
                "--isolation", level, "--unit-ns", namespace(m.workdir.rsplit("/", 2)[0]),
                # Sessions that bypass `agent exec` (e.g. `fleet ssh`) start in the host's own
                # cgroups: their tag is how the watchdog still finds them.
                "--sweep-tagged"]
        log = shlex.quote(f"{m.state_dir}/watchdog.log")
        s.run(f"cd {shlex.quote(m.workdir)} && env -u FLEET_MACHINE_ID setsid nohup {shlex.join(argv)}"
              f" </dev/null >>{log} 2>&1 &", timeout=30)
        # Wait for the pid file the watchdog writes once its deadline and containment are in place.
        pidfile = shlex.quote(f"{m.state_dir}/watchdog.pid")
        r = s.run(f"for i in $(seq 100); do [ -s {pidfile} ] && exit 0; sleep 0.1; done; exit 1",
                  check=False, timeout=30)
        if r.exit_code != 0:
            tail = s.run(["tail", "-n", "3", f"{m.state_dir}/watchdog.log"], check=False).stdout.strip()
            raise InfrastructureError(f"watchdog for {m.id} did not start on {m.provider_ref.get('host')}: "
                                      f"{tail.splitlines()[-1] if tail else 'no output'}")
        info = s.run(["cat", f"{m.state_dir}/isolation.json"], check=False, timeout=30).stdout
    try:
        m.provider_ref["isolation"] = json.loads(info).get("level", "unknown")
    except ValueError:
        m.provider_ref["isolation"] = "unknown"
    return m.provider_ref["isolation"]


# Release on the host: the agent's `stop` asks the watchdog to end the machine, waits for it, ends
# whatever it left (or all of it, if the watchdog had died): the machine's cgroup unit, or the
# verified/tagged pids. Then the machine's directory goes.
# The workdir goes aside at once (a name no later lease reuses), then is deleted within two
# minutes or, if it is that large, in the background: a huge tree is legitimate, silent work that
# must not trip the release's deadline (STOP_DEADLINE_S, for a host whose disk hangs). What the run
# mounted in it (a root login: a bound host directory) is detached first, never deleted through; one
# that stays mounted (exit 3) leaves the directory aside rather than walked into.
_STOP_SCRIPT = r"""
S={state}; W={workdir}; P={python}
[ -d "$W" ] || exit 0
[ -f "$S/agent.py" ] && "$P" "$S/agent.py" stop --state-dir "$S" --machine-id {machine_id} >/dev/null 2>&1
G="$W.ended.$$"; mv "$W" "$G" 2>/dev/null || G="$W"
"$P" -I -S -c {detach} "$G" 2>/dev/null; [ $? = 3 ] && exit 0
if command -v timeout >/dev/null 2>&1; then
  timeout 120 rm -rf "$G" 2>/dev/null || (setsid rm -rf "$G" </dev/null >/dev/null 2>&1 &)
else
  rm -rf "$G"
fi
rmdir "$(dirname "$W")" 2>/dev/null
exit 0
"""


STOP_DEADLINE_S = 300


def _detach_source() -> str:
    from ...remote import mounts
    return mounts.source() + "\nimport sys\nsys.exit(3 if detach_mounts_under(sys.argv[1]) else 0)\n"


def stop_machine(m: Machine) -> None:
    from ...remote.ssh import connect
    script = _STOP_SCRIPT.format(state=shlex.quote(m.state_dir), workdir=shlex.quote(m.workdir),
                                 python=shlex.quote(m.python), machine_id=shlex.quote(m.id),
                                 detach=shlex.quote(_detach_source()))
    with connect(m, timeout=10) as s:
        # bounded as a whole: a host whose disk hangs (the agent or rm in D state) fails this one
        # release, and says so, instead of holding `fleet down` and every other machine's release
        s.run(["sh", "-c", script], timeout=60, deadline_s=STOP_DEADLINE_S)
