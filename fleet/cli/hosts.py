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
    import os
    if not os.path.lexists("fleet.toml"):     # one there but unreadable (a dangling link) is refused by the load
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
    gpus: Optional[int] = typer.Option(None, "--gpus", min=1, max=1024,   # config.values.MAX_HOST_GPUS
                                       help="GPUs on the host (default: nvidia-smi)."),
    gpu_model: Optional[str] = typer.Option(None, "--gpu-model", help="GPU model, e.g. A100-80GB, matched by "
                                                                     "`fleet up --gpus A100:8` (default: nvidia-smi)."),
    workdir: Optional[str] = typer.Option(None, "--workdir", help="Where lease workdirs go (default ~/.fleet-leases)."),
    trust: Optional[str] = typer.Option(None, "--trust", metavar="SHA256:…",
                                        help="Trust the host key only if it has this fingerprint."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Trust the host key the server shows (non-interactive)."),
    json_out: bool = typer.Option(False, "--json", help="Print the added host as JSON."),
) -> int:
    """Add a host: its SSH host key is pinned now (shown as a fingerprint), then it is probed."""
    import os
    import sys

    from ..models import utcnow
    from ..plan import current_user
    from ..providers.ssh.enrol import enrol
    from ..providers.ssh.hosts import Host

    def ask(where: str, key_type: str, shown: str) -> bool:
        typer.echo(f"{where} offers host key {key_type} {shown}", err=True)
        return typer.confirm("Pin this key for the host?", default=False)

    host = Host(name=name or address, address=address, port=port, login=user,
                key_path=os.path.expanduser(key) if key else None, gpus=gpus, gpu_model=gpu_model, workdir=workdir,
                added_at=utcnow().isoformat(), added_by=current_user(check=True))
    done = enrol(_inventory(), host, trust=trust, accept=yes, confirm=ask if sys.stdin.isatty() else None)
    if done.key.source == "known_hosts":
        typer.echo(f"host key {done.key.fingerprint} (from ~/.ssh/known_hosts)", err=True)
    if json_out:
        from .render import print_json
        print_json(host.to_json())
    else:
        t = done.target
        gpus_text = f"{host.gpus} GPU(s)" + (f" ({host.gpu_model})" if host.gpu_model else "")
        typer.echo(f"added {host.name}: {t.user}@{t.hostname}:{t.port}, {gpus_text}, key {done.key.fingerprint}")
        if done.probe.detail:   # the host's own answer: shown, not obeyed
            from ..render.text import printable_line
            typer.echo(f"warning: {printable_line(done.probe.detail)}", err=True)
    return 0


@hosts_app.command("ls")
def ls(
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
    probe_hosts: bool = typer.Option(True, "--probe/--no-probe", help="Check each host over SSH now."),
) -> int:
    """List hosts with GPUs, slots in use, and whether they answer (down hosts are skipped by leases)."""
    from ..providers.ssh.listing import host_rows, hosts_table
    rows = host_rows(_inventory(), probe=probe_hosts)
    if json_out:
        from .render import print_json
        print_json({"hosts": rows})
        return 0
    from .render import print_table
    print_table(hosts_table(rows))
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
