"""The `fleet` command. Thin: parse, call the library, render.

Command modules import only typer/rich at top level; the library (and boto3, paramiko, pulumi)
is imported inside each command so `fleet --help` stays fast.
"""
from __future__ import annotations

import importlib
import sys

import typer

app = typer.Typer(
    name="fleet",
    help="Lease GPU machines for an experiment, run it on pinned inputs, and destroy them. Always.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: rendering it with rich costs ~60 ms of every `fleet --help`
    context_settings={"help_option_names": ["-h", "--help"]},
)



def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version
        typer.echo(f"fleet {version('fleet')}")
        raise typer.Exit(0)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """Lease GPU machines for an experiment, run it on pinned inputs, and destroy them. Always."""


# Each module has `register(app)`; order is the order of `fleet --help`.
COMMAND_MODULES = ["up", "leases", "init", "report", "snapshot", "stack", "runs", "hosts", "image", "aws"]

for _name in COMMAND_MODULES:
    importlib.import_module(f"fleet.cli.{_name}").register(app)


def run() -> None:
    from .errors import main_guard
    sys.exit(main_guard(app))


if __name__ == "__main__":
    run()
