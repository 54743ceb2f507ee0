"""`fleet stack up|preview|outputs`: drive the Pulumi program in stacks/ through the Automation API.

From a checkout Pulumi runs stacks/ as a local program (Pulumi.yaml at the top). An installed fleet
carries the same program as `fleet.stacks` and runs it inline, in this process, with the stack config
(Pulumi.<stack>.yaml) in the current directory or --dir.

The Automation API drives the `pulumi` CLI, which fleet cannot install for you: without it each
command says in one line how to install it and exits 3. `pulumi` (the Python SDK) is imported only
inside the commands, so `fleet --help` stays light.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

stack_app = typer.Typer(help="The AWS infrastructure (VPC, bucket, launch templates, reaper) as a "
                             "Pulumi stack.", no_args_is_help=True)

STACK_OPT = typer.Option("dev", "--stack", "-s", help="Pulumi stack name (config in Pulumi.<stack>.yaml).")
DIR_OPT = typer.Option(None, "--dir", help="A fleet checkout (Pulumi.yaml + stacks/) or, with fleet "
                                           "installed, the directory holding Pulumi.<stack>.yaml "
                                           "(default: a checkout here or above, else this directory).")


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")


@stack_app.command("preview")
def preview(stack: str = STACK_OPT, directory: Optional[Path] = DIR_OPT) -> None:
    """Show what `fleet stack up` would change (validates the stack config first)."""
    from ..providers.aws.stack import run_op
    run_op("preview", stack, directory, on_output=lambda line: typer.echo(line, err=True))


@stack_app.command("up")
def up(stack: str = STACK_OPT, directory: Optional[Path] = DIR_OPT,
       save: Optional[Path] = typer.Option(None, "--save", help="Also write the outputs (JSON) here, "
                                                                  "for FLEET_AWS_OUTPUTS.")) -> None:
    """Create or update the stack's resources, then print where its outputs are."""
    from ..providers.aws.stack import run_op
    run_op("up", stack, directory, on_output=lambda line: typer.echo(line, err=True))
    if save is not None:
        outputs(stack=stack, directory=directory, save=save, json_out=False)


@stack_app.command("outputs")
def outputs(stack: str = STACK_OPT, directory: Optional[Path] = DIR_OPT,
            save: Optional[Path] = typer.Option(None, "--save", help="Write the outputs JSON to this "
                                                                       "file (point FLEET_AWS_OUTPUTS at it)."),
            json_out: bool = typer.Option(False, "--json", help="Print the outputs as JSON.")) -> None:
    """The stack's `fleet` outputs (launch templates, subnets, bucket), checked by fleet's reader."""
    import json

    from ..providers.aws.outputs import OUTPUT_KEY
    from ..providers.aws.stack import save_outputs, stack_outputs
    parsed = stack_outputs(stack, directory)
    document = {OUTPUT_KEY: parsed.to_dict()}
    if save is not None:
        save_outputs(document, save)
        typer.echo(f"wrote {save} (export FLEET_AWS_OUTPUTS={save})", err=True)
    if json_out:
        typer.echo(json.dumps(document, indent=2))
    elif save is None:
        typer.echo(f"stack {stack} ({parsed.region}): bucket {parsed.snapshot_bucket}, "
                   f"{len(parsed.subnets)} subnets, templates: " + ", ".join(
                       f"{n} ({t.gpus_per_machine} GPU, {t.launch_template_id})"
                       for n, t in parsed.templates.items()))
