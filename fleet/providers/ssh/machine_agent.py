"""The agent on a team host: a machine's watchdog started (its deadline, its containment), and the
machine stopped at release."""
from __future__ import annotations

import json
import shlex

from ...errors import InfrastructureError
from ...models import Machine


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
    with connect(m, timeout=10) as s:
        s.run(["mkdir", "-p", m.state_dir])
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
# must not trip the release's deadline (STOP_DEADLINE_S, for a host whose disk hangs).
_STOP_SCRIPT = r"""
S={state}; W={workdir}; P={python}
[ -d "$W" ] || exit 0
[ -f "$S/agent.py" ] && "$P" "$S/agent.py" stop --state-dir "$S" --machine-id {machine_id} >/dev/null 2>&1
G="$W.ended.$$"; mv "$W" "$G" 2>/dev/null || G="$W"
if command -v timeout >/dev/null 2>&1; then
  timeout 120 rm -rf "$G" 2>/dev/null || (setsid rm -rf "$G" </dev/null >/dev/null 2>&1 &)
else
  rm -rf "$G"
fi
rmdir "$(dirname "$W")" 2>/dev/null
exit 0
"""


STOP_DEADLINE_S = 300


def stop_machine(m: Machine) -> None:
    from ...remote.ssh import connect
    script = _STOP_SCRIPT.format(state=shlex.quote(m.state_dir), workdir=shlex.quote(m.workdir),
                                 python=shlex.quote(m.python), machine_id=shlex.quote(m.id))
    with connect(m, timeout=10) as s:
        # bounded as a whole: a host whose disk hangs (the agent or rm in D state) fails this one
        # release, and says so, instead of holding `fleet down` and every other machine's release
        s.run(["sh", "-c", script], timeout=60, deadline_s=STOP_DEADLINE_S)
