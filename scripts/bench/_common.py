"""The conventions every scripts/bench/*.py follows, in one place, so no benchmark can flatter.

- Samples: 5 by default (`-n/--samples`), never fewer than asked; a figure is the MEDIAN, reported
  with its spread (min, max and every sample) so a reader sees how much the machine moved it.
- Ratios ("ours vs reference") are the median of ours over the median of the reference, both sides
  measured as whole processes, interleaved; the spread of a ratio is that of the per-pair ratios.
- `--json` prints ONLY a JSON list of rows on stdout: {"figure", "value", "unit", "target", "met"}
  (+ optional detail keys such as "median", "min", "max", "samples", "error"). Everything else
  (progress, tables, child processes' chatter) goes to stderr: `json_stdout()` points fd 1 at
  stderr while measuring, so not even a child process can print into the JSON.
- An informative row has `target: null` and `met: null`; a row with a target has `met` true or
  false, and a figure that could not be measured is `value: null, met: false`, never met.
- The machine's load average is reported with the figures (`load_row`): a loaded machine is a
  fact the reader needs, not an excuse to loosen a target.
- `--quick`: a tiny run (fewer samples, smaller sizes) to check that the script works; its
  figures are real but not the ones to quote.

Use:
    from _common import bench_parser, json_stdout, ...   # scripts/bench is on sys.path when run
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

DEFAULT_SAMPLES = 5
REPO = Path(__file__).resolve().parents[2]


# -- arguments ----------------------------------------------------------------------------------
def bench_parser(description: str, *, samples: int = DEFAULT_SAMPLES) -> argparse.ArgumentParser:
    """-n/--samples (default 5), --json, --quick: the options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("-n", "--samples", type=int, default=samples,
                        help=f"timed samples per side (default {samples}; a figure is their median)")
    parser.add_argument("--json", action="store_true",
                        help="print only a JSON list of figures on stdout (everything else on stderr)")
    parser.add_argument("--quick", action="store_true",
                        help="a tiny run that checks the benchmark works (figures not to be quoted)")
    return parser


def check_samples(parser: argparse.ArgumentParser, args: argparse.Namespace, *, minimum: int = 1) -> None:
    if args.samples < minimum:
        parser.error(f"--samples must be at least {minimum}")


# -- output -------------------------------------------------------------------------------------
def say(*parts: Any) -> None:
    """Progress and text for people: always stderr."""
    print(*parts, file=sys.stderr, flush=True)


@contextlib.contextmanager
def json_stdout(enabled: bool) -> Iterator[Any]:
    """While measuring, fd 1 is stderr (for us and every child process); yields the real stdout,
    where `emit` writes the JSON and nothing else."""
    if not enabled:
        yield sys.stdout
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    real = os.fdopen(saved, "w", closefd=True)
    old_stdout = sys.stdout
    sys.stdout = sys.stderr
    try:
        yield real
    finally:
        sys.stdout = old_stdout
        real.flush()
        real.close()


def emit(rows: list[dict], *, as_json: bool, out: Any = None) -> None:
    """JSON list on `out` (the real stdout) with --json, else an aligned table on stdout."""
    out = out or sys.stdout
    if as_json:
        out.write(json.dumps(rows, indent=2) + "\n")
        out.flush()
        return
    for r in rows:
        value = "FAILED" if r["value"] is None else f"{r['value']} {r['unit']}"
        spread = f"  [min {r['min']} .. max {r['max']}, n={len(r['samples'])}]" if "samples" in r else ""
        verdict = "" if r["target"] is None else f"  target {r['target']}: {'met' if r['met'] else 'MISSED'}"
        error = f"  ({r['error']})" if r.get("error") else ""
        print(f"{r['figure']:<52} {value:>14}{spread}{verdict}{error}", file=out)


def exit_code(rows: list[dict]) -> int:
    """0 when no target was missed and nothing failed; 1 otherwise."""
    return 1 if any(r["met"] is False for r in rows) else 0


# -- rows ---------------------------------------------------------------------------------------
def meets(value: float | None, target: str | None) -> bool | None:
    """`target` is '<= X', '>= X' or '== X'; None means informative (met None)."""
    if target is None:
        return None
    if value is None:
        return False
    op, _, limit = target.partition(" ")
    bound = float(limit)
    return {"<=": value <= bound, ">=": value >= bound, "==": value == bound}[op]


def row(figure: str, value: float | int | None, unit: str, target: str | None = None, **detail: Any) -> dict:
    """One figure. `met` is computed from the value and target, never passed in."""
    out = {"figure": figure, "value": value, "unit": unit, "target": target, "met": meets(value, target)}
    out.update({k: v for k, v in detail.items() if v is not None})
    return out


def failed_row(figure: str, unit: str, error: str, target: str | None = None) -> dict:
    """A figure that could not be measured: never met, even where it was only informative."""
    return {"figure": figure, "value": None, "unit": unit, "target": target, "met": False, "error": error[:300]}


def _r(x: float, digits: int) -> float:
    return round(x, digits)


def median_row(figure: str, samples: Sequence[float], unit: str, target: str | None = None, *,
               scale: float = 1.0, digits: int = 3, **detail: Any) -> dict:
    """Median of the samples (times `scale`, e.g. 1000 for s → ms) with min, max and every sample."""
    if not samples:
        return failed_row(figure, unit, "no samples", target)
    vals = [s * scale for s in samples]
    return row(figure, _r(statistics.median(vals), digits), unit, target, min=_r(min(vals), digits),
               max=_r(max(vals), digits), samples=[_r(v, digits) for v in vals], **detail)


def ratio_row(figure: str, ours: Sequence[float], ref: Sequence[float], target: str | None = None, *,
              digits: int = 2, **detail: Any) -> dict:
    """median(ours) / median(ref); spread = min and max of the per-pair ratios (interleaved pairs)."""
    if not ours or not ref or statistics.median(ref) <= 0:
        return failed_row(figure, "x", "no samples on one side", target)
    pairs = [a / b for a, b in zip(ours, ref) if b > 0]
    value = statistics.median(ours) / statistics.median(ref)
    return row(figure, _r(value, digits), "x", target, min=_r(min(pairs), digits), max=_r(max(pairs), digits),
               samples=[_r(p, digits) for p in pairs], **detail)


def load_row(when: str = "at start") -> dict:
    """The 1/5/15-minute load average and the core count: informative, and always reported."""
    one, five, fifteen = os.getloadavg()
    return row(f"load average (1 min) {when}", round(one, 2), "load", None,
               load_5min=round(five, 2), load_15min=round(fifteen, 2), cores=os.cpu_count())


# -- fleet --------------------------------------------------------------------------------------
def fleet_argv(python: str | None = None) -> list[str]:
    """The `fleet` entry point of an interpreter's environment (default: this one's), else PATH's."""
    beside = Path(python or sys.executable).parent / "fleet"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("fleet")
    if found:
        return [found]
    return [python or sys.executable, "-m", "fleet.cli.main"]


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without FLEET_*/GITHUB_* settings (a bench picks its own), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "GITHUB_"))}
    env.update(extra)
    return env


def run_bench(name: str, args: argparse.Namespace, measure: Callable[[], list[dict]],
              if_failed: Sequence[tuple[str, str, str | None]]) -> int:
    """The shape every bench's main shares: load before and after, the measured rows (or, when the
    measurement itself fails, one failed row per figure it would have given: (figure, unit, target)),
    printed per --json, and the exit code (1: a target missed or a figure failed)."""
    import subprocess
    with json_stdout(args.json) as out:
        rows = [load_row()]
        try:
            rows += measure()
        except (RuntimeError, OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
            say(f"{name}: not measured: {exc}")
            rows += [failed_row(figure, unit, str(exc), target) for figure, unit, target in if_failed]
        rows.append(load_row("at end"))
        emit(rows, as_json=args.json, out=out)
    return exit_code(rows)
