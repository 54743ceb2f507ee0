"""A team's SSH GPU hosts: the inventory in the state database, host keys, and discovery over SSH.

Hosts come from `fleet hosts add` (rows with source='cli') and from `[[hosts]]` in fleet.toml
(mirrored as source='config' so slot reservation has one row per host to lock). An address may be
an alias from ~/.ssh/config; HostName/User/Port/IdentityFile are taken from there when the host
does not say otherwise.

Host keys are known, never learnt silently: either pinned in the inventory when the host was added
(the fingerprint is shown and trust is explicit) or read from ~/.ssh/known_hosts.
"""
from __future__ import annotations

import base64
import getpass
import hashlib
import os
import socket
from functools import lru_cache
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...errors import InfrastructureError, MachineUnreachable, NotFound, UsageError
from ...models import Machine, utcnow

DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")
PROBE_TIMEOUT_S = 5.0


@dataclass
class Host:
    name: str
    address: str                     # as written: a hostname, IP, or ~/.ssh/config alias
    port: int | None = None          # None: from ~/.ssh/config, else 22
    login: str | None = None         # SSH user; None: from ~/.ssh/config, else the OS user
    key_path: str | None = None      # private key; None: ~/.ssh/config IdentityFile, else ~/.ssh/id_*
    host_key: str | None = None      # pinned "type base64"; None: look in ~/.ssh/known_hosts
    gpus: int | None = None          # declared, or discovered (None: not yet known)
    gpu_model: str | None = None
    home: str | None = None          # the login's $HOME on the host, learnt by the last probe
    workdir: str | None = None       # lease workdirs go under it; None: ~/.fleet-leases
    source: str = "cli"
    status: str = "unknown"          # up | down | unknown
    status_detail: str | None = None
    checked_at: str | None = None
    added_at: str | None = None
    added_by: str | None = None
    damaged: str | None = None       # why its stored row cannot be used (then never probed or leased)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# -- ~/.ssh/config and known_hosts ---------------------------------------------------------------

def ssh_dir() -> Path:
    return Path(os.path.expanduser("~/.ssh"))


def ssh_config_for(alias: str) -> dict[str, Any]:
    """What ~/.ssh/config says about `alias` (hostname, user, port, identityfile, proxyjump,
    proxycommand); {} if nothing."""
    path = ssh_dir() / "config"
    try:
        st = path.stat()
    except OSError:
        return {}
    found = _parsed_ssh_config(str(path), st.st_mtime_ns, st.st_size).lookup(alias)
    return {k: v for k, v in found.items() if k in ("hostname", "user", "port", "identityfile", "proxyjump",
                                                    "proxycommand")}


@lru_cache(maxsize=4)
def _parsed_ssh_config(path: str, _mtime_ns: int, _size: int):
    """The file parsed once while it is unchanged: a lease looks up every host (its address, its
    jump host) and paramiko parses the whole file on each."""
    import paramiko
    try:
        return paramiko.SSHConfig.from_path(path)
    except Exception as exc:  # noqa: BLE001 — a broken user file should say which file
        raise UsageError(f"cannot read {path}: {exc}") from None


@dataclass
class Target:
    """Where and as whom to connect, after ~/.ssh/config has been applied."""

    hostname: str
    port: int
    user: str
    key_path: str


def resolve(host: Host) -> Target:
    cfg = ssh_config_for(host.address)
    hostname = cfg.get("hostname") or host.address
    port = host.port or int(cfg.get("port") or 22)
    user = host.login or cfg.get("user") or _os_user()
    key = host.key_path or next(iter(cfg.get("identityfile") or []), None)
    if key:
        key = os.path.expanduser(key)
    else:
        key = next((str(ssh_dir() / k) for k in DEFAULT_KEYS if (ssh_dir() / k).exists()), "")
    if not key or not Path(key).exists():
        raise UsageError(f"host {host.name}: no SSH private key" + (f" at {key}" if key else ""),
                         hint="set key = \"~/.ssh/…\" in [[hosts]] or pass --key to `fleet hosts add`")
    return Target(hostname, port, user, key)


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "root"


def known_host_key(hostname: str, port: int) -> str | None:
    """The host's key from ~/.ssh/known_hosts ("type base64"), preferring ed25519; None if absent."""
    path = ssh_dir() / "known_hosts"
    if not path.exists():
        return None
    import paramiko
    keys = paramiko.HostKeys()
    try:
        keys.load(str(path))
    except Exception:  # noqa: BLE001 — unreadable lines: treat as unknown rather than trust anything
        return None
    entry = keys.lookup(hostname if port == 22 else f"[{hostname}]:{port}")
    if not entry:
        return None
    for keytype in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
                    "rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"):
        if keytype in entry:
            return f"{keytype} {entry[keytype].get_base64()}"
    keytype = next(iter(entry.keys()))
    return f"{keytype} {entry[keytype].get_base64()}"


def fingerprint(host_key: str) -> str:
    """OpenSSH's SHA256 fingerprint of a "type base64" key, as `ssh-keygen -lf` prints it."""
    blob = base64.b64decode(host_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def fetch_host_key(hostname: str, port: int, timeout: float = PROBE_TIMEOUT_S) -> str:
    """Ask the server for its host key (no authentication). Only for showing it to a person to trust."""
    import paramiko
    try:
        sock = socket.create_connection((hostname, port), timeout=timeout)
    except OSError as exc:
        raise MachineUnreachable(f"{hostname}:{port} does not answer: {exc.strerror or exc}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.get_security_options().key_types = [
            t for t in transport.get_security_options().key_types if "ed25519" in t
        ] + [t for t in transport.get_security_options().key_types if "ed25519" not in t]
        transport.start_client(timeout=timeout)
        key = transport.get_remote_server_key()
        return f"{key.get_name()} {key.get_base64()}"
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise MachineUnreachable(f"{hostname}:{port} did not complete an SSH handshake: {exc}") from None
    finally:
        transport.close()


def pinned_key(host: Host, target: Target) -> str:
    key = host.host_key or known_host_key(target.hostname, target.port)
    if not key:
        raise InfrastructureError(
            f"host {host.name}: its SSH host key is not known ({target.hostname}:{target.port})",
            hint=f"pin it with `fleet hosts add {host.address} --name {host.name}` or add it to ~/.ssh/known_hosts")
    return key


def host_machine(host: Host, machine_id: str, workdir: str = "", python: str = "python3") -> Machine:
    """A Machine for reaching `host` (probes, setup); lease machines add slots and a workdir."""
    target = resolve(host)
    return Machine(id=machine_id, lease_id="", node_rank=0, host=target.hostname, port=target.port,
                   user=target.user, key_path=target.key_path, host_key=pinned_key(host, target),
                   workdir=workdir, python=python)


# -- discovery -------------------------------------------------------------------------------------

_DISCOVER = ('echo "HOME=$HOME"; if command -v nvidia-smi >/dev/null 2>&1; then '
             'echo GPUS; nvidia-smi --query-gpu=index,name --format=csv,noheader; fi')
# Which isolation a lease's machines get there (fleet/isolation): a cgroup v2 unit when this login
# can do what the agent does (make a cgroup under <cgroup2>/fleet and move a process into it: root,
# or a login whose own processes sit under a <cgroup2>/fleet it was delegated), else verified pids.
# A writable <cgroup2>/fleet alone is not enough: moving a process also needs the common ancestor's
# cgroup.procs, so the agent would fall back to pids there, and so does this probe.
_ISOLATION = ('cg=$(awk \'{for(i=1;i<=NF;i++) if($i=="-"){if($(i+1)=="cgroup2"){print $5; exit} break}}\' '
              '/proc/self/mountinfo 2>/dev/null); level=pids; '
              'if [ -n "$cg" ]; then p="$cg/fleet/probe-$$"; '
              'if mkdir -p "$p" 2>/dev/null; then '
              'if { [ -e "$p/cgroup.kill" ] || [ -e "$p/cgroup.freeze" ]; } && '
              'sh -c \'echo $$ > "$1/cgroup.procs"\' _ "$p" 2>/dev/null; then level=cgroup; fi; '
              'rmdir "$p" 2>/dev/null || { sleep 0.2; rmdir "$p" 2>/dev/null; }; fi; fi; '
              'echo ISOLATION=$level')


def parse_isolation(stdout: str) -> str | None:
    return next((line.strip()[10:] for line in stdout.splitlines() if line.strip().startswith("ISOLATION=")), None)


def parse_discovery(stdout: str) -> tuple[str, int | None, str | None]:
    """(remote home, GPU count or None when nvidia-smi is absent, GPU model)."""
    home, gpus, models, in_gpus = "", None, [], False
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("HOME="):
            home = line[5:]
        elif line == "GPUS":
            in_gpus, gpus = True, 0
        elif in_gpus and "," in line:
            index, name = (part.strip() for part in line.split(",", 1))
            if index.isdigit():
                gpus = (gpus or 0) + 1
                models.append(name)
    model = None
    if models:
        model = models[0] if len(set(models)) == 1 else "mixed: " + ", ".join(sorted(set(models)))
    return home, gpus, model


@dataclass
class Probe:
    up: bool
    detail: str = ""
    home: str = ""
    gpus: int | None = None
    gpu_model: str | None = None
    isolation: str | None = None     # "cgroup" | "pids": what a lease's machines get on this host


def probe(host: Host, timeout: float = PROBE_TIMEOUT_S) -> Probe:
    """Connect with the pinned key, learn $HOME, and count GPUs (nvidia-smi) when not declared."""
    from ...remote.ssh import connect
    try:
        machine = host_machine(host, f"probe-{host.name}")
        with connect(machine, timeout=timeout) as session:
            result = session.run(_DISCOVER + "; " + _ISOLATION, check=False, timeout=timeout + 10)
    except (InfrastructureError, UsageError) as exc:
        return Probe(False, exc.one_line())
    home, gpus, model = parse_discovery(result.stdout)
    if not home:
        return Probe(False, f"unexpected reply from {host.name}: {result.stderr.strip()[:120]}")
    if host.gpus is not None:
        gpus = host.gpus
    model = host.gpu_model or model
    detail = "" if gpus else "no GPUs found (no nvidia-smi there?): declare gpus in [[hosts]] or --gpus"
    return Probe(True, detail, home, gpus, model, parse_isolation(result.stdout))


# -- the inventory ---------------------------------------------------------------------------------

_COLUMNS = ("name", "address", "port", "login", "key_path", "host_key", "gpus", "gpu_model", "home", "workdir",
            "source",
            "status", "status_detail", "checked_at", "added_at", "added_by")


def _host_from_row(row) -> Host:
    """A stored row as a Host. A hand-edited number column that is not a number (SQLite keeps text
    in an INTEGER column) makes the host `damaged` and down, instead of an error in every command
    that adds up GPUs or dials its port."""
    fields = {k: row[k] for k in _COLUMNS}
    bad = []
    for column in ("port", "gpus"):
        value = fields[column]
        if value is None or (isinstance(value, int) and not isinstance(value, bool)):
            continue
        if isinstance(value, str) and value.isascii() and value.isdigit():
            fields[column] = int(value)
            continue
        fields[column] = None
        bad.append(f"{column} is {value!r}")
    if bad:
        fields["damaged"] = (f"the hosts table's {' and '.join(bad)}, not a number: "
                             f"`fleet hosts rm {fields['name']}` and add it again")
        fields["status"], fields["status_detail"] = "down", fields["damaged"]
    return Host(**fields)


class Inventory:
    """Hosts in the state database (shared by the team when that database is PostgreSQL)."""

    def __init__(self, db, config_hosts: list | None = None):
        self.db = db
        self.config_hosts = {h.name: h for h in (config_host(c) for c in (config_hosts or []))}

    def sync_config_hosts(self, user: str) -> None:
        """Give every `[[hosts]]` entry a row, so it can be locked and its status recorded."""
        now = utcnow().isoformat()
        for h in self.config_hosts.values():
            self.db.execute(
                "INSERT INTO hosts (name, address, port, login, key_path, gpus, workdir, source, added_at,"
                " added_by) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (name) DO NOTHING",
                (h.name, h.address, h.port, h.login, h.key_path, h.gpus, h.workdir, "config", now, user))

    def list(self) -> list[Host]:
        rows = {r["name"]: _host_from_row(r) for r in self.db.execute("SELECT * FROM hosts ORDER BY name")}
        for name, declared in self.config_hosts.items():
            stored = rows.get(name)
            # This process's config decides how to reach its hosts; the database keeps what was
            # learnt about them (status, discovered GPUs, a key pinned with `fleet hosts add`).
            merged = Host(**{**declared.to_json(), "source": "config"})
            if stored:
                merged.host_key = declared.host_key or stored.host_key
                merged.gpus = declared.gpus if declared.gpus is not None else stored.gpus
                merged.gpu_model, merged.home = declared.gpu_model or stored.gpu_model, stored.home
                if not stored.damaged:   # else: reached by the config's port, and probed again
                    merged.status, merged.status_detail = stored.status, stored.status_detail
                merged.checked_at, merged.added_at, merged.added_by = (
                    stored.checked_at, stored.added_at, stored.added_by)
            rows[name] = merged
        return [rows[n] for n in sorted(rows)]

    def get(self, name: str) -> Host:
        for host in self.list():
            if host.name == name:
                return host
        raise NotFound(f"no host {name!r}", hint="see `fleet hosts ls`")

    def add(self, host: Host) -> None:
        from ...state.db import ConstraintViolation
        if host.name in self.config_hosts:
            raise UsageError(f"host {host.name!r} is already declared in fleet.toml [[hosts]]")
        exists = UsageError(f"host {host.name!r} already exists",
                            hint=f"`fleet hosts rm {host.name}` first, or choose another --name")
        try:
            with self.db.transaction():
                if self.db.execute("SELECT name FROM hosts WHERE name = ?", (host.name,)):
                    raise exists
                self.db.execute(
                    "INSERT INTO hosts (name, address, port, login, key_path, host_key, gpus, gpu_model, home,"
                    " workdir, source, status, status_detail, checked_at, added_at, added_by)"
                    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    tuple(getattr(host, c) for c in _COLUMNS))
        except ConstraintViolation:     # added by someone else between our check and insert
            raise exists from None

    def remove(self, name: str, force: bool = False) -> None:
        with self.db.transaction():
            if not self.db.lock_rows("SELECT name FROM hosts WHERE name = ?", (name,)):
                raise NotFound(f"no host {name!r}", hint="see `fleet hosts ls`")
            busy = self.db.execute("SELECT COUNT(*) AS n FROM gpu_slots WHERE host = ? AND released_at IS NULL",
                                   (name,))[0]["n"]
            if busy and not force:
                raise UsageError(f"host {name!r} has {busy} GPU slot(s) leased",
                                 hint="release those leases first, or pass --force")
            self.db.execute("DELETE FROM hosts WHERE name = ?", (name,))

    def record_probe(self, name: str, result: Probe) -> None:
        self.db.execute(
            "UPDATE hosts SET status = ?, status_detail = ?, checked_at = ?, gpus = COALESCE(?, gpus),"
            " gpu_model = COALESCE(?, gpu_model), home = COALESCE(?, home) WHERE name = ?",
            ("up" if result.up else "down", result.detail or None, utcnow().isoformat(),
             result.gpus if result.up else None, result.gpu_model if result.up else None,
             result.home or None, name))

    def used_slots(self) -> dict[str, list[int]]:
        used: dict[str, list[int]] = {}
        for r in self.db.execute("SELECT host, slot FROM gpu_slots WHERE released_at IS NULL ORDER BY host, slot"):
            used.setdefault(r["host"], []).append(r["slot"])
        return used


def config_host(c) -> Host:
    """A `[[hosts]]` entry (providers.ssh.settings.HostConfig) as a Host."""
    return Host(name=c.name or c.address, address=c.address, port=c.port if c.port != 22 else None,
                login=c.user, key_path=os.path.expanduser(c.key) if c.key else None, gpus=c.gpus,
                gpu_model=c.gpu_model,
                workdir=getattr(c, "workdir", None), source="config")


def probe_all(hosts: list[Host], timeout: float = PROBE_TIMEOUT_S) -> dict[str, Probe]:
    """Probe hosts in parallel (bounded), so one dead host costs one timeout, not one per host."""
    from ...parallel import parallel   # also at interpreter shutdown
    return dict(zip([h.name for h in hosts], parallel(hosts, lambda h: probe(h, timeout), max_workers=16)))
