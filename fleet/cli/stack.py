"""`fleet stack up|preview|outputs`: drive the Pulumi program in stacks/ through the Automation API.

From a checkout Pulumi runs stacks/ as a local program (Pulumi.yaml at the top). An installed fleet
carries the same program as `fleet.stacks` and runs it inline, in this process, with the stack config
(Pulumi.<stack>.yaml) in the current directory or --dir.

The Automation API drives the `pulumi` CLI, which fleet cannot install for you: without it each
command says in one line how to install it and exits 3. `pulumi` (the Python SDK) is imported only
inside the commands, so `fleet --help` stays light.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import typer

stack_app = typer.Typer(help="The AWS infrastructure (VPC, bucket, launch templates, reaper) as a "
                             "Pulumi stack.", no_args_is_help=True)

INSTALL_HINT = "install it: `curl -fsSL https://get.pulumi.com | sh`, see https://www.pulumi.com/docs/install/"
STACK_OPT = typer.Option("dev", "--stack", "-s", help="Pulumi stack name (config in Pulumi.<stack>.yaml).")
DIR_OPT = typer.Option(None, "--dir", help="A fleet checkout (Pulumi.yaml + stacks/) or, with fleet "
                                           "installed, the directory holding Pulumi.<stack>.yaml "
                                           "(default: a checkout here or above, else this directory).")


def register(app: typer.Typer) -> None:
    app.add_typer(stack_app, name="stack")


@dataclass(frozen=True)
class StackProject:
    """Where a stack's config (Pulumi.<stack>.yaml) lives and which program declares its resources."""

    work_dir: Path
    inline: bool      # True: the program shipped in the package, run in this process (an installed fleet)


def _is_checkout(d: Path) -> bool:
    return (d / "Pulumi.yaml").is_file() and (d / "stacks" / "__main__.py").is_file()


def packaged_program() -> Path | None:
    """The Pulumi program inside the installed package (fleet/stacks; a symlink in a checkout)."""
    from importlib.resources import files
    try:
        main = files("fleet.stacks") / "__main__.py"
    except ModuleNotFoundError:
        return None
    return Path(str(main)).parent if main.is_file() else None


def locate_project(explicit: Path | None) -> StackProject:
    """--dir, else a fleet checkout here or above, else the checkout this fleet runs from, else the
    packaged program with the stack config in the current directory."""
    from ..distribution import NAME
    from ..errors import NotFound
    if explicit is not None:
        if _is_checkout(explicit):
            return StackProject(explicit, inline=False)
        if (explicit / "Pulumi.yaml").is_file() or not explicit.is_dir() or packaged_program() is None:
            raise NotFound(f"no fleet Pulumi project in {explicit}",
                           hint="pass a fleet checkout or the directory holding Pulumi.<stack>.yaml")
        return StackProject(explicit, inline=True)
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if _is_checkout(d):
            return StackProject(d, inline=False)
    checkout = Path(__file__).resolve().parents[2]
    if _is_checkout(checkout):
        return StackProject(checkout, inline=False)
    if packaged_program() is not None:
        return StackProject(here, inline=True)
    raise NotFound("no fleet Pulumi program: not in a fleet checkout and none installed with fleet",
                   hint=f"reinstall: pip install '{NAME}[stacks]'")


def require_pulumi_cli() -> str:
    from ..errors import EnvironmentProblem
    found = shutil.which("pulumi")
    if found is None:
        raise EnvironmentProblem("the pulumi CLI is not installed", hint=INSTALL_HINT)
    return found


def _run_packaged_program() -> None:
    import runpy
    runpy.run_module("fleet.stacks", run_name="__main__", alter_sys=False)


def _select(stack: str, directory: Path | None):
    from ..distribution import NAME
    from ..errors import EnvironmentProblem, NotFound
    project = locate_project(directory)
    require_pulumi_cli()
    try:
        from pulumi import automation as auto
    except ImportError:
        raise EnvironmentProblem("the pulumi Python SDK is not installed",
                                 hint=f"pip install '{NAME}[stacks]'") from None
    config = project.work_dir / f"Pulumi.{stack}.yaml"
    if not config.is_file():
        example = (packaged_program() if project.inline else project.work_dir) / "Pulumi.dev.yaml.example"
        raise NotFound(f"no stack config {config}", hint=f"copy {example} to it and edit")
    try:
        if project.inline:
            # Project name "fleet", as in the checkout's Pulumi.yaml: the same stacks either way.
            return auto.create_or_select_stack(
                stack_name=stack, project_name="fleet", program=_run_packaged_program,
                opts=auto.LocalWorkspaceOptions(work_dir=str(project.work_dir)))
        return auto.create_or_select_stack(stack_name=stack, work_dir=str(project.work_dir))
    except Exception as exc:   # the Automation API raises many types; one line for the user
        raise EnvironmentProblem(f"cannot open Pulumi stack {stack!r}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _run(op: str, stack: str, directory: Path | None) -> None:
    from ..errors import InfrastructureError
    st = _select(stack, directory)
    try:
        if op == "up":
            st.up(on_output=lambda line: typer.echo(line, err=True))
        else:
            st.preview(on_output=lambda line: typer.echo(line, err=True))
    except Exception as exc:
        raise InfrastructureError(f"pulumi {op} of stack {stack!r} failed: {_first_line(exc)}",
                                  hint="the lines above are Pulumi's own output") from None


@stack_app.command("preview")
def preview(stack: str = STACK_OPT, directory: Optional[Path] = DIR_OPT) -> None:
    """Show what `fleet stack up` would change (validates the stack config first)."""
    _run("preview", stack, directory)


@stack_app.command("up")
def up(stack: str = STACK_OPT, directory: Optional[Path] = DIR_OPT,
       save: Optional[Path] = typer.Option(None, "--save", help="Also write the outputs (JSON) here, "
                                                                  "for FLEET_AWS_OUTPUTS.")) -> None:
    """Create or update the stack's resources, then print where its outputs are."""
    _run("up", stack, directory)
    if save is not None:
        outputs(stack=stack, directory=directory, save=save, json_out=False)


@stack_app.command("outputs")
def outputs(stack: str = STACK_OPT, directory: Optional[Path] = DIR_OPT,
            save: Optional[Path] = typer.Option(None, "--save", help="Write the outputs JSON to this "
                                                                       "file (point FLEET_AWS_OUTPUTS at it)."),
            json_out: bool = typer.Option(False, "--json", help="Print the outputs as JSON.")) -> None:
    """The stack's `fleet` outputs (launch templates, subnets, bucket), checked by fleet's reader."""
    import json as jsonlib

    from ..providers.aws.outputs import OUTPUT_KEY, parse_outputs
    st = _select(stack, directory)
    try:
        raw = {k: v.value for k, v in st.outputs().items()}
    except Exception as exc:
        from ..errors import EnvironmentProblem
        raise EnvironmentProblem(f"cannot read outputs of stack {stack!r}: {_first_line(exc)}") from None
    parsed = parse_outputs(raw, source=f"pulumi stack {stack}")
    document = {OUTPUT_KEY: parsed.to_dict()}
    if save is not None:
        tmp = save.with_name(save.name + f".tmp{os.getpid()}")
        tmp.write_text(jsonlib.dumps(document, indent=2) + "\n")
        tmp.replace(save)
        typer.echo(f"wrote {save} (export FLEET_AWS_OUTPUTS={save})", err=True)
    if json_out:
        typer.echo(jsonlib.dumps(document, indent=2))
    elif save is None:
        typer.echo(f"stack {stack} ({parsed.region}): bucket {parsed.snapshot_bucket}, "
                   f"{len(parsed.subnets)} subnets, templates: " + ", ".join(
                       f"{n} ({t.gpus_per_machine} GPU, {t.launch_template_id})"
                       for n, t in parsed.templates.items()))
