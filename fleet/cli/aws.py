"""`fleet offers` (what --gpus N costs on AWS) and `fleet reap` (leases of supervisors that are gone, on
any provider whose leases can be released from here; orphaned AWS instances)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command()(offers)
    app.command()(reap)


def _config(file: Optional[Path]):
    """fleet.toml when there is one ([prices], [aws]); the AWS commands also work without it."""
    if file is None and not os.path.lexists("fleet.toml"):   # a dangling link is refused by the load
        return None
    from ..config.loader import load_config
    return load_config(file)


def offers(
    gpus: str = typer.Option(..., "--gpus", "-g", help="Total GPUs wanted, optionally of a type: 8, A100:8, "
                                                        "A100-80GB:8."),
    template: Optional[str] = typer.Option(None, "--template", "-t", help="Only this template."),
    provider_name: str = typer.Option("aws", "--provider", "-p", help="Whose offers: any registered provider."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Config file (default ./fleet.toml if present)."),
    refresh: bool = typer.Option(False, "--refresh", help="AWS: re-read instance types (cached a week) and prices "
                                                             "(cached a day, spot an hour) from AWS."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> int:
    """Machine mixes a provider's templates allow for --gpus (default: the stack's AWS templates),
    cheapest first, with prices: the same offers `fleet up` chooses from."""
    from ..providers.offers import list_offers, parse_gpus_flag
    count, gpu_type = parse_gpus_flag(gpus)
    found = list_offers(provider_name, count, template=template, config=_config(file), refresh=refresh,
                        gpu_type=gpu_type)
    if json_out:
        from .render import print_json
        print_json(found.to_json())
        return 0
    from .render import print_table
    print_table(found.table())
    return 0


def reap(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be terminated, released and resumed."),
    all_users: bool = typer.Option(False, "--all-users",
                                   help="Judge every user's instances and leases by this state store (team mode)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Config file (default ./fleet.toml if present)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> int:
    """Release leases (AWS, team hosts, Slurm) whose detached run's supervisor is gone and resume their runs;
    terminate fleet-tagged AWS instances past their expiry or of no live lease.

    Each such run is ended lost and resumed as its next attempt where its settings allow it (else one
    line says why); AWS instances are judged only where an AWS stack is configured."""
    from ..providers.aws.orphans import reap_orphans
    from .render import RichEvents
    region, actions, released, resumed, left = reap_orphans(_config(file), dry_run=dry_run, all_users=all_users,
                                                            events=RichEvents(plain=True))
    if json_out:
        from .render import print_json
        print_json({"dry_run": dry_run, "region": region, "actions": actions, "released_leases": released,
                    "lost_runs": [r.to_json() for r in resumed], "left_alone": left})
        return 0
    released_verb = "would release" if dry_run else "released"
    if region is None:
        typer.echo("no AWS stack configured here: no fleet instances judged")
    elif not actions:
        typer.echo("no orphaned or expired fleet instances")
    if not actions and released:
        typer.echo(f"{released_verb} {len(released)} lease(s) whose run's supervisor is silent: "
                   f"{', '.join(released)}")
    verb = "would terminate" if dry_run else "terminated"
    for a in actions:
        typer.echo(f"{verb} {a['instance_id']} ({a['instance_type']}, lease {a['lease']}, "
                   f"user {a['user']}): {a['reason']}")
    if actions and released:
        typer.echo(f"{released_verb} {len(released)} lease(s) whose instances were reaped or whose run's "
                   f"supervisor is silent: {', '.join(released)}")
    for line in left:
        typer.echo(line)
    for r in resumed:
        typer.echo(r.line())
    return 0
