"""Shared fixtures. Every fixture that starts something stops it, and the session checks that no
sshd or watchdog started under a test FLEET_HOME is left running."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fixtures.procs import live_processes_under

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
FLEET = str(VENV_BIN / "fleet")
DIGITS = REPO / "examples" / "digits"

pytest_plugins = [p for p in ("tests.fixtures.moto", "tests.fixtures.postgres", "tests.fixtures.slurm")
                  if (REPO / (p.replace(".", "/") + ".py")).exists()]


# A Slurm cluster (controller, node daemons, munge, its accounting database) is costly to start and
# takes fixed ports, so it is started once per pytest process and, under pytest-xdist, the tests
# that need it are kept on one worker. PostgreSQL is not grouped: a worker starts its own server in
# about two seconds (a Unix socket in its own directory, a fresh database per test), and its ~40
# heavy team-state tests spread over every worker instead of queueing behind each other on one.
_ONE_WORKER = {"slurm_cluster": "slurm"}


@pytest.hookimpl(tryfirst=True)     # before pytest-xdist's own hook turns the marks into groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, group in _ONE_WORKER.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
                break
        else:
            if item.get_closest_marker("xdist_group") is None and _uses_a_module_fixture(item):
                item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


def _uses_a_module_fixture(item) -> bool:
    """Whether the test needs a module-scoped fixture (hosts started, a moto stack made, a wheel
    built). A module's tests then share one worker, which sets the fixture up once: spread over
    five workers, the wheel was built five times and a module's hosts started three times, ~200 s
    of the suite's CPU."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return False
    return any(defs and defs[-1].scope == "module" for name, defs in info.name2fixturedefs.items()
               if name in info.names_closure)


def pytest_configure(config):
    """Refuse to run when --dist loadgroup would silently ignore the groups: pytest 9.2 keeps a node's
    id where pytest-xdist 3.8 no longer writes the group, so every worker would start its own Slurm
    cluster and the suite would outgrow CI's time."""
    if config.getvalue("dist") == "loadgroup" and pytest.version_tuple[:2] >= (9, 2):
        import xdist
        if tuple(int(p) for p in xdist.__version__.split(".")[:2]) <= (3, 8):
            raise pytest.UsageError(f"pytest {pytest.__version__} with pytest-xdist {xdist.__version__} ignores "
                                    "--dist loadgroup: install the versions pyproject.toml names")


def processes_under(root: Path) -> list[str]:
    """Command lines of live processes that mention `root` (sshd configs, watchdogs live there)."""
    return [f"{pid}: {cmd[:160]}" for pid, cmd in live_processes_under(root)]


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _sweep(home: Path) -> None:
    """Last-resort cleanup of a test FLEET_HOME: release everything, kill whatever is left."""
    import signal
    from fleet.providers.local.sshd import stop_machine_dir
    machines = home / "machines"
    if machines.exists():
        for d in machines.iterdir():
            if d.is_dir():
                stop_machine_dir(d, grace_s=0.2)
    for line in processes_under(home):
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    from fleet.isolation import sweep_units
    sweep_units(machines)   # cgroup units of machines whose directory is already gone


@pytest.fixture
def fleet_home(tmp_path, monkeypatch):
    """A private FLEET_HOME; after the test, no process started under it may still run."""
    home = tmp_path / "fleet-home"
    home.mkdir()
    monkeypatch.setenv("FLEET_HOME", str(home))
    monkeypatch.delenv("FLEET_STATE_URL", raising=False)
    monkeypatch.delenv("FLEET_HEARTBEAT_TTL", raising=False)
    monkeypatch.setenv("FLEET_USER", "tester")
    for name in [k for k in os.environ if k in ("CI", "GITHUB_ACTIONS", "GITLAB_CI") or k.startswith("GITHUB_")]:
        monkeypatch.delenv(name)   # CI runs this suite with CI=true; tests opt into CI mode themselves
    yield home
    leftovers = processes_under(home)
    from fleet.isolation import leftover_units
    units = leftover_units(home / "machines")
    _sweep(home)
    assert not leftovers, f"test left processes running: {leftovers}"
    assert not units, f"test left cgroups behind: {units}"


@pytest.fixture
def local_lease(fleet_home):
    """A factory for real local leases (sshd machines); every lease is released after the test."""
    from fleet.ids import new_lease_id
    from fleet.plan import make_plan
    from fleet.providers.local import LocalProvider

    provider = LocalProvider()
    made = []

    def make(gpus: int = 1, template: str = "local-1gpu", deadline_s: int = 120, max_s: int = 600):
        plan = make_plan(provider="local", template=provider.template(template), gpus=gpus,
                         max_duration_s=max_s, heartbeat_ttl_s=deadline_s, project="test", user="tester")
        lease = provider.lease(plan, new_lease_id(), deadline_s)
        made.append(lease)
        return lease

    yield make
    for lease in made:
        provider.release(lease)


@pytest.fixture
def foreign():
    """A harmless process that is not fleet's, in a session (and process group) of its own: started
    by the test, outside any machine, for checks that fleet never signals it."""
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def experiment(tmp_path):
    """A tiny experiment directory with a fleet.toml; tests rewrite what they need."""
    d = tmp_path / "exp"
    d.mkdir()
    (d / "fleet.toml").write_text('project = "t"\ncommand = "echo hello from $FLEET_NODE_RANK"\n'
                                  'template = "local-1gpu"\nmax_duration = "10m"\n')
    return d


def run_fleet(args: list[str], *, cwd: Path, env: dict | None = None, timeout: float = 120,
              check_no_traceback: bool = True) -> subprocess.CompletedProcess:
    """The CLI as a user types it, in a subprocess."""
    # A suite running inside a CI job must not put every e2e run into CI mode (or write into the
    # job's real summary): only the variables a test sets itself count.
    inherited = {k: v for k, v in os.environ.items()
                 if k not in ("CI", "GITHUB_ACTIONS", "GITLAB_CI") and not k.startswith("GITHUB_")}
    full_env = {**inherited, **(env or {})}
    proc = subprocess.run([FLEET, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)
    if check_no_traceback:
        assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def start_fleet_up(cwd: Path, args: list[str], env: dict | None = None) -> subprocess.Popen:
    """`fleet up ARGS` in the background (own session, so a test can signal it like a terminal would)."""
    return subprocess.Popen([FLEET, "up", *args], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, **(env or {})}, start_new_session=True)


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float = 60) -> str:
    """Read the process's output until a line contains `needle`; kill it and fail if it never does."""
    seen = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if needle in line:
            return "".join(seen)
    proc.kill()
    raise AssertionError(f"never saw {needle!r}: {''.join(seen)[-2000:]}")


def one_sigterm(proc: subprocess.Popen, fleet_home: Path, released_within: float,
                stop_wait: float = 30) -> tuple[float | None, float | None, str]:
    """Send a fleet command (in its own session, stdout piped) one SIGTERM, as a cancelled GitLab job
    does, and watch: seconds until nothing under `fleet_home` runs, seconds until the command exits
    (None: not within `released_within`, then 10 s), and everything it printed. One still running
    then is hurried with SIGINT, then killed with its session (it must have been started in its own)."""
    import signal
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        released = wait_until(lambda: not processes_under(fleet_home), released_within)
        released_after = time.monotonic() - t0 if released else None
        ended = wait_until(lambda: proc.poll() is not None, 10)
        ended_after = time.monotonic() - t0 if ended else None
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(stop_wait)
            except subprocess.TimeoutExpired:
                try:   # its whole session: a child left holding the pipe would hang the read below
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
    out = proc.stdout.read()
    proc.stdout.close()
    return released_after, ended_after, out


def communicate_or_kill(proc: subprocess.Popen, timeout: float) -> tuple[str, str]:
    """The rest of a background fleet's output once it exits; killed (and reaped) if it does not."""
    try:
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
