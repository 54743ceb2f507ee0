"""`fleet sweep`: many trials of the experiment on one warm pool of machines, under one budget."""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command(name="sweep")(sweep_command)


def sweep_command(
    command: Optional[List[str]] = typer.Argument(None, help="Command with {name} placeholders (after --); "
                                                            "default: [sweep] command or the config's command."),
    param: Optional[List[str]] = typer.Option(None, "--param", help="NAME=V1,V2,… (repeat for more parameters)."),
    samples: Optional[int] = typer.Option(None, "--samples", help="Random search: this many trials (default: grid)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for --samples (same seed, same trials)."),
    parallel: Optional[int] = typer.Option(None, "--parallel", help="Trials at once (default 1)."),
    gpus_per_trial: Optional[int] = typer.Option(None, "--gpus-per-trial", help="GPUs each trial gets (default 1)."),
    trial_timeout: Optional[str] = typer.Option(None, "--trial-timeout", help="Stop a trial still running after "
                                                "this, e.g. 10m (default: max_duration)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Budget for the whole sweep in US dollars "
                                          "(default: [sweep] budget, else the config's budget)."),
    stop_if: Optional[str] = typer.Option(None, "--stop-if", help="End a hopeless trial, read from its metrics.json: "
                                          "\"val_loss > 2.0 after 3 epochs\"."),
    idle_release: Optional[str] = typer.Option(None, "--idle-release", help="Release a pool machine that has "
                                               "waited this long on the budget with no trial, e.g. 2m (default: "
                                               "at once; with no trial left, always at once)."),
    template: Optional[str] = typer.Option(None, "--template", "-t", help="Machine template."),
    provider: Optional[str] = typer.Option(None, "--provider", "-p", help="local | ssh | aws | slurm"),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Config file (default ./fleet.toml)."),
    max_duration: Optional[str] = typer.Option(None, "--max-duration", help="Hard limit for the pool, e.g. 2h."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Run uncommitted changes (captured as a snapshot)."),
    wait: Optional[str] = typer.Option(None, "--wait", help="How long to wait for capacity (team hosts' GPU "
                                       "slots, Slurm, AWS) before giving up, e.g. 10m (default: do not wait)."),
    ci: bool = typer.Option(False, "--ci", help="CI mode: no live display, the CI stop limits (on when CI=true)."),
    json_out: bool = typer.Option(False, "--json", help="Print the sweep summary as JSON on stdout."),
) -> int:
    """Run a parameter sweep: every trial a pinned, recorded run, on machines leased once."""
    from ..config.loader import load_config
    from ..run.types import RunOptions
    from ..sweep import sweep
    from .render import is_ci
    from .up import _ci_failures_reported, _events, _json_failure_shown, command_from_argv, flag_duration
    # In CI as `fleet up` is: a cancelled GitLab job sends one SIGTERM and then SIGKILL, and without
    # the stop limit the pool waited out its trials' grace and collects past that SIGKILL, its
    # machines left to their deadline.
    ci = ci or is_ci()
    with _ci_failures_reported(ci), _json_failure_shown(json_out):   # --json: one document, however it ends
        text = command_from_argv(list(command)) if command else None
        config = load_config(file, overrides={"template": template, "provider": provider, "max_duration": max_duration,
                                              "command": text})
        spec = build_spec(config, config.sweep, command, param or [], samples=samples, seed=seed, parallel=parallel,
                          gpus_per_trial=gpus_per_trial,
                          trial_timeout_s=flag_duration("--trial-timeout", trial_timeout),
                          budget=_budget(budget), stop_if=stop_if,
                          idle_release_s=flag_duration("--idle-release", idle_release))
        events = _events(json_out, ci)
        from ..ci import masked_events
        events = masked_events(config, events)
        try:
            options = RunOptions(allow_dirty=allow_dirty, queue_wait_s=flag_duration("--wait", wait), ci=ci)
            summary = sweep(config, spec, events=events, options=options)
        finally:
            events.close()
        if json_out:
            from .render import print_json
            print_json(summary.to_json())
        else:
            print_sweep(summary)
        return summary.exit_code


def _budget(text: str | None):
    """--budget parsed like `budget =` in fleet.toml (one parser for money)."""
    if text is None:
        return None
    from ..config.values import parse_money
    from ..errors import UsageError
    try:
        return parse_money(text)
    except UsageError as exc:
        raise UsageError(f"--budget: {exc.message}", hint=exc.hint) from None


def build_spec(config, table, command, params: list[str], *, samples, seed, parallel, gpus_per_trial,
               trial_timeout_s, budget, stop_if: str | None = None, idle_release_s: int | None = None):
    """Flags over `[sweep]` in fleet.toml (`table`, a fleet.config.model.SweepConfig) over defaults."""
    from ..sweep import Param, SweepSpec, parse_param, plan_trials
    from ..sweep.stopping import StopRule
    from ..sweep.params import merged
    from .up import command_from_argv
    from_config = [Param(name, values) for name, values in table.params.items()] if table is not None else []
    chosen = merged(from_config, [parse_param(p) for p in params])
    samples = samples if samples is not None else (table.samples if table is not None else None)
    seed = seed if seed is not None else (table.seed if table is not None else None)
    words = tuple(command) if command and len(command) > 1 else ()
    text = command_from_argv(list(command)) if command else (
        table.command if table is not None and table.command else config.command or "")
    if seed is not None and samples is None:
        from ..errors import UsageError
        raise UsageError("--seed only applies to random search", hint="add --samples N (or samples = N in [sweep])")
    trials = plan_trials(chosen, samples=samples, seed=seed)
    spec = SweepSpec(
        command=text, trials=tuple(trials),
        parallel=parallel if parallel is not None else (table.parallel if table is not None else 1),
        gpus_per_trial=gpus_per_trial if gpus_per_trial is not None else (
            table.gpus_per_trial if table is not None else 1),
        trial_timeout_s=trial_timeout_s if trial_timeout_s is not None else (
            table.trial_timeout_s if table is not None else None),
        budget=budget if budget is not None else (table.budget if table is not None else None), argv=words,
        stop_if=StopRule.parse(rule) if (rule := stop_if or (table.stop_if if table is not None else None)) else None,
        idle_release_s=float(idle_release_s if idle_release_s is not None else (
            table.idle_release_s if table is not None and table.idle_release_s is not None else 0)))
    spec.check()
    return spec


def print_sweep(summary) -> None:
    """The trials as a table on stdout, the verdict on stderr."""
    import sys
    from decimal import Decimal
    from ..money.budget import format_usd
    names = sorted({k for t in summary.trials for k in t.params}, key=lambda k: list(summary.trials[0].params).index(k)
                   if k in summary.trials[0].params else 99)
    metrics = sorted({k for t in summary.trials for k in t.metrics})
    rows = []
    for t in summary.trials:
        cost = format_usd(Decimal(t.cost_usd) * 1_000_000) if t.cost_usd else ""
        rows.append([t.trial, t.state, *(t.params.get(n, "") for n in names),
                     *(f"{t.metrics[m]:g}" if m in t.metrics else "" for m in metrics),
                     "" if t.exit_code is None else str(t.exit_code),
                     "" if t.duration_s is None else f"{t.duration_s:.1f}s", cost, t.run_id or "", t.reason or ""])
    print(text_table(["TRIAL", "STATE", *names, *metrics, "EXIT", "TIME", "COST", "RUN", "WHY"], rows))
    counts = ", ".join(f"{n} {s}" for s, n in summary.counts().items() if n)
    money = summary.cost_usd or summary.would_cost_usd
    parts = [f"sweep {summary.sweep_id} {summary.status}", counts,
             f"{summary.machines} machine(s) leased once"]
    if money is not None:
        word = "cost" if summary.cost_usd is not None else "would cost"
        parts.append(f"{word} {format_usd(Decimal(money) * 1_000_000)}"
                     + (f" of {format_usd(Decimal(summary.budget_usd) * 1_000_000)}" if summary.budget_usd else ""))
    parts.append(f"outputs in {summary.run_dir}")
    print("fleet: " + " · ".join(parts), file=sys.stderr)


def text_table(columns: list[str], rows: list[list[str]]) -> str:
    """Columns padded to their widest cell; never cut (a run id or a reason is read whole); control
    characters shown, not sent to the terminal, a line break too (fleet.render.text.printable_line):
    a parameter's value "x\nt002  succeeded …" printed a trial's row of its own."""
    from ..render.text import printable_line
    columns, rows = [printable_line(str(c)) for c in columns], [[printable_line(str(c)) for c in row] for row in rows]
    widths = [max(len(str(c)) for c in col) for col in zip(columns, *rows)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip() for row in [columns, *rows]]
    return "\n".join(lines)
