"""Where a fleet Pulumi stack lives and how it is run: a fleet checkout (Pulumi.yaml + stacks/) or the
program shipped in the package (fleet/stacks, run inline through the Automation API) with the
stack's config in a directory of the user's. `pulumi` (the SDK) is imported only when a stack is
opened; the pulumi CLI must be installed for that."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

INSTALL_HINT = "install it: `curl -fsSL https://get.pulumi.com | sh`, see https://www.pulumi.com/docs/install/"


@dataclass(frozen=True)
class StackProject:
    """Where a stack's config (Pulumi.<stack>.yaml) lives and which program declares its resources."""

    work_dir: Path
    inline: bool      # True: the program shipped in the package, run in this process (an installed fleet)


def is_checkout(d: Path) -> bool:
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
    from ...distribution import NAME
    from ...errors import NotFound
    if explicit is not None:
        if is_checkout(explicit):
            return StackProject(explicit, inline=False)
        if (explicit / "Pulumi.yaml").is_file() or not explicit.is_dir() or packaged_program() is None:
            raise NotFound(f"no fleet Pulumi project in {explicit}",
                           hint="pass a fleet checkout or the directory holding Pulumi.<stack>.yaml")
        return StackProject(explicit, inline=True)
    here = Path.cwd().resolve()
    for d in (here, *here.parents):
        if is_checkout(d):
            return StackProject(d, inline=False)
    checkout = Path(__file__).resolve().parents[3]   # fleet/providers/aws/stack.py → the checkout
    if is_checkout(checkout):
        return StackProject(checkout, inline=False)
    if packaged_program() is not None:
        return StackProject(here, inline=True)
    raise NotFound("no fleet Pulumi program: not in a fleet checkout and none installed with fleet",
                   hint=f"reinstall: pip install '{NAME}[stacks]'")


def require_pulumi_cli() -> str:
    from ...errors import EnvironmentProblem
    found = shutil.which("pulumi")
    if found is None:
        raise EnvironmentProblem("the pulumi CLI is not installed", hint=INSTALL_HINT)
    return found


def run_packaged_program() -> None:
    import runpy
    runpy.run_module("fleet.stacks", run_name="__main__", alter_sys=False)


def select_stack(stack: str, directory: Path | None):
    from ...distribution import NAME
    from ...errors import EnvironmentProblem, NotFound
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
                stack_name=stack, project_name="fleet", program=run_packaged_program,
                opts=auto.LocalWorkspaceOptions(work_dir=str(project.work_dir)))
        return auto.create_or_select_stack(stack_name=stack, work_dir=str(project.work_dir))
    except Exception as exc:   # the Automation API raises many types; one line for the user
        raise EnvironmentProblem(f"cannot open Pulumi stack {stack!r}: {first_line(exc)}") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def run_op(op: str, stack: str, directory: Path | None, on_output: Callable[[str], None]) -> None:
    """`pulumi preview` or `pulumi up` of `stack`, Pulumi's own lines passed to `on_output`."""
    from ...errors import InfrastructureError
    if op not in ("preview", "up"):
        raise ValueError(f"unknown stack operation {op!r}")
    st = select_stack(stack, directory)
    try:
        if op == "up":
            st.up(on_output=on_output)
        else:
            st.preview(on_output=on_output)
    except Exception as exc:
        raise InfrastructureError(f"pulumi {op} of stack {stack!r} failed: {first_line(exc)}",
                                  hint="the lines above are Pulumi's own output") from None


def stack_outputs(stack: str, directory: Path | None):
    """The stack's `fleet` outputs, checked by fleet's one reader (providers/aws/outputs.py)."""
    from .outputs import parse_outputs
    st = select_stack(stack, directory)
    try:
        raw = {k: v.value for k, v in st.outputs().items()}
    except Exception as exc:
        from ...errors import EnvironmentProblem
        raise EnvironmentProblem(f"cannot read outputs of stack {stack!r}: {first_line(exc)}") from None
    return parse_outputs(raw, source=f"pulumi stack {stack}")


def save_outputs(document: dict, path: Path) -> None:
    """Write beside, then rename: FLEET_AWS_OUTPUTS never points at a half-written file."""
    import json
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(document, indent=2) + "\n")
    tmp.replace(path)
