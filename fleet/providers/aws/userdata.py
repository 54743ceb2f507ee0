"""The boot script every fleet instance runs (EC2 user-data, executed once as root by cloud-init).

It makes the machine reachable *only* with this lease's key, under a host key we chose, and starts
the dead-man watchdog before anything else can go wrong:

1. A hard cap: `shutdown -P +<max_duration + grace>` — independent of the agent, never extended
   (with InstanceInitiatedShutdownBehavior=terminate, powering off terminates the instance).
2. The host key: fleet generates an ed25519 host key pair per lease on the controller, pins the
   public half in every Machine, and delivers the private half here. So the key is *known because
   we made it* — never learnt on first use. Who else can read it: user-data is readable from the
   instance itself through IMDSv2 (HttpTokens=required; hop limit 2, so containers on the machine
   too), and through the API by IAM principals allowed `ec2:DescribeInstanceAttribute` on the
   instance. Anyone who can read it could already run code on (or describe) the machine. One host
   key serves every machine of the lease, because a batched RunInstances call gives every instance
   the same user-data.
3. The lease's client public key, for a dedicated `fleet` user (no password, no sudo), the user
   the experiment runs as; and for `fleet-supervisor` (no password, no sudo, home 0700), the user a
   detached run's supervisor on node 0 runs as (fleet/run/node_launch.py): a user the experiment
   is not, so it can neither read that process's memory nor write the code it runs.
4. The agent (fleet/remote/agent/agent.py, gzip+base64 embedded) as a root watchdog with
   `--poweroff`: at its deadline — unless the controller's heartbeat moved it — it powers off.
   The watchdog runs from a root-owned copy (/var/lib/fleet-agent): the state directory is the
   `fleet` user's, and a root process run from there would import what that user put beside it.

EC2 caps user-data at 16 KiB before base64; `render` refuses to build anything larger.
"""
from __future__ import annotations

import base64
import gzip
import shlex
from dataclasses import dataclass

from ...errors import InfrastructureError

USER_DATA_LIMIT = 16 * 1024
MACHINE_USER = "fleet"
WORKDIR = f"/home/{MACHINE_USER}/work"
HARD_CAP_GRACE_MIN = 5
SUPERVISOR_USER = "fleet-supervisor"
SUPERVISOR_DIR = f"/home/{SUPERVISOR_USER}/run"
AGENT_DIR = "/var/lib/fleet-agent"     # root's copy of the agent, the one the watchdog runs


@dataclass(frozen=True)
class BootSpec:
    lease_id: str
    authorized_key: str          # "ssh-ed25519 AAAA… comment"
    host_private_key: str        # OpenSSH PEM text of the lease's host key
    host_public_key: str         # "ssh-ed25519 AAAA…"
    deadline_s: int              # first deadline, seconds after boot
    max_duration_s: int          # hard maximum, never extended past
    agent_source: str
    telemetry_source: str | None = None
    telemetry_interval_s: float = 0


def _packed(text: str) -> str:
    return base64.b64encode(gzip.compress(text.encode(), mtime=0)).decode()


def _heredoc(path: str, body: str, mode: str) -> str:
    assert "FLEET_EOF" not in body
    return f"cat > {path} <<'FLEET_EOF'\n{body.rstrip()}\nFLEET_EOF\nchmod {mode} {path}\n"


def render(spec: BootSpec) -> str:
    """The user-data script (plain text; boto3 base64-encodes it for RunInstances)."""
    state = f"{WORKDIR}/.fleet"
    cap_min = -(-spec.max_duration_s // 60) + HARD_CAP_GRACE_MIN
    lines = [
        "#!/bin/bash",
        f"# fleet machine bootstrap for lease {spec.lease_id}",
        "set -u",
        "exec >>/var/log/fleet-bootstrap.log 2>&1",
        "umask 077",
        f"shutdown -P +{cap_min} 'fleet: lease {spec.lease_id} reached its maximum duration' || true",
        # Host key: only ours is offered.
        "rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub",
        _heredoc("/etc/ssh/ssh_host_ed25519_key", spec.host_private_key, "600"),
        f"echo {shlex.quote(spec.host_public_key)} > /etc/ssh/ssh_host_ed25519_key.pub",
        "mkdir -p /etc/ssh/sshd_config.d",
        "printf 'HostKey /etc/ssh/ssh_host_ed25519_key\\nPasswordAuthentication no\\n"
        "KbdInteractiveAuthentication no\\n"
        # Nothing a run leaves in HOME (~/.bashrc, ~/.ssh/rc) runs in the next run's or fleet's commands.
        "SetEnv SHLVL=1\\nPermitUserRC no\\n' > /etc/ssh/sshd_config.d/00-fleet.conf",
        "grep -q '^Include /etc/ssh/sshd_config.d' /etc/ssh/sshd_config || "
        "sed -i '1i Include /etc/ssh/sshd_config.d/*.conf' /etc/ssh/sshd_config",
        # The lease's user.
        f"id -u {MACHINE_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {MACHINE_USER}",
        f"install -d -m 700 -o {MACHINE_USER} -g {MACHINE_USER} /home/{MACHINE_USER}/.ssh {WORKDIR} {state}",
        f"echo {shlex.quote(spec.authorized_key.strip())} > /home/{MACHINE_USER}/.ssh/authorized_keys",
        f"chown {MACHINE_USER}:{MACHINE_USER} /home/{MACHINE_USER}/.ssh/authorized_keys",
        f"chmod 600 /home/{MACHINE_USER}/.ssh/authorized_keys",
        # The supervisor's user (a detached run's node 0): the same key, a home only it may enter.
        f"id -u {SUPERVISOR_USER} >/dev/null 2>&1 || useradd -m -s /bin/bash {SUPERVISOR_USER}",
        f"install -d -m 700 -o {SUPERVISOR_USER} -g {SUPERVISOR_USER} /home/{SUPERVISOR_USER} "
        f"/home/{SUPERVISOR_USER}/.ssh",
        f"install -m 600 -o {SUPERVISOR_USER} -g {SUPERVISOR_USER} /home/{MACHINE_USER}/.ssh/authorized_keys "
        f"/home/{SUPERVISOR_USER}/.ssh/authorized_keys",
        # The agent, then the watchdog (root, so it may power off; the state dir belongs to the
        # lease user, so the controller's `agent.py extend` can replace the deadline file).
        f"echo {_packed(spec.agent_source)} | base64 -d | gunzip > {state}/agent.py",
    ]
    # The companion is read only by a watchdog that samples telemetry: otherwise it would be ~5 KB of
    # the 16 KiB EC2 allows, which the agent (containment embedded) needs.
    if spec.telemetry_source and spec.telemetry_interval_s > 0:
        lines.append(f"echo {_packed(spec.telemetry_source)} | base64 -d | gunzip > {state}/telemetry.py")
    lines += [
        f"install -d -m 700 {AGENT_DIR} && cp {state}/*.py {AGENT_DIR}/",
        f"chown -R {MACHINE_USER}:{MACHINE_USER} {state}",
        "TOKEN=$(curl -sS -X PUT http://169.254.169.254/latest/api/token "
        "-H 'X-aws-ec2-metadata-token-ttl-seconds: 300')",
        "IID=$(curl -sS -H \"X-aws-ec2-metadata-token: $TOKEN\" "
        "http://169.254.169.254/latest/meta-data/instance-id)",
        f"nohup setsid python3 {AGENT_DIR}/agent.py watchdog --state-dir {state} --machine-id \"$IID\" "
        f"--ttl {int(spec.deadline_s)} --max {int(spec.max_duration_s)} --poweroff "
        f"--telemetry-interval {spec.telemetry_interval_s} >{state}/watchdog.log 2>&1 </dev/null &",
        "systemctl restart ssh 2>/dev/null || systemctl restart sshd 2>/dev/null || service ssh restart",
        "",
    ]
    text = "\n".join(lines)
    if len(text.encode()) > USER_DATA_LIMIT:
        raise InfrastructureError(f"user-data for lease {spec.lease_id} is {len(text.encode())} bytes, over "
                                  f"EC2's {USER_DATA_LIMIT}", hint="the agent grew too large to embed")
    return text
