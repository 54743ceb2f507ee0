"""`fleet up` and `fleet run LEASE -- CMD`."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Optional

import typer


def register(app: typer.Typer) -> None:
    app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": False})(up)
    app.command(name="run")(run_on)


def _events(json_out: bool, ci: bool):
    from .render import JsonEvents, RichEvents, is_ci
    if json_out:
        return JsonEvents()
    return RichEvents(plain=ci or is_ci())


def up(
    command: Optional[List[str]] = typer.Argument(None, help="Command to run instead of the config's (after --)."),
    gpus: Optional[str] = typer.Option(None, "--gpus", "-g", help="Total GPUs, optionally of a type: 8, A100:8, "
                                                               "A100-80GB:8, L4."),
    template: Optional[str] = typer.Option(None, "--template", "-t", help="Machine template."),
    provider: Optional[str] = typer.Option(None, "--provider", "-p",
                                           help="Where machines come from: any registered provider (local, "
                                                "ssh, aws, slurm, …; `fleet init` lists them)."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Config file (default ./fleet.toml)."),
    max_duration: Optional[str] = typer.Option(None, "--max-duration", help="Hard limit, e.g. 2h."),
    keep: Optional[str] = typer.Option(None, "--keep", help="Keep the lease up this long after the run."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Budget for this run in US dollars."),
    allow_dirty: bool = typer.Option(False, "--allow-dirty", help="Run uncommitted changes (captured as a snapshot)."),
    ci: bool = typer.Option(False, "--ci", help="CI mode: no prompts or live display (on when CI=true)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    wait: Optional[str] = typer.Option(None, "--wait", help="How long to wait for capacity (Slurm queue, team hosts' GPU slots, "
                                      "AWS capacity) instead of exit 10, e.g. 10m."),
    env: Optional[List[str]] = typer.Option(None, "--env", "-e", help="KEY=VALUE set for setup and command "
                                                                     "(repeatable; over [env] and --env-file)."),
    env_file: Optional[List[Path]] = typer.Option(None, "--env-file", help="A file of KEY=VALUE lines "
                                                                            "(dotenv; repeatable)."),
    exit_code_from: Optional[str] = typer.Option(None, "--exit-code-from", metavar="RANK",
                                                 help="Exit with this rank's own exit code (when the command "
                                                      "ran to its end; fleet's own code otherwise)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and what it can cost; lease nothing."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask before leasing (never asked in CI, with "
                                                        "--json, or when not on a terminal)."),
    detach: bool = typer.Option(False, "--detach", "-d", help="Return once inputs are staged; a background "
                                "supervisor runs the rest (`fleet attach RUN`, `fleet logs RUN -f`)."),
    resume: Optional[str] = typer.Option(None, "--resume", help="Continue RUN on new machines from its latest "
                                         "checkpoint (FLEET_RESUMED=1, FLEET_ATTEMPT=N)."),
    no_setup_cache: bool = typer.Option(False, "--no-setup-cache", help="Run setup even when this venv was "
                                        "built by the same install-only setup from the same files."),
) -> int:
    """Lease machines, run the experiment on them, bring outputs home, destroy the machines."""
    from ..config.loader import load_config
    from ..run.recovery import run_managed as run_up
    from ..run.types import RunOptions
    from .render import is_ci
    ci = ci or is_ci()
    overrides = {"gpus": gpus, "template": template, "provider": provider, "max_duration": max_duration,
                 "budget": budget, "command": list(command) if command else None,
                 "setup_always": True if no_setup_cache else None}
    if dry_run and not command:
        from ..config.loader import find_config_file
        if find_config_file(file) is None:
            overrides["command"] = ["true"]
    with _ci_failures_reported(ci), _json_failure_shown(json_out):
        # Every flag is read before anything else, --dry-run included: a dry run is how a command line
        # is checked, and `--wait nan --dry-run` said nothing of the --wait the real run refuses.
        keep_s = flag_duration("--keep", keep)
        wait_s = flag_duration("--wait", wait)
        exit_code_from = _rank_flag(exit_code_from)
        from ..config.env import env_overrides
        overrides["env"] = env_overrides(env or [], env_file or [])   # also what a detached supervisor loads
        config = load_config(file, overrides=overrides)
        if dry_run:   # the plan needs no command: a directory without fleet.toml can still be priced
            _check_as_a_run_would(config, resume)
            from .plan_view import show_quote
            return show_quote(config, json_out)
        from .plan_view import confirmer
        options = RunOptions(keep_s=keep_s, allow_dirty=allow_dirty, ci=ci, queue_wait_s=wait_s,
                             confirm=confirmer(ask=not (yes or json_out or ci)))
        if resume:
            from ..run.resume_attempt import resume_options
            options = resume_options(options, config, resume)
        events = _events(json_out, ci)
        # secrets: *** in every line fleet prints (and ::add-mask:: for a GitHub runner), CI or not
        from ..ci import masked_events
        events = masked_events(config, events)
        if detach:
            from .detached import up_detached
            return up_detached(config, file, overrides, options, events, json_out)
        try:
            summary = run_up(config, options=options, events=events)
        finally:
            events.close()
    _show(summary, json_out)
    return summary.exit_code if exit_code_from is None else _exit_code_from(summary, exit_code_from)


def _rank_flag(text: str | None) -> str | None:
    """--exit-code-from RANK: a rank is 0, 1, …; `x` or `-1` was only noticed after the whole run."""
    if text is None:
        return None
    if not (text.isascii() and text.isdigit()):
        from ..errors import UsageError
        raise UsageError(f"--exit-code-from {text!r}: a rank is a number 0, 1, 2, …")
    return str(int(text))


def _exit_code_from(summary, rank: str) -> int:
    ranks = summary.rank_exit_codes or {}
    if ranks and rank not in ranks:
        import sys
        print(f"fleet: warning: --exit-code-from {rank}: no such rank (ranks: {', '.join(ranks)}); exiting "
              f"with the run's exit code", file=sys.stderr)
    return summary.exit_code_of(rank)


def _show(summary, json_out: bool) -> None:
    if json_out:
        from .render import print_json
        print_json(summary.to_json())
    else:
        _print_summary(summary)


def _check_as_a_run_would(config, resume: str | None) -> None:
    """What the run itself refuses before leasing, refused by its dry run too."""
    from ..snapshots.sync_remote import cache_max_bytes
    from ..state import check_state_url
    cache_max_bytes(config.cache_max)
    check_state_url(config.state_url or "")
    if config.data:   # a missing directory or an unknown snapshot name, as the run's pin stage says it
        from ..snapshots.sources import check_data
        check_data(config.data, config.base_dir, config.store)
    if resume:
        from ..run.resume_attempt import resume_options
        from ..run.types import RunOptions
        resume_options(RunOptions(), config, resume)


def flag_duration(flag: str, text: str | None) -> int | None:
    """A duration flag (1s up to a year), its errors naming the flag; None when the flag was not given
    (an empty value, `--keep=`, was given: it is refused)."""
    if text is None:
        return None
    from ..config.values import parse_duration
    from ..errors import UsageError
    try:
        return parse_duration(text)
    except UsageError as exc:
        raise UsageError(f"{flag}: {exc.message}", hint=exc.hint) from None


def _ci_failures_reported(ci: bool):
    """In CI mode a run that fails before leasing (bad config, budget refused) still gets a summary."""
    import contextlib
    if not ci:
        return contextlib.nullcontext()
    from ..ci import failures_reported
    return failures_reported()


@contextmanager
def _json_failure_shown(json_out: bool) -> Iterator[None]:
    """--json: a run that ends in an error or a cancel before it has a summary (bad config, the budget
    refused, a CI job cancelled while its inputs were hashed) still prints one JSON document, so a
    script reading stdout learns how it ended instead of finding nothing to parse."""
    from ..errors import ExitCode, FleetError
    try:
        yield
    except (FleetError, KeyboardInterrupt) as exc:
        if json_out:
            from .guard import error_line
            from .render import print_json
            code = int(exc.exit_code) if isinstance(exc, FleetError) else int(ExitCode.CANCELLED)
            print_json({"status": "cancelled" if code == ExitCode.CANCELLED else "error", "exit_code": code,
                        "message": error_line(exc.one_line()) if isinstance(exc, FleetError) else "cancelled"})
        raise


def _print_summary(summary) -> None:
    import sys
    parts = [f"run {summary.run_id} {summary.status}", f"exit {summary.exit_code}"]
    if summary.failing_rank is not None:
        parts.append(f"first failing rank {summary.failing_rank}")
    parts.append(f"{summary.duration_s:.1f}s")
    from ..run.summary import launched_mix
    if summary.launched:
        parts.append(launched_mix(summary.launched))
    # Local machines carry a shadow price: what the same run would cost on the cloud.
    from decimal import Decimal
    from ..money.budget import format_usd
    if summary.cost_usd is not None:
        parts.append(f"cost {format_usd(Decimal(summary.cost_usd) * 1_000_000)}")
    if summary.would_cost_usd is not None:
        parts.append(f"would cost {format_usd(Decimal(summary.would_cost_usd) * 1_000_000)}")
    parts.append(f"outputs in {summary.run_dir}")
    if summary.kept_until:
        parts.append(f"lease {summary.lease_id} kept until {summary.kept_until}")
    if summary.message:
        parts.append(summary.message)
    print("fleet: " + " · ".join(parts), file=sys.stderr)


def run_on(
    lease_id: str = typer.Argument(..., help="A kept lease (see `fleet status`)."),
    command: List[str] = typer.Argument(..., help="Command to run on every machine (after --)."),
    budget: Optional[str] = typer.Option(None, "--budget", help="Budget for this run in US dollars."),
    file: Optional[Path] = typer.Option(None, "--file", "-f", help="Config for budgets, prices, env and secrets "
                                                                  "(default ./fleet.toml when present)."),
    json_out: bool = typer.Option(False, "--json", help="Print a JSON summary on stdout."),
    env: Optional[List[str]] = typer.Option(None, "--env", "-e", help="KEY=VALUE set for the command "
                                                                     "(repeatable; over [env] and --env-file)."),
    env_file: Optional[List[Path]] = typer.Option(None, "--env-file", help="A file of KEY=VALUE lines "
                                                                            "(dotenv; repeatable)."),
) -> int:
    """Run a command on every machine of a kept lease (`fleet up --keep`): budgeted and recorded like
    `fleet up`; the lease stays kept afterwards."""
    from ..config.loader import load_config
    from ..run.pipeline import run_on_lease
    text = command_from_argv(command)
    from ..config.env import env_overrides
    config = load_config(file, overrides={"command": text, "budget": budget,
                                          "env": env_overrides(env or [], env_file or [])})
    events = _events(json_out, False)
    from ..ci import masked_events
    events = masked_events(config, events)
    try:
        summary = run_on_lease(lease_id, text, config=config, events=events)
    finally:
        events.close()
    _show(summary, json_out)
    return summary.exit_code


def command_from_argv(argv: list[str]) -> str:
    from ..config.command import command_line
    return command_line(argv)
