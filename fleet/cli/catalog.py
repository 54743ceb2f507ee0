"""The table of `fleet` commands: which module registers each, and its one-line summary.

`fleet --help` is rendered from this table alone, without importing typer or any command module,
and a command's module is imported only when that command runs: start-up is paid for what is used.
tests/unit/test_cli_catalog.py checks the table against what each module really registers, so it
cannot drift from the code.
"""
from __future__ import annotations

import os


class CommandEntry:
    """One command: its name, the fleet.cli module whose register(app) adds it, its summary line.

    A plain class, not a NamedTuple or dataclass: importing typing or dataclasses would cost more
    than this whole table, and `fleet status` loads it on every call."""

    __slots__ = ("name", "module", "summary")

    def __init__(self, name: str, module: str, summary: str) -> None:
        self.name, self.module, self.summary = name, module, summary


COMMANDS: tuple[CommandEntry, ...] = (
    CommandEntry("up", "up", "Lease machines, run the experiment on them, bring outputs home, destroy the machines."),
    CommandEntry("run", "up", "Run a command on every machine of a kept lease (`fleet up --keep`): budgeted and "
                              "recorded like `fleet up`; the lease stays kept afterwards."),
    CommandEntry("attach", "detached", "Follow a run's logs until it ends and exit with its exit code; Ctrl-C "
                 "leaves it running."),
    CommandEntry("sweep", "sweep", "Run a parameter sweep: every trial a pinned, recorded run, on machines leased "
                                  "once."),
    CommandEntry("queue", "queue", "List leases waiting for free GPU slots or cloud capacity (`--wait`), first "
                                  "come first, and why."),
    CommandEntry("status", "leases", "List live leases with their machines, GPUs, deadlines and runs."),
    CommandEntry("down", "leases", "Destroy the machines of leases (idempotent)."),
    CommandEntry("extend", "leases", "Move a kept lease's deadline (on every machine) to now + DURATION."),
    CommandEntry("logs", "leases", "Print a run's logs, prefixed by rank."),
    CommandEntry("ssh", "leases", "Open a shell (or run a command) on a machine of a lease, with its pinned host key."),
    CommandEntry("init", "init", "Write a commented starter fleet.toml (every key explained)."),
    CommandEntry("config", "init", "fleet.toml helpers: `config schema` prints or writes its JSON Schema for "
                 "editors."),
    CommandEntry("report", "report", "Cost and GPU-hours from the ledger, for managers."),
    CommandEntry("budget", "report", "This month's spend against the project and user budgets in fleet.toml."),
    CommandEntry("rerun", "runs", "Lease fresh machines and run a recorded run again on byte-identical inputs "
                 "(verified by hash)."),
    CommandEntry("audit", "runs", "Print a run's lineage, or verify the whole record chain and its snapshots "
                 "(--verify)."),
    CommandEntry("offers", "aws", "Machine mixes a provider's templates allow for --gpus (default: the stack's "
                 "AWS templates), cheapest first, with prices: the same offers `fleet up` chooses from."),
    CommandEntry("reap", "aws", "Release leases (AWS, team hosts, Slurm) whose detached run's supervisor is gone "
                 "and resume their runs; terminate fleet-tagged AWS instances past their expiry or of no live "
                 "lease."),
    CommandEntry("snapshot", "snapshot", "Content-addressed snapshots of data (same bytes → same id)."),
    CommandEntry("stack", "stack", "The AWS infrastructure (VPC, bucket, launch templates, reaper) as a Pulumi "
                 "stack."),
    CommandEntry("runs", "runs", "Run records: what ran, on which pinned code and data, with what result."),
    CommandEntry("hosts", "hosts", "Your team's SSH GPU hosts: add (pinning the host key), list with health, "
                 "remove."),
    CommandEntry("image", "image", "Prebaked machine images: images/<recipe>/ → fleet-<recipe>-<hash>."),
)

BY_NAME = {entry.name: entry for entry in COMMANDS}
ABOUT = "Lease GPU machines for an experiment, run it on pinned inputs, and destroy them. Always."
ROOT_OPTIONS = (
    ("--version", "Print the version and exit."),
    ("--debug", "Show the full traceback of an error (also: FLEET_DEBUG=1)."),
    ("--install-completion", "Install completion for the current shell."),
    ("--show-completion", "Show completion for the current shell, to copy it or customize the installation."),
    ("-h, --help", "Show this message and exit."),
)


def suggestion(typo: str) -> str | None:
    import difflib
    close = difflib.get_close_matches(typo, BY_NAME, n=1)
    return close[0] if close else None


def root_help(width: int | None = None) -> str:
    """`fleet --help`: every summary in full (never cut to fit), wrapped to the terminal."""
    import shutil
    import textwrap
    width = width or min(100, max(60, shutil.get_terminal_size((80, 24)).columns))
    lines = ["Usage: fleet [OPTIONS] COMMAND [ARGS]...", "", textwrap.indent(textwrap.fill(ABOUT, width - 2), "  "),
             "", "Options:"]
    lines += _two_columns(ROOT_OPTIONS, width)
    lines += ["", "Commands:"]
    lines += _two_columns([(e.name, e.summary) for e in COMMANDS], width)
    lines += ["", "Run `fleet COMMAND --help` for a command's options. Exit codes: see the README."]
    return "\n".join(lines) + "\n"


def _two_columns(rows, width: int) -> list[str]:
    import textwrap
    left = max(len(name) for name, _ in rows) + 4
    out = []
    for name, text in rows:
        wrapped = textwrap.wrap(text, max(20, width - left)) or [""]
        out.append(f"  {name.ljust(left - 2)}{wrapped[0]}")
        out += [" " * left + more for more in wrapped[1:]]
    return out


def wants_root_help(args: list[str]) -> bool:
    """True for `fleet`, `fleet -h` and `fleet --help` (and with --debug): answered from this table."""
    rest = [a for a in args if a != "--debug"]
    return rest == [] or rest in (["-h"], ["--help"])


def completing() -> bool:
    """Shell completion asks through the environment; it needs the real command tree."""
    return any(k.startswith("_FLEET_COMPLETE") for k in os.environ)
