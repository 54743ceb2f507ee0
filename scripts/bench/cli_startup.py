#!/usr/bin/env python3
"""CLI start-up on a plain install: `fleet --help` and `fleet status` versus `python -c pass`.

What a user gets from `pip install fleet` is measured, not the editable dev venv (whose `.pth`
import hook runs in every interpreter start and so inflates the bare-Python baseline):
1. the working tree's `fleet/` is built into a wheel (pip wheel, in a temporary copy, so the
   repository gets no build/ or egg-info litter);
2. the wheel is installed, without its dependencies, into a fresh venv (`python -m venv`);
3. the dependencies come from the dev venv's site-packages through one `.pth` line in the fresh
   venv — a plain path entry: the editable hook's own `.pth` there is not processed, so `fleet`
   resolves to the installed wheel (checked before timing).
Both sides are whole processes run by that venv's interpreter (`python -c pass` and the `fleet`
console script), interleaved, after one warming round; FLEET_HOME is a fresh empty directory.
Figures: medians with their spread. Targets: help ≤ 4×, status ≤ 5× bare Python.

    python scripts/bench/cli_startup.py [-n 5] [--quick] [--json]
"""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (REPO, bench_parser, check_samples, clean_env, failed_row, median_row, ratio_row,  # noqa: E402
                     run_bench, say)

TARGETS = {"help": "<= 4", "status": "<= 5"}
PACKAGING_FILES = ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "MANIFEST.in")


def build_wheel(work: Path) -> Path:
    """A wheel of the working tree's fleet package (tracked and untracked, not ignored, files)."""
    src = work / "src"
    src.mkdir()
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "--", "fleet", *PACKAGING_FILES],
                            cwd=REPO, capture_output=True, text=True, check=True).stdout.splitlines()
    for rel in listed:
        source = REPO / rel
        if source.is_file():
            dest = src / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(source.read_bytes())
    out = work / "wheel"
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)],
                          capture_output=True, text=True, timeout=600)
    wheels = list(out.glob("*.whl"))         # the distribution name is pyproject's, whatever it is
    if proc.returncode != 0 or len(wheels) != 1:
        raise RuntimeError(f"building the wheel failed: {(proc.stderr + proc.stdout).strip()[-300:]}")
    return wheels[0]


def fresh_venv(work: Path, wheel: Path) -> Path:
    """A new venv with the wheel installed (no deps) and the dev venv's site-packages on a .pth line."""
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True, timeout=600, capture_output=True)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    (Path(site) / "_fleet_bench_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([str(python), "-c", "import fleet; print(fleet.__file__)"], capture_output=True,
                           text=True, cwd=work).stdout.strip()
    if not where.startswith(site):
        raise RuntimeError(f"the fresh venv imports fleet from {where or '?'}, not its own install in {site}")
    return python


def time_once(argv: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
        raise RuntimeError(f"`{' '.join(Path(a).name for a in argv[:1]) + ' ' + ' '.join(argv[1:])}` "
                           f"exited {proc.returncode}: {last[:200]}")
    return elapsed


def measure(samples: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-cli-") as tmp:
        work = Path(tmp)
        say("building the wheel and a fresh venv ...")
        python = fresh_venv(work, build_wheel(work))
        fleet = str(python.parent / "fleet")
        home = work / "home"
        home.mkdir()
        env = clean_env(FLEET_HOME=str(home))
        commands = {"python": [str(python), "-c", "pass"], "help": [fleet, "--help"], "status": [fleet, "status"]}
        times: dict[str, list[float]] = {name: [] for name in commands}
        failures: dict[str, str] = {}
        for rnd in range(samples + 1):                 # round 0 warms page and byte-code caches
            for name, argv in commands.items():
                if name in failures:
                    continue
                try:
                    took = time_once(argv, env, home)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    failures[name] = str(exc)
                    continue
                if rnd:
                    times[name].append(took)
        say(f"fleet installed from a wheel in {python.parent.parent} (dependencies via .pth)")
    rows.append(median_row("python -c pass (fresh venv), median", times["python"], "ms", scale=1000, digits=1)
                if "python" not in failures else failed_row("python -c pass (fresh venv)", "ms", failures["python"]))
    for name, target in TARGETS.items():
        label = "fleet --help" if name == "help" else "fleet status"
        if name in failures or "python" in failures:
            rows.append(failed_row(f"{label} / python -c pass", "x", failures.get(name) or failures["python"],
                                   target))
            continue
        rows.append(median_row(f"{label} (fresh venv), median", times[name], "ms", scale=1000, digits=1))
        rows.append(ratio_row(f"{label} / python -c pass", times[name], times["python"], target))
    return rows


def main() -> int:
    parser = bench_parser(__doc__.splitlines()[0])
    args = parser.parse_args()
    check_samples(parser, args)
    samples = 1 if args.quick else args.samples
    return run_bench("cli_startup", args, lambda: measure(samples),
                     [("fleet --help / python -c pass", "x", TARGETS["help"])])


if __name__ == "__main__":
    sys.exit(main())
