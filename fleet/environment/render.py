"""The environment section as words: facts per machine kind and the package list (`fleet audit RUN`)."""
from __future__ import annotations

from typing import Any

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


def markdown(record_environment: dict[str, Any] | None) -> str:
    """The record's environment as a Markdown section (`fleet audit RUN --md`)."""
    env = RunEnvironment.from_json(record_environment)
    lines = ["", "## Environment", ""]
    if env is None:
        return "\n".join(lines + ["- not recorded (the run was made before environments were captured)", ""])
    lines += [f"- **{k}**: {_md(v)}" for k, v in run_facts(env)]
    for m in env.machines:
        lines += ["", f"### Machine kind {_md(m.kind)}", ""] + [f"- **{k}**: {_md(v)}" for k, v in machine_facts(m)]
        if m.packages:
            lines += ["", "| package | version | sha256 |", "|---|---|---|"]
            lines += [f"| {_md(n)} | {_md(v)} | `{h}` |" for n, v, h in package_rows(m)]
    return "\n".join(lines) + "\n"


def _md(text: str) -> str:
    return str(text).replace("|", "\\|").replace("`", "'").replace("\n", " ")


def one_line(record_environment: dict[str, Any] | None) -> str | None:
    """`fleet runs show`: the environment in one line (`--json` has all of it)."""
    env = RunEnvironment.from_json(record_environment)
    if env is None or env.primary is None:
        return None
    p = env.primary
    more = f" (+{len(env.machines) - 1} more kinds)" if len(env.machines) > 1 else ""
    return (f"{p.image.label()}; {p.gpu.count} × {p.gpu.model}, driver {p.gpu.driver}; {p.python}; "
            f"{len(p.packages)} packages{more}")
