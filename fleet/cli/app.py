"""The typer application behind `fleet`: a root group whose commands load on demand."""
from __future__ import annotations

import importlib

import click
import typer
import typer.main
from typer.core import TyperGroup

from . import catalog


class LazyGroup(TyperGroup):
    """Lists commands from the catalog and imports a command's module only when it is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [entry.name for entry in catalog.COMMANDS]

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = catalog.BY_NAME.get(name)
        if entry is None:
            return None
        holder = typer.Typer(rich_markup_mode=None, pretty_exceptions_enable=False,
                             context_settings={"help_option_names": ["-h", "--help"]})
        importlib.import_module(f"fleet.cli.{entry.module}").register(holder)
        return typer.main.get_group(holder).get_command(ctx, name)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        name = args[0] if args else ""
        if name and not name.startswith("-") and name not in catalog.BY_NAME:
            close = catalog.suggestion(name)
            hint = f" Did you mean '{close}'?" if close else ""
            raise click.UsageError(f"No such command '{name}'.{hint}", ctx)
        return super().resolve_command(ctx, args)

    def get_help(self, ctx: click.Context) -> str:
        return catalog.root_help().rstrip("\n")


def _version(value: bool) -> None:
    if value:
        from ..distribution import version
        typer.echo(f"fleet {version()}")
        raise typer.Exit(0)


def build_app() -> typer.Typer:
    app = typer.Typer(
        name="fleet",
        cls=LazyGroup,
        help=catalog.ABOUT,
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain help: rendering it with rich costs ~60 ms per call
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                           help="Print the version and exit.")) -> None:
        """Lease GPU machines for an experiment, run it on pinned inputs, and destroy them. Always."""

    return app
