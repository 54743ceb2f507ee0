"""The fault harness: run `fleet up` as a user would, inject faults, and judge the aftermath.

Shared by tests/faults/ (one fault at a time, each a few seconds) and scripts/faults.py (random
combinations with a recorded seed). Everything is judged on the providers themselves — processes
under the test FLEET_HOME for local machines — and on the state database read directly, never on
what fleet believes:

* leaked:  a machine process (sshd, watchdog, experiment) still alive after its own last deadline
           plus slack, or anything left after `fleet down --all`;
* ledger:  a row seen during the run that is gone or changed afterwards, a machine that existed
           with no cost segment, or a segment still open after `fleet down --all`;
* state:   `fleet status --json` lists nothing after `fleet down --all`;
* message: the user got one-line errors (`fleet: error: …`), never a traceback.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.fixtures.procs import live_processes_under as processes_under   # (pid, command line)


def ending(fn, wait_s: float = 40) -> tuple[float, BaseException | None, bool]:
    """Run fn in a thread: (seconds it took, what it raised or None, whether it still runs after
    wait_s). For a wait that must end: a fault test judges a hang without hanging itself."""
    raised: list[BaseException] = []

    def go():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 — judged by the caller
            raised.append(exc)
    t0 = time.monotonic()
    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    thread.join(wait_s)
    return time.monotonic() - t0, (raised or [None])[0], thread.is_alive()

REPO = Path(__file__).resolve().parents[2]
FLEET = str(Path(sys.executable).parent / "fleet")
PHASES = ("lease", "ready", "stage", "setup", "run", "collect", "release")
DEADLINE_SLACK_S = 6.0     # watchdog poll (0.5 s) + SIGTERM grace (2 s) + a loaded 2-core box


def kill_everything_under(root: Path) -> None:
    """Last-resort cleanup so one failed case cannot leak into the next."""
    for pid, _ in processes_under(root):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class Sandbox:
    """One FLEET_HOME + one experiment directory, with the environment the CLI runs under."""

    root: Path
    ttl_s: int = 4
    extra_env: dict = field(default_factory=dict)

    def __post_init__(self):
        self.home = self.root / "home"
        self.exp = self.root / "exp"
        self.home.mkdir(parents=True, exist_ok=True)
        self.exp.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLEET_", "AWS_")) and k != "CI"}
        env.update(FLEET_HOME=str(self.home), FLEET_HEARTBEAT_TTL=str(self.ttl_s), FLEET_USER="faults",
                   FLEET_GRACE="1", FLEET_READY_TIMEOUT="8", **self.extra_env)
        return env

    def write_experiment(self, *, command: str = "echo started; sleep 2; echo finished",
                         setup: str | None = "echo setting-up", data: bool = False, extra: str = "") -> None:
        lines = ['project = "faults"', f"command = {json.dumps(command)}", 'template = "local-1gpu"',
                 'max_duration = "5m"']
        if setup:
            lines.append(f"setup = {json.dumps(setup)}")
        lines.append(extra)
        if data:
            d = self.exp / "data"
            d.mkdir(exist_ok=True)
            (d / "train.bin").write_bytes(os.urandom(200_000))
            (d / "labels.txt").write_text("".join(f"{i}\n" for i in range(5000)))
            lines.append('[data]\ntrain = "data"')
        (self.exp / "fleet.toml").write_text("\n".join(lines) + "\n")

    def fleet(self, *args: str, timeout: float = 60, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([FLEET, *args], cwd=self.exp, env={**self.env, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout)


class Controller:
    """`fleet up --json` in the background; its stderr (phases, warnings, logs) is read line by line."""

    def __init__(self, box: Sandbox, args: list[str], env: dict | None = None):
        self.box = box
        self.lines: list[str] = []
        self.phase_seen: dict[str, threading.Event] = {p: threading.Event() for p in PHASES}
        self.watchers: list[tuple[str, threading.Event]] = []
        self.proc = subprocess.Popen([FLEET, "up", "--json", *args], cwd=box.exp, env={**box.env, **(env or {})},
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True)
        self.stdout = ""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._out_reader = threading.Thread(target=self._read_out, daemon=True)
        self._out_reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            self.lines.append(line)
            if line.startswith("fleet: "):
                name = line[len("fleet: "):].split(":", 1)[0]
                if name in self.phase_seen:
                    self.phase_seen[name].set()
            for needle, event in list(self.watchers):
                if needle in line:
                    event.set()

    def _read_out(self) -> None:
        self.stdout = self.proc.stdout.read()

    def wait_phase(self, phase: str, timeout: float = 60) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.phase_seen[phase].wait(0.02):
                return True
            if self.proc.poll() is not None:
                self._reader.join(2)
                return self.phase_seen[phase].is_set()
        return False

    def wait_line(self, needle: str, timeout: float = 60) -> bool:
        event = threading.Event()
        self.watchers.append((needle, event))
        if any(needle in line for line in self.lines):
            return True
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if event.wait(0.05):
                return True
            if self.proc.poll() is not None:
                self._reader.join(2)
                return event.is_set()
        return False

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)   # the whole group: no child ssh outlives it either
        self.proc.wait(10)
        self._reader.join(5)

    def wait(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            self.lines.append("fleet-faults: controller hung past the test timeout and was killed")
            return -9
        self._reader.join(5)
        self._out_reader.join(5)
        return code


class ProviderWatch:
    """Polls $FLEET_HOME/machines while a case runs: every machine that ever existed and the last
    deadline each machine's own watchdog held (the file the agent enforces)."""

    def __init__(self, home: Path, interval_s: float = 0.05):
        self.home = home
        self.machines: set[str] = set()
        self.deadlines: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(interval_s,), daemon=True)
        self._thread.start()

    def _loop(self, interval_s: float) -> None:
        while not self._stop.is_set():
            self.poll()
            self._stop.wait(interval_s)

    def poll(self) -> None:
        root = self.home / "machines"
        try:
            names = os.listdir(root)
        except OSError:
            return
        for name in names:
            self.machines.add(name)
            try:
                self.deadlines[name] = float((root / name / "root" / ".fleet" / "deadline").read_text())
            except (OSError, ValueError):
                pass

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.poll()

    def last_deadline(self) -> float | None:
        return max(self.deadlines.values()) if self.deadlines else None


# -- the ledger, read straight from the database ---------------------------------------------------
def ledger_rows(home: Path) -> dict[int, tuple]:
    """id → (segment_id, seq, kind, machine_id, digest); {} when there is no ledger (yet)."""
    path = home / "state.db"
    if not path.exists():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
        try:
            rows = conn.execute("SELECT id, segment_id, seq, kind, machine_id, digest FROM ledger").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return {r[0]: tuple(r[1:]) for r in rows}


class LedgerWatch:
    """Snapshots of the ledger taken during a case; every row ever seen must survive."""

    def __init__(self, home: Path):
        self.home = home
        self.seen: dict[int, tuple] = {}

    def snapshot(self) -> None:
        self.seen.update(ledger_rows(self.home))

    def judge(self, machines: set[str]) -> dict:
        after = ledger_rows(self.home)
        lost = [i for i, row in self.seen.items() if after.get(i) != row]
        segments: dict[str, list[tuple]] = {}
        for row in after.values():
            segments.setdefault(row[0], []).append(row)
        open_segments = [s for s, rows in segments.items() if max(rows, key=lambda r: r[1])[2] != "close"]
        billed = {row[3] for row in after.values()}
        unbilled = sorted(machines - billed)
        return {"rows_lost": len(lost), "open_segments": len(open_segments), "unbilled_machines": unbilled,
                "lost": len(lost) + len(open_segments) + len(unbilled)}


# -- one case ----------------------------------------------------------------------------------------
@dataclass
class Verdict:
    faults: list[str]
    exit_code: int | None = None
    machines_seen: int = 0
    leaked: list[str] = field(default_factory=list)
    ledger: dict = field(default_factory=dict)
    state_left: list = field(default_factory=list)
    tracebacks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)       # the one-line errors the user saw
    warnings: list[str] = field(default_factory=list)     # and the warnings
    notes: list[str] = field(default_factory=list)

    @property
    def ledger_lost(self) -> int:
        return int(self.ledger.get("lost", 0))

    @property
    def ok(self) -> bool:
        return not (self.leaked or self.ledger_lost or self.state_left or self.tracebacks)

    def explain(self) -> str:
        return json.dumps(self.__dict__ | {"ok": self.ok}, indent=1, default=str)


def _bad_output(text: str) -> list[str]:
    return [line for line in text.splitlines() if "Traceback" in line or "internal error" in line]


def judge_after(box: Sandbox, verdict: Verdict, watch: ProviderWatch, ledger: LedgerWatch,
                outputs: list[str]) -> Verdict:
    """After the controller ended (or was killed): machines gone by their own deadline, then
    `fleet down --all` leaves nothing, the ledger kept every row, and nobody saw a traceback."""
    watch.stop()
    deadline = watch.last_deadline()
    wait_until = (deadline if deadline is not None else time.time()) + DEADLINE_SLACK_S
    while time.time() < wait_until and processes_under(box.home):
        time.sleep(0.1)
    past_deadline = processes_under(box.home)
    verdict.leaked += [f"alive past its deadline: {cmd}" for _, cmd in past_deadline]
    ledger.snapshot()
    status = box.fleet("status", "--json")
    down = box.fleet("down", "--all")
    after = box.fleet("status", "--json")
    outputs += [status.stderr, down.stderr, after.stderr]
    if down.returncode != 0:
        verdict.notes.append(f"fleet down --all exited {down.returncode}: {down.stderr.strip()[-300:]}")
    try:
        verdict.state_left = json.loads(after.stdout)["leases"]
    except (ValueError, KeyError):
        verdict.state_left = [f"status --json unreadable: {after.stdout[-200:]} {after.stderr[-200:]}"]
    verdict.leaked += [f"alive after fleet down --all: {cmd}" for _, cmd in processes_under(box.home)]
    left_dirs = list((box.home / "machines").iterdir()) if (box.home / "machines").exists() else []
    verdict.leaked += [f"machine directory left: {d.name}" for d in left_dirs]
    verdict.machines_seen = len(watch.machines)
    verdict.ledger = ledger.judge(watch.machines)
    for text in outputs:
        verdict.tracebacks += _bad_output(text)
        verdict.errors += [line for line in text.splitlines() if line.startswith("fleet: error:")]
        verdict.warnings += [line for line in text.splitlines() if line.startswith("fleet: warning:")]
    kill_everything_under(box.home)
    return verdict
