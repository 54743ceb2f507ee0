"""`fleet init [DIR] [--force]`: write a commented starter fleet.toml; `fleet config schema [-o FILE]`:
the JSON Schema that starter names on its first line, for editors."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


config_app = typer.Typer(help="fleet.toml helpers: `config schema` prints or writes its JSON Schema for editors.",
                         no_args_is_help=True)


@config_app.command("schema")
def schema(
    output: Optional[Path] = typer.Option(None, "-o", "--output",
                                          help="Write the schema to this file instead of printing it."),
) -> None:
    """Print fleet.toml's JSON Schema (every installed provider's section), or write it to a file that
    editors read instead of fetching the URL on fleet.toml's `#:schema` line."""
    from ..config.json_schema import SCHEMA_ID, schema_text, write_schema
    from ..errors import EnvironmentProblem
    from ..render.output_file import means_stdout
    if output is None or means_stdout(output):
        typer.echo(schema_text(), nl=False)
        return
    try:
        written = write_schema(output)
    except OSError as exc:
        raise EnvironmentProblem(f"cannot write {output}: {exc.strerror or exc}") from None
    typer.echo(f"wrote {written}: fleet.toml's JSON Schema, {SCHEMA_ID}")


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")

    @app.command("init")
    def init(
        directory: Optional[Path] = typer.Argument(None, help="Experiment directory (default: here)."),
        force: bool = typer.Option(False, "--force", help="Overwrite an existing fleet.toml."),
    ) -> None:
        """Write a commented starter fleet.toml (every key explained)."""
        import os
        import tempfile

        from ..config.starter import starter_text
        from ..errors import EnvironmentProblem, UsageError
        target_dir = (directory or Path.cwd()).expanduser()
        target = target_dir / "fleet.toml"
        try:   # exists() too can fail (a name too long for the filesystem: found by fuzzing the CLI)
            if os.path.lexists(target_dir) and not os.path.isdir(target_dir):   # mkdir said only "File exists"
                what = "a symlink to nothing" if not os.path.exists(target_dir) else "not a directory"
                raise UsageError(f"{target_dir} is {what}",
                                 hint="name a directory for fleet.toml, or leave DIR out for this one")
            if os.path.lexists(target) and not force:    # a link (dangling too: a team's config not mounted now)
                raise UsageError(f"{target} already exists; not overwriting it", hint="use --force to replace it")
            target_dir.mkdir(parents=True, exist_ok=True)
            # Write next to the target and rename, so --force never leaves a half-written file.
            fd, tmp = tempfile.mkstemp(prefix=".fleet.toml.", dir=target_dir)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(starter_text(target_dir))
                os.chmod(tmp, 0o644)
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        except OSError as exc:
            raise EnvironmentProblem(f"cannot write {target}: {exc.strerror or exc}") from None
        typer.echo(f"wrote {target}: set `command`, then run `fleet up`")
