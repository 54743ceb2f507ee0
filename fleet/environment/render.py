"""The environment section as words: facts per machine kind and the package list (`fleet audit RUN`)."""
from __future__ import annotations

from typing import Any

from ..render import Bullets, Column, Document, Fields, Heading, Table
from ..render.markdown import escape
from .model import MachineEnvironment, RunEnvironment


def machine_facts(m: MachineEnvironment) -> list[tuple[str, str]]:
    gpu = f"{m.gpu.count} × {m.gpu.model}" + (" (simulated: no device)" if m.gpu.simulated else "")
    return [("Machines", f"{m.machines} × {m.instance_type} ({m.provider} / {m.template}, {m.lifecycle})"),
            ("Image", m.image.label()),
            ("OS / kernel", f"{m.os_release} / {m.kernel}"),
            ("GPU", gpu),
            ("Driver / CUDA", f"{m.gpu.driver} / {m.gpu.cuda}"),
            ("Python", m.python),
            ("Packages", f"{len(m.packages)} in the run's own environment (set {m.packages_hash[:12]})"),
            ("Lock files", ", ".join(f"{f.name} ({f.sha256[:12]})" for f in m.lock_files) or "none")]


def run_facts(env: RunEnvironment) -> list[tuple[str, str]]:
    out = [("Wheels snapshot", env.wheels_snapshot or "none (no packages of its own, or no store)"),
           ("Captured in", f"{env.capture_s:.2f} s")]
    if env.pinned_from:
        out.append(("Pinned to", f"run {env.pinned_from}"))
        out.append(("Differences", "; ".join(env.differences) or "none"))
    return out


def package_rows(m: MachineEnvironment) -> list[tuple[str, str, str]]:
    return [(p.name, p.version, p.sha256) for p in m.packages]


def environment_blocks(record_environment: dict[str, Any] | None) -> list:
    """The record's environment as document blocks (a section of `fleet audit RUN`)."""
    env = RunEnvironment.from_json(record_environment)
    blocks: list = [Heading("Environment")]
    if env is None:
        return blocks + [Bullets(["not recorded (the run was made before environments were captured)"])]
    blocks.append(Fields([(k, escape(v)) for k, v in run_facts(env)]))
    for m in env.machines:
        blocks += [Heading(f"Machine kind {escape(m.kind)}", 3), Fields([(k, escape(v)) for k, v in machine_facts(m)])]
        if m.packages:
            blocks.append(Table([Column("package"), Column("version"), Column("sha256", code=True)], package_rows(m)))
    return blocks


def markdown(record_environment: dict[str, Any] | None) -> str:
    """The environment section alone, as Markdown."""
    from ..render.markdown import to_markdown
    return to_markdown(Document("", environment_blocks(record_environment)))


def one_line(record_environment: dict[str, Any] | None) -> str | None:
    """`fleet runs show`: the environment in one line (`--json` has all of it)."""
    env = RunEnvironment.from_json(record_environment)
    if env is None or env.primary is None:
        return None
    p = env.primary
    more = f" (+{len(env.machines) - 1} more kinds)" if len(env.machines) > 1 else ""
    return (f"{p.image.label()}; {p.gpu.count} × {p.gpu.model}, driver {p.gpu.driver}; {p.python}; "
            f"{len(p.packages)} packages{more}")


def environment_label(record_environment: dict[str, Any] | None) -> str | None:
    """A short name for a run's environment, equal for runs that had the same one (`fleet runs
    compare`: which environment each trial ran in): the image, the GPU driver and the package set."""
    env = RunEnvironment.from_json(record_environment)
    if env is None or env.primary is None:
        return None
    p = env.primary
    return f"{p.image.id} / driver {p.gpu.driver} / packages {p.packages_hash[:8]}"
