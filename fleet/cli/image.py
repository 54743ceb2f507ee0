"""`fleet image bake RECIPE` and `fleet image ls`: prebaked machine images named by recipe hash."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

image_app = typer.Typer(help="Prebaked machine images: images/<recipe>/ → fleet-<recipe>-<hash>.",
                        no_args_is_help=True)

REGION_OPT = typer.Option(None, "--region", help="AWS region (default: the stack outputs', else "
                                                 "AWS_REGION / AWS_DEFAULT_REGION).")
OUTPUTS_OPT = typer.Option(None, "--outputs", help="Stack outputs JSON (default: $FLEET_AWS_OUTPUTS); "
                                                   "the builder then uses the stack's subnet and SSH group.")


def register(app: typer.Typer) -> None:
    app.add_typer(image_app, name="image")


@image_app.command("bake")
def bake_cmd(
    recipe: str = typer.Argument(..., help="Recipe name: a directory under images/."),
    region: Optional[str] = REGION_OPT,
    outputs: Optional[Path] = OUTPUTS_OPT,
    ssh_cidr: Optional[str] = typer.Option(None, "--ssh-cidr", help="With no stack outputs: who may SSH "
                                                                    "to the builder (your IP/32)."),
    check: bool = typer.Option(False, "--check", help="Run the steps in check mode (sandbox only; the "
                                                      "default there)."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
) -> None:
    """Bake RECIPE into an image (a no-op when an image for its current hash exists)."""
    from rich.console import Console

    from ..images.bake import bake
    from ..images.recipe import load_recipe
    from ..images.where import bake_options, ec2_client, stack_outputs

    r = load_recipe(recipe)
    out = stack_outputs(outputs)
    options = bake_options(out, check=check, ssh_cidr=ssh_cidr)
    err = Console(stderr=True, highlight=False, markup=False)   # recipe steps and commands are text
    result = bake(ec2_client(region, out), r, options,
                  progress=lambda msg: None if json_out else err.print(f"fleet: bake: {msg}"))
    if json_out:
        from .render import print_json
        print_json(result.to_dict())
        return
    verb = "exists" if result.reused else f"baked ({result.mode} mode)"
    typer.echo(f"{result.image_name} {result.image_id} {verb}")


@image_app.command("ls")
def ls_cmd(
    region: Optional[str] = REGION_OPT,
    outputs: Optional[Path] = OUTPUTS_OPT,
    json_out: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Baked images (current or stale against the recipes here) and recipes not baked yet."""
    from ..images.store import list_images, unbaked_recipes
    from ..images.where import ec2_client, stack_outputs
    from ..providers.aws.session import translate
    ec2 = ec2_client(region, stack_outputs(outputs))
    try:
        images = list_images(ec2)
    except Exception as exc:  # noqa: BLE001 — botocore errors become one line
        raise translate(exc, "listing images") from None
    missing = unbaked_recipes(images)
    if json_out:
        from .render import print_json
        print_json({"images": [i.to_dict() for i in images], "unbaked": missing})
        return
    from ..images.store import images_table
    from .render import print_table
    print_table(images_table(images, missing))
