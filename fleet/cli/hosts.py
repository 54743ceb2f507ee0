"""`fleet hosts add | ls | rm`: the team's SSH GPU hosts (provider = "ssh")."""
from __future__ import annotations

from typing import Optional

import typer

hosts_app = typer.Typer(help="Your team's SSH GPU hosts: add (pinning the host key), list with health, remove.",
                        no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(hosts_app, name="hosts")


def _config_hosts() -> list:
    """`[[hosts]]` from ./fleet.toml when there is one (a broken file is reported, not ignored)."""
    from pathlib import Path
    if not (Path.cwd() / "fleet.toml").exists():
        return []
    from ..config.loader import load_config
    from ..providers.ssh import SSHHostsProvider
    return SSHHostsProvider.settings_from(load_config(overrides={"command": "true"})).hosts


def _inventory():
    from ..providers.ssh.hosts import Inventory
    from ..state import open_state
    return Inventory(open_state().db, _config_hosts())


@hosts_app.command("add")
def add(
    address: str = typer.Argument(..., help="Host name, IP address, or an alias from ~/.ssh/config."),
    name: Optional[str] = typer.Option(None, "--name", help="Short name (default: the address)."),
    user: Optional[str] = typer.Option(None, "--user", help="SSH user (default: ~/.ssh/config, else you)."),
    port: Optional[int] = typer.Option(None, "--port", min=1, max=65535, help="SSH port (default 22)."),
    key: Optional[str] = typer.Option(None, "--key", help="Private key file (default: ~/.ssh/config or ~/.ssh/id_*)."),
    gpus: Optional[int] = typer.Option(None, "--gpus", min=0, help="GPUs on the host (default: nvidia-smi)."),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="Where lease workdirs go (default ~/.fleet-leases)."),
    trust: Optional[str] = typer.Option(None, "--trust", metavar="SHA256:…",
                                        help="Trust the host key only if it has this fingerprint."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Trust the host key the server shows (non-interactive)."),
    json_out: bool = typer.Option(False, "--json", help="Print the added host as JSON."),
) -> int:
    """Add a host: its SSH host key is pinned now (shown as a fingerprint), then it is probed."""
    import os
    import sys

    from ..errors import InfrastructureError, UsageError
    from ..providers.ssh.hosts import Host, fetch_host_key, fingerprint, known_host_key, probe, resolve
    from ..models import utcnow
    from ..plan import current_user

    host = Host(name=name or address, address=address, port=port, login=user,
                key_path=os.path.expanduser(key) if key else None, gpus=gpus, workdir=workdir,
                added_at=utcnow().isoformat(), added_by=current_user())
    inventory = _inventory()
    if any(h.name == host.name for h in inventory.list()):
        raise UsageError(f"host {host.name!r} already exists", hint=f"`fleet hosts rm {host.name}` first")
    target = resolve(host)
    known = known_host_key(target.hostname, target.port)
    offered = fetch_host_key(target.hostname, target.port)
    shown = fingerprint(offered)
    if known:
        # known_hosts decides. (It may hold another key type than the one offered here; the probe
        # below then checks the known key itself.)
        if known.split()[0] == offered.split()[0] and known.split()[1] != offered.split()[1]:
            raise InfrastructureError(f"{target.hostname}:{target.port} offers {shown}, but ~/.ssh/known_hosts "
                                      f"has {fingerprint(known)} — refusing (possible impersonation)")
        offered, shown = known, fingerprint(known)
        typer.echo(f"host key {shown} (from ~/.ssh/known_hosts)", err=True)
    elif trust:
        if trust.strip() != shown:
            raise InfrastructureError(f"{target.hostname}:{target.port} offers host key {shown}, not {trust.strip()}"
                                      " — refusing")
    elif not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"{target.hostname}:{target.port} host key is {shown}; confirm it is the host's",
                             hint=f"pass --trust {shown} (or --yes) to pin it without a prompt")
        typer.echo(f"{target.hostname}:{target.port} offers host key {offered.split()[0]} {shown}", err=True)
        if not typer.confirm("Pin this key for the host?", default=False):
            raise UsageError("host key not trusted; nothing added")
    host.host_key = " ".join(offered.split()[:2])
    result = probe(host)
    if not result.up:
        raise InfrastructureError(f"host {host.name}: {result.detail}")
    host.status, host.status_detail, host.home = "up", result.detail or None, result.home
    host.gpus, host.gpu_model = result.gpus, result.gpu_model
    host.checked_at = utcnow().isoformat()
    inventory.add(host)
    if json_out:
        from .render import print_json
        print_json(host.to_json())
    else:
        gpus_text = f"{host.gpus} GPU(s)" + (f" ({host.gpu_model})" if host.gpu_model else "")
        typer.echo(f"added {host.name}: {target.user}@{target.hostname}:{target.port}, {gpus_text}, key {shown}")
        if result.detail:
            typer.echo(f"warning: {result.detail}", err=True)
    return 0


@hosts_app.command("ls")
def ls(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    probe_hosts: bool = typer.Option(True, "--probe/--no-probe", help="Check each host over SSH now."),
) -> int:
    """List hosts with GPUs, slots in use, and whether they answer (down hosts are skipped by leases)."""
    from ..providers.ssh.hosts import probe_all
    inventory = _inventory()
    hosts = inventory.list()
    probes = {}
    if probe_hosts and hosts:
        inventory.sync_config_hosts(hosts[0].added_by or "unknown")
        probes = probe_all(hosts)
        for name, result in probes.items():
            inventory.record_probe(name, result)
        hosts = inventory.list()
    used = inventory.used_slots()
    rows = []
    for h in hosts:
        row = {k: v for k, v in h.to_json().items() if k not in ("host_key", "home")}
        from ..providers.ssh.hosts import fingerprint
        row["host_key_fingerprint"] = fingerprint(h.host_key) if h.host_key else None
        row["slots_used"] = used.get(h.name, [])
        row["slots_free"] = max(0, (h.gpus or 0) - len(row["slots_used"]))
        # Learnt by this probe (not stored): "cgroup" | "pids", None when not probed or down.
        row["isolation"] = probes[h.name].isolation if h.name in probes and probes[h.name].up else None
        rows.append(row)
    if json_out:
        from .render import print_json
        print_json({"hosts": rows})
        return 0
    if not rows:
        typer.echo("no hosts: add one with `fleet hosts add ADDRESS`, or [[hosts]] in fleet.toml")
        return 0
    from rich.console import Console
    from rich.table import Table
    table = Table(title="fleet hosts", title_justify="left")
    for col in ("host", "address", "gpus", "used", "status", "isolation", "source", "detail"):
        table.add_column(col)
    for r in rows:
        address = f"{r['login'] + '@' if r['login'] else ''}{r['address']}{':' + str(r['port']) if r['port'] else ''}"
        gpus = "?" if r["gpus"] is None else str(r["gpus"]) + (f" × {r['gpu_model']}" if r["gpu_model"] else "")
        status = {"up": "[green]up[/]", "down": "[red]DOWN[/]"}.get(r["status"], r["status"])
        table.add_row(r["name"], address, gpus, f"{len(r['slots_used'])}/{r['gpus'] or 0}", status,
                      r["isolation"] or "?", r["source"], r["status_detail"] or "")
    Console().print(table)
    return 0


@hosts_app.command("rm")
def rm(
    name: str = typer.Argument(..., help="The host's name (see `fleet hosts ls`)."),
    force: bool = typer.Option(False, "--force", help="Remove even while leases hold GPU slots on it."),
) -> int:
    """Remove a host added with `fleet hosts add` (hosts from fleet.toml are removed there)."""
    from ..errors import UsageError
    inventory = _inventory()
    if name in inventory.config_hosts:
        raise UsageError(f"host {name!r} comes from fleet.toml [[hosts]]; remove it there")
    inventory.remove(name, force=force)
    typer.echo(f"removed {name}")
    return 0
