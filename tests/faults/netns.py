"""Local machines behind a network link the test can cut.

Each machine's sshd runs inside its own network namespace (entered with nsenter), reachable from the
controller only over a veth pair (10.213.<n>.1 ↔ 10.213.<n>.2). Cutting the link (the namespace
side set down) drops packets silently, like a real partition: no RST, no FIN. The watchdog stays
outside the namespace; it needs no network (its deadline lives in files), exactly as on a real
machine whose network died. Machines keep the local provider's layout under
$FLEET_HOME/machines/<id>/, so `fleet down --all` (LocalProvider.release) ends them as usual.
"""
from __future__ import annotations

import fcntl
import getpass
import os
import shutil
import socket
import subprocess
import time
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

from fleet.keys import generate_ed25519
from fleet.models import Lease, Machine, utcnow
from fleet.paths import subdir
from fleet.providers.local import LocalProvider, lease_key_path
from fleet.providers.local.sshd import _config_text, find_sshd, start_watchdog
from fleet.remote.agent import containment

SUBNET = "10.213"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def cannot_make_namespaces() -> str | None:
    """Why network namespaces cannot be made here, or None when they can."""
    if not shutil.which("ip"):
        return "iproute2 (`ip`) is not installed"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN)"
    probe = f"fleetprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"`ip netns add` failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


def _claim_subnet(prefix: str, first: int, last: int) -> int:
    """A free k in [first, last] for `prefix`.k.0: one no interface here holds an address in.
    xdist workers make links at the same time; the caller holds _subnet_lock() until its address is
    on an interface, so no two links share a subnet (a shared one routes to the other's sshd)."""
    held = _ip("-o", "-4", "addr", "show").stdout
    for k in range(first, last + 1):
        if f" {prefix}.{k}." not in held:
            return k
    raise RuntimeError(f"no free {prefix}.x subnet for a test namespace (stale namespaces? `ip netns`)")


def _subnet_lock():
    """An exclusive lock across processes, released when the file closes (or the process dies)."""
    lock = open("/tmp/fleet-test-netns.lock", "a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def _veth(link, prefix: str, host_side: list[str]) -> None:
    """A veth pair from this namespace into link.ns: `host_side` (an address, or a bridge) on this
    end, link.ns_ip`prefix` on the other, both up, with the namespace's loopback."""
    _ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if)
    _ip("link", "set", link.ns_if, "netns", link.ns)
    _ip(*host_side)
    _ip("link", "set", link.host_if, "up")
    for cmd in (["addr", "add", f"{link.ns_ip}{prefix}", "dev", link.ns_if], ["link", "set", link.ns_if, "up"],
                ["link", "set", "lo", "up"]):
        _ip("-n", link.ns, *cmd)


class Link:
    """One namespace + veth pair on a /30 subnet no other live link uses."""

    def __init__(self):
        with _subnet_lock():
            index = _claim_subnet(SUBNET, 1, 250)
            tag = f"{os.getpid() % 10000}x{index}"
            self.ns = f"fleetf{tag}"
            self.host_if, self.ns_if = f"vfh{tag}", f"vfn{tag}"
            self.host_ip, self.ns_ip = f"{SUBNET}.{index}.1", f"{SUBNET}.{index}.2"
            _ip("netns", "add", self.ns)
            try:
                _veth(self, "/30", ["addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
            except subprocess.CalledProcessError:
                self.destroy()
                raise

    def cut(self) -> None:
        _ip("-n", self.ns, "link", "set", self.ns_if, "down")

    def destroy(self) -> None:
        _ip("netns", "del", self.ns, check=False)          # takes the veth pair with it
        _ip("link", "del", self.host_if, check=False)


class Bridge:
    """Namespaces on one bridge, one /24 (10.214.<k>.0): they reach each other and the controller
    reaches them all (10.214.<k>.1), as a cluster's hosts do. `links` quack like Link."""

    def __init__(self, count: int):
        self.links: list[SimpleNamespace] = []
        with _subnet_lock():
            k = _claim_subnet("10.214", 100, 250)
            tag = f"{os.getpid() % 10000}x{k}"
            self.name, self.host_ip = f"fbr{tag}", f"10.214.{k}.1"
            _ip("link", "add", self.name, "type", "bridge")
            try:
                _ip("addr", "add", f"{self.host_ip}/24", "dev", self.name)
            except subprocess.CalledProcessError:
                _ip("link", "del", self.name, check=False)
                raise
        try:
            _ip("link", "set", self.name, "up")
            for i in range(count):
                link = SimpleNamespace(ns=f"fbn{tag}x{i}", host_if=f"vbh{tag}x{i}", ns_if=f"vbn{tag}x{i}",
                                       host_ip=self.host_ip, ns_ip=f"10.214.{k}.{i + 2}")
                _ip("netns", "add", link.ns)
                self.links.append(link)
                _veth(link, "/24", ["link", "set", link.host_if, "master", self.name])
        except subprocess.CalledProcessError:
            self.destroy()
            raise

    def destroy(self) -> None:
        for link in self.links:
            _ip("netns", "del", link.ns, check=False)
            _ip("link", "del", link.host_if, check=False)
        _ip("link", "del", self.name, check=False)


class NetnsProvider(LocalProvider):
    """The local provider with each machine's sshd in its own namespace (`links` made by the test)."""

    def __init__(self, links: list[Link], **kw):
        super().__init__(**kw)
        self.links = links

    def lease(self, plan, lease_id: str, deadline_s: int, on_machine=None, cancel=None) -> Lease:
        # `cancel` (StopsOnCancel, inherited): two machines are made in well under the 2 s a stop allows.
        sshd_bin = find_sshd()
        key_path = lease_key_path(lease_id)
        public = generate_ed25519(key_path, comment=f"fleet-lease-{lease_id}")
        machines = []
        for rank in range(plan.machine_count):
            link = self.links[rank]
            machine_id = f"{lease_id}-n{rank}"
            d = subdir("machines") / machine_id
            d.mkdir(mode=0o700)
            root = d / "root"
            root.mkdir(mode=0o700)
            start_watchdog(d, machine_id, ttl_s=deadline_s, max_s=plan.max_duration_s, kill_pids=[],
                           kill_pid_files=[d / "sshd.pid"], python=self.python)
            host_key = generate_ed25519(d / "ssh_host_ed25519_key", comment=f"fleet-host-{machine_id}")
            (d / "authorized_keys").write_text(public.strip() + "\n")
            port = 2222
            user = getpass.getuser()
            config = _config_text(d, port, machine_id, user, root).replace(
                "ListenAddress 127.0.0.1", f"ListenAddress {link.ns_ip}")
            (d / "sshd_config").write_text(config)
            with open(d / "sshd.log", "ab") as log:
                # nsenter, not `ip netns exec`: that one also remounts /sys, hiding the cgroup v2
                # tree the machine's unit lives in (a hybrid host mounts it at /sys/fs/cgroup/unified),
                # so `agent exec` found no unit to join and took the machine for ended.
                proc = subprocess.Popen(["nsenter", f"--net=/var/run/netns/{link.ns}", "--", sshd_bin, "-D", "-e",
                                         "-f", str(d / "sshd_config")], stdout=log, stderr=log,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            # nsenter execs sshd: same pid and start time ("PID STARTTIME", as fleet writes it)
            containment.write_pid_file(d / "sshd.pid", proc.pid)
            _wait_listening(link.ns_ip, port)
            machines.append(Machine(
                id=machine_id, lease_id=lease_id, node_rank=rank, host=link.ns_ip, port=port, user=user,
                key_path=str(key_path), host_key=host_key, workdir=str(root), gpu_slots=(0,), python=self.python,
                price_per_hour=plan.template.price_per_hour or 0, instance_type=plan.template.name,
                provider_ref={"dir": str(d), "sshd_pid": proc.pid, "simulated_gpus": True}))
            if on_machine is not None:     # a LocalProvider: it reports machines (ReportsMachines)
                on_machine(machines[-1])
        now = utcnow()
        return Lease(id=lease_id, provider="local", template=plan.template.name, machines=machines,
                     created_at=now, deadline=now + timedelta(seconds=deadline_s),
                     max_deadline=now + timedelta(seconds=plan.max_duration_s), project=plan.project,
                     user=plan.user, heartbeat_ttl_s=plan.heartbeat_ttl_s)


def _wait_listening(host: str, port: int, timeout: float = 10) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd in namespace did not listen on {host}:{port}")


def machine_root(home: Path) -> Path:
    return home / "machines"
