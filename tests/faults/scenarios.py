"""Faults that can be injected into a `fleet up` on local machines, alone or combined.

A fault has a phase at which it fires (the `fleet: <phase>:` line on the controller's stderr) and
an `inject`. Some prepare the sandbox first (a corrupt chunk in the store, FLEET_HOME on a tiny
filesystem) and some undo themselves after the controller ended (a full disk is emptied, a held
database lock let go) so the aftermath can be judged with `fleet down --all`.
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from .harness import (PHASES, Controller, LedgerWatch, ProviderWatch, Sandbox, Verdict, judge_after,
                      kill_everything_under)


class Fault:
    name = "fault"
    phase = "run"
    kills_controller = False

    def describe(self) -> str:
        return self.name

    def prepare(self, box: Sandbox) -> None:
        """Before the controller starts."""

    def inject(self, box: Sandbox, ctl: Controller, watch: ProviderWatch) -> None:
        raise NotImplementedError

    def undo(self, box: Sandbox) -> None:
        """After the controller ended, before judging."""


@dataclass
class KillController(Fault):
    """SIGKILL of `fleet up` (the whole process group) when a phase starts."""

    phase: str = "run"
    delay_s: float = 0.0     # after the phase line: lands inside the phase, not at its first instant
    name = "kill-controller"
    kills_controller = True

    def describe(self) -> str:
        return f"kill-controller@{self.phase}" + (f"+{self.delay_s:.2f}s" if self.delay_s else "")

    def inject(self, box, ctl, watch) -> None:
        time.sleep(self.delay_s)
        ctl.kill()


@dataclass
class StopController(Fault):
    """`fleet up` (its whole process group) stopped with `signal` for `for_s`, then continued: a
    Ctrl-Z answered by `fg` later, a debugger, a laptop asleep (its wall clock moves on meanwhile)."""

    phase: str = "run"
    for_s: float = 10.0
    delay_s: float = 0.0
    signal: int = signal.SIGSTOP
    name = "stop-controller"

    def describe(self) -> str:
        return f"stop-controller({self.for_s:g}s)@{self.phase}"

    def inject(self, box, ctl, watch) -> None:
        time.sleep(self.delay_s)
        os.killpg(ctl.proc.pid, self.signal)
        self.stopped_at = time.time()
        time.sleep(self.for_s)
        self.continued_at = time.time()
        os.killpg(ctl.proc.pid, signal.SIGCONT)


@dataclass
class KillSshd(Fault):
    """A machine's sshd dies mid-run (SIGKILL): its sessions drop with it."""

    rank: int = 0
    phase: str = "run"
    name = "kill-sshd"

    def describe(self) -> str:
        return f"kill-sshd[{self.rank}]@{self.phase}"

    def inject(self, box, ctl, watch) -> None:
        for d in sorted((box.home / "machines").glob(f"*-n{self.rank}")):
            try:
                listener = int((d / "sshd.pid").read_text().split()[0])   # "PID STARTTIME"
            except (OSError, ValueError):
                continue
            # The listener and its per-connection children together: killing the listener alone
            # leaves open connections working, so the fault would depend on whether the
            # controller had connected yet. Stopped first, it cannot fork a child past the scan.
            try:
                os.kill(listener, signal.SIGSTOP)
            except OSError:
                continue
            for pid in [*_children(listener), listener]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def _children(parent: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            found.append(int(entry))
    return found


@dataclass
class LockDatabase(Fault):
    """Another connection holds the state database with BEGIN EXCLUSIVE for a while."""

    phase: str = "run"
    hold_s: float = 3.0
    until_line: str = ""   # held until the controller prints this (at most hold_s): the wait it outlasted
    then_touch: str = ""   # created once the controller prints then_line: the experiment's cue to end
    then_line: str = ""
    name = "db-locked"

    def describe(self) -> str:
        return f"db-locked({self.hold_s:g}s)@{self.phase}"

    def inject(self, box, ctl, watch) -> None:
        ready = threading.Event()

        def hold() -> None:
            conn = sqlite3.connect(box.home / "state.db", timeout=30, isolation_level=None)
            try:
                conn.execute("BEGIN EXCLUSIVE")
                ready.set()
                if self.until_line:
                    ctl.wait_line(self.until_line, timeout=self.hold_s)
                else:
                    time.sleep(self.hold_s)
                conn.execute("COMMIT")
            except sqlite3.Error:
                ready.set()
            finally:
                conn.close()
            if self.then_touch:
                ctl.wait_line(self.then_line, timeout=60)
                Path(self.then_touch).touch()

        self._thread = threading.Thread(target=hold, daemon=True)
        self._thread.start()
        ready.wait(10)

    def undo(self, box) -> None:
        thread = getattr(self, "_thread", None)
        if thread is not None:
            thread.join(self.hold_s + (70 if self.then_touch else 10))


@dataclass
class DiskFull(Fault):
    """FLEET_HOME on a small tmpfs that fills up when the phase starts; emptied afterwards."""

    phase: str = "run"
    name = "disk-full"

    def describe(self) -> str:
        return f"disk-full@{self.phase}"

    def prepare(self, box) -> None:
        if not mount_tmpfs(box.home, "48m"):
            raise Unavailable("cannot mount a tmpfs for FLEET_HOME (needs root / CAP_SYS_ADMIN)")

    def inject(self, box, ctl, watch) -> None:
        fill(box.home / ".filler")

    def undo(self, box) -> None:
        try:
            (box.home / ".filler").unlink()
        except OSError:
            pass


@dataclass
class CorruptChunk(Fault):
    """A chunk of the experiment's data snapshot is damaged in the store before the run reuses it."""

    phase: str = "lease"
    name = "corrupt-chunk"

    def prepare(self, box) -> None:
        box.write_experiment(data=True, command=box_command(box), setup=None)
        made = box.fleet("snapshot", "create", "data", "--name", "seed-data")
        if made.returncode != 0:
            raise RuntimeError(f"could not seed the store: {made.stderr}")
        chunks = sorted((box.home / "store" / "chunks").rglob("*"))
        chunks = [c for c in chunks if c.is_file()]
        victim = max(chunks, key=lambda c: c.stat().st_size)
        os.chmod(victim, 0o644)
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0xFF
        victim.write_bytes(bytes(data))
        self.victim = victim.name

    def inject(self, box, ctl, watch) -> None:
        pass   # the damage is already there


class Unavailable(Exception):
    """This fault cannot be made on this computer (e.g. no mount permission): skip, say why."""


def box_command(box: Sandbox) -> str:
    return getattr(box, "command", "echo started; sleep 2; echo finished")


def mount_tmpfs(path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
                        capture_output=True).returncode == 0
    return ok


def unmount(path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path) -> None:
    """Write until the filesystem says ENOSPC."""
    block = b"\0" * (1 << 20)
    try:
        with open(path, "wb") as fh:
            while True:
                fh.write(block)
                fh.flush()
    except OSError:
        pass


# -- running a case ------------------------------------------------------------------------------------
def run_case(box: Sandbox, faults: list[Fault], *, gpus: int = 2, timeout_s: float = 90) -> Verdict:
    """One `fleet up` with these faults injected in phase order, then the aftermath judged."""
    faults = sorted(faults, key=lambda f: (PHASES.index(f.phase), f.kills_controller))
    verdict = Verdict([f.describe() for f in faults])
    if not (box.exp / "fleet.toml").exists():
        box.write_experiment()
    mounted = False
    try:
        for fault in faults:
            fault.prepare(box)
            mounted = mounted or isinstance(fault, DiskFull)
        watch = ProviderWatch(box.home)
        ledger = LedgerWatch(box.home)
        ctl = Controller(box, ["--gpus", str(gpus)])
        killed = False
        for fault in faults:
            if not ctl.wait_phase(fault.phase, timeout=timeout_s):
                verdict.notes.append(f"phase {fault.phase} never started; {fault.describe()} not injected")
                continue
            ledger.snapshot()
            fault.inject(box, ctl, watch)
            killed = killed or fault.kills_controller
            if killed:
                break
        if not killed:
            verdict.exit_code = ctl.wait(timeout_s)
            if verdict.exit_code == -9:
                verdict.leaked.append("controller hung (killed by the harness)")
        else:
            verdict.exit_code = -9
        for fault in faults:
            fault.undo(box)
        outputs = ["\n".join(ctl.lines), ctl.stdout]
        verdict.notes += [line for line in ctl.lines if line.startswith("fleet: error:")][-1:]
        return judge_after(box, verdict, watch, ledger, outputs)
    finally:
        kill_everything_under(box.home)
        if mounted:
            unmount(box.home)


def random_faults(rng: random.Random, *, allow_disk: bool = True, max_faults: int = 3) -> list[Fault]:
    """A random combination: at most one of each kind, at most one controller kill."""
    kinds = ["kill", "sshd", "lock", "corrupt"] + (["disk"] if allow_disk else [])
    chosen = rng.sample(kinds, rng.randint(1, max_faults))
    out: list[Fault] = []
    for kind in chosen:
        if kind == "kill":
            out.append(KillController(phase=rng.choice(PHASES)))
        elif kind == "sshd":
            out.append(KillSshd(rank=rng.randint(0, 1), phase=rng.choice(("ready", "stage", "setup", "run"))))
        elif kind == "lock":
            out.append(LockDatabase(phase=rng.choice(PHASES[1:]), hold_s=round(rng.uniform(1, 4), 1)))
        elif kind == "disk":
            out.append(DiskFull(phase=rng.choice(("stage", "setup", "run", "collect"))))
        elif kind == "corrupt":
            out.append(CorruptChunk())
    return out


__all__ = ["Fault", "KillController", "StopController", "KillSshd", "LockDatabase", "DiskFull", "CorruptChunk", "Unavailable",
           "run_case", "random_faults", "kill_everything_under"]
