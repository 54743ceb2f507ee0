"""`fleet offers` (what --gpus N costs on AWS) and `fleet reap` (terminate orphaned fleet instances)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    app.command()(offers)
    app.command()(reap)


def _config(file: Optional[Path]):
    """fleet.toml when there is one ([prices], [aws]); the AWS commands also work without it."""
    if file is None and not Path("fleet.toml").exists():
        return None
    from ..config.loader import load_config
    return load_config(file)


def offers(
    gpus: int = typer.Option(..., "--gpus", "-g", help="Total GPUs wanted."),
    template: Optional[str] = typer.Option(None, "--template", "-t", help="Only this template."),
    provider_name: str = typer.Option("aws", "--provider", "-p", help="Whose offers: any registered provider."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Config file (default ./fleet.toml if present)."),
    refresh: bool = typer.Option(False, "--refresh", help="AWS: re-read instance types from AWS (cached a week)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> int:
    """Machine mixes a provider's templates allow for --gpus (default: the stack's AWS templates),
    cheapest first, with prices: the same offers `fleet up` chooses from."""
    from ..errors import UsageError
    from ..providers import registry
    provider = registry.provider_class(provider_name).from_config(_config(file))
    aws = _aws(provider)
    if aws is not None:
        aws.catalog(refresh=refresh)
    names = [template] if template else sorted(provider.templates())
    rows, reasons = [], []
    for name in names:
        try:
            rows.extend(provider.offers(name, gpus))
        except UsageError as exc:
            if template:
                raise
            reasons.append(f"{name}: {exc.message}")
    if not rows:
        raise UsageError(f"no {provider.name} template can give exactly {gpus} GPUs",
                         hint="; ".join(reasons)[:300] or "add a template")
    rows.sort(key=lambda o: (o.price_per_hour is None, o.price_per_hour or 0, o.machines))
    region = next((o.region for o in rows if o.region), "")
    prices = aws.prices() if aws is not None else None
    if json_out:
        from .render import print_json
        out = {"gpus": gpus, "provider": provider.name, "region": region, "offers": [o.to_json() for o in rows]}
        if prices is not None:
            out["price_table"] = {"source": prices.source, "retrieved": prices.retrieved}
        print_json(out)
        return 0
    from rich.console import Console
    from rich.table import Table
    where = f"{provider.name}" + (f" ({region})" if region else "")
    table = Table(title=f"{gpus} GPUs on {where}, cheapest first", title_justify="left")
    for col, right in (("template", False), ("mix", False), ("GPU", False), ("$/hour", True),
                       ("$/machine-h", True), ("spot", False)):
        table.add_column(col, justify="right" if right else "left", no_wrap=True)
    for o in rows:
        table.add_row(o.template, f"{o.machines} × {o.instance_type}", f"{o.gpus_per_machine}×{o.gpu_model}",
                      "?" if o.price_per_hour is None else f"{o.price_per_hour:.2f}",
                      "?" if o.price_per_machine_hour is None else f"{o.price_per_machine_hour:.3f}",
                      "first" if o.spot else "no")
    console = Console()
    console.print(table)
    if prices is not None:
        console.print(f"On-demand list prices as of {prices.retrieved} (fleet/providers/aws/prices.json); spot is "
                      "billed at most this. Override in fleet.toml [prices].", style="dim", markup=False)
    return 0


def _aws(provider):
    """The AWS provider's extras (its EC2 catalogue and price table), when that is the one asked."""
    from ..providers.aws.provider import AWSProvider
    return provider if isinstance(provider, AWSProvider) else None


def reap(
    dry_run: bool = typer.Option(False, "--dry-run", help="Only list what would be terminated."),
    all_users: bool = typer.Option(False, "--all-users",
                                   help="Judge every user's instances by this state store (team mode)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Config file (default ./fleet.toml if present)."),
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> int:
    """Terminate fleet-tagged AWS instances past their expiry or belonging to no live lease."""
    from ..plan import current_user
    from ..providers.aws import AWSProvider
    from ..providers.aws.reap import reap as reap_instances
    from ..providers.aws.session import translate
    from ..state import open_state
    config = _config(file)
    state = open_state(getattr(config, "state_url", None))
    try:
        live = {lease.id for lease in state.list_leases(active_only=False)
                if lease.status in ("leasing", "active")}
    finally:
        state.close()
    provider = AWSProvider(config)
    owner = None if all_users else current_user(getattr(config, "user", None))
    try:
        actions = reap_instances(provider.ec2, live, dry_run=dry_run, owner=owner)
    except Exception as exc:  # noqa: BLE001 — AWS errors become one line
        raise translate(exc, "reaping fleet instances") from None
    if json_out:
        from .render import print_json
        print_json({"dry_run": dry_run, "region": provider.outputs.region, "actions": actions})
        return 0
    if not actions:
        typer.echo("no orphaned or expired fleet instances")
        return 0
    verb = "would terminate" if dry_run else "terminated"
    for a in actions:
        typer.echo(f"{verb} {a['instance_id']} ({a['instance_type']}, lease {a['lease']}, "
                   f"user {a['user']}): {a['reason']}")
    return 0
